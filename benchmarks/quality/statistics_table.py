"""Every statistic of one trained model on the reported pairs (never used to choose anything).

    python benchmarks/quality/statistics_table.py --in_dist fashion_mnist --train 10000      # every default
    python benchmarks/quality/statistics_table.py --in_dist cifar10 --train 10000 --epochs 20

Fits ``HVAEOutlierDetector()`` with its defaults (``--architecture`` and ``--epochs`` override two
of them; 10% of the training images held
out for the references of the typicality and fused statistics and for the threshold) on the first
``--train`` training images, scores ``--n`` test images of the in-distribution set and of each OOD set
with ``ood_scores``, and prints a markdown table: the AUROC (OOD positive) of every statistic of
``hvae_detect.scoring.statistics`` per OOD set, the default statistic marked, with the fit's minutes.
Reported pairs: Fashion-MNIST -> MNIST, KMNIST, notMNIST, Omniglot; CIFAR10 -> SVHN, and beside it the
choosing pairs CIFAR10 -> GTSRB and Tiny ImageNet (resize). It also times ``score_samples`` (the default
statistic) and ``ood_scores`` (every statistic) on the in-distribution test images. Data:
../shared/data/*.npz beside the repository, or $HVAE_DETECT_SHARED/data (CIFAR10 there is decoded
from JPEG, so lossy; SVHN is its test split). ``--record DIR`` also writes the run's record (one JSON
file, benchmarks/records/README.md) for the results page, benchmarks/results_page.py.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import sys
import time
from pathlib import Path

import torch

from hvae_detect import HVAEOutlierDetector
from hvae_detect.reporting.metrics import detection_metrics
from hvae_detect.scoring import statistics

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: harness.py and the groups
import harness  # noqa: E402
from harness import images, preset_name  # noqa: E402

# The reported pairs, and for CIFAR10 the choosing pairs reported beside them (GTSRB, Tiny ImageNet).
PAIRS = {
    "fashion_mnist": ("mnist", "kmnist", "notmnist", "omniglot"),
    "cifar10": ("svhn", "gtsrb", "tinyimagenet_resize"),
}


def record_path(directory, in_dist: str, started: dt.datetime) -> Path:
    """Where the record of a run goes: its start (UTC, to the minute) and its pairs name the file."""
    return harness.record_path(directory, started, f"{in_dist}_to_{'_'.join(PAIRS[in_dist])}")


def write_record(
    path,
    *,
    in_dist: str,
    table: dict,
    fit_minutes: float,
    machine: str,
    model: str,
    scoring: str,
    started: dt.datetime,
    command: str,
    default: str,
) -> Path:
    """Write this run's record for benchmarks/results_page.py (benchmarks/records/README.md); never
    replaces a file, so a record once logged stays what was measured."""
    record = {
        "in_dist": in_dist,
        "auroc": {ood: {key: float(f"{float(v):.3f}") for key, v in row.items()} for ood, row in table.items()},
        "train_minutes": round(fit_minutes, 2),
        "minutes_cover": "fit",
        "machine": machine,
        "model": model,
        "scoring": scoring,
        "default": default,
        "date": f"{started:%Y-%m-%d}",
        "command": command,
        "results_section": None,
        "notes": "Written by statistics_table.py --record; set results_section when the run is logged.",
    }
    return harness.write_record(path, record)


def main(argv=None) -> int:
    parser = harness.parser(__doc__, seed=0)
    parser.add_argument("--in_dist", choices=sorted(PAIRS), required=True)
    parser.add_argument("--train", type=int, default=20000, help="training images (the first ones)")
    parser.add_argument("--epochs", default="auto", help="an integer, or auto (the estimator's default)")
    parser.add_argument("--architecture", default="auto", help="a preset, or auto (the estimator's default)")
    parser.add_argument("--n", type=int, default=1000, help="test images per set")
    parser.add_argument(
        "--record",
        metavar="DIR",
        help="also write this run's record (JSON) into DIR, e.g. "
        "benchmarks/records, for benchmarks/results_page.py; never overwrites a file",
    )
    args = parser.parse_args(argv)
    args.epochs = args.epochs if args.epochs == "auto" else int(args.epochs)
    start = harness.now()
    command = harness.command(__file__, argv)
    if args.record and record_path(args.record, args.in_dist, start).exists():
        parser.error(f"{record_path(args.record, args.in_dist, start)} exists; a record is never overwritten")
    print(f"    {command}\n\n{harness.header()}", flush=True)
    t0 = time.time()
    det = HVAEOutlierDetector(architecture=args.architecture, epochs=args.epochs, random_state=args.seed)
    det.fit(images(args.in_dist, "train", args.train))
    fit_minutes = (time.time() - t0) / 60
    preset = preset_name(det)
    epochs = len(det.history_)
    test = images(args.in_dist, "test", args.n)
    t1 = time.time()
    det.score_samples(test)
    t2 = time.time()
    inside = det.ood_scores(test)
    speed = (
        f"score_samples {args.n / (t2 - t1):.0f} images/s, ood_scores {args.n / (time.time() - t2):.0f} "
        f"images/s; training {0.9 * args.train * epochs / (fit_minutes * 60):.0f} images/s of the fit's minutes"
    )
    default = statistics.output_key(HVAEOutlierDetector().statistic, det.k)
    table = {}
    for ood in PAIRS[args.in_dist]:
        outside = det.ood_scores(images(ood, "test", args.n))
        table[ood] = {
            key: detection_metrics(statistics.normality(key, inside[key]), statistics.normality(key, outside[key]))[
                "auroc"
            ]
            for key in inside
        }
    keys = list(inside)
    print(
        f"\n{args.in_dist} (preset {preset}, {args.train} training images, {epochs} epochs, fit {fit_minutes:.1f} min; "
        f"{args.n} test images per set; {(time.time() - t0) / 60:.1f} min in all). AUROC, OOD positive; "
        f"* = the default statistic ({default}):\n"
    )
    print("| OOD | " + " | ".join(k + (" *" if k == default else "") for k in keys) + " |")
    print("|---|" + "---|" * len(keys))
    for ood, row in table.items():
        print(f"| {ood} | " + " | ".join(f"{row[k]:.3f}" for k in keys) + " |")
    print(f"\n{speed}")
    if args.record:
        device = f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
        path = write_record(
            record_path(args.record, args.in_dist, start),
            in_dist=args.in_dist,
            table=table,
            fit_minutes=fit_minutes,
            started=start,
            command=command,
            machine=f"{os.cpu_count()} {platform.machine()} cores (shared){device}, "
            f"{torch.get_num_threads()} torch threads",
            model=f"preset {preset} (estimator defaults{'' if args.architecture == 'auto' else ' but architecture'}"
            f"), {args.train:,} training images, {epochs} epochs, seed {args.seed}",
            default=default,
            scoring=f"ood_scores with the estimator's defaults (S = {det.iw_samples}, S' = {det.iw_samples_lk}); "
            f"{args.n:,} test images per set",
        )
        print(f"\nrecord: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
