"""Observation models p(x | z1): Bernoulli and the discretized logistic mixture.

Both return per-image log-likelihoods in nats, shape (N,). The mixture's layout,
PyTorch reference and Triton kernel live in ``hvae_detect.kernels``;
``discretized_logistic_mixture_log_prob`` is its dispatching entry point (Triton on
CUDA tensors, the reference elsewhere, ``HVAE_DETECT_KERNELS`` forces a path).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hvae_detect.kernels.dispatch import dlogmix_log_prob
from hvae_detect.kernels.layout import dlogmix_param_channels, split_dlogmix_params
from hvae_detect.kernels.reference import dlogmix_log_prob_reference

LIKELIHOODS = ("bernoulli", "dlogmix")

__all__ = ["LIKELIHOODS", "bernoulli_log_prob", "discretized_logistic_mixture_log_prob",
           "discretized_logistic_mixture_log_prob_reference", "param_channels", "log_prob", "mean_image"]

discretized_logistic_mixture_log_prob = dlogmix_log_prob
discretized_logistic_mixture_log_prob_reference = dlogmix_log_prob_reference


def bernoulli_log_prob(x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """log p(x) of binary images under independent Bernoullis; (N, ...) -> (N,)."""
    ll = -F.binary_cross_entropy_with_logits(logits, x, reduction="none")
    return ll.flatten(1).sum(1)


def param_channels(likelihood: str, n_channels: int, n_mix: int) -> int:
    """Channels of the likelihood head's output for images of ``n_channels`` channels."""
    if likelihood == "bernoulli":
        return n_channels
    if likelihood == "dlogmix":
        return dlogmix_param_channels(n_channels, n_mix)
    raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {likelihood!r}")


def log_prob(likelihood: str, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """log p(x | params) in nats per image under the named likelihood."""
    if likelihood == "bernoulli":
        return bernoulli_log_prob(x, params)
    return dlogmix_log_prob(x, params)


def mean_image(likelihood: str, params: torch.Tensor, n_channels: int) -> torch.Tensor:
    """Expected pixel values under p(x | z) (mixture: the weighted component means), in [0, 1]."""
    if likelihood == "bernoulli":
        return torch.sigmoid(params)
    logits, means, _, _ = split_dlogmix_params(params, n_channels)
    w = torch.softmax(logits, dim=1).unsqueeze(1)
    return ((w * means).sum(2).clamp(-1, 1) + 1) / 2
