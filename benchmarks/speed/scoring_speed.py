"""Scoring speed: the package's engine against the paper's straightforward way.

Both paths score the same model (same weights) on the same batch and compute L with
S importance samples and L>k (hence LLR>k = L - L>k) for every k; timings are
interleaved repeat by repeat so that load from other processes hits both alike.

- naive: as the paper's scoring script works - one full forward pass of the whole
  model per importance sample and per statistic, weight norm recomputed in every
  pass, NCHW eager PyTorch (tests/reference_scoring.py: ``naive_ood_scores`` for the VAE,
  ``naive_family_scores``, whole ``model(x, k)`` passes, for LVAE and BIVA).
- engine: ``hvae_detect.scoring.engine.importance_bounds`` - x-only layers once per image, each
  prefix once, weights once per call, samples batched into passes of a row budget.

    python benchmarks/speed/scoring_speed.py                       # default grid (minutes on 2 CPU cores)
    python benchmarks/speed/scoring_speed.py --archs paper-mnist --samples 1 16 --repeats 2
    python benchmarks/speed/scoring_speed.py --models VAE LVAE BIVA --archs paper-mnist --samples 1 16
    python benchmarks/speed/scoring_speed.py --memory              # peak memory, S=1 vs S=1000 at batch 500
    python benchmarks/speed/scoring_speed.py --profile             # where the engine's time goes

Prints a markdown table (images per second; min / median / max over repeats).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from hvae_detect.models.architectures import PRESETS
from hvae_detect.models.config import ModelConfig
from hvae_detect.models.registry import make_model
from hvae_detect.models.vae import VAE
from hvae_detect.scoring.engine import default_max_rows, importance_bounds

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: harness.py and the groups
import harness  # noqa: E402

sys.path.insert(0, str(harness.REPO / "tests"))
from peak_memory import peak_memory_mib  # noqa: E402  (the tests' measurement)
from reference_scoring import naive_family_scores, naive_ood_scores  # noqa: E402  (the tests' reference paths)

ARCHS = {"paper-mnist": ((1, 28, 28), "bernoulli"), "paper-cifar": ((3, 32, 32), "dlogmix")}


# ---- timing ----------------------------------------------------------------------------
def make_batch(arch, n, device, seed=0):
    shape, likelihood = ARCHS[arch]
    g = torch.Generator().manual_seed(seed)
    if likelihood == "bernoulli":
        x = torch.bernoulli(torch.rand((n, *shape), generator=g))
    else:
        x = torch.randint(0, 256, (n, *shape), generator=g).float() / 255
    return x.to(device)


def default_batch(arch, s):
    """Images per batch so that one naive repeat takes seconds, not minutes, on 2 CPU cores."""
    rows = 512 if arch == "paper-mnist" else 48
    return max(2, min(128, rows // s))


def time_scoring(arch, s, n, repeats, device, max_rows, seed=0, family="VAE"):
    shape, likelihood = ARCHS[arch]
    torch.manual_seed(seed)
    model = make_model(ModelConfig(shape, {"model": family, **PRESETS[arch]}, likelihood)).to(device).eval()
    naive_scores = naive_family_scores if family != "VAE" else naive_ood_scores
    x = make_batch(arch, n, device, seed)
    ks = range(1, model.n_latents)
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    runs = {
        "naive": lambda seed: naive_scores(model, x, ks, s, seed),
        "engine": lambda seed: importance_bounds(model, x, ks, s, seed=seed, max_rows=max_rows),
    }
    # Warm-up with one sample (oneDNN primitive caches, CUDA context).
    naive_scores(model, x, ks, 1)
    importance_bounds(model, x, ks, 1, max_rows=max_rows)
    took = {name: [] for name in runs}
    for r, name in harness.alternating(runs, repeats):  # alternate who goes first
        took[name].append(harness.seconds(lambda: runs[name](100 + r), sync))
    ips = {name: [n / t for t in took[name]] for name in runs}
    ratios = [a / b for a, b in zip(took["naive"], took["engine"])]
    return ips, ratios


# ---- memory ----------------------------------------------------------------------------
def memory_report(device, n=500, samples=(1, 1000), max_passes=4):
    torch.manual_seed(0)
    model = VAE(ModelConfig((1, 28, 28), "paper-mnist", "bernoulli")).to(device).eval()
    x = make_batch("paper-mnist", n, device)
    rows = default_max_rows(model, device)
    print(f"\npeak memory above resident, paper-mnist, batch {n}, L + L>1 + L>2, row budget {rows} (default)")
    print("| S | peak (MiB) | passes run |\n|---|---|---|")
    peaks = {}
    for s in samples:
        peaks[s], passes = peak_memory_mib(model, x, s, max_passes if s > 1 else None)
        print(f"| {s} | {peaks[s]:.0f} | {passes}{'' if s == 1 else f' (stopped; of {3 * s})'} |")
    s_big = max(samples)
    print(f"ratio S={s_big} / S=1: {peaks[s_big] / peaks[1]:.2f}")
    # The same call without a row budget (all samples of a chunk at once) shows what the bound buys.
    big, _ = peak_memory_mib(model, x, 4, max_passes=1, max_rows=4 * n)
    print(f"for contrast, S=4 in one pass of {4 * n} rows (no row budget): {big:.0f} MiB")


# ---- profile ---------------------------------------------------------------------------
def profile_engine(device, n=16, s=16):
    from torch.profiler import ProfilerActivity, profile

    torch.manual_seed(0)
    model = VAE(ModelConfig((1, 28, 28), "paper-mnist", "bernoulli")).to(device).eval()
    x = make_batch("paper-mnist", n, device)
    importance_bounds(model, x, None, 2)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        importance_bounds(model, x, None, s, seed=0)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
    print(prof.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total", row_limit=12))


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
        "--samples",
        nargs="+",
        type=int,
        default=None,
        help="importance samples S (default 1 16 256 on mnist, 1 16 on cifar; 1000 too on CUDA)",
    )
    ap.add_argument("--batch", type=int, default=None, help="images per batch (default: shrinks as S grows)")
    ap.add_argument("--max-rows", type=int, default=None, help="engine's row budget (default: the model's)")
    ap.add_argument("--memory", action="store_true", help="measure peak memory, S=1 vs S=1000, batch 500")
    ap.add_argument("--profile", action="store_true", help="profile the engine (paper-mnist, S=16)")
    args = ap.parse_args(argv)

    print("# " + harness.header(f"device {args.device}"))
    if args.memory:
        memory_report(args.device)
        return
    if args.profile:
        profile_engine(args.device)
        return
    print(
        "\n| model | arch | S | batch | naive img/s (min / med / max) | engine img/s (min / med / max) "
        "| speed-up (min / med / max) |\n|---|---|---|---|---|---|---|"
    )
    for family in args.models:
        for arch in args.archs:
            samples = args.samples or ([1, 16, 256] if arch == "paper-mnist" else [1, 16])
            if args.samples is None and args.device != "cpu":
                samples = [1, 16, 256, 1000]
            for s in samples:
                n = args.batch or default_batch(arch, s)
                ips, ratios = time_scoring(arch, s, n, args.repeats, args.device, args.max_rows, family=family)
                fmt = lambda v: " / ".join(f"{a:.3g}" for a in harness.spread(v))  # noqa: E731
                print(
                    f"| {family} | {arch} | {s} | {n} | {fmt(ips['naive'])} | {fmt(ips['engine'])} | "
                    f"{' / '.join(f'{a:.2f}x' for a in harness.spread(ratios))} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
