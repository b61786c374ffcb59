"""Training speed: the package's training step against a naive eager step.

Every variant starts from a copy of the same model (same weights) and optimiser and
trains on the same batches; repeats are interleaved so load from other processes hits
all alike. Each speed-up is measured on its own against the naive step:

- naive: the paper's way - one eager full pass (``naive_elbo_terms`` below; for LVAE and
  BIVA the model's own ``model(x, 0)``), weight norm through the parametrisation, NCHW,
  and a host-side check of the loss every step.
- channels-last: the package's ``training_loss`` with ``channels_last_weights()``
  (what ``train_epochs`` does on every device).
- fused-adam: ``make_optimizer``'s Adam with its fused kernel (same update).
- deferred-check (CUDA only; on CPU reading the loss costs no sync): the divergence flag
  accumulated on the device and read every ``CHECK_EVERY`` steps, as ``train_epochs`` does.
- bf16-autocast: bfloat16 mixed precision for the forward pass, float32
  weights and bound (``training.autocast``; ``precision="bfloat16"``, opt-in).
- package (all): everything together, i.e. ``train_epochs``' default step, and
  "package (all, bf16)", the same with ``precision="bfloat16"``.
- NCHW: "package (all, bf16)" without channels-last weights (the layout oneDNN prefers can differ
  in bfloat16).
- compiled: "package (all)" and "package (all, bf16)" with the model's pass through torch.compile
  (``compile=True``: the posterior draws made before the pass); the first-run column holds the
  compilation (the inductor's cache under the system's temp folder makes a second process faster).

    python benchmarks/speed/training_speed.py                          # both archs, a few minutes on 2 CPU cores
    python benchmarks/speed/training_speed.py --archs paper-mnist --batch 64 --steps 3 --repeats 3
    python benchmarks/speed/training_speed.py --models LVAE BIVA --archs paper-mnist   # the other families
"""

from __future__ import annotations

import contextlib
import copy
import statistics
import sys
from pathlib import Path

import torch

from hvae_detect.models.architectures import PRESETS
from hvae_detect.models.config import ModelConfig
from hvae_detect.models.layers import standard_normal_log_prob
from hvae_detect.models.registry import make_model
from hvae_detect.models.vae import VAE
from hvae_detect.precision import autocast
from hvae_detect.training.batches import generator_noise
from hvae_detect.training.loop import CHECK_EVERY, make_optimizer, training_loss

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: harness.py and the groups
import harness  # noqa: E402

ARCHS = {
    "paper-mnist": ((1, 28, 28), "bernoulli"),
    "paper-cifar": ((3, 32, 32), "dlogmix"),
    "small": ((1, 28, 28), "bernoulli"),
    "small-cifar": ((3, 32, 32), "dlogmix"),
}
PRESET_OF = {"small-cifar": "small"}  # the estimator's default preset on colour images


def naive_elbo_terms(model, x, generator=None):
    """log p(x|z) and every KL_i from one eager full pass with one posterior sample."""
    d = model.q_det[0](x)
    zs, qs = [], []
    for i in range(model.n_latents):
        if i > 0:
            d = model.q_det[i](model.q_skip[i - 1](zs[-1]) + d)
        qs.append(model.q_z[i](d))
        zs.append(qs[-1].sample(generator))
    kls = [qs[-1].log_prob(zs[-1]) - standard_normal_log_prob(zs[-1])]
    g = None
    for i in reversed(range(model.n_latents)):
        h = model.p_proj[i](zs[i])
        g = model.p_det[i](h if g is None else h + g)
        if i > 0:
            kls.insert(0, qs[i - 1].log_prob(zs[i - 1]) - model.p_z[i - 1](g).log_prob(zs[i - 1]))
    return model.observation.log_prob(x, model.head(g)), kls


def naive_step(model, optimizer, x, generator):
    if isinstance(model, VAE):
        log_px, kls = naive_elbo_terms(model, x, generator)
        kl = torch.stack(kls)
    else:  # LVAE, BIVA: their one full pass (one KL row per stage)
        terms = model(x, 0, generator=generator)
        log_px, kl = terms.log_px, terms.kl
    loss = -(log_px - 0.5 * kl.clamp(min=0.1).sum(0)).mean()
    if not torch.isfinite(loss):  # a host sync on a GPU
        raise FloatingPointError("diverged")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def package_step(model, optimizer, x, generator, step, finite, check_every, precision, net=None):
    noise = None if net is None else generator_noise(model, x.shape[0], 1, generator, x.device)
    with autocast(x.device, precision):
        loss, _, _ = training_loss(model if net is None else net, x, 0.5, 0.1, generator, noise=noise)
    finite &= torch.isfinite(loss)
    if (step + 1) % check_every == 0 and not finite.item():
        raise FloatingPointError("diverged")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def make_batches(arch, n, steps, device, seed=0):
    shape, likelihood = ARCHS[arch]
    g = torch.Generator().manual_seed(seed)
    x = torch.rand((steps, n, *shape), generator=g)
    x = torch.bernoulli(x, generator=g) if likelihood == "bernoulli" else (x * 255).round() / 255
    return list(x.to(device))


