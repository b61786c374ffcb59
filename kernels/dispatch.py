"""The public entry points of the kernels: one input check, then Triton or the PyTorch reference.

Every input is checked here, once, before a path is chosen, so a bad shape, dtype or
device gives the same ValueError whichever path would have run; the Triton wrappers
(``kernels/dlogmix.py``, ``kernels/logsumexp.py``) and the references
(``kernels/reference.py``) trust their inputs.

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

from hvae_detect.kernels.layout import params_per_component
from hvae_detect.kernels.reference import dlogmix_log_prob_reference, logmeanexp_reference, streaming_update_reference

ENV_VAR = "HVAE_DETECT_KERNELS"
_CHOICES = ("auto", "triton", "reference")
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)  # what both paths compute with


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
            why = (
                "triton is not installed"
                if not triton_available()
                else (f"the tensor is on {tensor.device} and TRITON_INTERPRET=1 is not set")
            )
            raise RuntimeError(f"{ENV_VAR}=triton but the Triton kernels cannot run: {why}")
        return True
    return bool(tensor.is_cuda and triton_available())


# ---------------------------------------------------------------- the one input check


def _check_tensors(**tensors: torch.Tensor) -> None:
    """Each is a tensor of a floating dtype both paths support, all on one device."""
    for name, t in tensors.items():
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dtype not in FLOAT_DTYPES:
            raise ValueError(f"{name} must be float16, bfloat16, float32 or float64, got {t.dtype}")
    devices = {name: t.device for name, t in tensors.items()}
    if len(set(devices.values())) > 1:
        raise ValueError("expected one device, got " + ", ".join(f"{n} on {d}" for n, d in devices.items()))


def check_dlogmix_inputs(x: torch.Tensor, params: torch.Tensor) -> None:
    """Raise ValueError unless x (N, C, H, W) and params (N, P, H, W) fit the layout of ``kernels/layout.py``."""
    _check_tensors(x=x, params=params)
    if x.dim() != 4 or params.dim() != 4:
        raise ValueError(
            f"expected x (N, C, H, W) and params (N, P, H, W), got {tuple(x.shape)} and {tuple(params.shape)}"
        )
    n, c, h, w = x.shape
    if params.shape[0] != n or params.shape[2:] != (h, w):
        raise ValueError(f"params {tuple(params.shape)} do not match x {tuple(x.shape)} in N, H or W")
    per = params_per_component(c)
    if params.shape[1] % per or params.shape[1] == 0:
        raise ValueError(
            f"expected {per}*M parameter channels (M >= 1 mixture components) for C={c}, got {params.shape[1]}"
        )


def check_log_weights(log_w: torch.Tensor, dim: int) -> None:
    """Raise ValueError unless ``log_w`` has at least one sample along ``dim``."""
    _check_tensors(log_w=log_w)
    if not -log_w.dim() <= dim < log_w.dim():
        raise ValueError(f"dim {dim} is out of range for log-weights of shape {tuple(log_w.shape)}")
    if log_w.shape[dim] == 0:
        raise ValueError(f"logmeanexp over zero samples is undefined (log-weights {tuple(log_w.shape)}, dim {dim})")


def check_streaming_state(run_max: torch.Tensor, run_sum: torch.Tensor, chunk: torch.Tensor) -> None:
    """Raise ValueError unless chunk is (s, N) and the running max and sum are (N,), all of one dtype."""
    _check_tensors(run_max=run_max, run_sum=run_sum, chunk=chunk)
    if chunk.dim() != 2 or run_max.shape != (chunk.shape[1],) or run_sum.shape != run_max.shape:
        raise ValueError(
            f"expected chunk (s, N) and states (N,), got {tuple(chunk.shape)}, "
            f"{tuple(run_max.shape)}, {tuple(run_sum.shape)}"
        )
    if not run_max.dtype == run_sum.dtype == chunk.dtype:
        raise ValueError(
            f"expected one dtype, got run_max {run_max.dtype}, run_sum {run_sum.dtype}, chunk {chunk.dtype}"
        )


# ---------------------------------------------------------------- entry points


def dlogmix_log_prob(x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """Discretized logistic mixture log p(x), (N,) nats: Triton on CUDA, the reference elsewhere."""
    check_dlogmix_inputs(x, params)
    if use_triton(params):
        return _kernels()[0].dlogmix_log_prob_triton(x, params)
    return dlogmix_log_prob_reference(x, params)


def logmeanexp(log_w: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """logmeanexp over importance samples; the kernel handles (S, N) reduced over dim 0."""
    check_log_weights(log_w, dim)
    if log_w.dim() == 2 and dim == 0 and use_triton(log_w):
        return _kernels()[1].logmeanexp_triton(log_w)
    return logmeanexp_reference(log_w, dim=dim)


def streaming_update(run_max: torch.Tensor, run_sum: torch.Tensor, chunk: torch.Tensor):
    """Fold a (s, N) chunk of log-weights into a running (max, sum of exp(. - max))."""
    check_streaming_state(run_max, run_sum, chunk)
    if use_triton(chunk):
        return _kernels()[1].streaming_update_triton(run_max, run_sum, chunk)
    return streaming_update_reference(run_max, run_sum, chunk)
