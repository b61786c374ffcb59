"""One channel of one mixture component of the discretized logistic likelihood: log P(bin of x) and its
gradient in (mean, log scale), as Triton device functions that ``kernels/dlogmix.py``'s kernels call per
pixel block. Numerics mirror ``hvae_detect.kernels.reference.dlogmix_log_prob_reference``: edge bins 0
and 255, the log-scale clamp, and the density-at-bin-centre branch when a bin's mass is <= 1e-5.
"""

from __future__ import annotations

import math

import triton
import triton.language as tl

from hvae_detect.kernels import layout

LOG_SCALE_MIN: tl.constexpr = tl.constexpr(layout.LOG_SCALE_MIN)
HALF_BIN: tl.constexpr = tl.constexpr(1.0 / (layout.N_BINS - 1))  # bins are 2/255 wide on [-1, 1]
LOG_HALF_N_BINS: tl.constexpr = tl.constexpr(math.log((layout.N_BINS - 1) / 2.0))
EDGE: tl.constexpr = tl.constexpr(0.999)
TINY_BIN: tl.constexpr = tl.constexpr(1e-5)


@triton.jit
def softplus(z):
    # log(1 + e^z) without overflow; the log(1 + small) rounding costs < 1e-7 nats.
    return tl.maximum(z, 0.0) + tl.log(1.0 + tl.exp(-tl.abs(z)))


@triton.jit
def tanh(z):
    # tl has no portable tanh across triton 3.x; this form saturates cleanly at +-inf.
    return 1.0 - 2.0 / (tl.exp(2.0 * z) + 1.0)


@triton.jit
def channel_log_prob(xs, mu, log_scale):
    """log P(bin of xs) for one channel of one component; xs in [-1, 1]."""
    ls = tl.maximum(log_scale, LOG_SCALE_MIN)
    inv = tl.exp(-ls)
    centered = xs - mu
    plus = inv * (centered + HALF_BIN)
    minus = inv * (centered - HALF_BIN)
    mid = inv * centered
    cdf_delta = tl.sigmoid(plus) - tl.sigmoid(minus)
    # Bin 0: log sigmoid(plus) = -softplus(-plus); bin 255: log(1 - sigmoid(minus)) = -softplus(minus).
    log_edge = -softplus(tl.where(xs < -EDGE, -plus, minus))
    log_pdf_mid = mid - ls - 2.0 * softplus(mid) - LOG_HALF_N_BINS
    inner = tl.where(cdf_delta > TINY_BIN, tl.log(tl.maximum(cdf_delta, 1e-12)), log_pdf_mid)
    return tl.where((xs < -EDGE) | (xs > EDGE), log_edge, inner)


@triton.jit
def channel_log_prob_grad(xs, mu, log_scale, GRAD_AT_CLAMP: tl.constexpr):
    """As channel_log_prob, plus its derivatives w.r.t. mu and the raw (unclamped) log-scale."""
    ls = tl.maximum(log_scale, LOG_SCALE_MIN)
    inv = tl.exp(-ls)
    centered = xs - mu
    plus = inv * (centered + HALF_BIN)
    minus = inv * (centered - HALF_BIN)
    mid = inv * centered
    s_plus = tl.sigmoid(plus)
    s_minus = tl.sigmoid(minus)
    s_mid = tl.sigmoid(mid)
    cdf_delta = s_plus - s_minus
    low = xs < -EDGE
    high = xs > EDGE
    regular = cdf_delta > TINY_BIN
    interior = ~(low | high)

    log_edge = -softplus(tl.where(low, -plus, minus))
    log_pdf_mid = mid - ls - 2.0 * softplus(mid) - LOG_HALF_N_BINS
    safe_delta = tl.maximum(cdf_delta, 1e-12)
    inner = tl.where(regular, tl.log(safe_delta), log_pdf_mid)
    out = tl.where(low | high, log_edge, inner)

    # d out / d {plus, minus, mid}; exactly one branch is non-zero per element.
    d_plus = tl.where(low, 1.0 - s_plus, 0.0)
    d_plus += tl.where(interior & regular, s_plus * (1.0 - s_plus) / safe_delta, 0.0)
    d_minus = tl.where(high, -s_minus, 0.0)
    d_minus -= tl.where(interior & regular, s_minus * (1.0 - s_minus) / safe_delta, 0.0)
    tiny = interior & ~regular
    d_mid = tl.where(tiny, 1.0 - 2.0 * s_mid, 0.0)
    # plus, minus, mid are inv * (.), and d inv / d ls = -inv; log_pdf_mid also has a -ls term.
    d_mu = -inv * (d_plus + d_minus + d_mid)
    d_ls = -(plus * d_plus + minus * d_minus + mid * d_mid) - tl.where(tiny, 1.0, 0.0)
    if GRAD_AT_CLAMP:
        d_ls = tl.where(log_scale >= LOG_SCALE_MIN, d_ls, 0.0)
    else:
        d_ls = tl.where(log_scale > LOG_SCALE_MIN, d_ls, 0.0)
    return out, d_mu, d_ls
