"""Training: the ELBO with free nats and a KL warm-up, in one plain epoch loop.

``epoch_records`` is the loop that both the estimator (through ``train_epochs``) and ``hvae-detect
train`` run, with the settings of a ``hvae_detect.training.config.TrainingConfig``: it yields each
epoch's record as the epoch ends, so the caller's steps between epochs (validate, checkpoint, stop)
read in the caller, in order.

Schedules follow the paper's code: free nats stay at ``free_nats`` for the first half of
``free_nats_epochs`` and then fall linearly to 0; the KL weight rises linearly
from 0 to 1 over ``warmup_epochs``. Both are evaluated at fractional epochs so
they move every step.
Free nats come in two modes (``TrainingConfig.free_nats_mode``, described there).
``TrainingConfig.compile`` runs the model's pass through torch.compile (the loss around it stays eager:
its schedules change every step); measured in benchmarks/results/2026-12-06-bfloat16-training-cpu.md,
opt-in since compiling costs about a minute on two cores. torch keeps a few graphs per function and
process: after a few compiled fits in one process, later ones train eagerly (torch warns). Scoring stays
eager: a compiled pass differs from the eager one in the last bits, and which one runs would depend on
the process, not on the image.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator

import torch
from tqdm.auto import tqdm

from hvae_detect.precision import autocast, resolve_precision
from hvae_detect.training.batches import LoaderBatches, TensorBatches, generator_noise, posterior_noise
from hvae_detect.training.config import FREE_NATS_MODES, TrainingConfig
from hvae_detect.training.distributed import (
    all_reduce_sum,
    broadcast_module,
    collectives,
    data_parallel,
    gather_objects,
)

CHECK_EVERY = 32  # steps between divergence checks on a GPU


def free_nats_at(epoch: float, free_nats: float, free_nats_epochs: float) -> float:
    if free_nats_epochs <= 0:
        return 0.0
    half = free_nats_epochs / 2
    if epoch < half:
        return float(free_nats)
    return float(free_nats) * max(0.0, 1.0 - (epoch - half) / half)


def kl_weight_at(epoch: float, warmup_epochs: float) -> float:
    if warmup_epochs <= 0:
        return 1.0
    return min(1.0, epoch / warmup_epochs)


def free_nats_kl(kl_elements, free_nats: float) -> torch.Tensor:
    """The paper's ``FreeNats(free_nats, shared_dims=1)`` summed over latents: (R,) per image.

    ``kl_elements``: one per-image KL tensor per latent, (R, C, H, W) or (R, C). Each element is
    floored at free_nats / C and the result summed over everything but the batch dimension.
    """
    total = 0
    for kl in kl_elements:
        floored = kl if not free_nats else kl.clamp(min=free_nats / kl.shape[1])
        total = total + floored.flatten(1).sum(1)
    return total


def elbo_loss(log_px, kl_penalty, kl_weight: float) -> torch.Tensor:
    """Per-image loss -log p(x|z) + beta * (floored) KL, (R,)."""
    return -log_px + kl_weight * kl_penalty


def training_loss(
    model,
    x,
    kl_weight: float,
    free_nats: float,
    generator=None,
    free_nats_mode: str = "layer",
    n_samples: int = 1,
    importance_weighted: bool = False,
    noise=None,
):
    """Mean over the batch of -log p(x|z) + beta * KL with free nats (``free_nats_mode``, see the module
    docstring); also the ELBO (N,) and the mean KL per latent (L,).

    ``n_samples`` posterior samples per image: their losses are averaged, or with
    ``importance_weighted`` the loss is -logmeanexp_s(log p(x|z_s) - beta * KL_s) (the
    importance-weighted bound with the same free nats and KL weight). ``noise`` optionally gives the
    posterior draws (one (n_samples * N, *latent shape) tensor per latent) instead of ``generator``.
    """
    if free_nats_mode not in FREE_NATS_MODES:
        raise ValueError(f"free_nats_mode must be one of {FREE_NATS_MODES}, got {free_nats_mode!r}")
    elements = free_nats_mode == "element"
    terms = model(x, 0, n_samples=n_samples, noise=noise, generator=generator, kl_elements=elements)
    penalty = free_nats_kl(terms.kl_elements, free_nats) if elements else terms.kl.clamp(min=free_nats).sum(0)
    per_row = elbo_loss(terms.log_px, penalty, kl_weight)
    bound, kl = terms.bound.detach(), terms.kl.detach()
    if n_samples > 1:
        n = x.shape[0]
        per_row, bound = per_row.view(n_samples, n), bound.view(n_samples, n)
        if importance_weighted:
            per_image = -(torch.logsumexp(-per_row, 0) - math.log(n_samples))
            bound = torch.logsumexp(bound, 0) - math.log(n_samples)
        else:
            per_image, bound = per_row.mean(0), bound.mean(0)
    else:
        per_image = per_row
    return per_image.mean(), bound, kl.mean(1)


def make_optimizer(model, learning_rate: float) -> torch.optim.Optimizer:
    """Adam with its fused kernel: the same update as the for-loop version in one pass per
    parameter instead of about ten small ops each (which dominate a CPU step's overhead)."""
    try:
        return torch.optim.Adam(model.parameters(), lr=learning_rate, fused=True)
    except (RuntimeError, ValueError):  # a device or dtype without the fused kernel
        return torch.optim.Adam(model.parameters(), lr=learning_rate)


@torch.no_grad()
def evaluate_elbo(model, x, batch_size=500, seed=0):
    """Per-image ELBO, log p(x|z) and KL per latent ((n_latents, N)) of held-out images ``x`` with one
    posterior sample each (drawn from a generator seeded ``seed``): a run's validation."""
    model.eval()
    gen = torch.Generator(device=x.device).manual_seed(seed)
    terms = [model(x[i : i + batch_size], 0, generator=gen) for i in range(0, x.shape[0], batch_size)]
    return tuple(torch.cat([getattr(t, name) for t in terms], dim=-1) for name in ("bound", "log_px", "kl"))


class TrainingDiverged(FloatingPointError):
    """The loss became NaN or infinite: the model is not usable."""


def train_epochs(model, data, config: TrainingConfig, **options) -> list[dict]:
    """Train ``model`` on ``data`` from ``start_epoch`` to ``end_epoch`` (default ``config.epochs``);
    schedules run over ``config.epochs``. Returns one record per epoch: ``epoch_records``, run to its
    end (``options`` are its keywords). Raises ``TrainingDiverged`` when the loss becomes NaN or infinite."""
    return list(epoch_records(model, data, config, **options))


def epoch_records(
    model,
    data,
    config: TrainingConfig,
    *,
    transform: Callable | None = None,
    generator: torch.Generator | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    start_epoch: int = 0,
    end_epoch: int | None = None,
    verbose: bool = False,
) -> Iterator[dict]:
    """Train ``model`` epoch by epoch, yielding each epoch's record as it ends: the caller validates and
    checkpoints between epochs (on every rank), or stops by closing the generator.

    ``data``: a tensor (N, C, H, W) in [0, 1] on the model's device, batched in memory with
    ``transform(batch, generator)`` preparing each batch (e.g. a fresh Bernoulli draw per epoch);
    or a ``hvae_detect.training.batches.LoaderBatches`` (streamed, possibly over the ranks of a
    torchrun: the model is then wrapped in DistributedDataParallel and gradients are averaged),
    whose ``batch_size`` must be ``config.batch_size`` (the global batch).
    A record holds the epoch (counted from 1), its ELBO and KL per latent over all ranks, and the
    images/s of each rank.
    """
    optimizer = optimizer if optimizer is not None else make_optimizer(model, config.learning_rate)
    end_epoch = config.epochs if end_epoch is None else end_epoch
    streamed = isinstance(data, LoaderBatches)
    if streamed and data.batch_size != config.batch_size:
        raise ValueError(
            f"the loader's batch_size {data.batch_size} differs from the training batch_size {config.batch_size}"
        )
    source = data if streamed else TensorBatches(data, config.batch_size, transform, generator)
    ctx = source.ctx
    # Convolutions run channels-last (same values, faster kernels; see channels_last_weights), except in
    # bfloat16 on a CPU, where oneDNN's NCHW kernels measured faster
    # (benchmarks/results/2026-12-06-bfloat16-training-cpu.md).
    cpu_bfloat16 = source.device.type == "cpu" and resolve_precision(config.precision, source.device) == "bfloat16"
    with contextlib.nullcontext() if cpu_bfloat16 else model.channels_last_weights():
        if streamed and config.data_init and start_epoch == 0:  # as the paper: the first (global) batch
            if ctx.is_main:
                model.init_from_data(source.first_global_batch()[0], generator)
            broadcast_module(model, ctx)
        net = data_parallel(model, ctx, source.device)  # DDP starts from rank 0's weights too
        # Compiled inside the run's weight layout, which holds for the whole run: one graph per batch size.
        # The generator's draws are made before the pass (a generator in the graph would break it).
        net = torch.compile(net, dynamic=False) if config.compile else net
        for epoch in range(start_epoch, end_epoch):
            record = _train_epoch(model, net, source, config, optimizer, generator, epoch, verbose and ctx.is_main)
            if verbose and ctx.is_main:
                tqdm.write(
                    f"epoch {epoch + 1}/{config.epochs}  elbo {record['elbo']:.2f} nats  "
                    f"kl per layer {[round(v, 2) for v in record['kl']]}  images/s per rank {record['images_per_s']}"
                )
            yield record


def _train_epoch(model, net, source, config, optimizer, generator, epoch, progress) -> dict:
    """One epoch of steps over ``source`` (``net`` is ``model`` as it trains: in DDP, compiled); its record."""
    streamed, ctx, device, steps = isinstance(source, LoaderBatches), source.ctx, source.device, source.steps
    # Reading the divergence flag is a host sync: free on CPU, so every step there; on a GPU
    # only every CHECK_EVERY steps, so the device is never drained just to look at the loss.
    check_every = 1 if device.type == "cpu" else CHECK_EVERY
    model.train()
    elbo_sum = torch.zeros((), device=device)
    finite = torch.ones((), dtype=torch.bool, device=device)
    kl_sum = torch.zeros(model.n_latents, device=device)
    seen, started = 0, time.perf_counter()
    bar = tqdm(total=steps, desc=f"epoch {epoch + 1}/{config.epochs}", leave=False, disable=not progress)
    with collectives(ctx, f"training epoch {epoch + 1}"):
        for step, (x, keys) in enumerate(source.epoch(epoch)):
            t = epoch + step / steps
            if not streamed and config.data_init and epoch == 0 and step == 0:  # the paper's first batch
                model.init_from_data(x, generator)
            if keys is not None:
                noise = posterior_noise(model, keys, config.train_samples)
            else:
                noise = (
                    generator_noise(model, x.shape[0], config.train_samples, generator, device)
                    if config.compile
                    else None
                )
            with autocast(device, config.precision):
                loss, elbo, kl = training_loss(
                    net,
                    x,
                    kl_weight_at(t, config.warmup_epochs),
                    free_nats_at(t, config.free_nats, config.free_nats_epochs),
                    generator,
                    config.free_nats_mode,
                    config.train_samples,
                    config.train_importance_weighted,
                    noise=noise,
                )
            finite &= torch.isfinite(loss)
            if (step + 1) % check_every == 0 or step + 1 == steps:
                _check_finite(finite, loss, epoch, step, check_every)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            elbo_sum += elbo.sum()
            kl_sum += kl * x.shape[0]
            seen += x.shape[0]
            bar.update(1)
        if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):  # the last update too
            raise TrainingDiverged(
                f"the weights became NaN or infinite in epoch {epoch + 1} (after the "
                "loss was last checked); try a lower learning_rate or check the input data"
            )
        rate = seen / max(time.perf_counter() - started, 1e-9)
        bar.close()
        if ctx.distributed:  # sums over every rank's images
            totals = all_reduce_sum(torch.cat([elbo_sum.reshape(1), kl_sum, kl_sum.new_tensor([seen])]).double(), ctx)
            elbo_mean, kl_mean = (totals[0] / totals[-1]).item(), (totals[1:-1] / totals[-1]).tolist()
        else:
            elbo_mean, kl_mean = (elbo_sum / seen).item(), (kl_sum / seen).tolist()
        rates = gather_objects(round(rate, 1), ctx)
    return {"epoch": epoch + 1, "elbo": elbo_mean, "kl": kl_mean, "images_per_s": rates}


def _check_finite(finite, loss, epoch, step, check_every):
    if finite.item():
        return
    first = (step // check_every) * check_every + 1  # first step since the last check
    when = f"step {step + 1}" if first == step + 1 else f"one of steps {first}-{step + 1}"
    value = loss.item() if first == step + 1 else "NaN or infinite"
    raise TrainingDiverged(
        f"training loss became {value} at epoch {epoch + 1}, {when}; try a lower learning_rate or check the input data"
    )
