"""The one place that chooses between the Triton kernels and the PyTorch references.

CUDA tensors use Triton, everything else the reference. The environment variable
``HVAE_DETECT_KERNELS=auto|triton|reference`` forces a path; forcing ``triton``
where it cannot run (no triton, or CPU tensors without ``TRITON_INTERPRET=1``)
raises a RuntimeError instead of silently falling back.
"""

from __future__ import annotations

import functools
import importlib.util
import os

import torch

from hvae_detect.kernels.layout import check_dlogmix_inputs
from hvae_detect.kernels.reference import (dlogmix_log_prob_reference, logmeanexp_reference,
                                           streaming_update_reference)

ENV_VAR = "HVAE_DETECT_KERNELS"
_CHOICES = ("auto", "triton", "reference")


def kernel_mode() -> str:
    mode = os.environ.get(ENV_VAR, "auto").strip().lower() or "auto"
    if mode not in _CHOICES:
        raise ValueError(f"{ENV_VAR} must be one of {', '.join(_CHOICES)}, got {mode!r}")
    return mode


def triton_available() -> bool:
    """triton comes with torch's Linux CUDA wheels; elsewhere only the references exist."""
    return importlib.util.find_spec("triton") is not None


@functools.cache
def _kernels():
    # Imported on first use, not with the package: TRITON_INTERPRET is read when triton is
    # imported, so importing it eagerly would fix the mode before a caller could choose it.
    from hvae_detect.kernels import dlogmix, logsumexp

    return dlogmix, logsumexp


def _interpreter_on() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def use_triton(tensor: torch.Tensor) -> bool:
    """True when the kernels should run on ``tensor``'s device."""
    mode = kernel_mode()
    if mode == "reference":
        return False
    runnable = triton_available() and (tensor.is_cuda or _interpreter_on())
    if mode == "triton":
        if not runnable:
            why = "triton is not installed" if not triton_available() else (
                f"the tensor is on {tensor.device} and TRITON_INTERPRET=1 is not set")
            raise RuntimeError(f"{ENV_VAR}=triton but the Triton kernels cannot run: {why}")
        return True
    return bool(tensor.is_cuda and triton_available())


def dlogmix_log_prob(x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """Discretized logistic mixture log p(x), (N,) nats: Triton on CUDA, the reference elsewhere."""
    check_dlogmix_inputs(x, params)
    if use_triton(params):
        return _kernels()[0].dlogmix_log_prob_triton(x, params)
    return dlogmix_log_prob_reference(x, params)


def logmeanexp(log_w: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """logmeanexp over importance samples; the kernel handles (S, N) reduced over dim 0."""
    if log_w.dim() == 2 and dim == 0 and use_triton(log_w):
        return _kernels()[1].logmeanexp_triton(log_w)
    return logmeanexp_reference(log_w, dim=dim)


def streaming_update(run_max: torch.Tensor, run_sum: torch.Tensor, chunk: torch.Tensor):
    """Fold a (s, N) chunk of log-weights into a running (max, sum of exp(. - max))."""
    if use_triton(chunk):
        return _kernels()[1].streaming_update_triton(run_max, run_sum, chunk)
    return streaming_update_reference(run_max, run_sum, chunk)
