"""Observation models p(x | z1) as objects: ``Bernoulli`` and ``DiscretizedLogisticMixture``.

A likelihood says how many parameter channels the model's head produces (``param_channels``),
scores images under those parameters (``log_prob``: per-image log-likelihoods in nats, (N,)),
gives the expected image (``mean``), and makes a model's input from images in [0, 1]:

    training_draw(x, generator)   the dynamic draw of a training batch held in memory
    keyed_draw(x, uniforms)       the same draw from given uniforms (streamed batches key them by image)
    evaluation_draw(x, seed)      one fixed draw per image, keyed by the image and ``seed``

The Bernoulli binarises (``hvae_detect.data.inputs.binarize``); the mixture reads the images as
they are (``draws_input`` is False: there are no uniforms to compute for it). Models hold one
(``HierarchicalModel.observation``) and keep its ``name`` as ``model.likelihood``.

The mixture's layout, PyTorch reference and Triton kernel live in ``hvae_detect.kernels``;
``discretized_logistic_mixture_log_prob`` is its dispatching entry point (Triton on CUDA tensors,
the reference elsewhere, ``HVAE_DETECT_KERNELS`` forces a path).
"""

from __future__ import annotations

import abc
import math
import numbers

import torch
import torch.nn.functional as F

from hvae_detect.data import randomness
from hvae_detect.data.inputs import binarize
from hvae_detect.kernels.dispatch import dlogmix_log_prob
from hvae_detect.kernels.layout import (
    LOG_SCALE_MIN,
    check_log_scale_min,
    clamp_log_scales,
    dlogmix_param_channels,
    split_dlogmix_params,
)
from hvae_detect.kernels.reference import dlogmix_log_prob_reference

LIKELIHOODS = ("bernoulli", "dlogmix")

__all__ = [
    "LIKELIHOODS",
    "Bernoulli",
    "DiscretizedLogisticMixture",
    "Likelihood",
    "bernoulli_log_prob",
    "check_n_mix",
    "discretized_logistic_mixture_log_prob",
    "discretized_logistic_mixture_log_prob_reference",
    "make_likelihood",
    "resolve_likelihood",
]

discretized_logistic_mixture_log_prob = dlogmix_log_prob
discretized_logistic_mixture_log_prob_reference = dlogmix_log_prob_reference


