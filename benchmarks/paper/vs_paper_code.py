"""Speed against the paper's code (github JakobHavtorn/hvae-oodd; a local copy, not part of this
repository), and how close each side comes to the machine's matmul limit.

    python benchmarks/paper/vs_paper_code.py --paper_code PATH            # full sizes (CPU: ~30 minutes)
    python benchmarks/paper/vs_paper_code.py --paper_code PATH --quick    # a few minutes
    HVAE_OODD_PATH=PATH python benchmarks/paper/vs_paper_code.py --archs paper-mnist --samples 4

Without the paper's code it prints why and exits with status 0 (as benchmarks/paper/seed_equivalence.py,
whose functions locate and import it). For each architecture (the paper's Fashion-MNIST one,
Bernoulli; the CIFAR one, discretized logistic mixture; ReLU and the paper's likelihood head on
both sides, as the seed's commands) both models are built in this process and measured in
alternating runs (paper, ours, ours, paper, ...) on the same inputs:

- scoring: L with S importance samples plus L>1 and L>2 with one sample each. The paper's
  scripts/ood-llr.py loop (S + 2 full passes, log-sum-exp) against this package's scoring engine
  (``importance_bounds``; ``HVAEOutlierDetector.ood_scores`` adds the evaluation draw and the
  other statistics on top, which the paper's script does not compute). By default as many images
  as the engine's pass size (``default_max_rows``: one full pass each for L>1 and L>2); with fewer
  (--quick, --score_images) ours runs passes of exactly those images, since its default pads the
  last pass of a call to the full pass size.
- training: the full step (float32; ours in bfloat16 mixed precision with --precision bfloat16):
  forward, per-element free nats (2 nats, KL weight 0.5), backward, Adam. The paper's scripts/dvae_run.py loop against ``train_epochs`` (one epoch of the
  timed steps; channels-last, fused Adam, the divergence checks included).

GFLOP/s are the FLOPs ``torch.utils.flop_counter.FlopCounterMode`` counts for one step (convolutions
and matmuls, forward and backward; elementwise work is not counted), times steps per second. The
roofline is the best float32 ``torch.mm`` (2048 x 2048) rate measured in the same process (at the
start, before each architecture and at the end; the table's percentages use the best). Both sides
run under the package's OpenMP wait policy (``hvae_detect.threads``, applied before torch is
imported) unless the caller set one: it only changes how idle threads wait.
"""

from __future__ import annotations

import os
import statistics
import sys
from pathlib import Path

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

import hvae_detect  # noqa: F401,E402  (its import applies the package's wait policy, before torch is imported)
from hvae_detect.models.architectures import PRESETS  # noqa: E402
from hvae_detect.models.config import ModelConfig  # noqa: E402
from hvae_detect.models.vae import VAE  # noqa: E402
from hvae_detect.precision import autocast  # noqa: E402
from hvae_detect.scoring.engine import default_max_rows, importance_bounds  # noqa: E402
from hvae_detect.training.config import TrainingConfig  # noqa: E402
from hvae_detect.training.loop import make_optimizer, train_epochs  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: harness.py and the groups
import harness  # noqa: E402
from paper.seed_equivalence import PAPER_ENV, find_paper_code, import_paper  # noqa: E402

# arch -> input shape, our likelihood, the paper's likelihood module
ARCHS = {
    "paper-mnist": ((1, 28, 28), "bernoulli", "BernoulliLikelihoodConv2d"),
    "paper-cifar": ((3, 32, 32), "dlogmix", "DiscretizedLogisticMixLikelihoodConv2d"),
}
# (training batch, steps per run, images scored) for the full and the quick sizes
# (None: the engine's pass size, so no pass of ours is padded: the steady state of a large set)
SIZES = {
    "full": {"paper-mnist": (128, 3, None), "paper-cifar": (32, 2, None)},
    "quick": {"paper-mnist": (32, 2, 32), "paper-cifar": (4, 1, 4)},
}
FREE_NATS, KL_WEIGHT = 2.0, 0.5


def images(arch, n, seed):
    shape, likelihood, _ = ARCHS[arch]
    x = torch.rand((n, *shape), generator=torch.Generator().manual_seed(seed))
    return torch.bernoulli(x) if likelihood == "bernoulli" else (x * 255).round() / 255


