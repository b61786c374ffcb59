"""Likelihood regret's cost per image against ordinary scoring, and its AUROC on a choosing pair.

    OMP_NUM_THREADS=1 python benchmarks/quality/regret_cost.py                     # timing only
    OMP_NUM_THREADS=1 python benchmarks/quality/regret_cost.py --auroc --n 100     # and the AUROC

Timing (random weights: the cost does not depend on them): the "small" architecture on
Fashion-MNIST-shaped (1x28x28, Bernoulli) and CIFAR-shaped (3x32x32, discretized logistic mixture)
images; seconds per image of ``likelihood_regret`` at each of ``--steps`` against seconds per image of
the ordinary scoring (``engine.importance_outputs``: L, every L>k and the terms, S = 1, in full
passes as the estimator fills them), in the same process, the measurements taken in turn (so that a
change of load on shared cores touches all of them), best of ``--repeats``.

AUROC (``--auroc``): a detector fitted for a few minutes on Fashion-MNIST classes 0-4 scores held-out
test images of classes 0-4 against classes 5-9 and against inverted images (255 - x) of other
classes 0-4 test images; regret beside LLR>1 and L of the same model. The reported pairs
(Fashion-MNIST -> MNIST, CIFAR10 -> SVHN) are not read here. Data: ../shared/data/fashion_mnist.npz
beside the repository, or $HVAE_DETECT_SHARED/data.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

from hvae_detect import HVAEOutlierDetector
from hvae_detect.models.config import ModelConfig
from hvae_detect.models.registry import make_model
from hvae_detect.reporting.metrics import detection_metrics
from hvae_detect.scoring.engine import default_max_rows, importance_outputs
from hvae_detect.scoring.regret import DEFAULT_LEARNING_RATE, likelihood_regret

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: harness.py and the groups
import harness  # noqa: E402

SHAPES = {
    "Fashion-MNIST-shaped 1x28x28, Bernoulli": ((1, 28, 28), "bernoulli"),
    "CIFAR-shaped 3x32x32, dlogmix": ((3, 32, 32), "dlogmix"),
}


def _best_seconds(jobs: dict, repeats: int) -> dict:
    """{name: the least wall time of ``jobs[name]()``}, the jobs run in turn ``repeats`` times."""
    best = dict.fromkeys(jobs, float("inf"))
    for _ in range(repeats):
        for name, job in jobs.items():
            best[name] = min(best[name], harness.seconds(job))
    return best


def timing(args) -> str:
    rows = []
    for label, (shape, likelihood) in SHAPES.items():
        torch.manual_seed(args.seed)
        model = make_model(ModelConfig(shape, "small", likelihood)).eval()
        # whole passes: the engine pads every pass to its row count, as the estimator's batches fill them
        n_score = args.passes * default_max_rows(model, "cpu")
        g = torch.Generator().manual_seed(args.seed)
        x01 = torch.rand((n_score, *shape), generator=g)
        x = model.observation.evaluation_draw((x01 * 255).round() / 255, args.seed)
        xr = x[: args.n_regret]
        importance_outputs(model, x[:4])  # warm-up
        likelihood_regret(model, xr[:1], steps=2)
        jobs = {"ordinary": lambda: importance_outputs(model, x)}
        jobs.update({steps: (lambda steps=steps: likelihood_regret(model, xr, steps=steps)) for steps in args.steps})
        best = _best_seconds(jobs, args.repeats)
        ordinary = best["ordinary"] / len(x)
        row = [label, f"{1e3 * ordinary:.2f} ({n_score} images)"]
        for steps in args.steps:
            t = best[steps] / len(xr)
            row.append(f"{t:.2f} s ({t / ordinary:,.0f}x)")
        rows.append("| " + " | ".join(row) + " |")
        print(rows[-1], file=sys.stderr, flush=True)
    head = (
        "| images | ordinary L + L>k, ms/image | "
        + " | ".join(f"regret, {s} steps: s/image (x ordinary)" for s in args.steps)
        + " |\n|---|---|"
        + "---|" * len(args.steps)
        + "\n"
    )
    return (
        f"Seconds per image, best of {args.repeats}: ordinary scoring in {args.passes} full passes (S = 1), "
        f"regret on {args.n_regret} images (each optimised alone; L before and after with S = 1), "
        f"learning rate {DEFAULT_LEARNING_RATE}.\n\n" + head + "\n".join(rows) + "\n"
    )


def load_fashion_mnist() -> dict:
    with np.load(harness.data_root() / "fashion_mnist.npz") as f:
        return {k: f[k] for k in ("x_train", "y_train", "x_test", "y_test")}


def auroc(args) -> str:
    t0, rng, data = time.time(), np.random.default_rng(args.seed), load_fashion_mnist()
    inside = (0, 1, 2, 3, 4)
    train = data["x_train"][rng.permutation(np.flatnonzero(np.isin(data["y_train"], inside)))[: args.train]]
    test_in = rng.permutation(np.flatnonzero(np.isin(data["y_test"], inside)))
    test_out = rng.permutation(np.flatnonzero(~np.isin(data["y_test"], inside)))
    sets = {
        "in": data["x_test"][test_in[: args.n]],
        "classes 5-9": data["x_test"][test_out[: args.n]],
        "inverted": 255 - data["x_test"][test_in[args.n : 2 * args.n]],
    }
    epochs = args.epochs
    det = HVAEOutlierDetector(
        architecture="small",
        epochs=epochs,
        warmup_epochs=0.2 * epochs,
        free_nats_epochs=0.4 * epochs,
        random_state=args.seed,
    ).fit(train)
    fit_minutes = (time.time() - t0) / 60
    scores, regret_seconds = {}, 0.0
    for name, x in sets.items():
        ood = det.ood_scores(x)
        x01 = torch.from_numpy(x[:, None].astype(np.float32) / 255.0)
        drawn = det.model_.observation.evaluation_draw(x01, det.scoring_seed_)
        regret, took = harness.timed(
            lambda: likelihood_regret(
                det.model_, drawn, steps=args.auroc_steps, learning_rate=args.learning_rate, seed=det.scoring_seed_
            ).numpy()
        )
        regret_seconds += took
        # every column large for outliers
        scores[name] = {"regret": regret, "LLR>1": ood["LLR>1"], "-L": -ood["L"]}
        print(f"  {name}: mean regret {regret.mean():.2f} nats (min {regret.min():.2f})", flush=True)
    lines = []
    for stat in scores["in"]:
        aurocs = [
            detection_metrics(-scores["in"][stat], -scores[s][stat])["auroc"] for s in ("classes 5-9", "inverted")
        ]
        lines.append(f"| {stat} | {aurocs[0]:.3f} | {aurocs[1]:.3f} |")
    means = " / ".join(f"{scores[s]['regret'].mean():.2f}" for s in sets)
    return (
        f"Fashion-MNIST classes 0-4, {args.train} training images x {epochs} epochs (fit {fit_minutes:.1f} min), "
        f"{args.n} images per test set; regret with {args.auroc_steps} steps at learning rate "
        f"{args.learning_rate}, "
        f"S = 1 ({regret_seconds / (3 * args.n):.2f} s/image); mean regret in / 5-9 / inverted: {means} nats. "
        f"AUROC, OOD positive:\n\n| statistic | in vs classes 5-9 | in vs inverted |\n|---|---|---|\n"
        + "\n".join(lines)
        + "\n"
    )


def main(argv=None):
    parser = harness.parser(__doc__, repeats=3, seed=0)
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 50, 100])
    parser.add_argument("--passes", type=int, default=2, help="engine passes of the ordinary scoring's timing")
    parser.add_argument("--n_regret", type=int, default=3, help="images of the regret's timing")
    parser.add_argument("--auroc", action="store_true", help="also fit a detector and measure AUROCs")
    parser.add_argument("--n", type=int, default=100, help="images per test set (--auroc)")
    parser.add_argument("--train", type=int, default=4000, help="training images (--auroc)")
    parser.add_argument("--epochs", type=int, default=2, help="training epochs (--auroc)")
    parser.add_argument("--auroc_steps", type=int, default=50, help="regret's steps (--auroc)")
    parser.add_argument("--learning_rate", type=float, default=DEFAULT_LEARNING_RATE, help="regret's (--auroc)")
    parser.add_argument("--no_timing", action="store_true")
    args = parser.parse_args(argv)
    harness.set_threads(None)
    start = time.time()
    print(f"    {harness.command(__file__, argv, env=['OMP_NUM_THREADS'])}\n\n{harness.header()}\n", flush=True)
    if not args.no_timing:
        print(timing(args), flush=True)
    if args.auroc:
        print(auroc(args), flush=True)
    print(f"Total: {(time.time() - start) / 60:.1f} min; load averages at the end {harness.load()}.")


if __name__ == "__main__":
    main()