def bernoulli_log_prob(x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """log p(x) of binary images under independent Bernoullis; (N, ...) -> (N,)."""
    ll = -F.binary_cross_entropy_with_logits(logits, x, reduction="none")
    return ll.flatten(1).sum(1)


class Likelihood(abc.ABC):
    """What a model's observation model provides; the input draws default to the images as they are.

    ``paper_kernel_size`` and ``paper_activation`` describe the paper's likelihood head for it
    (``hvae_detect.models.base.HEADS``, "paper").
    """

    name: str = ""
    draws_input = False  # whether a model's input is a random draw of the images
    paper_kernel_size = 3
    paper_activation = False

    @abc.abstractmethod
    def param_channels(self, n_channels: int) -> int:
        """Channels of the likelihood head's output for images of ``n_channels`` channels."""

    @abc.abstractmethod
    def log_prob(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """log p(x | params) in nats per image, (N,)."""

    @abc.abstractmethod
    def mean(self, params: torch.Tensor, n_channels: int) -> torch.Tensor:
        """Expected pixel values under p(x | params), in [0, 1]."""

    @abc.abstractmethod
    def std(self, params: torch.Tensor, n_channels: int) -> torch.Tensor:
        """Standard deviation of each pixel under p(x | params), in units of [0, 1] pixel values."""

    def training_draw(self, x01: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return x01

    def keyed_draw(self, x01: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
        return x01

    def evaluation_draw(self, x01: torch.Tensor, seed: int) -> torch.Tensor:
        return x01

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Bernoulli(Likelihood):
    """Independent Bernoullis per pixel with the head's outputs as logits, on binarised images."""

    name = "bernoulli"
    draws_input = True
    paper_kernel_size = 3  # the paper's BernoulliLikelihoodConv2d: activation, then a 3x3 convolution
    paper_activation = True

    def param_channels(self, n_channels: int) -> int:
        return n_channels

    def log_prob(self, x, params):
        return bernoulli_log_prob(x, params)

    def mean(self, params, n_channels):
        return torch.sigmoid(params)

    def std(self, params, n_channels):
        p = torch.sigmoid(params)
        return (p * (1 - p)).sqrt()

    def training_draw(self, x01, generator=None):
        """A fresh binarisation (torch.bernoulli from ``generator``): the paper's dynamic training sets."""
        return binarize(x01, generator)

    def keyed_draw(self, x01, uniforms):
        """The binarisation from given uniforms in (0, 1): a pixel is 1 where u < its grey level."""
        return binarize(x01, uniforms=uniforms)

    def evaluation_draw(self, x01, seed):
        """One binarisation per image, keyed by the image and ``seed`` (the paper's fixed evaluation sets)."""
        keys = randomness.image_keys(x01, seed)
        return binarize(x01, uniforms=randomness.uniform(keys, randomness.BINARIZE_STREAM, x01.shape[1:]))


class DiscretizedLogisticMixture(Likelihood):
    """PixelCNN++'s discretized logistic mixture of ``n_mix`` components on the 256-level grid.

    ``log_scale_min`` floors the components' log-scales (default -7, PixelCNN++'s, which the
    kernels apply anyway; a higher floor keeps every component at least about a bin wide).
    """

    name = "dlogmix"
    paper_kernel_size = 1  # the paper's DiscretizedLogisticMixLikelihoodConv2d: a 1x1 convolution
    paper_activation = False

    def __init__(self, n_mix: int = 10, log_scale_min: float = LOG_SCALE_MIN):
        check_n_mix(n_mix)
        check_log_scale_min(log_scale_min)
        self.n_mix, self.log_scale_min = int(n_mix), float(log_scale_min)

    def param_channels(self, n_channels: int) -> int:
        return dlogmix_param_channels(n_channels, self.n_mix)

    def log_prob(self, x, params):
        if self.log_scale_min > LOG_SCALE_MIN:
            params = clamp_log_scales(params, x.shape[1], self.log_scale_min)
        return dlogmix_log_prob(x, params)

    def mean(self, params, n_channels):
        """The weighted component means, in [0, 1]."""
        logits, means, _, _ = split_dlogmix_params(params, n_channels)
        w = torch.softmax(logits, dim=1).unsqueeze(1)
        return ((w * means).sum(2).clamp(-1, 1) + 1) / 2

    def std(self, params, n_channels):
        """The mixture's standard deviation (a logistic of scale s has variance s^2 pi^2 / 3), each
        channel on its own (the colour coefficients left out, as in ``mean``), halved from [-1, 1] units."""
        logits, means, log_scales, _ = split_dlogmix_params(params, n_channels)
        w = torch.softmax(logits, dim=1).unsqueeze(1)
        variance = torch.exp(2 * log_scales.clamp(min=self.log_scale_min)) * (math.pi**2 / 3)
        spread = (means - (w * means).sum(2, keepdim=True)).square()  # about the mixture's mean: no cancellation
        return (w * (variance + spread)).sum(2).sqrt() / 2

    def __repr__(self) -> str:
        return f"DiscretizedLogisticMixture(n_mix={self.n_mix}, log_scale_min={self.log_scale_min})"


def check_n_mix(n_mix) -> None:
    """Raise ValueError unless ``n_mix`` (mixture components) is a positive integer."""
    if not isinstance(n_mix, numbers.Integral) or isinstance(n_mix, bool) or n_mix < 1:
        raise ValueError(f"n_mix (the mixture's components) must be a positive integer, got {n_mix!r}")


def make_likelihood(name: str, n_mix: int = 10, log_scale_min: float = LOG_SCALE_MIN) -> Likelihood:
    """The likelihood called ``name`` (one of ``LIKELIHOODS``); the mixture's options apply to it alone."""
    if name == "bernoulli":
        return Bernoulli()
    if name == "dlogmix":
        return DiscretizedLogisticMixture(n_mix, log_scale_min)
    raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {name!r}")


def resolve_likelihood(name: str, *, n_channels: int | None = None, variant: str | None = None) -> str:
    """The likelihood that ``name`` asks for; "auto" is the one decision of which suits the data.

    "auto" means the Bernoulli for binarised images and the discretized logistic mixture for the
    others. Where the data set's variant is known (``hvae-detect train``: "Binarized",
    "Quantized", "Dequantized", as ``hvae_detect.data.dataset_names``), it decides; where only the
    images are (the estimator), their channels do: grey images (1 channel) are binarised as the
    paper's grey sets are, colour images (3) are modelled on their 256 levels.
    """
    if name != "auto":
        if name not in LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {('auto', *LIKELIHOODS)}, got {name!r}")
        return name
    if variant is not None:
        return "bernoulli" if variant == "Binarized" else "dlogmix"
    if n_channels is None:
        raise ValueError("likelihood 'auto' needs the data set's variant or the images' channels to decide")
    return "bernoulli" if n_channels == 1 else "dlogmix"
