"""Runs across processes with torch.distributed, as ``torchrun`` launches them.

``torchrun --nproc_per_node N -m hvae_detect train ...`` starts N processes with RANK,
WORLD_SIZE and LOCAL_RANK set; :func:`session` joins them into one process group (NCCL on
CUDA, gloo on the CPU) and hands each process its :class:`Context` and device (on CUDA,
GPU ``LOCAL_RANK``). Without torchrun it returns the one-process context and no collective
ever runs, so a plain run behaves as it always did.

Every collective has a timeout (``$HVAE_DETECT_DIST_TIMEOUT`` seconds, default 1800): a rank
that dies makes the others fail with :class:`RankLost`, never hang. torchrun's agent also stops
the remaining ranks when one exits with an error, and names the first one that failed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import functools
import os
import warnings

import torch
import torch.distributed as dist

from hvae_detect.devices import resolve_device

TIMEOUT_ENV = "HVAE_DETECT_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 1800


@dataclasses.dataclass(frozen=True)
class Context:
    """Who this process is in a run: rank ``rank`` of ``world_size`` (1 and 0 without torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0 writes every file of a run (checkpoints, logs, scores) and draws the progress bars."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """More than one process: only then do collectives run (a group of one needs none)."""
        return self.world_size > 1


SINGLE = Context()


class RankLost(ConnectionError):
    """Another rank of a distributed run stopped (killed, crashed or timed out): this one cannot go on."""


def launched_by_torchrun() -> bool:
    return all(name in os.environ for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"))


def timeout() -> datetime.timedelta:
    text = os.environ.get(TIMEOUT_ENV, str(DEFAULT_TIMEOUT_S))
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise ValueError(f"${TIMEOUT_ENV} must be a positive number of seconds, got {text!r}")
    return datetime.timedelta(seconds=seconds)


def _env_int(name: str) -> int:
    try:
        return int(os.environ[name])
    except (KeyError, ValueError):
        raise ValueError(f"${name} must be an integer (torchrun sets it), got {os.environ.get(name)!r}") from None


@contextlib.contextmanager
def session(device="auto"):
    """``(Context, torch.device)`` of this process; joins (and finally leaves) the process group
    when launched by torchrun. A group that exists already (set up by the caller) is used as is."""
    dev = resolve_device(device)
    if not launched_by_torchrun() and not dist.is_initialized():
        yield SINGLE, dev
        return
    own = not dist.is_initialized()
    rank, world = (_env_int("RANK"), _env_int("WORLD_SIZE")) if own else (dist.get_rank(), dist.get_world_size())
    local = int(os.environ.get("LOCAL_RANK", rank))
    if dev.type == "cuda":
        if dev.index is None:
            if local >= torch.cuda.device_count():
                raise ValueError(
                    f"rank {rank} has LOCAL_RANK {local} but this machine has "
                    f"{torch.cuda.device_count()} GPU(s): start at most that many processes per node"
                )
            dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    if own:
        dist.init_process_group(
            "nccl" if dev.type == "cuda" else "gloo", timeout=timeout(), rank=rank, world_size=world
        )
    try:
        yield Context(rank, world, local), dev
    finally:
        if own and dist.is_initialized():
            dist.destroy_process_group()


@contextlib.contextmanager
def collectives(ctx: Context, what: str):
    """Turn a failed collective into :class:`RankLost`, saying what was running and what to do."""
    if not ctx.distributed:
        yield
        return
    try:
        yield
    except (RuntimeError, dist.DistError) as e:
        text = str(e)
        lowered = text.lower()
        if isinstance(e, dist.DistError) or any(
            word in lowered for word in ("gloo", "nccl", "connection", "timed out", "timeout", "peer")
        ):
            raise RankLost(
                f"rank {ctx.rank} of {ctx.world_size} lost another rank during {what} "
                f"({type(e).__name__}: {text.splitlines()[0][:200] if text else ''}); the run stopped. "
                "Files already written are complete; rerun the same command (train: with --resume "
                "RUN_DIR) to continue"
            ) from None
        raise


_CURRENT: list = []


def in_session(command):
    """Run ``command(..., device=...)`` inside :func:`session`; the command finds its context and
    device with :func:`current` (so a command reads the same with and without torchrun)."""

    @functools.wraps(command)
    def wrapper(*args, device="auto", **kwargs):
        with session(device) as (ctx, dev):
            _CURRENT.append((ctx, dev))
            try:
                return command(*args, device=dev, **kwargs)
            finally:
                _CURRENT.pop()

    return wrapper


def current() -> Context:
    """The context of the innermost :func:`in_session` command (one process when there is none)."""
    return _CURRENT[-1][0] if _CURRENT else SINGLE


def broadcast_object(obj, ctx: Context):
    """``obj`` as rank 0 has it, on every rank."""
    if not ctx.distributed:
        return obj
    box = [obj]
    with collectives(ctx, "a broadcast from rank 0"):
        dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(obj, ctx: Context) -> list:
    """Every rank's ``obj``, in rank order, on every rank."""
    if not ctx.distributed:
        return [obj]
    out = [None] * ctx.world_size
    with collectives(ctx, "a gather"):
        dist.all_gather_object(out, obj)
    return out


def gather_to_main(obj, ctx: Context) -> list | None:
    """Every rank's ``obj`` in rank order on rank 0 (None on the other ranks)."""
    if not ctx.distributed:
        return [obj]
    out = [None] * ctx.world_size if ctx.is_main else None
    with collectives(ctx, "the gather on rank 0"):
        dist.gather_object(obj, out, dst=0)
    return out


def all_reduce_sum(tensor: torch.Tensor, ctx: Context) -> torch.Tensor:
    """Sum ``tensor`` over the ranks, in place; returns it."""
    if ctx.distributed:
        with collectives(ctx, "a sum over ranks"):
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def barrier(ctx: Context, what: str) -> None:
    if ctx.distributed:
        with collectives(ctx, what):
            dist.barrier()


@torch.no_grad()
def broadcast_module(module: torch.nn.Module, ctx: Context) -> None:
    """Every parameter and buffer of ``module`` set to rank 0's: all ranks start from identical weights."""
    if not ctx.distributed:
        return
    with collectives(ctx, "the broadcast of rank 0's weights"):
        for tensor in [*module.parameters(), *module.buffers()]:
            dist.broadcast(tensor.data, src=0)


def data_parallel(module: torch.nn.Module, ctx: Context, device) -> torch.nn.Module:
    """``module`` in DistributedDataParallel (gradients averaged over the ranks), or itself on one process."""
    if not ctx.distributed:
        return module
    from torch.nn.parallel import DistributedDataParallel

    device = torch.device(device)
    # Channels-last kernels give 1x1 weight-norm scales other gradient strides than DDP's buckets:
    # a copy per step, harmless for these small tensors, and a warning at every backward without this.
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    with collectives(ctx, "DistributedDataParallel's start (it broadcasts rank 0's weights)"):
        return DistributedDataParallel(module, device_ids=[device] if device.type == "cuda" else None)
