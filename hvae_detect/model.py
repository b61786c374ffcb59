"""The hierarchical VAE: bottom-up inference, top-down generation, and its bound terms.

Stages i = 1..L each hold a deterministic stack (from the seed's
``config_deterministic``) and one Gaussian latent z_i. Inference runs bottom-up,

    d_1 = D_1(x),   d_{i+1} = D_{i+1}(P_i(z_i) + d_i),   z_i ~ q(z_i | d_i),

so every stage sees the latent below it and, through the skip connection d_i,
the features below that. Generation runs top-down with a mirrored stack,

    g_L = G_L(R_L(z_L)),   g_i = G_i(R_i(z_i) + g_{i+1}),   z_{i-1} ~ p(z_{i-1} | g_i),

with p(z_L) = N(0, I) and the likelihood head reading g_1.

``model(x, k)`` returns the per-sample terms of L (k = 0) or L>k: the k lowest
latents take their posterior mean going up and their conditional-prior mean
coming down, and only the KL terms of z_{>k} remain (the seed's
use_mode = decode_from_p = [True] * k + [False] * (L - k)).
"""

from __future__ import annotations

import contextlib
import math
from typing import NamedTuple

import torch
import torch.nn as nn
from torch.nn.utils import parametrize

from hvae_detect import likelihoods
from hvae_detect.architectures import resolve_architecture
from hvae_detect.layers import STOCHASTIC, Projection, ResBlockConv2d, ResBlockDense, standard_normal_log_prob


class BoundTerms(NamedTuple):
    """Per-sample terms of a bound; rows are sample-major (row s*N + n is image n)."""

    log_px: torch.Tensor  # (R,) log p(x | z)
    kl: torch.Tensor      # (L - k, R) log q(z_i | .) - log p(z_i | .) for i = k+1..L
    params: torch.Tensor  # likelihood parameters, (R, P, H, W)

    @property
    def bound(self) -> torch.Tensor:
        """log p(x | z) - sum_{i>k} KL_i, (R,)."""
        return self.log_px - self.kl.sum(0)


class _ChannelsLast(nn.Module):
    """Parametrisation appended after weight norm: hands convolutions channels-last kernels."""

    def forward(self, w):
        return w.contiguous(memory_format=torch.channels_last)


def _build_block(in_shape, cfg, out_shape=None):
    """One block from its seed dict; ``out_shape`` builds the generative mirror instead."""
    wn, gated = cfg.get("weightnorm", True), cfg.get("gated", False)
    if cfg["block"] == "ResBlockConv2d":
        if len(in_shape) != 3:
            raise ValueError(f"ResBlockConv2d needs a feature-map input, but the stage's input has shape {tuple(in_shape)}")
        if out_shape is None:
            return ResBlockConv2d(in_shape, cfg["out_channels"], cfg["kernel_size"], cfg.get("stride", 1), wn, gated)
        return ResBlockConv2d(in_shape, out_shape[0], cfg["kernel_size"], 1, wn, gated, out_hw=out_shape[1:])
    return ResBlockDense(in_shape, cfg["out_features"], wn, gated, out_shape=out_shape)


