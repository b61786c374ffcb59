"""PyTorch references of the kernels: what every Triton kernel is tested against.

They run on any device and are the path taken for CPU tensors.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from hvae_detect.kernels.layout import LOG_SCALE_MIN, N_BINS, split_dlogmix_params


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


def dlogmix_log_prob_reference(x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """Discretized logistic mixture log p(x): x (N, C, H, W) in [0, 1], params in the
    layout of ``kernels/layout.py``; returns (N,) nats, computed in float32."""
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


def logmeanexp_reference(log_w: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """log(mean(exp(log_w))) along ``dim``; exact for -inf entries (all -inf gives -inf)."""
    return torch.logsumexp(log_w, dim=dim) - math.log(log_w.shape[dim])


def streaming_update_reference(run_max: torch.Tensor, run_sum: torch.Tensor, chunk: torch.Tensor):
    """Fold a (s, N) chunk into the running (max, sum exp(. - max)) state; -inf safe.

    Sample by sample, in elementwise ops only: each column's result does not depend on
    how many columns there are (a scored image's value does not depend on its batch).
    """
    for w in chunk:
        new_max = torch.maximum(run_max, w)
        finite = torch.isfinite(new_max)
        safe_max = torch.where(finite, new_max, torch.zeros_like(new_max))  # avoids (-inf) - (-inf)
        rescale = torch.where(finite, torch.exp(run_max - safe_max), torch.zeros_like(run_sum))
        run_sum = run_sum * rescale + torch.exp(w - safe_max)
        run_max = new_max
    return run_max, run_sum
