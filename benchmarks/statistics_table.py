"""Every statistic of one trained model on the reported pairs (never used to choose anything).

    python benchmarks/statistics_table.py --in_dist fashion_mnist --train 20000 --epochs 3
    python benchmarks/statistics_table.py --in_dist cifar10 --train 10000 --epochs 3

Fits ``HVAEOutlierDetector(architecture="small")`` with its defaults (10% of the training images held
out for the references of the typicality and fused statistics and for the threshold) on the first
``--train`` training images, scores ``--n`` test images of the in-distribution set and of each OOD set
with ``ood_scores``, and prints a markdown table: the AUROC (OOD positive) of every statistic of
``hvae_detect.scoring.statistics`` per OOD set, the default statistic marked, with the fit's minutes.
Reported pairs: Fashion-MNIST -> MNIST, KMNIST, notMNIST, Omniglot; CIFAR10 -> SVHN. Data:
../shared/data/*.npz beside the repository, or $HVAE_DETECT_SHARED/data (CIFAR10 there is decoded
from JPEG, so lossy; SVHN is its test split).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from hvae_detect import HVAEOutlierDetector
from hvae_detect.reporting.metrics import detection_metrics
from hvae_detect.scoring import statistics

REPO = Path(__file__).resolve().parents[1]
PAIRS = {"fashion_mnist": ("mnist", "kmnist", "notmnist", "omniglot"), "cifar10": ("svhn",)}


def images(name: str, split: str, n: int) -> np.ndarray:
    """The first n images of a data set's split ("train" or "test"), channels first."""
    root = Path(os.environ.get("HVAE_DETECT_SHARED", REPO.parent / "shared")) / "data"
    with np.load(root / f"{name}.npz") as f:
        x = f[f"x_{split}"][:n]
    return x[:, None] if x.ndim == 3 else np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--in_dist", choices=sorted(PAIRS), required=True)
    parser.add_argument("--train", type=int, default=20000, help="training images (the first ones)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--n", type=int, default=1000, help="test images per set")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    start = dt.datetime.now(dt.timezone.utc)
    print(f"    python benchmarks/statistics_table.py {' '.join(sys.argv[1:] if argv is None else argv)}\n\n"
          f"{platform.machine()}, {os.cpu_count()} CPU cores (shared), {torch.get_num_threads()} torch threads, "
          f"torch {torch.__version__}; started {start:%Y-%m-%d %H:%M} UTC", flush=True)
    t0 = time.time()
    det = HVAEOutlierDetector(architecture="small", epochs=args.epochs, random_state=args.seed)
    det.fit(images(args.in_dist, "train", args.train))
    fit_minutes = (time.time() - t0) / 60
    inside = det.ood_scores(images(args.in_dist, "test", args.n))
    default = statistics.get(HVAEOutlierDetector().statistic).key_for(det.k)
    table = {}
    for ood in PAIRS[args.in_dist]:
        outside = det.ood_scores(images(ood, "test", args.n))
        table[ood] = {key: detection_metrics(statistics.normality(key, inside[key]),
                                             statistics.normality(key, outside[key]))["auroc"] for key in inside}
    keys = list(inside)
    print(f"\n{args.in_dist} ({args.train} training images, {args.epochs} epochs, fit {fit_minutes:.1f} min; "
          f"{args.n} test images per set; {(time.time() - t0) / 60:.1f} min in all). AUROC, OOD positive; "
          f"* = the default statistic ({default}):\n")
    print("| OOD | " + " | ".join(k + (" *" if k == default else "") for k in keys) + " |")
    print("|---|" + "---|" * len(keys))
    for ood, row in table.items():
        print(f"| {ood} | " + " | ".join(f"{row[k]:.3f}" for k in keys) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