def variants(device, compiled=True):
    """name -> (step, channels-last weights, fused Adam, steps between divergence checks, precision, compiled)."""
    cuda = torch.device(device).type == "cuda"
    check = CHECK_EVERY if cuda else 1
    out = {
        "naive": ("naive", False, False, 1, "float32", False),
        "channels-last": ("package", True, False, 1, "float32", False),
        "fused-adam": ("package", False, True, 1, "float32", False),
    }
    if cuda:
        out["deferred-check"] = ("package", False, False, check, "float32", False)
    out["bf16-autocast"] = ("package", False, False, 1, "bfloat16", False)
    out["package (all)"] = ("package", True, True, check, "float32", False)
    out["package (all, bf16)"] = ("package", True, True, check, "bfloat16", False)
    out["package (all, bf16, NCHW)"] = ("package", False, True, check, "bfloat16", False)
    if compiled:
        out["package (all, compiled)"] = ("package", True, True, check, "float32", True)
        out["package (all, bf16, compiled)"] = ("package", True, True, check, "bfloat16", True)
        out["package (all, bf16, NCHW, compiled)"] = ("package", False, True, check, "bfloat16", True)
    return out


def time_training(arch, n, steps, repeats, device, seed=0, family="VAE", compiled=True):
    """({variant: images/s of each repeat}, {variant: seconds of its first (warm-up) step})."""
    shape, likelihood = ARCHS[arch]
    torch.manual_seed(seed)
    preset = PRESETS[PRESET_OF.get(arch, arch)]
    base = make_model(ModelConfig(shape, {"model": family, **preset}, likelihood)).to(device).train()
    batches = make_batches(arch, n, steps + 1, device, seed)
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    runs, first = {}, {}
    # Channels-last weights are held for the whole benchmark, as train_epochs holds them for a run
    # (a compiled pass would otherwise be compiled again on every run).
    layouts = contextlib.ExitStack()
    for name, (kind, channels_last, fused, check_every, precision, compile_) in variants(device, compiled).items():
        model = copy.deepcopy(base)
        opt = make_optimizer(model, 1e-4) if fused else torch.optim.Adam(model.parameters(), lr=1e-4)
        if channels_last:
            layouts.enter_context(model.channels_last_weights())
        net = torch.compile(model, dynamic=False) if compile_ else None

        def run(xs, gen, model=model, opt=opt, kind=kind, check_every=check_every, precision=precision, net=net):
            finite = torch.ones((), dtype=torch.bool, device=device)
            for step, x in enumerate(xs):
                if kind == "naive":
                    naive_step(model, opt, x, gen)
                else:
                    package_step(model, opt, x, gen, step, finite, check_every, precision, net)
            if not finite.item():  # the deferred check's final read, once per run
                raise FloatingPointError("diverged")

        first[name] = harness.seconds(lambda: run(batches[:1], torch.Generator(device).manual_seed(0)))  # warm-up
        runs[name] = run
    ips = {name: [] for name in runs}
    for r, name in harness.alternating(runs, repeats):
        took = harness.seconds(lambda: runs[name](batches[1:], torch.Generator(device).manual_seed(r)), sync)
        ips[name].append(n * steps / took)
    layouts.close()
    return ips, first


def main(argv=None):
    ap = harness.parser(__doc__, repeats=3, device=True)
    ap.add_argument("--archs", nargs="+", default=["paper-mnist", "paper-cifar"], choices=sorted(ARCHS))
    ap.add_argument(
        "--models",
        nargs="+",
        default=["VAE"],
        choices=["VAE", "LVAE", "BIVA"],
        help="model families, each on the --archs stage configurations (default VAE)",
    )
    ap.add_argument(
        "--batch", type=int, default=None, help="images per step (default on CPU 16 for paper-cifar, 64 otherwise)"
    )
    ap.add_argument("--steps", type=int, default=4, help="steps per timed repeat")
    ap.add_argument("--no_compiled", action="store_true", help="leave out the torch.compile variants")
    args = ap.parse_args(argv)
    print("# " + harness.header(f"device {args.device}"))
    print(
        "\n| model | arch | batch | variant | first step (s) | img/s (min / med / max) | speed-up vs naive (median) |\n"
        "|---|---|---|---|---|---|---|"
    )
    for family in args.models:
        for arch in args.archs:
            cpu = torch.device(args.device).type == "cpu"
            n = args.batch or ((16 if arch == "paper-cifar" else 64) if cpu else 128)
            ips, first = time_training(
                arch, n, args.steps, args.repeats, args.device, family=family, compiled=not args.no_compiled
            )
            naive = statistics.median(ips["naive"])
            for name, v in ips.items():
                print(
                    f"| {family} | {arch} | {n} | {name} | {first[name]:.1f} | "
                    + " / ".join(f"{a:.3g}" for a in harness.spread(v))
                    + f" | {statistics.median(v) / naive:.2f}x |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
