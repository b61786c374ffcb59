"""Importance-weighted logsumexp over samples: one-shot logmeanexp and a streaming update.

Log-weights are (S, N): S importance samples of N images, images contiguous. Each
program owns BLOCK_N images and sweeps the samples in (BLOCK_S, BLOCK_N) tiles,
folding every tile into a per-image running (max, sum of exp(x - max)) held in
registers, so the log-weights are read exactly once. The state update is the one
of ``hvae_detect.kernels.reference.streaming_update_reference``, including its -inf rules:
a non-finite max is replaced by 0 before subtracting, so an all -inf column gives
max -inf and sum 0, and logmeanexp returns -inf there, not NaN.
"""

from __future__ import annotations

import contextlib
import math

import torch
import triton
import triton.language as tl


@triton.jit
def _logsumexp_kernel(
    w_ptr,
    max_in_ptr,
    sum_in_ptr,
    max_out_ptr,
    sum_out_ptr,
    out_ptr,
    S,
    N,
    log_count,
    HAS_STATE: tl.constexpr,
    FINALIZE: tl.constexpr,
    ACC: tl.constexpr,
    BLOCK_S: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    cols = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    col_mask = cols < N
    if HAS_STATE:
        run_max = tl.load(max_in_ptr + cols, mask=col_mask, other=float("-inf")).to(ACC)
        run_sum = tl.load(sum_in_ptr + cols, mask=col_mask, other=0.0).to(ACC)
    else:
        run_max = tl.full([BLOCK_N], float("-inf"), ACC)
        run_sum = tl.zeros([BLOCK_N], ACC)
    rows = tl.arange(0, BLOCK_S)
    for s0 in range(0, S, BLOCK_S):
        r = s0 + rows
        ptrs = w_ptr + r[:, None].to(tl.int64) * N + cols[None, :]
        tile = tl.load(ptrs, mask=(r[:, None] < S) & col_mask[None, :], other=float("-inf")).to(ACC)
        new_max = tl.maximum(run_max, tl.max(tile, axis=0))
        finite = tl.abs(new_max) < float("inf")  # also False for NaN, as torch.isfinite
        safe_max = tl.where(finite, new_max, 0.0)
        rescale = tl.where(finite, tl.exp(run_max - safe_max), 0.0)
        run_sum = run_sum * rescale + tl.sum(tl.exp(tile - safe_max[None, :]), axis=0)
        run_max = new_max
    if FINALIZE:
        # A +inf weight makes later rescales inf * 0; torch.logsumexp returns +inf there.
        result = tl.where(run_max == float("inf"), run_max, run_max + tl.log(run_sum) - log_count)
        tl.store(out_ptr + cols, result, mask=col_mask)
    else:
        tl.store(max_out_ptr + cols, run_max, mask=col_mask)
        tl.store(sum_out_ptr + cols, run_sum, mask=col_mask)


_BLOCK_S, _BLOCK_N = 32, 128


def _launch(w, run_max, run_sum, finalize):
    s, n = w.shape
    acc = torch.float64 if w.dtype == torch.float64 else torch.float32
    tl_acc = tl.float64 if acc == torch.float64 else tl.float32
    has_state = run_max is not None
    out = torch.empty(n, device=w.device, dtype=acc) if finalize else None
    new_max = None if finalize else torch.empty(n, device=w.device, dtype=acc)
    new_sum = None if finalize else torch.empty(n, device=w.device, dtype=acc)
    if n:
        guard = torch.cuda.device(w.device) if w.is_cuda else contextlib.nullcontext()
        with guard:
            _logsumexp_kernel[(triton.cdiv(n, _BLOCK_N),)](
                w,
                run_max if has_state else w,
                run_sum if has_state else w,
                new_max if new_max is not None else w,
                new_sum if new_sum is not None else w,
                out if out is not None else w,
                s,
                n,
                math.log(s) if s else 0.0,
                HAS_STATE=has_state,
                FINALIZE=finalize,
                ACC=tl_acc,
                BLOCK_S=_BLOCK_S,
                BLOCK_N=_BLOCK_N,
                num_warps=4,
            )
    return out if finalize else (new_max, new_sum)


class _LogMeanExp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, log_w):
        out = _launch(log_w, None, None, finalize=True).to(log_w.dtype)
        ctx.save_for_backward(log_w, out)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        # d/dw_s of logmeanexp = softmax over samples; the same formula torch.logsumexp uses.
        log_w, out = ctx.saved_tensors
        weights = torch.exp(log_w - (out + math.log(log_w.shape[0])).unsqueeze(0))
        return grad_out.unsqueeze(0) * weights


def logmeanexp_triton(log_w: torch.Tensor) -> torch.Tensor:
    """log(mean_s exp(log_w[s, n])) for (S, N) floating-point log-weights, S >= 1 -> (N,); exact
    for -inf entries. Unchecked: ``hvae_detect.kernels.dispatch.logmeanexp`` checks the inputs."""
    return _LogMeanExp.apply(log_w.contiguous())


def streaming_update_triton(run_max: torch.Tensor, run_sum: torch.Tensor, chunk: torch.Tensor):
    """Fold a (s, N) chunk into the running (max, sum of exp(x - max)) state -> (new_max, new_sum).

    Same contract and -inf handling as ``hvae_detect.kernels.reference.streaming_update_reference``.
    Unchecked: ``hvae_detect.kernels.dispatch.streaming_update`` checks the inputs.
    """
    return _launch(chunk.contiguous(), run_max.contiguous(), run_sum.contiguous(), finalize=False)
