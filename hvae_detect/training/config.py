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
# epochs="auto" (the estimator's default): about this many training images seen, at most this many
# epochs (benchmarks/RESULTS.md, "Colour images": the default's fit minutes on 2 CPU cores).
AUTO_TRAINING_IMAGES, AUTO_MAX_EPOCHS = 60_000, 50


def resolve_epochs(epochs, n_train: int) -> int:
    """``epochs``, or for "auto" enough to see about ``AUTO_TRAINING_IMAGES`` of ``n_train`` training images
    (1 to ``AUTO_MAX_EPOCHS``): a fit whose time follows neither the data set's size nor the machine's clock
    (a wall-clock budget would make two fits with one random_state differ)."""
    if epochs != "auto":
        return epochs
    return int(min(max(round(AUTO_TRAINING_IMAGES / max(n_train, 1)), 1), AUTO_MAX_EPOCHS))


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
    free_nats_mode: str = "layer"      # "element" is the paper's; see the module docstring
    data_init: bool = False            # data-dependent weight-norm initialisation on the first batch
    train_samples: int = 1             # posterior samples per training image
    train_importance_weighted: bool = False  # combine them by log-mean-exp (IWAE) instead of the mean
    compile: bool = False              # torch.compile the model's training pass (see training.loop)

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
SEED_TRAINING = TrainingConfig(epochs=1000, batch_size=128, learning_rate=3e-4, free_nats=2.0,
                               free_nats_epochs=400, warmup_epochs=200, free_nats_mode="element", data_init=True)
