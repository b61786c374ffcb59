"""Fused discretized logistic mixture log-likelihood (PixelCNN++), forward and backward.

One program scores a block of pixels of one image: it walks the M components once,
keeps two running logsumexps per pixel (of log pi_m + log p_m(x), and of the
logits for the softmax normaliser) in registers, and writes one partial sum per
block to an (N, n_blocks) buffer. The per-image total is a fixed-shape sum of that
buffer, so the same inputs give bitwise the same output (no float atomics, and
the block size depends only on the image size).

The backward kernel recomputes the forward (a first sweep over the components to
get both logsumexps) and then, in a second sweep, writes d log p / d params for
every component, scaled by the image's grad_output. Nothing per-pixel or
per-component is stored between forward and backward.

One channel's bin probability and its gradient, the math both kernels call per component, are in
``kernels/dlogmix_channel.py``.

Numerics mirror ``hvae_detect.kernels.reference.dlogmix_log_prob_reference``:
edge bins 0 and 255, the log-scale clamp at -7 (with the installed torch.clamp's
subgradient at exactly -7) and the density-at-bin-centre branch when a bin's mass is <= 1e-5.
"""

from __future__ import annotations

import contextlib
import functools

import torch
import triton
import triton.language as tl

from hvae_detect.kernels import layout
from hvae_detect.kernels.dlogmix_channel import LOG_SCALE_MIN, channel_log_prob, channel_log_prob_grad, tanh

# The parameter layout, from layout.py: block (channel, quantity) = FIRST_CHANNEL_BLOCK + channel * Q + quantity.
LOGITS_BLOCK: tl.constexpr = tl.constexpr(layout.LOGITS_BLOCK)
FIRST_CHANNEL_BLOCK: tl.constexpr = tl.constexpr(layout.FIRST_CHANNEL_BLOCK)
MEAN: tl.constexpr = tl.constexpr(layout.MEAN)
LOG_SCALE: tl.constexpr = tl.constexpr(layout.LOG_SCALE)
COEFF: tl.constexpr = tl.constexpr(layout.COEFF)


@triton.jit
def _lse_update(run_max, run_sum, v):
    """Fold v into a running (max, sum exp(. - max)) with one exp; -inf safe."""
    hi = tl.maximum(run_max, v)
    lo = tl.minimum(run_max, v)
    e = tl.where(lo == float("-inf"), 0.0, tl.exp(lo - hi))
    new_sum = tl.where(v > run_max, run_sum * e + 1.0, run_sum + e)
    return hi, new_sum


@triton.jit
def _param_offsets(channel: tl.constexpr, quantity: tl.constexpr, Q: tl.constexpr, m, M, HW, offs):
    """Offsets, in one image's parameters, of component m's ``quantity`` of image ``channel`` (layout.param_block)."""
    return ((FIRST_CHANNEL_BLOCK + channel * Q + quantity) * M + m) * HW + offs


@triton.jit
def _load_param(p_base, channel: tl.constexpr, quantity: tl.constexpr, Q: tl.constexpr, m, M, HW, offs, mask):
    return tl.load(p_base + _param_offsets(channel, quantity, Q, m, M, HW, offs), mask=mask, other=0.0).to(tl.float32)


@triton.jit
def _load_logit(p_base, m, M, HW, offs, mask):
    return tl.load(p_base + (LOGITS_BLOCK * M + m) * HW + offs, mask=mask, other=0.0).to(tl.float32)


@triton.jit
def _load_pixels(x_base, HW, offs, mask, C: tl.constexpr):
    """Pixels of each channel mapped to [-1, 1]; x1, x2 are dummies when C == 1."""
    x0 = tl.load(x_base + offs, mask=mask, other=0.5).to(tl.float32) * 2.0 - 1.0
    x1 = x0
    x2 = x0
    if C == 3:
        x1 = tl.load(x_base + HW + offs, mask=mask, other=0.5).to(tl.float32) * 2.0 - 1.0
        x2 = tl.load(x_base + 2 * HW + offs, mask=mask, other=0.5).to(tl.float32) * 2.0 - 1.0
    return x0, x1, x2


