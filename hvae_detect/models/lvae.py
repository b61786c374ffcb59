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

import torch
from torch import nn

from hvae_detect.models.base import HierarchicalModel, log_density, standard_normal_log_density
from hvae_detect.models.layers import Projection
from hvae_detect.models.stages import doubled, gaussian, generative_stack, inference_stack, merge_block


class LVAE(HierarchicalModel):
    """The ladder VAE of a ``ModelConfig`` with the VAE's options (activation, likelihood head,
    skip_stochastic: the generative skips g_{i+1}, q_dropout / p_dropout: dropout in the inference
    stacks / in the generative stacks and merge blocks, as the paper's stage)."""

    family = "LVAE"
    stage_blocks_required = True
    concatenated_features = 2  # the merges read [h_i, g_{i+1}]

    def __init__(self, config):
        super().__init__(config)
        arch, act = self.architecture, self.activation
        dets, stos, top = arch["config_deterministic"], arch["config_stochastic"], self.n_latents - 1
        self.q_det, self.q_merge, self.q_z = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        stage_shapes, shape = [], self.input_shape
        for i in range(self.n_latents):
            stack, shapes = inference_stack(shape, dets[i], act, self.q_dropout)
            self.q_det.append(stack)
            stage_shapes.append(shapes)
            shape = shapes[-1]
            # The top merge reads h_L alone; the others [h_i, g_{i+1}] (g_{i+1} has h_i's shape).
            self.q_merge.append(merge_block(shape if i == top else doubled(shape), dets[i], act, self.p_dropout))
            self.q_z.append(gaussian(shape, stos[i], act))
        self.latent_shapes = [q.out_shape for q in self.q_z]

        self.p_proj, self.p_det, self.p_z = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        for i, shapes in enumerate(stage_shapes):
            self.p_proj.append(Projection(self.latent_shapes[i], shapes[-1]))
            stack, _ = generative_stack(shapes, dets[i], self.input_shape, i == 0, act, self.p_dropout)
            self.p_det.append(stack)
            if i < top:  # p(z_i | g_{i+1}) reads the features with h_i's shape
                self.p_z.append(gaussian(shapes[-1], stos[i], act))
        self._finish(stage_shapes)

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
    def stage_terms(self, x, k, start, noise, generator, elements):
        """(log p(x | z), parameters, [(KL_i,) for i > k]) from ``start`` = (h_1..h_L, q(z_L | x))."""
        hs, q = start
        top = self.n_latents - 1
        z = self.posterior_draw(q, None if noise is None else noise[top - k], generator)
        kls = [None] * self.n_latents
        kls[top] = log_density(q, z, elements) - standard_normal_log_density(z, elements)
        g = self.p_det[top](self.p_proj[top](z))
        for i in reversed(range(top)):
            p = self.p_z[i](g)
            if i >= k:
                q = self.q_z[i](self.q_merge[i](torch.cat([hs[i], g], 1)))
                z = self.posterior_draw(q, None if noise is None else noise[i - k], generator)
                kls[i] = log_density(q, z, elements) - log_density(p, z, elements)
            else:
                z = p.mean  # decoded from the prior: z_{<=k} are not inferred
            h = self.p_proj[i](z)
            g = self.p_det[i](h + g if self.skip_stochastic else h)
        log_px, params = self._log_px(x, g)
        return log_px, params, [(kl,) for kl in kls[k:]]
