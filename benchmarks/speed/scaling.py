"""Training throughput over 1, 2, ... processes (DistributedDataParallel): images/s and scaling efficiency.

    python benchmarks/speed/scaling.py                     # CPU: 1 and 2 processes (gloo), one thread each
    python benchmarks/speed/scaling.py --device cuda       # every GPU count 1..N of this machine (NCCL)

Each configuration starts its processes (torch.multiprocessing, as torchrun would), trains
``--steps`` steps of ``--batch_per_rank`` images per rank (weak scaling: the global batch grows
with the processes) through ``LoaderBatches`` and ``train_epochs`` (DistributedSampler,
gradient averaging), after one warm-up epoch, and reports the images/s of every rank (from the
training record) and their sum. Efficiency = images/s at W processes / (W x images/s at 1).
On a CPU every process gets one thread, so W processes need W free cores.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from hvae_detect.likelihoods import Bernoulli
from hvae_detect.models.architectures import resolve_architecture
from hvae_detect.models.config import ModelConfig
from hvae_detect.models.vae import VAE
from hvae_detect.training.batches import LoaderBatches
from hvae_detect.training.config import TrainingConfig
from hvae_detect.training.distributed import Context
from hvae_detect.training.loop import train_epochs

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: harness.py and the groups
import harness  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, port, args, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    cuda = args.device == "cuda"
    if cuda:
        torch.cuda.set_device(rank)
    else:
        torch.set_num_threads(1)
    dist.init_process_group("nccl" if cuda else "gloo", rank=rank, world_size=world)
    device = torch.device("cuda", rank) if cuda else torch.device("cpu")
    try:
        batch = args.batch_per_rank * world
        x = np.random.default_rng(0).integers(0, 256, size=(batch * args.steps, 1, 28, 28), dtype=np.uint8)
        torch.manual_seed(0)
        model = VAE(ModelConfig((1, 28, 28), resolve_architecture(args.architecture), "bernoulli")).to(device)
        data = LoaderBatches(
            x,
            batch,
            prepare=Bernoulli().keyed_draw,
            seed=0,
            ctx=Context(rank, world, rank),
            device=device,
            workers=args.workers,
        )
        config = TrainingConfig(epochs=2, batch_size=batch, learning_rate=1e-4, precision=args.precision)
        history = train_epochs(model, data, config)  # epoch 1 warms up; epoch 2 is measured
        if rank == 0:
            Path(out).write_text(json.dumps(history[-1]["images_per_s"]))
    finally:
        dist.destroy_process_group()


def main() -> None:
    p = harness.parser(__doc__)
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--architecture", default="small")
    p.add_argument("--steps", type=int, default=20, help="steps per epoch (two epochs: warm-up, measured)")
    p.add_argument("--batch_per_rank", type=int, default=64)
    p.add_argument(
        "--processes",
        type=int,
        nargs="+",
        default=None,
        help="process counts (default: 1 2 on the CPU, 1..#GPUs on CUDA)",
    )
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers per process")
    p.add_argument("--precision", default="float32", choices=("float32", "bfloat16"))
    args = p.parse_args()
    counts = args.processes or (list(range(1, torch.cuda.device_count() + 1)) if args.device == "cuda" else [1, 2])
    print(
        harness.header(
            f"architecture {args.architecture}, {args.batch_per_rank} images per rank and step, {args.steps} steps, "
            f"{args.precision}"
        )
    )
    print(f"{'processes':>9}  {'images/s':>9}  {'per rank':<24}  efficiency")
    base = None
    with tempfile.TemporaryDirectory() as tmp:
        for world in counts:
            out = Path(tmp) / f"w{world}.json"
            mp.spawn(_worker, args=(world, _free_port(), args, str(out)), nprocs=world)
            rates = json.loads(out.read_text())
            total = sum(rates)
            base = total if world == 1 else base
            eff = f"{total / (world * base):.2f}" if base else "-"
            print(f"{world:>9}  {total:>9.0f}  {str(rates):<24}  {eff}", flush=True)


if __name__ == "__main__":
    main()