def build(oodd, arch, seed):
    """(paper's model, ours), both initialised; the paper's by its lazy data-dependent init."""
    shape, likelihood, paper_likelihood = ARCHS[arch]
    torch.manual_seed(seed)
    paper = oodd.models.dvae.VAE(
        input_shape=shape,
        likelihood_module=paper_likelihood,
        config_deterministic=PRESETS[arch]["config_deterministic"],
        config_stochastic=PRESETS[arch]["config_stochastic"],
        activation="ReLU",
        q_dropout=0.0,
        p_dropout=0.0,
        skip_stochastic=True,
        padded_shape=None,
    )
    with torch.no_grad():
        paper(images(arch, 8, seed))
    ours = VAE(ModelConfig(shape, arch, likelihood, activation="ReLU", likelihood_head="paper", skip_stochastic=True))
    return paper, ours


# ---- the paper's loops (as scripts/ood-llr.py and scripts/dvae_run.py run them) -----------------
def _paper_elbo(oodd, paper, x, mask, free_nats=0.0, beta=1.0, reduction=None):
    lik, stage_datas = paper(x, decode_from_p=mask, use_mode=mask)
    kls = [sd.loss.kl_elementwise for sd in stage_datas if sd.loss.kl_elementwise is not None]
    return oodd.losses.ELBO()(
        lik.likelihood, kls, samples=1, free_nats=free_nats, beta=beta, sample_reduction=reduction, batch_reduction=None
    )


@torch.no_grad()
def paper_scores(oodd, paper, x, n_samples):
    n = paper.n_latents
    elbos = torch.stack([_paper_elbo(oodd, paper, x, False)[1] for _ in range(n_samples)])
    out = {0: oodd.utils.log_sum_exp(elbos, axis=0)}
    for k in range(1, n):
        mask = [True] * k + [False] * (n - k)
        out[k] = oodd.utils.log_sum_exp(_paper_elbo(oodd, paper, x, mask)[1][None], axis=0)
    return out


def paper_train(oodd, paper, opt, batches):
    paper.train()
    for x in batches:
        loss = _paper_elbo(oodd, paper, x, False, FREE_NATS, KL_WEIGHT, torch.mean)[0]
        loss.mean().backward()
        opt.step()
        opt.zero_grad()


# ---- ours ---------------------------------------------------------------------------------------
def ours_scores(ours, x, n_samples, max_rows, precision="float32"):
    with autocast(x.device, precision):  # the estimator's scoring_precision
        return importance_bounds(
            ours.eval(), x, ks=range(1, ours.n_latents), iw_samples=n_samples, iw_samples_lk=1, max_rows=max_rows
        )


def ours_train(ours, opt, data, batch, precision="float32", compile_=False):
    # Our KL weight and free nats move every step (the schedules); the paper's are per-epoch constants:
    # the same arithmetic per step either way.
    config = TrainingConfig(
        epochs=1,
        batch_size=batch,
        free_nats=FREE_NATS,
        free_nats_epochs=10,
        warmup_epochs=2,
        free_nats_mode="element",
        precision=precision,
        compile=compile_,
    )
    train_epochs(ours, data, config, generator=torch.Generator().manual_seed(0), optimizer=opt)