@triton.jit
def _component_log_prob(p_base, m, M, HW, offs, mask, x0, x1, x2, C: tl.constexpr, Q: tl.constexpr):
    """log p_m(x) summed over channels, with the PixelCNN++ channel coupling for C == 3."""
    if C == 1:
        lp = channel_log_prob(
            x0,
            _load_param(p_base, 0, MEAN, Q, m, M, HW, offs, mask),
            _load_param(p_base, 0, LOG_SCALE, Q, m, M, HW, offs, mask),
        )
    else:
        t0 = tanh(_load_param(p_base, 0, COEFF, Q, m, M, HW, offs, mask))
        t1 = tanh(_load_param(p_base, 1, COEFF, Q, m, M, HW, offs, mask))
        t2 = tanh(_load_param(p_base, 2, COEFF, Q, m, M, HW, offs, mask))
        mu0 = _load_param(p_base, 0, MEAN, Q, m, M, HW, offs, mask)
        mu1 = _load_param(p_base, 1, MEAN, Q, m, M, HW, offs, mask) + t0 * x0
        mu2 = _load_param(p_base, 2, MEAN, Q, m, M, HW, offs, mask) + t1 * x0 + t2 * x1
        lp = channel_log_prob(x0, mu0, _load_param(p_base, 0, LOG_SCALE, Q, m, M, HW, offs, mask))
        lp += channel_log_prob(x1, mu1, _load_param(p_base, 1, LOG_SCALE, Q, m, M, HW, offs, mask))
        lp += channel_log_prob(x2, mu2, _load_param(p_base, 2, LOG_SCALE, Q, m, M, HW, offs, mask))
    return lp


@triton.jit
def _mixture_lse(p_base, M, HW, offs, mask, x0, x1, x2, C: tl.constexpr, Q: tl.constexpr, BLOCK: tl.constexpr):
    """Per-pixel logsumexp_m(logit_m + log p_m(x)) and logsumexp_m(logit_m), one sweep."""
    joint_max = tl.full([BLOCK], float("-inf"), tl.float32)
    joint_sum = tl.zeros([BLOCK], tl.float32)
    logit_max = tl.full([BLOCK], float("-inf"), tl.float32)
    logit_sum = tl.zeros([BLOCK], tl.float32)
    for m in range(M):
        logit = _load_logit(p_base, m, M, HW, offs, mask)
        lp = _component_log_prob(p_base, m, M, HW, offs, mask, x0, x1, x2, C, Q)
        joint_max, joint_sum = _lse_update(joint_max, joint_sum, lp + logit)
        logit_max, logit_sum = _lse_update(logit_max, logit_sum, logit)
    return joint_max + tl.log(joint_sum), logit_max + tl.log(logit_sum)


@triton.jit
def _dlogmix_fwd_kernel(
    x_ptr,
    p_ptr,
    partial_ptr,
    HW,
    M,
    n_blocks,
    C: tl.constexpr,
    Q: tl.constexpr,
    P_PER_MIX: tl.constexpr,
    BLOCK: tl.constexpr,
):
    blk = tl.program_id(0)
    n = tl.program_id(1).to(tl.int64)
    offs = blk * BLOCK + tl.arange(0, BLOCK)
    mask = offs < HW
    x0, x1, x2 = _load_pixels(x_ptr + n * C * HW, HW, offs, mask, C)
    p_base = p_ptr + n * (P_PER_MIX * M) * HW
    lse_joint, lse_logit = _mixture_lse(p_base, M, HW, offs, mask, x0, x1, x2, C, Q, BLOCK)
    ll = tl.where(mask, lse_joint - lse_logit, 0.0)
    tl.store(partial_ptr + n * n_blocks + blk, tl.sum(ll, axis=0))


