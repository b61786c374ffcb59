"""The paper's way of scoring, as the reference the engine is tested (and benchmarked) against:
one full pass of the whole model per importance sample and per statistic."""

from __future__ import annotations

import math

import torch

from hvae_detect.data import randomness
from hvae_detect.models.layers import standard_normal_log_prob


def naive_log_weight(model, x, k, sample=0, seed=0):
    """One full pass: the bound of L (k = 0) or L>k for importance sample ``sample``, (N,).

    z_1..z_k take their posterior mean going up and their conditional-prior mean coming
    down (the seed's use_mode = decode_from_p = [True] * k + [False] * (L - k)); z_{>k}
    take the engine's keyed standard-normal draws for (seed, image, k, latent, sample).
    """
    keys = randomness.image_keys(x, seed)
    n_latents = model.n_latents
    d = model.q_det[0](x)
    zs, qs = [], []
    for i in range(n_latents):
        if i > 0:
            d = model.q_det[i](model.q_skip[i - 1](zs[-1]) + d)
        q = model.q_z[i](d)
        eps = None if i < k else randomness.normal(keys, randomness.noise_stream(k, i, sample), model.latent_shapes[i])
        zs.append(q.mean if i < k else q.mean + q.std * eps)
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
    return model.observation.log_prob(x, model.head(g)) - kl


@torch.no_grad()
def naive_ood_scores(model, x, ks, n_samples, seed=0, n_samples_lk=None, log_weight=None):
    """{k: (N,)} for k = 0 (L) and every k in ks: one full pass per sample and statistic
    (``log_weight``: the VAE's hand-written pass by default, ``full_pass_log_weight`` for any family)."""
    log_weight = log_weight or naive_log_weight
    out = {}
    for k in sorted({0, *ks}):
        s = n_samples if k == 0 or n_samples_lk is None else n_samples_lk
        log_w = torch.stack([log_weight(model, x, k, j, seed) for j in range(s)])
        out[k] = torch.logsumexp(log_w, 0) - math.log(s)
    return out


def full_pass_log_weight(model, x, k, sample=0, seed=0):
    """Any family's bound of L>k for importance sample ``sample``, (N,): one whole ``model(x, k)``
    pass (no shared prefix, no row passes) with the engine's keyed draws for each stage's latent."""
    keys = randomness.image_keys(x, seed)
    noise = [
        randomness.normal(keys, randomness.noise_stream(k, i, sample), model.latent_shapes[i])
        for i in range(k, model.n_latents)
    ]
    return model(x, k, noise=noise).bound


def naive_family_scores(model, x, ks, n_samples, seed=0, n_samples_lk=None):
    """{k: (N,)} for k = 0 (L) and every k in ks, one whole ``model(x, k)`` pass per sample and statistic."""
    return naive_ood_scores(model, x, ks, n_samples, seed, n_samples_lk, log_weight=full_pass_log_weight)
