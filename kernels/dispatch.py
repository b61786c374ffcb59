"""Choose between the Triton kernels and the PyTorch reference.

CUDA tensors use Triton, everything else the reference. The environment variable
``HVAE_DETECT_KERNELS=auto|triton|reference`` forces a path; forcing ``triton``
where it cannot run (no triton, or CPU tensors without ``TRITON_INTERPRET=1``)
raises a RuntimeError instead of silently falling back.
"""

from __future__ import annotations

import importlib.util
import os

import torch

ENV_VAR = "HVAE_DETECT_KERNELS"
_CHOICES = ("auto", "triton", "reference")


def kernel_mode() -> str:
    mode = os.environ.get(ENV_VAR, "auto").strip().lower() or "auto"
    if mode not in _CHOICES:
        raise ValueError(f"{ENV_VAR} must be one of {', '.join(_CHOICES)}, got {mode!r}")
    return mode


def triton_available() -> bool:
    return importlib.util.find_spec("triton") is not None


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
