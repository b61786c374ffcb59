"""The fit budget of ``HVAEOutlierDetector()`` with every default, on 10,000 images of each kind.

    python benchmarks/speed/default_budget.py                 # CIFAR10 and Fashion-MNIST, 10,000 images each

Fits ``HVAEOutlierDetector(random_state=0)`` (architecture, epochs, learning rate and schedules all
"auto") on the first ``--train`` training images of each data set and prints the fit's minutes, the
model and epochs "auto" chose, training images per second (of the fit's whole time), and the
images per second of ``score_samples`` (the default statistic) and ``ood_scores`` (every statistic) on
``--n`` test images. Run it alone on the machine: the budget is 10 minutes on 2 CPU cores.
Data: ../shared/data beside the repository, or $HVAE_DETECT_SHARED/data.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import torch  # noqa: F401  (before hvae_detect: the fit runs with torch's own OpenMP waiting, as measured)

from hvae_detect import HVAEOutlierDetector

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: harness.py and the groups
import harness  # noqa: E402
from harness import images, preset_name  # noqa: E402


def main(argv=None) -> int:
    parser = harness.parser(__doc__)
    parser.add_argument("--data", nargs="+", default=["cifar10", "fashion_mnist"])
    parser.add_argument("--train", type=int, default=10_000)
    parser.add_argument("--n", type=int, default=1000)
    args = parser.parse_args(argv)
    policy = os.environ.get("OMP_WAIT_POLICY") or "unset (torch imported first: its default)"
    print(f"    {harness.command(__file__, argv)}\n\n{harness.header(f'OMP_WAIT_POLICY={policy}')}\n")
    print("| data | model | epochs | fit (min) | training images/s | score_samples images/s | ood_scores images/s |")
    print("|---|---|---|---|---|---|---|")
    for name in args.data:
        train, test = images(name, "train", args.train), images(name, "test", args.n)
        t0 = time.perf_counter()
        det = HVAEOutlierDetector(random_state=0).fit(train)
        fit_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        det.score_samples(test)
        t2 = time.perf_counter()
        det.ood_scores(test)
        t3 = time.perf_counter()
        epochs, n_fit = len(det.history_), round(args.train * (1 - det.holdout))
        print(
            f"| {name} | {preset_name(det)} | {epochs} | {fit_s / 60:.1f} | "
            f"{n_fit * epochs / fit_s:.0f} | {args.n / (t2 - t1):.0f} | {args.n / (t3 - t2):.0f} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
