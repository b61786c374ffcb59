"""Arithmetic precision: float32, or bfloat16 mixed precision where the device computes it fast.

One home for the choice that training (``TrainingConfig.precision``) and scoring
(``HVAEOutlierDetector.scoring_precision``) both make. torch is imported where it is used, so that the
command line's help can read PRECISIONS without it.
"""

from __future__ import annotations

import contextlib
import functools

PRECISIONS = ("auto", "float32", "bfloat16")


@functools.cache
def cpu_has_bfloat16() -> bool:
    """Whether the CPU has bfloat16 instructions (x86 AVX512-BF16 or AMX-BF16, read from Linux's
    /proc/cpuinfo; False where that cannot be read). Without them oneDNN emulates bfloat16 and
    float32 is the faster choice."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return False
    return bool({"avx512_bf16", "amx_bf16"} & set(flags))


def resolve_precision(precision: str, device) -> str:
    """ "auto" means bfloat16 mixed precision on CUDA and on CPUs with bfloat16 instructions, where it
    measured faster than float32 (on an AVX512-BF16 CPU: training steps 1.3-1.9x, benchmarks/speed/
    training_speed.py; scoring 1.8x, benchmarks/speed/scoring_precision.py), and float32 elsewhere."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto":
        import torch

        kind = torch.device(device).type
        return "bfloat16" if kind == "cuda" or (kind == "cpu" and cpu_has_bfloat16()) else "float32"
    return precision


def autocast(device, precision: str):
    """Mixed precision for a forward pass: convolutions and matmuls in bfloat16, while weights,
    optimiser state, the latent densities and the likelihood (hence the bound and its sums) stay
    float32 (see the Gaussian layers and the head)."""
    if resolve_precision(precision, device) == "float32":
        return contextlib.nullcontext()
    import torch

    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
