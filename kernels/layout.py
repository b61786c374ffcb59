"""The discretized logistic mixture's parameter layout and input checks.

Defined once here, below both the PyTorch reference (``kernels/reference.py``) and
the Triton kernel (``kernels/dlogmix.py``). Layout (DESIGN.md): C = 1 ->
[M logits, M means, M log-scales]; C = 3 -> M logits, then per channel
[M means, M log-scales, M coefficients] (the PixelCNN++ order).
"""

from __future__ import annotations

import torch

LOG_SCALE_MIN = -7.0  # PixelCNN++ clamp
N_BINS = 256


def params_per_component(n_channels: int) -> int:
    """Parameter channels per mixture component for C = 1 or 3 image channels."""
    if n_channels == 1:
        return 3
    if n_channels == 3:
        return 10
    raise ValueError(f"discretized logistic mixture supports 1 or 3 channels, got {n_channels}")


def dlogmix_param_channels(n_channels: int, n_mix: int) -> int:
    """Number of parameter channels of an ``n_mix``-component mixture."""
    return params_per_component(n_channels) * n_mix


def split_dlogmix_params(params: torch.Tensor, n_channels: int):
    """Split (N, P, H, W) params into logits (N, M, H, W) and means, log-scales,
    coefficients of shape (N, C, M, H, W) (coefficients are None for C = 1)."""
    n, p, h, w = params.shape
    per = params_per_component(n_channels)
    if p % per:
        raise ValueError(f"expected {per}*M parameter channels for a {n_channels}-channel image, got {p}")
    m = p // per
    if n_channels == 1:
        logits, means, log_scales = params.split(m, dim=1)
        return logits, means.unsqueeze(1), log_scales.unsqueeze(1), None
    logits = params[:, :m]
    rest = params[:, m:].reshape(n, 3, 3, m, h, w)  # (N, channel, {mean, log-scale, coeff}, M, H, W)
    return logits, rest[:, :, 0], rest[:, :, 1], rest[:, :, 2]


def clamp_log_scales(params: torch.Tensor, n_channels: int, log_scale_min: float) -> torch.Tensor:
    """``params`` with every log-scale channel clamped below at ``log_scale_min`` (the others unchanged).

    A floor above ``LOG_SCALE_MIN`` bounds how sharp a component can be: a logistic narrower than
    about a bin cannot be expressed, so no pixel costs fewer nats than the floor allows.
    """
    m = params.shape[1] // params_per_component(n_channels)
    out = params.clone(memory_format=torch.contiguous_format)  # contiguous: the slices below are views
    if n_channels == 1:
        out[:, 2 * m:].clamp_(min=log_scale_min)
    else:  # per channel [means, log-scales, coefficients] after the logits
        out[:, m:].unflatten(1, (3, 3, m))[:, :, 1].clamp_(min=log_scale_min)
    return out


def check_log_scale_min(value, name: str = "log_scale_min") -> None:
    """Raise ValueError unless ``value`` is a number in [LOG_SCALE_MIN, 0)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not LOG_SCALE_MIN <= value < 0:
        raise ValueError(f"{name} must be a number in [{LOG_SCALE_MIN}, 0) (the mixture's floor on log-scales; "
                         f"{LOG_SCALE_MIN} is PixelCNN++'s), got {value!r}")


def check_dlogmix_inputs(x: torch.Tensor, params: torch.Tensor) -> None:
    """Raise ValueError unless x (N, C, H, W) and params (N, P, H, W) fit the layout."""
    if x.dim() != 4 or params.dim() != 4:
        raise ValueError(f"expected x (N, C, H, W) and params (N, P, H, W), got {tuple(x.shape)} and {tuple(params.shape)}")
    n, c, h, w = x.shape
    if params.shape[0] != n or params.shape[2:] != (h, w):
        raise ValueError(f"params {tuple(params.shape)} do not match x {tuple(x.shape)} in N, H or W")
    per = params_per_component(c)
    if params.shape[1] % per:
        raise ValueError(f"expected {per}*M parameter channels for C={c}, got {params.shape[1]}")
    if x.device != params.device:
        raise ValueError(f"x is on {x.device} but params on {params.device}")
