"""Scoring speed of this checkout against another revision, in alternating processes.

    python benchmarks/speed/engine_revisions.py --rev d6129e3 --archs paper-mnist --samples 1 16 --repeats 3

Each repeat runs one process per revision (order alternating); each fits the same
detector for one epoch on 64 images and times ``ood_scores`` (L and every L>k with S
importance samples for both) on the same ``--n`` images, as a user scores a set; the
table gives images/s per revision and the ratio new/old (min / median / max).
The other revision is checked out into a temporary git worktree and imported from there.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: harness.py and the groups
import harness  # noqa: E402

CHILD = r"""
import inspect, json, sys, time, numpy as np, torch
torch.set_num_threads(int(sys.argv[4]))
from hvae_detect import HVAEOutlierDetector
arch, s, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
shape = (1, 28, 28) if arch == "paper-mnist" else (3, 32, 32)
x = np.random.default_rng(0).integers(0, 256, (n, *shape), dtype=np.uint8)
params = inspect.signature(HVAEOutlierDetector).parameters
extra = {"iw_samples_lk": s} if "iw_samples_lk" in params else {}
det = HVAEOutlierDetector(architecture=arch, epochs=1, batch_size=32, random_state=0, device="cpu", iw_samples=s,
                          **extra).fit(x[:64])
det.ood_scores(x[:64])  # warm-up
t0 = time.perf_counter(); det.ood_scores(x); took = time.perf_counter() - t0
print(json.dumps({"ips": n / took}))
"""


def time_once(src: Path, arch, s, n, threads):
    env = {**os.environ, "PYTHONPATH": str(src)}
    out = subprocess.run(
        [sys.executable, "-c", CHILD, arch, str(s), str(n), str(threads)],
        env=env,
        cwd=src,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])["ips"]


def main(argv=None):
    ap = harness.parser(__doc__, threads=2, repeats=3)
    ap.add_argument("--rev", required=True, help="the revision to compare against (e.g. the commit before a change)")
    ap.add_argument("--archs", nargs="+", default=["paper-mnist"], choices=["paper-mnist", "paper-cifar"])
    ap.add_argument("--samples", nargs="+", type=int, default=[1, 16])
    ap.add_argument("--n", type=int, default=1000, help="images scored")
    args = ap.parse_args(argv)
    print(harness.header(f"{args.threads} torch threads per process"), flush=True)
    with harness.worktree(args.rev) as old:
        print(
            f"| arch | S | images | {args.rev} images/s (med) | this checkout images/s (med) | new/old min / med / max |"
        )
        print("|---|---|---|---|---|---|")
        for arch in args.archs:
            for s in args.samples:
                n = args.n
                ips = {"old": [], "new": []}
                for _, who in harness.alternating(("old", "new"), args.repeats):
                    ips[who].append(time_once(old if who == "old" else harness.REPO, arch, s, n, args.threads))
                ratios = [b / a for a, b in zip(ips["old"], ips["new"])]
                low, mid, high = harness.spread(ratios)
                print(
                    f"| {arch} | {s} | {n} | {statistics.median(ips['old']):.1f} | "
                    f"{statistics.median(ips['new']):.1f} | {low:.2f} / {mid:.2f} / {high:.2f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
