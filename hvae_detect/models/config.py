"""``ModelConfig``: every option of a model, with its one set of defaults, checked in one place.

The defaults are this package's earlier model (SiLU, a plain 3x3 likelihood head, skip connections,
no dropout, the mixture's log-scales floored at PixelCNN++'s -7): exactly what a saved folder
holds where a key is missing, because it was written before the option existed. ``to_json`` and
``from_json`` use the keys of config.json's "model" section and of run.json, so every older
folder and run loads and resumes through ``from_json`` alone.
``hvae_detect.models.registry.make_model(config)`` builds the model.
"""

from __future__ import annotations

import copy
import dataclasses
import numbers

from hvae_detect import likelihoods
from hvae_detect.kernels.layout import LOG_SCALE_MIN, check_log_scale_min
from hvae_detect.models.architectures import AUTO, auto_preset, family_of, resolve_architecture
from hvae_detect.models.base import HEADS
from hvae_detect.models.layers import activation_fn


class ModelOptionError(ValueError):
    """A model option is wrong; ``option`` names it (the message starts with it)."""

    def __init__(self, option: str, message: str):
        super().__init__(f"{option} {message}")
        self.option, self.message = option, message

    def __reduce__(self):  # pickles (worker processes) with both arguments
        return type(self), (self.option, self.message)


def _check(option: str, check, value) -> None:
    """``check(value)``, its ValueError raised as the ``ModelOptionError`` of ``option``."""
    try:
        check(value)
    except ValueError as e:
        raise ModelOptionError(option, str(e).removeprefix(option).lstrip()) from None


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Every option of a model; ``architecture`` is kept resolved (a preset name or JSON becomes its dict).

    input_shape      (C, H, W) of one image
    architecture     the paper's structures and the family (``hvae_detect.models.architectures``)
    likelihood       "bernoulli" or "dlogmix" ("auto" is decided before: ``likelihoods.resolve_likelihood``)
    n_mix            the mixture's components
    activation       a name in ``hvae_detect.models.layers.ACTIVATIONS``
    likelihood_head  one of ``hvae_detect.models.base.HEADS``
    skip_stochastic  the skip connections around each latent (the paper's --skip_stochastic)
    q_dropout        dropout in the inference blocks (training only)
    p_dropout        dropout in the generative blocks (training only)
    log_scale_min    the mixture's floor on log-scales, in [-7, 0)
    """

    input_shape: tuple
    architecture: dict | str = "small"
    likelihood: str = "bernoulli"
    n_mix: int = 10
    activation: str = "SiLU"
    likelihood_head: str = "conv3x3"
    skip_stochastic: bool = True
    q_dropout: float = 0.0
    p_dropout: float = 0.0
    log_scale_min: float = LOG_SCALE_MIN

    def __post_init__(self):
        shape = self.input_shape
        if (
            not isinstance(shape, (tuple, list))
            or len(shape) != 3
            or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and v > 0 for v in shape)
        ):
            raise ModelOptionError(
                "input_shape", f"must be (channels, height, width) of positive integers, got {shape!r}"
            )
        object.__setattr__(self, "input_shape", tuple(int(v) for v in shape))
        object.__setattr__(self, "architecture", resolve_architecture(self.architecture))
        if self.likelihood not in likelihoods.LIKELIHOODS:
            raise ModelOptionError("likelihood", f"must be one of {likelihoods.LIKELIHOODS}, got {self.likelihood!r}")
        _check("n_mix", likelihoods.check_n_mix, self.n_mix)
        _check("activation", activation_fn, self.activation)
        if self.likelihood_head not in HEADS:
            raise ModelOptionError("likelihood_head", f"must be one of {HEADS}, got {self.likelihood_head!r}")
        if not isinstance(self.skip_stochastic, bool):
            raise ModelOptionError("skip_stochastic", f"must be True or False, got {self.skip_stochastic!r}")
        for name in ("q_dropout", "p_dropout"):
            rate = getattr(self, name)
            if isinstance(rate, bool) or not isinstance(rate, numbers.Real) or not 0 <= rate < 1:
                raise ModelOptionError(name, f"must be in [0, 1), got {rate!r}")
            object.__setattr__(self, name, float(rate))
        _check("log_scale_min", check_log_scale_min, self.log_scale_min)
        object.__setattr__(self, "log_scale_min", float(self.log_scale_min))
        object.__setattr__(self, "n_mix", int(self.n_mix))

    @property
    def family(self) -> str:
        """The architecture's family ("VAE" when it names none)."""
        return family_of(self.architecture)

    @classmethod
    def for_images(cls, image_shape, architecture=AUTO, likelihood=AUTO, *, hierarchical=False, **options):
        """The configuration of a model of images of ``image_shape`` (C, H, W): architecture "auto" is
        picked by the images (``architectures.auto_preset``; ``hierarchical``: the statistic needs several
        latents), likelihood "auto" by their channels; ``options`` are the other fields."""
        if architecture == AUTO:
            architecture = auto_preset(image_shape, hierarchical=hierarchical)
        likelihood = likelihoods.resolve_likelihood(likelihood, n_channels=image_shape[0])
        return cls(tuple(image_shape), architecture, likelihood, **options)

    @property
    def n_latents(self) -> int:
        """The latent layers of the hierarchy."""
        return len(self.architecture["config_stochastic"])

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    def to_json(self) -> dict:
        """The options under config.json's "model" section and run.json's keys."""
        out = {name: getattr(self, name) for name in self.field_names()}
        out["input_shape"] = list(self.input_shape)
        out["architecture"] = copy.deepcopy(self.architecture)
        return out

    @classmethod
    def from_json(cls, data: dict) -> ModelConfig:
        """The configuration that a saved "model" section or a run.json holds; keys it lacks take the
        defaults (what folders written before them hold) and keys that are not options are ignored."""
        if "input_shape" not in data:
            raise ModelOptionError("input_shape", "is missing from the saved model configuration")
        return cls(**{name: data[name] for name in cls.field_names() if name in data})