class HierarchicalVAE(nn.Module):
    def __init__(self, input_shape, architecture="small", likelihood="bernoulli", n_mix=10):
        super().__init__()
        if likelihood not in likelihoods.LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {likelihoods.LIKELIHOODS}, got {likelihood!r}")
        arch = resolve_architecture(architecture)
        self.architecture = arch
        self.input_shape = tuple(input_shape)
        self.likelihood = likelihood
        self.n_mix = n_mix
        n_latents = len(arch["config_stochastic"])
        self.n_latents = n_latents

        self.q_det, self.q_z, self.q_skip = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        stage_shapes = []  # per stage: shapes through its blocks, input first
        shape = self.input_shape
        for i in range(n_latents):
            shapes, blocks = [shape], []
            for cfg in arch["config_deterministic"][i]:
                blocks.append(_build_block(shapes[-1], cfg))
                shapes.append(blocks[-1].out_shape)
            stage_shapes.append(shapes)
            sto = arch["config_stochastic"][i]
            self.q_det.append(nn.Sequential(*blocks))
            self.q_z.append(STOCHASTIC[sto["block"]](shapes[-1], sto["latent_features"], sto.get("weightnorm", True)))
            if i < n_latents - 1:
                self.q_skip.append(Projection(self.q_z[i].out_shape, shapes[-1]))
            shape = shapes[-1]
        self.latent_shapes = [q.out_shape for q in self.q_z]

        # Generative path: stage i mirrors inference stage i (d_i shape -> stage input shape);
        # the bottom stage ends in feature channels, not pixels, and the head maps them to parameters.
        self.p_proj, self.p_det, self.p_z = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        for i in range(n_latents):
            shapes, cfgs = list(stage_shapes[i]), arch["config_deterministic"][i]
            if i == 0:
                shapes[0] = (shapes[1][0] if len(shapes) > 1 else self.input_shape[0], *self.input_shape[1:])
            self.p_proj.append(Projection(self.latent_shapes[i], shapes[-1]))
            blocks = [_build_block(shapes[j + 1], cfgs[j], out_shape=shapes[j]) for j in reversed(range(len(cfgs)))]
            self.p_det.append(nn.Sequential(*blocks))
            if i > 0:
                sto = arch["config_stochastic"][i - 1]
                self.p_z.append(STOCHASTIC[sto["block"]](shapes[0], sto["latent_features"], sto.get("weightnorm", True)))
        head_in = stage_shapes[0][1][0] if len(stage_shapes[0]) > 1 else self.input_shape[0]
        out_ch = likelihoods.param_channels(likelihood, self.input_shape[0], n_mix)
        self.head = nn.Conv2d(head_in, out_ch, 3, padding=1)
        # Elements of the largest activation of one image: what a scoring pass's memory scales with.
        self.row_elements = max([math.prod(s) for shapes in stage_shapes for s in shapes]
                                + [out_ch * math.prod(self.input_shape[1:])])

    # ---- the bottom-up work shared by every importance sample --------------------------
    def encode_x(self, x):
        """d_1: the deterministic layers that read only x."""
        return self.q_det[0](x)

    def prefix(self, d1, k):
        """Work of L>k that does not depend on a sample: z_1..z_k at their posterior means.

        Returns (d_{k+1}, q(z_{k+1} | d_{k+1})).
        """
        d = d1
        q = self.q_z[0](d)
        for i in range(k):
            d = self.q_det[i + 1](self.q_skip[i](q.mean) + d)
            q = self.q_z[i + 1](d)
        return d, q

    # ---- the bound ------------------------------------------------------------------
    def forward(self, x, k=0, n_samples=1, noise=None, generator=None, start=None) -> BoundTerms:
        """Terms of L (k = 0) or L>k for ``n_samples`` samples of z_{>k} per image.

        ``noise`` optionally gives the standard-normal draws of z_{k+1..L}, one
        (n_samples * N, *latent shape) tensor per latent, instead of drawing them from
        ``generator``. ``start`` optionally passes ``prefix(encode_x(x), k)`` computed once.
        """
        n_latents = self.n_latents
        d, q = start if start is not None else self.prefix(self.encode_x(x), k)
        if n_samples > 1:
            d, q = d.repeat((n_samples,) + (1,) * (d.dim() - 1)), q.repeat(n_samples)
            x = x.repeat(n_samples, 1, 1, 1)
        zs, log_q = [None] * n_latents, [None] * n_latents
        for i in range(k, n_latents):
            if i > k:
                d = self.q_det[i](self.q_skip[i - 1](zs[i - 1]) + d)
                q = self.q_z[i](d)
            zs[i] = q.sample(generator) if noise is None else q.mean + q.std * noise[i - k]
            log_q[i] = q.log_prob(zs[i])

        kls = [None] * n_latents
        kls[-1] = log_q[-1] - standard_normal_log_prob(zs[-1])
        g = None
        for i in reversed(range(n_latents)):
            h = self.p_proj[i](zs[i])
            g = self.p_det[i](h if g is None else h + g)
            if i > 0:
                p = self.p_z[i - 1](g)
                if i - 1 >= k:
                    kls[i - 1] = log_q[i - 1] - p.log_prob(zs[i - 1])
                else:
                    zs[i - 1] = p.mean  # decode from the prior: z_{<=k} are not inferred
        params = self.head(g).float()  # float32 likelihood under mixed precision too
        return BoundTerms(likelihoods.log_prob(self.likelihood, x, params), torch.stack(kls[k:]), params)

    # ---- weights ----------------------------------------------------------------------
    @contextlib.contextmanager
    def channels_last_weights(self):
        """For the duration, weight-normalised convolution kernels come out channels-last.

        A channels-last kernel makes a convolution's output channels-last too, so the
        whole network follows; oneDNN runs these convolutions faster that way
        (benchmarks/RESULTS.md). Only the weights' layout changes, not their values; the
        parameters and the state dict are untouched. Works under autograd.
        """
        added = []
        try:
            for module in self.modules():
                if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)) and parametrize.is_parametrized(module, "weight"):
                    parametrize.register_parametrization(module, "weight", _ChannelsLast(), unsafe=True)
                    added.append(module)
            yield
        finally:
            for module in added:
                module.parametrizations.weight.pop(-1)

    @torch.no_grad()
    def reconstruct(self, x):
        """Mean image after encoding x with posterior means and decoding them (L's pass, zero noise)."""
        zeros = [torch.zeros((x.shape[0], *shape), device=x.device, dtype=x.dtype) for shape in self.latent_shapes]
        params = self(x, 0, noise=zeros).params
        return likelihoods.mean_image(self.likelihood, params, self.input_shape[0])
