"""Observation models p(x | z1): Bernoulli and the discretized logistic mixture.

Both return per-image log-likelihoods in nats, shape (N,). The mixture has one
PyTorch reference implementation (``discretized_logistic_mixture_log_prob_reference``);
the public entry point dispatches to the Triton kernel on CUDA tensors and to the
reference elsewhere (see ``hvae_detect.kernels.dispatch``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

LOG_SCALE_MIN = -7.0  # PixelCNN++ clamp
N_BINS = 256


def bernoulli_log_prob(x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """log p(x) of binary images under independent Bernoullis; (N, ...) -> (N,)."""
    ll = -F.binary_cross_entropy_with_logits(logits, x, reduction="none")
    return ll.flatten(1).sum(1)


def dlogmix_param_channels(n_channels: int, n_mix: int) -> int:
    """Number of parameter channels of the mixture for C = 1 or 3 image channels."""
    if n_channels == 1:
        return 3 * n_mix
    if n_channels == 3:
        return n_mix * (1 + 3 * n_channels)
    raise ValueError(f"discretized logistic mixture supports 1 or 3 channels, got {n_channels}")


def split_dlogmix_params(params: torch.Tensor, n_channels: int):
    """Split (N, P, H, W) params into logits (N, M, H, W) and means, log-scales,
    coefficients of shape (N, C, M, H, W) (coefficients are None for C = 1).

    Layout (DESIGN.md): C = 1 -> [logits, means, log-scales], M each;
    C = 3 -> M logits, then per channel [M means, M log-scales, M coefficients]
    (the PixelCNN++ order).
    """
    n, p, h, w = params.shape
    if n_channels == 1:
        if p % 3:
            raise ValueError(f"expected 3*M parameter channels for a 1-channel image, got {p}")
        m = p // 3
        logits, means, log_scales = params.split(m, dim=1)
        return logits, means.unsqueeze(1), log_scales.unsqueeze(1), None
    if n_channels == 3:
        if p % 10:
            raise ValueError(f"expected 10*M parameter channels for a 3-channel image, got {p}")
        m = p // 10
        logits = params[:, :m]
        rest = params[:, m:].reshape(n, 3, 3, m, h, w)  # (N, channel, {mean, log-scale, coeff}, M, H, W)
        return logits, rest[:, :, 0], rest[:, :, 1], rest[:, :, 2]
    raise ValueError(f"discretized logistic mixture supports 1 or 3 channels, got {n_channels}")


def discretized_logistic_log_prob_per_component(x: torch.Tensor, means: torch.Tensor, log_scales: torch.Tensor):
    """log P(x in its bin) of a discretized logistic per component; x (..) in [-1, 1]."""
    log_scales = log_scales.clamp(min=LOG_SCALE_MIN)
    centered = x - means
    inv_stdv = torch.exp(-log_scales)
    plus_in = inv_stdv * (centered + 1.0 / (N_BINS - 1))
    min_in = inv_stdv * (centered - 1.0 / (N_BINS - 1))
    cdf_delta = torch.sigmoid(plus_in) - torch.sigmoid(min_in)
    log_cdf_plus = plus_in - F.softplus(plus_in)  # bin 0: mass from -inf
    log_one_minus_cdf_min = -F.softplus(min_in)  # bin 255: mass up to +inf
    mid_in = inv_stdv * centered
    # When the bin's mass underflows, use the density at the bin centre times the bin width.
    log_pdf_mid = mid_in - log_scales - 2.0 * F.softplus(mid_in) - math.log((N_BINS - 1) / 2)
    inner = torch.where(cdf_delta > 1e-5, torch.log(cdf_delta.clamp(min=1e-12)), log_pdf_mid)
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, inner))


def discretized_logistic_mixture_log_prob_reference(x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """PyTorch reference of the discretized logistic mixture log-likelihood.

    x: (N, C, H, W) in [0, 1]; params: (N, P, H, W) in the DESIGN.md layout.
    Returns (N,) log p(x) in nats, computed in float32.
    """
    n_channels = x.shape[1]
    logits, means, log_scales, coeffs = split_dlogmix_params(params.float(), n_channels)
    xs = (x.float() * 2.0 - 1.0).unsqueeze(2)  # (N, C, 1, H, W) in [-1, 1]
    if n_channels == 3:
        # PixelCNN++ autoregressive coupling: channel means depend on earlier channels.
        c = torch.tanh(coeffs)
        m0 = means[:, 0]
        m1 = means[:, 1] + c[:, 0] * xs[:, 0]
        m2 = means[:, 2] + c[:, 1] * xs[:, 0] + c[:, 2] * xs[:, 1]
        means = torch.stack([m0, m1, m2], dim=1)
    log_probs = discretized_logistic_log_prob_per_component(xs, means, log_scales).sum(1)  # (N, M, H, W)
    log_probs = log_probs + torch.log_softmax(logits, dim=1)
    return torch.logsumexp(log_probs, dim=1).flatten(1).sum(1)


def discretized_logistic_mixture_log_prob(x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """Discretized logistic mixture log-likelihood, (N,) in nats.

    Dispatches to the fused Triton kernel on CUDA tensors and to the PyTorch
    reference elsewhere; ``HVAE_DETECT_KERNELS=auto|triton|reference`` forces a path.
    """
    check_dlogmix_inputs(x, params)
    from hvae_detect.kernels.dispatch import use_triton

    if use_triton(params):
        from hvae_detect.kernels.dlogmix import dlogmix_log_prob_triton

        return dlogmix_log_prob_triton(x, params)
    return discretized_logistic_mixture_log_prob_reference(x, params)


def check_dlogmix_inputs(x: torch.Tensor, params: torch.Tensor) -> None:
    if x.dim() != 4 or params.dim() != 4:
        raise ValueError(f"expected x (N, C, H, W) and params (N, P, H, W), got {tuple(x.shape)} and {tuple(params.shape)}")
    n, c, h, w = x.shape
    if params.shape[0] != n or params.shape[2:] != (h, w):
        raise ValueError(f"params {tuple(params.shape)} do not match x {tuple(x.shape)} in N, H or W")
    dlogmix_param_channels(c, 1)  # validates C
    per_mix = 3 if c == 1 else 10
    if params.shape[1] % per_mix:
        raise ValueError(f"expected {per_mix}*M parameter channels for C={c}, got {params.shape[1]}")
