"""Peak resident memory of training over a memory-mapped image set far larger than what is read.

    python benchmarks/memory/streaming_memory.py                       # 2M 28x28 images, 1,000 steps of 128
    python benchmarks/memory/streaming_memory.py --n 200000 --steps 100   # a quick check

Writes a uint8 .npy of n random 28x28 images (1.57 GB for 2 million; 6.3 GB if it were held as
float32) into a temporary folder, then trains a small hierarchical VAE for ``--steps`` shuffled
steps through ``LoaderBatches`` (DataLoader, DistributedSampler order, dynamic binarisation per
batch) reading the file through a memory map, and reports this process's peak resident set
size (VmHWM; also the file-backed pages resident at the end, RssFile, which the kernel may drop)
and the time taken. ``--workers`` reads in worker processes: their memory is reported too.
Linux only (/proc). The file is deleted afterwards.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from hvae_detect.likelihoods import Bernoulli
from hvae_detect.models.config import ModelConfig
from hvae_detect.models.vae import VAE
from hvae_detect.training.batches import LoaderBatches
from hvae_detect.training.config import TrainingConfig
from hvae_detect.training.loop import train_epochs

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: harness.py and the groups
import harness  # noqa: E402
from harness import status_kib  # noqa: E402

# Small on purpose: what is measured is the memory of the data path, not of the model.
ARCH = {
    "config_deterministic": [
        [{"block": "ResBlockConv2d", "out_channels": 8, "kernel_size": 3, "stride": 2}],
        [{"block": "ResBlockConv2d", "out_channels": 8, "kernel_size": 3, "stride": 2}],
        [{"block": "ResBlockDense", "out_features": 16}],
    ],
    "config_stochastic": [
        {"block": "GaussianConv2d", "latent_features": 4},
        {"block": "GaussianDense", "latent_features": 8},
        {"block": "GaussianDense", "latent_features": 4},
    ],
}


def write_images(path: Path, n: int, chunk: int = 100_000) -> None:
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(n, 28, 28))
    rng = np.random.default_rng(0)
    for start in range(0, n, chunk):  # a chunk at a time: the writer stays small too
        out[start : start + chunk] = rng.integers(0, 256, size=(min(chunk, n - start), 28, 28), dtype=np.uint8)
    out.flush()
    del out


class StopAfter(Exception):
    pass


def main() -> None:
    p = harness.parser(__doc__, threads=1)
    p.add_argument("--n", type=int, default=2_000_000)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch_size", type=int, default=128)
    p.add_argument("--workers", type=int, default=0)
    args = p.parse_args()
    harness.set_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "images.npy"
        t0 = time.time()
        write_images(path, args.n)
        size_gb = path.stat().st_size / 1e9
        print(f"wrote {args.n:,} images ({size_gb:.2f} GB) in {time.time() - t0:.0f} s", flush=True)
        torch.manual_seed(0)
        model = VAE(ModelConfig((1, 28, 28), ARCH, "bernoulli"))
        batches = LoaderBatches(path, args.batch_size, prepare=Bernoulli().keyed_draw, seed=0, workers=args.workers)
        config = TrainingConfig(epochs=1, batch_size=args.batch_size, learning_rate=1e-3)
        steps = [0]
        inner = model.forward

        def counted(*a, **kw):  # stop after --steps steps (an epoch of 2M images is 15,625 steps)
            if steps[0] == args.steps:
                raise StopAfter
            steps[0] += 1
            return inner(*a, **kw)

        model.forward = counted
        harness.reset_peak_rss()  # VmHWM from here
        before = status_kib("VmRSS")
        t0 = time.time()
        try:
            train_epochs(model, batches, config)
        except StopAfter:
            pass
        seconds = time.time() - t0
        peak = status_kib("VmHWM")
        workers = [int(p) for p in os.listdir("/proc") if p.isdigit() and _parent(p) == os.getpid()]
        worker_peak = sum(status_kib("VmHWM", w) for w in workers)
        print(harness.header(f"workers {args.workers}"))
        print(
            f"{steps[0]} steps of {args.batch_size} shuffled images from {args.n:,} memory-mapped ({size_gb:.2f} GB "
            f"file; {args.n * 784 * 4 / 1e9:.1f} GB as float32): {seconds:.1f} s, "
            f"{steps[0] * args.batch_size / seconds:.0f} images/s"
        )
        print(
            f"peak RSS {peak / 2**20:.2f} GiB (before training {before / 2**20:.2f} GiB; RssFile at the end "
            f"{status_kib('RssFile') / 2**20:.2f} GiB){f'; worker processes {worker_peak / 2**20:.2f} GiB' if workers else ''}"
        )


def _parent(pid: str) -> int:
    try:
        return status_kib("PPid", pid)
    except OSError:
        return -1


if __name__ == "__main__":
    main()
