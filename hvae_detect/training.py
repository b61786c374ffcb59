"""Training: ELBO with per-layer free nats and a deterministic KL warm-up.

Schedules follow the seed: free nats stay at ``free_nats`` for the first half of
``free_nats_epochs`` and then fall linearly to 0; the KL weight rises linearly
from 0 to 1 over ``warmup_epochs``. Both are evaluated at fractional epochs so
they move every step.
"""

from __future__ import annotations

import contextlib
import math
from typing import Callable

import torch
from tqdm.auto import tqdm


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


def elbo_terms(model, x, generator=None):
    """(log p(x|z) (N,), [KL_i (N,)] for every latent) with one posterior sample."""
    d, q = model.prefix(model.encode_x(x), 0)
    log_px, kls, _ = model.sampled_terms(x, d, q, 0, 1, generator)
    return log_px, kls


def training_loss(model, x, kl_weight: float, free_nats: float, generator=None):
    """Mean over the batch of -(log p(x|z) - beta * sum_i max(KL_i, free_nats)); also the ELBO (N,)."""
    log_px, kls = elbo_terms(model, x, generator)
    kl = torch.stack(kls)  # (L, N)
    loss = -(log_px - kl_weight * kl.clamp(min=free_nats).sum(0)).mean()
    return loss, (log_px - kl.sum(0)).detach(), kl.detach().mean(1)


CHECK_EVERY = 32  # steps between divergence checks on a GPU
PRECISIONS = ("auto", "float32", "bfloat16")


def resolve_precision(precision: str, device) -> str:
    """"auto" means bfloat16 mixed precision on CUDA and float32 elsewhere."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto":
        return "bfloat16" if torch.device(device).type == "cuda" else "float32"
    return precision


def autocast(device, precision: str):
    """Mixed precision for the forward pass: convolutions and matmuls in bfloat16, while
    weights, optimiser state, the latent densities and the likelihood (hence the bound
    and its sum over the batch) stay float32 (see the Gaussian layers and the head)."""
    if resolve_precision(precision, device) == "float32":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)


def make_optimizer(model, learning_rate: float) -> torch.optim.Optimizer:
    """Adam with its fused kernel: the same update as the for-loop version in one pass per
    parameter instead of about ten small ops each (which dominate a CPU step's overhead)."""
    try:
        return torch.optim.Adam(model.parameters(), lr=learning_rate, fused=True)
    except (RuntimeError, ValueError):  # a device or dtype without the fused kernel
        return torch.optim.Adam(model.parameters(), lr=learning_rate)


class TrainingDiverged(FloatingPointError):
    """The loss became NaN or infinite: the model is not usable."""


def train_hvae(model, data: torch.Tensor, *, epochs: int, batch_size: int = 128, learning_rate: float = 3e-4,
               free_nats: float = 0.0, free_nats_epochs: float = 0.0, warmup_epochs: float = 0.0,
               transform: Callable | None = None, generator: torch.Generator | None = None,
               optimizer: torch.optim.Optimizer | None = None, start_epoch: int = 0,
               on_epoch_end: Callable | None = None, verbose: bool = False,
               precision: str = "float32") -> list[dict]:
    """Train ``model`` on ``data`` (N, C, H, W), already on the model's device.

    ``transform(batch, generator)`` prepares each batch (e.g. a fresh Bernoulli
    draw per epoch for binarised data). ``on_epoch_end(epoch, record)`` is called
    after every epoch (checkpointing, validation). Returns one record per epoch.
    ``precision`` is "float32", "bfloat16" (mixed precision, see ``autocast``) or "auto"
    (bfloat16 on CUDA). Raises ``TrainingDiverged`` when the loss becomes NaN or infinite.
    """
    if optimizer is None:
        optimizer = make_optimizer(model, learning_rate)
    # Convolutions run channels-last (same values, faster kernels; see channels_last_weights).
    with model.channels_last_weights():
        return _train(model, data, optimizer, epochs, batch_size, free_nats, free_nats_epochs, warmup_epochs,
                      transform, generator, start_epoch, on_epoch_end, verbose, precision)


def _train(model, data, optimizer, epochs, batch_size, free_nats, free_nats_epochs, warmup_epochs, transform,
           generator, start_epoch, on_epoch_end, verbose, precision):
    n = data.shape[0]
    steps = math.ceil(n / batch_size)
    # Reading the divergence flag is a host sync: free on CPU, so every step there; on a GPU
    # only every CHECK_EVERY steps, so the device is never drained just to look at the loss.
    check_every = 1 if data.device.type == "cpu" else CHECK_EVERY
    history = []
    for epoch in range(start_epoch, epochs):
        model.train()
        perm_device = generator.device if generator is not None else data.device
        perm = torch.randperm(n, generator=generator, device=perm_device).to(data.device)
        elbo_sum = torch.zeros((), device=data.device)
        finite = torch.ones((), dtype=torch.bool, device=data.device)
        kl_sum = torch.zeros(model.n_latents, device=data.device)
        bar = tqdm(range(steps), desc=f"epoch {epoch + 1}/{epochs}", disable=not verbose, leave=False)
        for step in bar:
            idx = perm[step * batch_size:(step + 1) * batch_size]
            x = data[idx]
            if transform is not None:
                x = transform(x, generator)
            t = epoch + step / steps
            with autocast(data.device, precision):
                loss, elbo, kl = training_loss(model, x, kl_weight_at(t, warmup_epochs),
                                               free_nats_at(t, free_nats, free_nats_epochs), generator)
            finite &= torch.isfinite(loss)
            if (step + 1) % check_every == 0 or step + 1 == steps:
                if not finite.item():
                    first = (step // check_every) * check_every + 1  # first step since the last check
                    when = f"step {step + 1}" if first == step + 1 else f"one of steps {first}-{step + 1}"
                    value = loss.item() if first == step + 1 else "NaN or infinite"
                    raise TrainingDiverged(
                        f"training loss became {value} at epoch {epoch + 1}, {when}; "
                        "try a lower learning_rate or check the input data")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            elbo_sum += elbo.sum()
            kl_sum += kl * x.shape[0]
        record = {"epoch": epoch + 1, "elbo": (elbo_sum / n).item(), "kl": (kl_sum / n).tolist()}
        history.append(record)
        if verbose:
            tqdm.write(f"epoch {epoch + 1}/{epochs}  elbo {record['elbo']:.2f} nats  "
                       f"kl per layer {[round(v, 2) for v in record['kl']]}")
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, record)
    return history