@triton.jit
def _dlogmix_bwd_kernel(
    x_ptr,
    p_ptr,
    grad_out_ptr,
    grad_p_ptr,
    HW,
    M,
    C: tl.constexpr,
    Q: tl.constexpr,
    P_PER_MIX: tl.constexpr,
    BLOCK: tl.constexpr,
    GRAD_AT_CLAMP: tl.constexpr,
):
    blk = tl.program_id(0)
    n = tl.program_id(1).to(tl.int64)
    offs = blk * BLOCK + tl.arange(0, BLOCK)
    mask = offs < HW
    x0, x1, x2 = _load_pixels(x_ptr + n * C * HW, HW, offs, mask, C)
    p_base = p_ptr + n * (P_PER_MIX * M) * HW
    g_base = grad_p_ptr + n * (P_PER_MIX * M) * HW
    out_ty = grad_p_ptr.dtype.element_ty
    lse_joint, lse_logit = _mixture_lse(p_base, M, HW, offs, mask, x0, x1, x2, C, Q, BLOCK)
    g = tl.load(grad_out_ptr + n)

    for m in range(M):
        logit = _load_logit(p_base, m, M, HW, offs, mask)
        if C == 1:
            lp, d_mu, d_ls = channel_log_prob_grad(
                x0,
                _load_param(p_base, 0, MEAN, Q, m, M, HW, offs, mask),
                _load_param(p_base, 0, LOG_SCALE, Q, m, M, HW, offs, mask),
                GRAD_AT_CLAMP,
            )
            resp = tl.exp(lp + logit - lse_joint)  # posterior responsibility of component m
            r = g * resp
            tl.store(g_base + _param_offsets(0, MEAN, Q, m, M, HW, offs), (r * d_mu).to(out_ty), mask=mask)
            tl.store(g_base + _param_offsets(0, LOG_SCALE, Q, m, M, HW, offs), (r * d_ls).to(out_ty), mask=mask)
        else:
            c0 = _load_param(p_base, 0, COEFF, Q, m, M, HW, offs, mask)
            c1 = _load_param(p_base, 1, COEFF, Q, m, M, HW, offs, mask)
            c2 = _load_param(p_base, 2, COEFF, Q, m, M, HW, offs, mask)
            t0 = tanh(c0)
            t1 = tanh(c1)
            t2 = tanh(c2)
            mu0 = _load_param(p_base, 0, MEAN, Q, m, M, HW, offs, mask)
            mu1 = _load_param(p_base, 1, MEAN, Q, m, M, HW, offs, mask) + t0 * x0
            mu2 = _load_param(p_base, 2, MEAN, Q, m, M, HW, offs, mask) + t1 * x0 + t2 * x1
            lp0, d_mu0, d_ls0 = channel_log_prob_grad(
                x0, mu0, _load_param(p_base, 0, LOG_SCALE, Q, m, M, HW, offs, mask), GRAD_AT_CLAMP
            )
            lp1, d_mu1, d_ls1 = channel_log_prob_grad(
                x1, mu1, _load_param(p_base, 1, LOG_SCALE, Q, m, M, HW, offs, mask), GRAD_AT_CLAMP
            )
            lp2, d_mu2, d_ls2 = channel_log_prob_grad(
                x2, mu2, _load_param(p_base, 2, LOG_SCALE, Q, m, M, HW, offs, mask), GRAD_AT_CLAMP
            )
            resp = tl.exp(lp0 + lp1 + lp2 + logit - lse_joint)
            r = g * resp
            # Channel k's mean is means_k + sum_j tanh(coeff) * x_j: its gradient reaches the coefficients too.
            tl.store(g_base + _param_offsets(0, MEAN, Q, m, M, HW, offs), (r * d_mu0).to(out_ty), mask=mask)
            tl.store(g_base + _param_offsets(0, LOG_SCALE, Q, m, M, HW, offs), (r * d_ls0).to(out_ty), mask=mask)
            tl.store(
                g_base + _param_offsets(0, COEFF, Q, m, M, HW, offs),
                (r * d_mu1 * x0 * (1.0 - t0 * t0)).to(out_ty),
                mask=mask,
            )
            tl.store(g_base + _param_offsets(1, MEAN, Q, m, M, HW, offs), (r * d_mu1).to(out_ty), mask=mask)
            tl.store(g_base + _param_offsets(1, LOG_SCALE, Q, m, M, HW, offs), (r * d_ls1).to(out_ty), mask=mask)
            tl.store(
                g_base + _param_offsets(1, COEFF, Q, m, M, HW, offs),
                (r * d_mu2 * x0 * (1.0 - t1 * t1)).to(out_ty),
                mask=mask,
            )
            tl.store(g_base + _param_offsets(2, MEAN, Q, m, M, HW, offs), (r * d_mu2).to(out_ty), mask=mask)
            tl.store(g_base + _param_offsets(2, LOG_SCALE, Q, m, M, HW, offs), (r * d_ls2).to(out_ty), mask=mask)
            tl.store(
                g_base + _param_offsets(2, COEFF, Q, m, M, HW, offs),
                (r * d_mu2 * x1 * (1.0 - t2 * t2)).to(out_ty),
                mask=mask,
            )
        # d/d logit_m of [logsumexp(logit + lp) - logsumexp(logit)] = responsibility - softmax.
        tl.store(
            g_base + (LOGITS_BLOCK * M + m) * HW + offs, (g * (resp - tl.exp(logit - lse_logit))).to(out_ty), mask=mask
        )