# ---- timing -------------------------------------------------------------------------------------
def matmul_roofline(n=2048, repeats=10):
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = min(harness.seconds(lambda: a @ b) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def flops(fn):
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def row(arch, what, batch, s, n_images, times, fl, roof):
    med = {side: statistics.median(t) for side, t in times.items()}
    ips = {side: n_images / med[side] for side in med}
    gf = {side: fl[side] / med[side] / 1e9 for side in med}
    cells = " | ".join(
        f"{ips[side]:.3g} | {gf[side]:.3g} ({100 * gf[side] / roof:.0f}%) | {fl[side] / n_images / 1e9:.3g}"
        for side in ("paper", "ours")
    )
    return (
        f"| {arch} | {what} | {batch} | {s or '-'} | {cells} | {ips['ours'] / ips['paper']:.2f}x "
        f"({min(times['paper']) / max(times['ours']):.2f}-{max(times['paper']) / min(times['ours']):.2f}) |"
    )


def main(argv=None) -> int:
    ap = harness.parser(__doc__)
    ap.add_argument("--paper_code", help=f"root of a local copy of the paper's code (default ${PAPER_ENV})")
    ap.add_argument("--archs", nargs="+", default=list(ARCHS), choices=list(ARCHS))
    ap.add_argument("--measures", nargs="+", default=["score", "train"], choices=["score", "train"])
    ap.add_argument("--samples", nargs="+", type=int, default=[4, 16], help="importance samples S for L")
    ap.add_argument("--quick", action="store_true", help="small batches and few repeats (a few minutes)")
    ap.add_argument("--train_batch", type=int, help="override the training batch")
    ap.add_argument("--score_images", type=int, help="override the images per scoring call")
    ap.add_argument("--steps", type=int, help="override the training steps per timed run")
    ap.add_argument("--repeats", type=int, help="timed runs per side (default 5, quick 3)")
    ap.add_argument(
        "--precision",
        default="float32",
        choices=["float32", "bfloat16"],
        help="our side's training and scoring arithmetic (the paper's code runs float32)",
    )
    ap.add_argument(
        "--compile",
        action="store_true",
        help="our training pass through torch.compile (compiled in two untimed runs first; FLOPs "
        "counted on the eager pass, the same arithmetic)",
    )
    args = ap.parse_args(argv)
    root = find_paper_code(args.paper_code, "vs_paper_code")
    if root is None:
        return 0
    oodd, notes = import_paper(root)
    import oodd.utils  # noqa: F401, F811  (log_sum_exp, as ood-llr.py)

    repeats = args.repeats or (3 if args.quick else 5)
    roof = matmul_roofline()
    print(
        "# "
        + harness.header(
            f"ours in {args.precision}{', compiled' if args.compile else ''}",
            f"OpenMP wait policy: {os.environ.get('OMP_WAIT_POLICY', 'default')}",
        ),
        flush=True,
    )
    for note in notes:
        print("note:", note)
    lines = []
    for arch in args.archs:
        batch, steps, n_score = SIZES["quick" if args.quick else "full"][arch]
        batch, steps, n_score = args.train_batch or batch, args.steps or steps, args.score_images or n_score
        paper, ours = build(oodd, arch, 0)
        roof = max(roof, matmul_roofline())  # under a changing load: the best seen in the run
        if "score" in args.measures:
            # The engine pads a call's last pass to its pass size (default_max_rows) so that every pass
            # has one shape; with fewer images than that, a pass of exactly the images is the fair one.
            rows = default_max_rows(ours, "cpu")
            n_score = n_score or rows
            max_rows = None if n_score >= rows else n_score
            x = images(arch, n_score, 1)
            paper.eval()
            for s in args.samples:
                runs = {
                    "paper": lambda s=s: paper_scores(oodd, paper, x, s),
                    "ours": lambda s=s: ours_scores(ours, x, s, max_rows, args.precision),
                }
                for fn in runs.values():
                    fn()  # warm-up
                fl = {side: flops(fn) for side, fn in runs.items()}
                lines.append((arch, "scoring", n_score, s, n_score, harness.alternate(runs, repeats), fl))
                print(row(*lines[-1], roof), f"load {harness.load()}", flush=True)
        if "train" in args.measures:
            data = images(arch, batch * steps, 2)
            batches = list(data.split(batch))
            p_opt, o_opt = torch.optim.Adam(paper.parameters(), lr=3e-4), make_optimizer(ours, 3e-4)
            runs = {
                "paper": lambda: paper_train(oodd, paper, p_opt, batches),
                "ours": lambda: ours_train(ours, o_opt, data, batch, args.precision, args.compile),
            }
            for _ in range(2 if args.compile else 0):  # the compilation, and torch's one recompilation
                runs["ours"]()
            fl = {
                "paper": flops(lambda: paper_train(oodd, paper, p_opt, batches[:1])) * steps,
                "ours": flops(lambda: ours_train(ours, o_opt, data[:batch], batch, args.precision)) * steps,
            }
            lines.append((arch, "training", batch, None, batch * steps, harness.alternate(runs, repeats), fl))
            print(row(*lines[-1], roof), f"load {harness.load()}", flush=True)
    roof = max(roof, matmul_roofline())
    print(
        f"\nmatmul roofline (float32 torch.mm 2048^3, best of 10, at the start, per architecture and at the end): "
        f"{roof:.0f} GFLOP/s; "
        f"{repeats} alternating runs per side; load at the end {harness.load()}\n"
    )
    print(
        "| arch | measure | batch | S | paper img/s | paper GFLOP/s (% roofline) | paper GFLOP/img | ours img/s | "
        "ours GFLOP/s (% roofline) | ours GFLOP/img | ours / paper img/s (range) |\n|" + "---|" * 11
    )
    print("\n".join(row(*line, roof) for line in lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
