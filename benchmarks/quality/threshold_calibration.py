"""Thresholds of the statistics with a fitted reference: which calibration flags `contamination` of fresh images.

    OMP_NUM_THREADS=1 python benchmarks/quality/threshold_calibration.py --cache calibration-cache --timing 1000
    # the fit and scoring: ~6 min per data set on 2 shared cores, once; then ~7 min per data set at 50 seeds

The estimator's ``fit`` fitted each statistic's reference (``hvae_detect.scoring.reference``) on the
held-out training images and put ``offset_`` at the ``contamination`` quantile of their normality;
scored by the reference they were fitted on, those images look more normal than fresh ones.
This measures the calibrations of ``hvae_detect.scoring.calibration`` without training a model per
size: one small detector per data set (``HVAEOutlierDetector(epochs=2, random_state=0, holdout=0)`` on
2,000 training images, fitted once; ``--cache`` keeps its engine outputs) scores a pool of 3,000 other
training images and 2,000 test images. For each held-out size n (10% of 100 .. 2,000 training images)
and seed, a held-out set of n is drawn from the pool, the references are fitted on it, each method sets
a threshold from it (with each quantile rule), and the table gives the share of the fresh test images
flagged (mean ± sd over seeds, worst seed); the summary counts the cells at or above
``calibration.min_images`` that meet the targets. Yardsticks of the quantile of n images itself:
- "oracle": the reference fitted on the held-out set, the quantile of n OTHER pool images' scores
  under it (what a perfect calibration from n images can do);
- the plain statistic LLR>1 (no reference), and the sd of the share below the weibull quantile of n
  iid draws (the order statistics' Beta law): the spread that no calibration removes.
The model is one trained on 2,000 images whatever n, so the table isolates the reference and the
threshold from the model's quality (a model trained on 90 images differs too). Pool and fresh images
differ a little: the 5% quantile of 2,800 pool images flagged 0.046-0.057 of the test images.
Data: ../shared/data/{fashion_mnist,cifar10}.npz beside the repository, or $HVAE_DETECT_SHARED/data.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: harness.py and the groups
import harness  # noqa: E402

STATISTICS = ("fused", "fused_ecod", "latent_path", "latent_path_copod", "typicality", "llr")
SIZES = (10, 20, 30, 40, 60, 100, 200)


def load(name: str) -> dict:
    return {k: harness.images(name, k[2:]) for k in ("x_train", "x_test")}


def engine_outputs(name: str, args) -> dict:
    """{"pool": outputs, "fresh": outputs} of one detector trained on ``args.train`` images, from the
    cache when it holds them."""
    cache = args.cache / f"{name}_{args.train}_{args.pool}_{args.fresh}_{args.epochs}.npz" if args.cache else None
    if cache is not None and cache.exists():
        with np.load(cache) as f:
            return {
                part: {k.split("/", 1)[1]: f[k] for k in f.files if k.startswith(part + "/")}
                for part in ("pool", "fresh")
            }
    from hvae_detect import HVAEOutlierDetector
    from hvae_detect.scoring import statistics

    harness.set_threads(None)
    data, rng = load(name), np.random.default_rng(args.seed)
    order = rng.permutation(len(data["x_train"]))
    train, pool = data["x_train"][order[: args.train]], data["x_train"][order[args.train : args.train + args.pool]]
    fresh = data["x_test"][rng.permutation(len(data["x_test"]))[: args.fresh]]
    start = time.perf_counter()
    det = HVAEOutlierDetector(epochs=args.epochs, random_state=0, holdout=0).fit(train)
    needed = statistics.outputs_needed(statistics.keys(range(1, det.n_latents_)))
    out = {"pool": det._engine_outputs(pool, needed), "fresh": det._engine_outputs(fresh, needed)}
    print(f"{name}: fit and scored in {(time.perf_counter() - start) / 60:.1f} min", file=sys.stderr, flush=True)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, **{f"{part}/{k}": v for part, o in out.items() for k, v in o.items()})
    return out


METHODS = ("in-sample", "split", "folds5", "folds10", "loo", "analytic", "oracle")
RULES = ("linear", "weibull")


def shares(stat, n: int, seed: int, pool: dict, fresh: dict, contamination: float, methods) -> dict:
    """{(method, quantile rule): share of the fresh images flagged} for thresholds set from n pool images."""
    from hvae_detect.scoring import calibration, fitting

    order = np.random.default_rng([seed, n]).permutation(calibration.n_rows(pool))
    held = {k: v[order[:n]] for k, v in pool.items()}
    fitted = {} if stat.reference is None else {stat.name: fitting.fit_reference(stat, held)}
    out = {}
    for method in methods if stat.reference is not None else ("plain",):
        if method == "oracle":  # the reference of the held-out set, the quantile of n OTHER images under it
            references = fitted
            scores = stat.normality(stat.value({k: v[order[n : 2 * n]] for k, v in pool.items()}, 1, fitted))
        else:
            folds = int(method[5:]) if method.startswith("folds") else 10
            _, info = calibration.threshold(
                stat,
                held,
                1,
                contamination,
                seed,
                fitted,
                folds=folds,
                method="folds" if method.startswith("folds") else "in-sample" if method == "plain" else method,
            )
            references, scores = info["references"], info["scores"]
        normality = stat.normality(stat.value(fresh, 1, references))
        for rule in RULES:
            out[method, rule] = float(np.mean(normality < calibration.quantile(scores, contamination, rule)))
    return out


def measure(out: dict, args) -> dict:
    """{(statistic name, n): [shares of one seed, ...]}."""
    from hvae_detect.scoring import statistics

    return {
        (name, n): [
            shares(statistics.get(name), n, seed, out["pool"], out["fresh"], args.contamination, args.methods)
            for seed in range(args.seeds)
        ]
        for name in args.statistics
        for n in args.sizes
    }


def quantile_sd(n: int, p: float) -> float:
    """The sd over draws of the share of a distribution below the weibull p-quantile of n iid draws from it
    (a Beta of the order statistics' positions): the spread a threshold of n images has with no reference."""
    h = min(max(p * (n + 1), 1.0), float(n))
    lo, hi = int(np.floor(h)), int(np.ceil(h))
    mean = lambda j: j / (n + 1)  # noqa: E731
    second = lambda j: j * (j + 1) / ((n + 1) * (n + 2))  # noqa: E731
    w = h - lo  # E and E[X^2] of (1 - w) U_(lo) + w U_(hi), U_(lo) <= U_(hi): exact for w in {0, 1}, close between
    m = (1 - w) * mean(lo) + w * mean(hi)
    return float(np.sqrt(max((1 - w) * second(lo) + w * second(hi) - m * m, 0.0)))


def table(name: str, out: dict, runs: dict, args) -> str:
    from hvae_detect.scoring import calibration, statistics

    lines = [
        f"### {name}: share of {len(out['fresh']['L'])} fresh test images flagged at contamination="
        f"{args.contamination} (mean ± sd over {args.seeds} seeds, worst seed in brackets)\n",
        "| statistic (d) | method / quantile | " + " | ".join(f"n={n} ({10 * n} train)" for n in args.sizes) + " |",
        "|---|---|" + "---|" * len(args.sizes),
        "| (no reference, iid) | sd of a weibull quantile of n | "
        + " | ".join(f"± {quantile_sd(n, args.contamination):.3f}" for n in args.sizes)
        + " |",
    ]
    for stat_name in args.statistics:
        stat = statistics.get(stat_name)
        d = calibration.dimension(stat, out["pool"])
        for row in runs[stat_name, args.sizes[0]][0]:
            cells = []
            for n in args.sizes:
                v = np.array([run[row] for run in runs[stat_name, n]])
                cells.append(f"{v.mean():.3f} ± {v.std():.3f} ({v.max():.2f})")
            lines.append(
                f"| {statistics.output_key(stat.name, 1)} ({d}) | {row[0]} / {row[1]} | " + " | ".join(cells) + " |"
            )
    return "\n".join(lines) + "\n"


def summary(results: dict, args) -> str:
    """Per method and quantile rule, over data sets, statistics with a reference and held-out sizes at or
    above ``calibration.min_images``: how many (data set, statistic, n) cells meet the targets."""
    from hvae_detect.scoring import calibration, statistics

    c, rows = args.contamination, {}
    for out, runs in results.values():
        for (stat_name, n), seeds in runs.items():
            stat = statistics.get(stat_name)
            if n < calibration.min_images(calibration.dimension(stat, out["pool"]) if stat.reference else 0, c):
                continue
            for row in seeds[0]:
                v = np.array([seed[row] for seed in seeds])
                above = float(np.mean(v > 0.12))
                rows.setdefault(row, []).append((v.mean(), above, 1 - (1 - above) ** 5))
    lines = [
        f"### Summary: cells (data set x statistic x n) at or above the bound, contamination={c}\n",
        "| method / quantile | cells | mean in [0.035, 0.07] | max abs(mean - c) | seeds > 0.12 | "
        "P(worst of 5 seeds > 0.12) |",
        "|---|---|---|---|---|---|",
    ]
    for (method, rule), cells in rows.items():
        means, above, five = (np.array(x) for x in zip(*cells))
        lines.append(
            f"| {method} / {rule} | {len(cells)} | {np.sum((means >= 0.035) & (means <= 0.07))} | "
            f"{np.max(np.abs(means - c)):.3f} | {above.mean():.1%} | {five.mean():.1%} |"
        )
    return "\n".join(lines) + "\n"


def timing(out: dict, n: int) -> str:
    """Seconds per calibration of n held-out images, per method, for each statistic with a reference."""
    from hvae_detect.scoring import calibration, statistics

    held = {k: v[:n] for k, v in out["pool"].items()}
    parts = []
    for stat in statistics.with_references():
        for method in ("folds", "loo", "analytic"):
            took = harness.seconds(lambda: calibration.threshold(stat, held, 1, 0.05, 0, method=method))
            parts.append(f"{stat.key} {method} {took:.2f}")
    return f"Seconds per calibration of {n} held-out images: " + ", ".join(parts) + "\n"


def main(argv=None):
    parser = harness.parser(__doc__)
    parser.add_argument("--data", nargs="+", choices=("fashion_mnist", "cifar10"), default=["fashion_mnist", "cifar10"])
    parser.add_argument("--train", type=int, default=2000, help="training images of the one detector per data set")
    parser.add_argument("--pool", type=int, default=3000, help="other training images, the held-out sets' pool")
    parser.add_argument("--fresh", type=int, default=2000, help="test images, the fresh normal images")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), help="held-out sizes n")
    parser.add_argument("--seeds", type=int, default=50)
    parser.add_argument("--statistics", nargs="+", default=list(STATISTICS))
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--contamination", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0, help="the draw of training, pool and fresh images")
    parser.add_argument("--cache", type=Path, help="a folder for the engine outputs: reruns skip the fit")
    parser.add_argument("--timing", type=int, default=0, help="also time the calibrations of this many images")
    parser.add_argument("--json", type=Path, help="also write every seed's shares here")
    args = parser.parse_args(argv)
    start = time.time()
    print(
        f"    {harness.command(__file__, argv, env=['OMP_NUM_THREADS'])}\n\n{harness.header(f'numpy {np.__version__}')}\n",
        flush=True,
    )
    results = {}
    for name in args.data:
        out = engine_outputs(name, args)
        results[name] = out, measure(out, args)
        print(table(name, out, results[name][1], args), flush=True)
        if args.timing:
            print(timing(out, args.timing), flush=True)
    print(summary(results, args))
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    name: {
                        f"{s} {n}": [{" / ".join(k): v for k, v in seed.items()} for seed in seeds]
                        for (s, n), seeds in runs.items()
                    }
                    for name, (_, runs) in results.items()
                }
            )
        )
    print(f"Total: {(time.time() - start) / 60:.1f} min.")


if __name__ == "__main__":
    main()
