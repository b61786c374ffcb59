"""The ladder VAE (LVAE, Sønderby et al. 2016): deterministic bottom-up, then top-down inference.

Inference first runs a deterministic bottom-up pass over the stages (the same
``config_deterministic`` stacks as the VAE),

    h_1 = D_1(x),   h_{i+1} = D_{i+1}(h_i),

and then infers the latents top-down, merging each stage's bottom-up features with the
generative path's top-down features (the paper's ``LvaeStage``):

    q(z_L | x) from M_L(h_L),   q(z_i | x, z_{>i}) from M_i([h_i, g_{i+1}]),

where g_{i+1} is what generates p(z_i | z_{i+1}) and M_i copies the stage's last block at
stride 1 (on the concatenation of h_i and g_{i+1}). Generation is the VAE's,

    g_L = G_L(R_L(z_L)),   g_i = G_i(R_i(z_i) + g_{i+1}),   z_{i-1} ~ p(z_{i-1} | g_i),

so the posterior and the prior of z_i share the top-down features, which is what lets the
ladder VAE use deep hierarchies.

L>k as the paper's scoring (``get_decode_from_p`` with semantic_k=True, use_mode): z_1..z_k
are decoded from their conditional-prior means and only the KL terms of z_{>k} remain; the
bottom-up pass samples nothing, so use_mode changes nothing there.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from hvae_detect.models.layers import Projection, standard_normal_log_prob, standard_normal_log_prob_elements
from hvae_detect.kernels.layout import LOG_SCALE_MIN
from hvae_detect.models.base import BoundTerms, HierarchicalModel, draw
from hvae_detect.models.stages import doubled, gaussian, generative_stack, inference_stack, merge_block


def _log_q(q, z, elements):
    return q.log_prob_elements(z) if elements else q.log_prob(z)


class LadderVAE(HierarchicalModel):
    """Ladder VAE with the options of ``hvae_detect.models.vae.HierarchicalVAE`` (activation, likelihood
    head, skip_stochastic: the generative skips g_{i+1}, q_dropout / p_dropout: dropout in the
    inference stacks / in the generative stacks and merge blocks, as the paper's stage)."""

    family = "LVAE"

    def __init__(self, input_shape, architecture, likelihood="bernoulli", n_mix=10, activation="SiLU",
                 likelihood_head="conv3x3", skip_stochastic=True, q_dropout=0.0, p_dropout=0.0,
                 log_scale_min=LOG_SCALE_MIN):
        super().__init__()
        arch = self._setup(input_shape, architecture, likelihood, n_mix, activation, likelihood_head,
                           skip_stochastic, q_dropout, p_dropout, log_scale_min)
        dets, stos, top = arch["config_deterministic"], arch["config_stochastic"], self.n_latents - 1
        self.q_det, self.q_merge, self.q_z = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        stage_shapes, shape = [], self.input_shape
        for i in range(self.n_latents):
            stack, shapes = inference_stack(shape, dets[i], activation, q_dropout)
            self.q_det.append(stack)
            stage_shapes.append(shapes)
            shape = shapes[-1]
            # The top merge reads h_L alone; the others [h_i, g_{i+1}] (g_{i+1} has h_i's shape).
            self.q_merge.append(merge_block(shape if i == top else doubled(shape), dets[i], activation, p_dropout))
            self.q_z.append(gaussian(shape, stos[i], activation))
        self.latent_shapes = [q.out_shape for q in self.q_z]

        self.p_proj, self.p_det, self.p_z = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        for i, shapes in enumerate(stage_shapes):
            self.p_proj.append(Projection(self.latent_shapes[i], shapes[-1]))
            stack, _ = generative_stack(shapes, dets[i], self.input_shape, i == 0, activation, p_dropout)
            self.p_det.append(stack)
            if i < top:  # p(z_i | g_{i+1}) reads the features with h_i's shape
                self.p_z.append(gaussian(shapes[-1], stos[i], activation))
        out_ch = self._build_head(stage_shapes[0][1][0])
        self.row_elements = max([2 * math.prod(s) for shapes in stage_shapes for s in shapes]
                                + [out_ch * math.prod(self.input_shape[1:])])

    # ---- the work shared by every importance sample ---------------------------------
    def encode_x(self, x):
        """The whole bottom-up pass (it reads only x): (h_1, ..., h_L)."""
        hs = [self.q_det[0](x)]
        for stack in self.q_det[1:]:
            hs.append(stack(hs[-1]))
        return tuple(hs)

    def prefix(self, hs, k):
        """(bottom-up features, q(z_L | x)): nothing else is sample-free, whatever k."""
        return hs, self.q_z[-1](self.q_merge[-1](hs[-1]))

    # ---- the bound ----------------------------------------------------------------
    def forward(self, x, k=0, n_samples=1, noise=None, generator=None, start=None, kl_elements=False):
        """Terms of L (k = 0) or L>k; arguments and result as ``HierarchicalVAE.forward``."""
        hs, q = start if start is not None else self.prefix(self.encode_x(x), k)
        if n_samples > 1:
            hs = tuple(h.repeat((n_samples,) + (1,) * (h.dim() - 1)) for h in hs)
            q, x = q.repeat(n_samples), x.repeat(n_samples, 1, 1, 1)
        top = self.n_latents - 1
        z = draw(q, None if noise is None else noise[top - k], generator)
        std_normal = standard_normal_log_prob_elements if kl_elements else standard_normal_log_prob
        kls = [None] * self.n_latents
        kls[top] = _log_q(q, z, kl_elements) - std_normal(z)
        g = self.p_det[top](self.p_proj[top](z))
        for i in reversed(range(top)):
            p = self.p_z[i](g)
            if i >= k:
                q = self.q_z[i](self.q_merge[i](torch.cat([hs[i], g], 1)))
                z = draw(q, None if noise is None else noise[i - k], generator)
                kls[i] = _log_q(q, z, kl_elements) - (p.log_prob_elements(z) if kl_elements else p.log_prob(z))
            else:
                z = p.mean  # decoded from the prior: z_{<=k} are not inferred
            h = self.p_proj[i](z)
            g = self.p_det[i](h + g if self.skip_stochastic else h)
        log_px, params = self._log_px(x, g)
        if kl_elements:
            elements = kls[k:]
            return BoundTerms(log_px, torch.stack([e.flatten(1).sum(1) for e in elements]), params), elements
        return BoundTerms(log_px, torch.stack(kls[k:]), params)
