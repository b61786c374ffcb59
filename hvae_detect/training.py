"""Training: the ELBO with per-layer free nats and a KL warm-up, in one plain epoch loop.

``TrainingConfig`` holds every training setting with its one set of defaults (the
estimator's; ``SEED_TRAINING`` is the seed's command line). ``train_epochs`` is the
loop that both the estimator and ``hvae-detect train`` run.

Schedules follow the seed: free nats stay at ``free_nats`` for the first half of
``free_nats_epochs`` and then fall linearly to 0; the KL weight rises linearly
from 0 to 1 over ``warmup_epochs``. Both are evaluated at fractional epochs so
they move every step.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import numbers
from typing import Callable

import torch
from tqdm.auto import tqdm

PRECISIONS = ("auto", "float32", "bfloat16")
CHECK_EVERY = 32  # steps between divergence checks on a GPU


@dataclasses.dataclass
class TrainingConfig:
    """Every setting of a training run; ``validate`` says which one is wrong and why."""

    epochs: int = 20
    batch_size: int = 64
    learning_rate: float = 3e-4
    free_nats: float = 2.0
    free_nats_epochs: float = 10
    warmup_epochs: float = 5
    precision: str = "float32"

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        for name in ("epochs", "batch_size"):
            v = getattr(self, name)
            if not isinstance(v, numbers.Integral) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        v = self.learning_rate
        if not isinstance(v, numbers.Real) or isinstance(v, bool) or not 0 < v < math.inf:
            raise ValueError(f"learning_rate must be a positive finite number, got {v!r}")
        for name in ("free_nats", "free_nats_epochs", "warmup_epochs"):
            v = getattr(self, name)
            if not isinstance(v, numbers.Real) or isinstance(v, bool) or not 0 <= v < math.inf:
                raise ValueError(f"{name} must be a non-negative finite number, got {v!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))


# The seed's training command (shared/seeds/): the command line's defaults.
SEED_TRAINING = TrainingConfig(epochs=1000, batch_size=128, learning_rate=3e-4, free_nats=2.0,
                               free_nats_epochs=400, warmup_epochs=200)


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


def training_loss(model, x, kl_weight: float, free_nats: float, generator=None):
    """Mean over the batch of -(log p(x|z) - beta * sum_i max(KL_i, free_nats)); also the ELBO (N,)
    and the mean KL per latent (L,)."""
    terms = model(x, 0, generator=generator)
    loss = -(terms.log_px - kl_weight * terms.kl.clamp(min=free_nats).sum(0)).mean()
    return loss, terms.bound.detach(), terms.kl.detach().mean(1)


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


def train_epochs(model, data: torch.Tensor, config: TrainingConfig, *, transform: Callable | None = None,
                 generator: torch.Generator | None = None, optimizer: torch.optim.Optimizer | None = None,
                 start_epoch: int = 0, end_epoch: int | None = None, on_epoch_end: Callable | None = None,
                 verbose: bool = False) -> list[dict]:
    """Train ``model`` on ``data`` (N, C, H, W, on the model's device) from ``start_epoch`` to
    ``end_epoch`` (default ``config.epochs``); schedules run over ``config.epochs``.

    ``transform(batch, generator)`` prepares each batch (e.g. a fresh Bernoulli draw per
    epoch for binarised data). ``on_epoch_end(epoch, record)`` is called after every epoch
    (checkpointing, validation). Returns one record per epoch. Raises ``TrainingDiverged``
    when the loss becomes NaN or infinite.
    """
    optimizer = optimizer if optimizer is not None else make_optimizer(model, config.learning_rate)
    end_epoch = config.epochs if end_epoch is None else end_epoch
    n = data.shape[0]
    steps = math.ceil(n / config.batch_size)
    # Reading the divergence flag is a host sync: free on CPU, so every step there; on a GPU
    # only every CHECK_EVERY steps, so the device is never drained just to look at the loss.
    check_every = 1 if data.device.type == "cpu" else CHECK_EVERY
    history = []
    # Convolutions run channels-last (same values, faster kernels; see channels_last_weights).
    with model.channels_last_weights():
        for epoch in range(start_epoch, end_epoch):
            model.train()
            perm_device = generator.device if generator is not None else data.device
            perm = torch.randperm(n, generator=generator, device=perm_device).to(data.device)
            elbo_sum = torch.zeros((), device=data.device)
            finite = torch.ones((), dtype=torch.bool, device=data.device)
            kl_sum = torch.zeros(model.n_latents, device=data.device)
            bar = tqdm(range(steps), desc=f"epoch {epoch + 1}/{config.epochs}", disable=not verbose, leave=False)
            for step in bar:
                x = data[perm[step * config.batch_size:(step + 1) * config.batch_size]]
                if transform is not None:
                    x = transform(x, generator)
                t = epoch + step / steps
                with autocast(data.device, config.precision):
                    loss, elbo, kl = training_loss(model, x, kl_weight_at(t, config.warmup_epochs),
                                                   free_nats_at(t, config.free_nats, config.free_nats_epochs),
                                                   generator)
                finite &= torch.isfinite(loss)
                if (step + 1) % check_every == 0 or step + 1 == steps:
                    _check_finite(finite, loss, epoch, step, check_every)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                elbo_sum += elbo.sum()
                kl_sum += kl * x.shape[0]
            if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):  # the last update too
                raise TrainingDiverged(f"the weights became NaN or infinite in epoch {epoch + 1} (after the loss "
                                       "was last checked); try a lower learning_rate or check the input data")
            record = {"epoch": epoch + 1, "elbo": (elbo_sum / n).item(), "kl": (kl_sum / n).tolist()}
            history.append(record)
            if verbose:
                tqdm.write(f"epoch {epoch + 1}/{config.epochs}  elbo {record['elbo']:.2f} nats  "
                           f"kl per layer {[round(v, 2) for v in record['kl']]}")
            if on_epoch_end is not None:
                on_epoch_end(epoch + 1, record)
    return history


def _check_finite(finite, loss, epoch, step, check_every):
    if finite.item():
        return
    first = (step // check_every) * check_every + 1  # first step since the last check
    when = f"step {step + 1}" if first == step + 1 else f"one of steps {first}-{step + 1}"
    value = loss.item() if first == step + 1 else "NaN or infinite"
    raise TrainingDiverged(f"training loss became {value} at epoch {epoch + 1}, {when}; "
                           "try a lower learning_rate or check the input data")
