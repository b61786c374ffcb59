"""The discretized logistic mixture's parameter layout, stated once.

The P = M * (1 + C * Q) parameter channels of an image come in blocks of M, one
channel per mixture component, in the PixelCNN++ order:

    C = 1 (Q = 2):  [logits | means | log-scales]
    C = 3 (Q = 3):  [logits | means_0 | log-scales_0 | coefficients_0 | means_1 | ... | coefficients_2]

``param_block`` says which block holds a quantity of an image channel. The PyTorch
reference (``kernels/reference.py``, through ``split_dlogmix_params``) and the Triton
kernel (``kernels/dlogmix.py``) both index through it, so neither spells out offsets.
"""

from __future__ import annotations

import torch

LOG_SCALE_MIN = -7.0  # PixelCNN++ clamp
N_BINS = 256

LOGITS_BLOCK = 0  # the M mixture logits come first
FIRST_CHANNEL_BLOCK = 1  # then the image channels' blocks, channel by channel
MEAN, LOG_SCALE, COEFF = 0, 1, 2  # a channel's blocks, in order; COEFF only for C = 3


def quantities_per_channel(n_channels: int) -> int:
    """Blocks per image channel, Q: means and log-scales, plus the coupling coefficients for C = 3."""
    if n_channels == 1:
        return 2
    if n_channels == 3:
        return 3
    raise ValueError(f"discretized logistic mixture supports 1 or 3 channels, got {n_channels}")


def params_per_component(n_channels: int) -> int:
    """Parameter channels per mixture component for C = 1 or 3 image channels (3 or 10)."""
    return FIRST_CHANNEL_BLOCK + n_channels * quantities_per_channel(n_channels)


def dlogmix_param_channels(n_channels: int, n_mix: int) -> int:
    """Number of parameter channels of an ``n_mix``-component mixture."""
    return params_per_component(n_channels) * n_mix


def param_block(n_channels: int, channel: int, quantity: int) -> int:
    """Index of the block of M channels that holds ``quantity`` (MEAN, LOG_SCALE, COEFF) of image ``channel``."""
    return FIRST_CHANNEL_BLOCK + channel * quantities_per_channel(n_channels) + quantity


def split_dlogmix_params(params: torch.Tensor, n_channels: int):
    """Split (N, P, H, W) params into logits (N, M, H, W) and means, log-scales,
    coefficients of shape (N, C, M, H, W) (coefficients are None for C = 1); views, no copies."""
    per = params_per_component(n_channels)
    if params.shape[1] % per:
        raise ValueError(f"expected {per}*M parameter channels for a {n_channels}-channel image, got {params.shape[1]}")
    m = params.shape[1] // per
    logits = params[:, LOGITS_BLOCK * m : (LOGITS_BLOCK + 1) * m]
    blocks = _channel_blocks(params, n_channels, m)  # (N, C, Q, M, H, W)
    coeffs = blocks[:, :, COEFF] if n_channels == 3 else None
    return logits, blocks[:, :, MEAN], blocks[:, :, LOG_SCALE], coeffs


def _channel_blocks(params: torch.Tensor, n_channels: int, m: int) -> torch.Tensor:
    """The image channels' blocks as a (N, C, Q, M, H, W) view of (N, P, H, W) params."""
    return params[:, FIRST_CHANNEL_BLOCK * m :].unflatten(1, (n_channels, quantities_per_channel(n_channels), m))


def clamp_log_scales(params: torch.Tensor, n_channels: int, log_scale_min: float) -> torch.Tensor:
    """``params`` with every log-scale channel clamped below at ``log_scale_min`` (the others unchanged).

    A floor above ``LOG_SCALE_MIN`` bounds how sharp a component can be: a logistic narrower than
    about a bin cannot be expressed, so no pixel costs fewer nats than the floor allows.
    """
    m = params.shape[1] // params_per_component(n_channels)
    out = params.clone(memory_format=torch.contiguous_format)  # contiguous: the view below writes into it
    _channel_blocks(out, n_channels, m)[:, :, LOG_SCALE].clamp_(min=log_scale_min)
    return out


def check_log_scale_min(value, name: str = "log_scale_min") -> None:
    """Raise ValueError unless ``value`` is a number in [LOG_SCALE_MIN, 0)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not LOG_SCALE_MIN <= value < 0:
        raise ValueError(
            f"{name} must be a number in [{LOG_SCALE_MIN}, 0) (the mixture's floor on log-scales; "
            f"{LOG_SCALE_MIN} is PixelCNN++'s), got {value!r}"
        )
