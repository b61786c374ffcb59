"""Importance-weighted reductions: logmeanexp over samples, one-shot and streaming.

The engine that turns a model into L, L>k and LLR>k lives in ``hvae_detect.model``
(``HierarchicalVAE.ood_scores``); this module holds the reductions it streams with.
"""

from __future__ import annotations

import math

import torch


def logmeanexp_reference(log_w: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """log(mean(exp(log_w))) along ``dim``; exact for -inf entries (all -inf gives -inf)."""
    return torch.logsumexp(log_w, dim=dim) - math.log(log_w.shape[dim])


def logmeanexp(log_w: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """logmeanexp over importance samples, e.g. (S, N) -> (N,).

    Uses the Triton kernel for CUDA tensors of shape (S, N) reduced over dim 0,
    the PyTorch reference otherwise (``HVAE_DETECT_KERNELS`` forces a path).
    """
    from hvae_detect.kernels.dispatch import use_triton

    if log_w.dim() == 2 and dim == 0 and use_triton(log_w):
        from hvae_detect.kernels.logsumexp import logmeanexp_triton

        return logmeanexp_triton(log_w)
    return logmeanexp_reference(log_w, dim=dim)


class StreamingLogMeanExp:
    """Running (max, sum of exp) over chunks of samples, so S samples never sit in memory at once.

    >>> acc = StreamingLogMeanExp()
    >>> for chunk in chunks:          # each (s_i, N)
    ...     acc.update(chunk)
    >>> acc.result()                  # == logmeanexp(torch.cat(chunks))
    """

    def __init__(self) -> None:
        self.max: torch.Tensor | None = None
        self.sum: torch.Tensor | None = None
        self.count = 0

    def update(self, chunk: torch.Tensor) -> None:
        from hvae_detect.kernels.dispatch import use_triton

        if chunk.dim() != 2:
            raise ValueError(f"expected a (samples, N) chunk, got shape {tuple(chunk.shape)}")
        chunk = chunk.float()
        if self.max is None:
            self.max = torch.full_like(chunk[0], -math.inf)
            self.sum = torch.zeros_like(chunk[0])
        if use_triton(chunk):
            from hvae_detect.kernels.logsumexp import streaming_update_triton

            self.max, self.sum = streaming_update_triton(self.max, self.sum, chunk)
        else:
            self.max, self.sum = streaming_update_reference(self.max, self.sum, chunk)
        self.count += chunk.shape[0]

    def result(self) -> torch.Tensor:
        if self.count == 0:
            raise ValueError("no samples were folded in")
        return self.max + torch.log(self.sum) - math.log(self.count)


def streaming_update_reference(run_max: torch.Tensor, run_sum: torch.Tensor, chunk: torch.Tensor):
    """Fold a (s, N) chunk into the running (max, sum exp(. - max)) state; -inf safe."""
    if chunk.shape[0] == 0:
        return run_max, run_sum
    new_max = torch.maximum(run_max, chunk.max(dim=0).values)
    finite = torch.isfinite(new_max)
    safe_max = torch.where(finite, new_max, torch.zeros_like(new_max))  # avoids (-inf) - (-inf)
    rescale = torch.where(finite, torch.exp(run_max - safe_max), torch.zeros_like(run_sum))
    new_sum = run_sum * rescale + torch.exp(chunk - safe_max).sum(dim=0)
    return new_max, new_sum
