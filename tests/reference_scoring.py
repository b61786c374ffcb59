"""The paper's way of scoring, as the reference the engine is tested (and benchmarked) against:
one full pass of the whole model per importance sample and per statistic."""

from __future__ import annotations

import math

import torch

from hvae_detect import likelihoods
from hvae_detect.layers import standard_normal_log_prob


def naive_log_weight(model, x, k, generator=None):
    """One full pass: the bound of L (k = 0) or L>k for one sample, (N,).

    z_1..z_k take their posterior mean going up and their conditional-prior mean coming
    down (the seed's use_mode = decode_from_p = [True] * k + [False] * (L - k)).
    """
    n_latents = model.n_latents
    d = model.q_det[0](x)
    zs, qs = [], []
    for i in range(n_latents):
        if i > 0:
            d = model.q_det[i](model.q_skip[i - 1](zs[-1]) + d)
        q = model.q_z[i](d)
        zs.append(q.mean if i < k else q.sample(generator))
        qs.append(q)
    kl = qs[-1].log_prob(zs[-1]) - standard_normal_log_prob(zs[-1])
    g = None
    for i in reversed(range(n_latents)):
        h = model.p_proj[i](zs[i])
        g = model.p_det[i](h if g is None else h + g)
        if i > 0:
            p = model.p_z[i - 1](g)
            if i - 1 >= k:
                kl = kl + qs[i - 1].log_prob(zs[i - 1]) - p.log_prob(zs[i - 1])
            else:
                zs[i - 1] = p.mean
    return likelihoods.log_prob(model.likelihood, x, model.head(g)) - kl


@torch.no_grad()
def naive_ood_scores(model, x, ks, n_samples, generator=None):
    """{k: (N,)} for k = 0 (L) and every k in ks: n_samples full passes per statistic."""
    out = {}
    for k in sorted({0, *ks}):
        log_w = torch.stack([naive_log_weight(model, x, k, generator) for _ in range(n_samples)])
        out[k] = torch.logsumexp(log_w, 0) - math.log(n_samples)
    return out