@functools.cache
def _clamp_passes_grad_at_min() -> bool:
    """Whether torch.clamp(min=a) passes the gradient at exactly a (torch versions differ).

    The reference clamps the log-scales with torch.clamp, so a log-scale of exactly -7
    gets whichever subgradient the installed torch uses; the kernel follows it.
    """
    with torch.enable_grad():  # called from backward, where grad mode is off
        v = torch.tensor(LOG_SCALE_MIN.value, requires_grad=True)
        (g,) = torch.autograd.grad(v.clamp(min=LOG_SCALE_MIN.value), v)
    return bool(g.item() == 1.0)


def _block_size(hw: int) -> int:
    # Depends on the image size only, so the partial-sum layout (and the bits) never change.
    return min(256, max(16, triton.next_power_of_2(hw)))


def _launch_geometry(x: torch.Tensor, params: torch.Tensor):
    n, c, h, w = x.shape
    per_mix = layout.params_per_component(c)
    hw = h * w
    block = _block_size(hw)
    q = layout.quantities_per_channel(c)
    return n, c, q, hw, params.shape[1] // per_mix, per_mix, block, triton.cdiv(hw, block)


def _device_guard(t: torch.Tensor):
    # Triton launches on the current CUDA device; make it the tensor's.
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


class _DLogMixLogProb(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, params):
        x = x.contiguous()
        params = params.contiguous()
        n, c, q, hw, m, per_mix, block, n_blocks = _launch_geometry(x, params)
        ctx.save_for_backward(x, params)
        if n == 0 or hw == 0 or m == 0:
            return torch.zeros(n, device=params.device, dtype=torch.float32)
        partial = torch.empty((n, n_blocks), device=params.device, dtype=torch.float32)
        with _device_guard(params):
            _dlogmix_fwd_kernel[(n_blocks, n)](
                x, params, partial, hw, m, n_blocks, C=c, Q=q, P_PER_MIX=per_mix, BLOCK=block, num_warps=4
            )
        return partial.sum(dim=1)  # fixed-shape reduction: deterministic

    @staticmethod
    def backward(ctx, grad_out):
        x, params = ctx.saved_tensors
        if not ctx.needs_input_grad[1]:
            return None, None
        n, c, q, hw, m, per_mix, block, n_blocks = _launch_geometry(x, params)
        grad = torch.empty_like(params)  # the kernel writes every element
        if grad.numel():
            with _device_guard(params):
                _dlogmix_bwd_kernel[(n_blocks, n)](
                    x,
                    params,
                    grad_out.float().contiguous(),
                    grad,
                    hw,
                    m,
                    C=c,
                    Q=q,
                    P_PER_MIX=per_mix,
                    BLOCK=block,
                    GRAD_AT_CLAMP=_clamp_passes_grad_at_min(),
                    num_warps=4,
                )
        return None, grad  # x is data: no gradient


def dlogmix_log_prob_triton(x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """Discretized logistic mixture log p(x), (N,) float32 nats, via the fused Triton kernels.

    x: (N, C, H, W) in [0, 1], C = 1 or 3; params: (N, 3M, H, W) for C = 1 or
    (N, 10M, H, W) for C = 3 in the layout of ``kernels/layout.py``, float32/float16/bfloat16
    (accumulation is float32; the gradient comes back in params' dtype). The inputs are
    not checked here: ``hvae_detect.kernels.dispatch.dlogmix_log_prob``, the one public
    entry point, checks them once for either path.
    """
    return _DLogMixLogProb.apply(x, params)
