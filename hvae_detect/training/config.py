"""``TrainingConfig``: every setting of a training run, with its one set of defaults (the estimator's).

``SEED_TRAINING`` is the paper's command line (shared/seeds/), the defaults of ``hvae-detect train``.
Free nats come in two modes (``free_nats_mode``):
  "element"  the paper's ``FreeNats(free_nats, shared_dims=1)``: every element of a latent's
             per-image KL tensor (channels x H x W, or features) is floored at free_nats / C,
             C its channels or features, and then summed; a C x H x W latent's floor is
             free_nats * H * W nats per image;
  "layer"    each latent's summed KL is floored at free_nats (this package's earlier objective).
"""

from __future__ import annotations

import dataclasses
import math
import numbers

from hvae_detect.precision import PRECISIONS

FREE_NATS_MODES = ("element", "layer")
# The estimator's "auto" training settings. epochs: about AUTO_TRAINING_IMAGES training images seen, at
# most AUTO_MAX_EPOCHS epochs. A one-level model (preset "bottleneck") also takes a higher learning rate
# and the KL warm-up and free nats over fractions of its epochs: on the colour choosing pairs that
# separated GTSRB 0.913 and Tiny ImageNet 0.739 where 3e-4 and 5 / 10 epochs gave 0.736 / 0.581
# (benchmarks/results/2026-12-06-colour-default.md); hierarchical models keep the fixed defaults they
# were measured with.
AUTO_TRAINING_IMAGES, AUTO_MAX_EPOCHS = 60_000, 50
ONE_LEVEL = {"learning_rate": 1e-3, "warmup_fraction": 0.2, "free_nats_fraction": 0.4}
AUTO = "auto"


def resolve_auto(settings: dict, n_train: int, n_latents: int) -> dict:
    """``settings`` (TrainingConfig fields, some "auto") with every "auto" resolved for a model of
    ``n_latents`` latents trained on ``n_train`` images. epochs="auto" sees about ``AUTO_TRAINING_IMAGES``
    images: a fit whose length follows neither the data set's size nor the machine's clock (a wall-clock
    budget would make two fits with one random_state differ)."""
    out, one_level = dict(settings), n_latents == 1
    if out["epochs"] == AUTO:
        out["epochs"] = int(min(max(round(AUTO_TRAINING_IMAGES / max(n_train, 1)), 1), AUTO_MAX_EPOCHS))
    if out["learning_rate"] == AUTO:
        out["learning_rate"] = ONE_LEVEL["learning_rate"] if one_level else TrainingConfig.learning_rate
    for name, fraction in (("warmup_epochs", "warmup_fraction"), ("free_nats_epochs", "free_nats_fraction")):
        if out[name] == AUTO:
            out[name] = ONE_LEVEL[fraction] * out["epochs"] if one_level else getattr(TrainingConfig, name)
    return out


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
    free_nats_mode: str = "layer"  # "element" is the paper's; see the module docstring
    data_init: bool = False  # data-dependent weight-norm initialisation on the first batch
    train_samples: int = 1  # posterior samples per training image
    train_importance_weighted: bool = False  # combine them by log-mean-exp (IWAE) instead of the mean
    compile: bool = False  # torch.compile the model's training pass (see training.loop)

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        for name in ("epochs", "batch_size", "train_samples"):
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
        if self.free_nats_mode not in FREE_NATS_MODES:
            raise ValueError(f"free_nats_mode must be one of {FREE_NATS_MODES}, got {self.free_nats_mode!r}")
        for name in ("data_init", "train_importance_weighted", "compile"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))


# The paper's training command (shared/seeds/): the command line's defaults.
SEED_TRAINING = TrainingConfig(
    epochs=1000,
    batch_size=128,
    learning_rate=3e-4,
    free_nats=2.0,
    free_nats_epochs=400,
    warmup_epochs=200,
    free_nats_mode="element",
    data_init=True,
)
