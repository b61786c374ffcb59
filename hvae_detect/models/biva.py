"""BIVA (Maaløe et al. 2019): bidirectional inference, two latents per intermediate stage.

Every stage i < L holds a bottom-up latent z^BU_i and a top-down latent z^TD_i; the top
stage holds one latent z_L. Inference (the paper's ``BivaIntermediateStage.infer`` and
``BivaTopStage.infer``) runs bottom-up with two deterministic stacks per stage, built from
the stage's ``config_deterministic``:

    a_i = BU_i(u_i),        z^BU_i ~ q(z^BU_i | a_i),        u_{i+1} = R_i(z^BU_i)
    b_i = TD_i(t_i) + C_i(a_i),                              t_{i+1} = b_i
    (u_1 = t_1 = x; top: u_L also receives S([a_{L-1}, b_{L-1}]) with skip_stochastic)
    q(z_L | x) from M_L([a_L, b_L])

so the bottom-up path is stochastic (it climbs through samples of z^BU) and the top-down
inference path is deterministic. As in the paper's code, the skip [a, b] around the
latents reaches only the top stage (its intermediate stages drop it: their condition is
inverted). Generation runs top-down as the VAE's, with both latents of a stage:

    g_L = G_L(P_L(z_L))
    p(z^TD_i | g_{i+1}),   q(z^TD_i | x, z_{>i}) from N_i([b_i, g_{i+1}])
    p(z^BU_i | g_{i+1}), or with conditional_bu p(z^BU_i | B_i(Q_i(z^TD_i) + g_{i+1}))
    g_i = G_i(P_i([z^TD_i, z^BU_i]) + g_{i+1})

where N_i and B_i copy the stage's last block at stride 1.

A stage's latent is the channel (or feature) concatenation [z^TD_i, z^BU_i], so
``latent_shapes[i]`` has twice the latent features for i < L, and the i-th noise tensor
holds z^TD_i's draws in its first half and z^BU_i's in its second. ``BoundTerms.kl`` has
one row per stage (KL^TD_i + KL^BU_i); with ``kl_elements`` the element-wise KLs come one
per latent variable (z^TD_i, z^BU_i, ..., z_L), as the paper's free nats floor each.

L>k, "the k lowest latents" (the paper's ``get_decode_from_p(n_latents, k, semantic_k=True)``
with ``use_mode`` the same list): the paper's ``n_latents`` counts stages
(len(config_stochastic)) and its lists index stages, so k covers the k lowest stages,
both z^TD_i and z^BU_i of i = 1..k (2k latent variables). Their z^BU take their posterior
means in the bottom-up pass (use_mode), both take their conditional-prior means coming down
(decode_from_p with use_mode: z^TD_i the mean of p(z^TD_i | g_{i+1}), then z^BU_i the mean of
its prior, which with conditional_bu reads that z^TD_i), and their KL terms drop out.
"""

from __future__ import annotations

import torch
from torch import nn

from hvae_detect.models.base import HierarchicalModel, log_density, standard_normal_log_density
from hvae_detect.models.layers import Projection
from hvae_detect.models.stages import doubled, gaussian, generative_stack, inference_stack, merge_block


def _halves(noise):
    """(z^TD draws, z^BU draws) of a stage's noise tensor, or (None, None)."""
    return (None, None) if noise is None else noise.chunk(2, dim=1)


class BIVA(HierarchicalModel):
    """BIVA of a ``ModelConfig`` with the VAE's options (activation, likelihood head, skip_stochastic,
    q_dropout in the inference stacks and the top merge, p_dropout in the generative stacks and the
    other merges) and the architecture's ``conditional_bu``."""

    family = "BIVA"
    stage_blocks_required = True
    architecture_flags = ("conditional_bu",)
    concatenated_features = 2  # the merges read [a, b] and [b_i, g_{i+1}]

    def __init__(self, config):
        super().__init__(config)
        arch, act, q_dropout, p_dropout = self.architecture, self.activation, self.q_dropout, self.p_dropout
        self.conditional_bu = bool(arch.get("conditional_bu", False))
        dets, stos, top = arch["config_deterministic"], arch["config_stochastic"], self.n_latents - 1
        self.q_bu, self.q_td, self.td_from_bu = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        self.q_bu_z, self.bu_up = nn.ModuleList(), nn.ModuleList()
        stage_shapes, shape = [], self.input_shape
        for i in range(self.n_latents):
            bu, shapes = inference_stack(shape, dets[i], act, q_dropout)
            td, _ = inference_stack(shape, dets[i], act, q_dropout)
            self.q_bu.append(bu)
            self.q_td.append(td)
            stage_shapes.append(shapes)
            shape = shapes[-1]
            self.td_from_bu.append(Projection(shape, shape))
            if i < top:
                self.q_bu_z.append(gaussian(shape, stos[i], act))
                self.bu_up.append(Projection(self.q_bu_z[i].out_shape, shape))
        # The top stage: the skip [a_{L-1}, b_{L-1}] into its bottom-up input, the BU/TD merge, z_L.
        self.top_skip = (
            Projection(doubled(stage_shapes[top][0]), stage_shapes[top][0])
            if self.skip_stochastic and top > 0
            else None
        )
        self.q_top_merge = merge_block(doubled(shape), dets[top], act, q_dropout)
        self.q_top_z = gaussian(shape, stos[top], act)

        # Top-down inference and generation: per intermediate stage the TD posterior's merge and both priors.
        self.q_td_merge, self.q_td_z = nn.ModuleList(), nn.ModuleList()
        self.p_td_z, self.p_bu_z = nn.ModuleList(), nn.ModuleList()
        self.bu_cond_proj, self.bu_cond = nn.ModuleList(), nn.ModuleList()
        for i in range(top):
            out = stage_shapes[i][-1]  # the shape of b_i, a_i and g_{i+1}
            self.q_td_merge.append(merge_block(doubled(out), dets[i], act, p_dropout))
            self.q_td_z.append(gaussian(out, stos[i], act))
            self.p_td_z.append(gaussian(out, stos[i], act))
            self.p_bu_z.append(gaussian(out, stos[i], act))
            if self.conditional_bu:
                self.bu_cond_proj.append(Projection(self.q_td_z[i].out_shape, out))
                self.bu_cond.append(merge_block(out, dets[i], act, p_dropout))
        self.latent_shapes = [doubled(q.out_shape) for q in self.q_bu_z] + [self.q_top_z.out_shape]

        self.p_proj, self.p_det = nn.ModuleList(), nn.ModuleList()
        for i, shapes in enumerate(stage_shapes):
            self.p_proj.append(Projection(self.latent_shapes[i], shapes[-1]))
            stack, _ = generative_stack(shapes, dets[i], self.input_shape, i == 0, act, p_dropout)
            self.p_det.append(stack)
        self._finish(stage_shapes)

    # ---- inference ------------------------------------------------------------------
    def _stage_features(self, i, u, t):
        """(a_i, b_i) of stage i from its bottom-up input u and top-down input t."""
        a = self.q_bu[i](u)
        return a, self.q_td[i](t) + self.td_from_bu[i](a)

    def _climb(self, i, z_bu, a, b):
        """(a_{i+1}, b_{i+1}) from stage i's z^BU_i and features."""
        u = self.bu_up[i](z_bu)
        if i + 1 == self.n_latents - 1 and self.top_skip is not None:
            u = u + self.top_skip(torch.cat([a, b], 1))
        return self._stage_features(i + 1, u, b)

    def _posterior(self, i, a, b):
        """q(z^BU_i | x) below the top, q(z_L | x) at the top."""
        if i < self.n_latents - 1:
            return self.q_bu_z[i](a)
        return self.q_top_z(self.q_top_merge(torch.cat([a, b], 1)))

    def encode_x(self, x):
        """(a_1, b_1): both stacks of the bottom stage read only x."""
        return self._stage_features(0, x, x)

    def prefix(self, ab, k):
        """((a_{k+1}, b_{k+1}), the posterior drawn next): z^BU_1..z^BU_k at their posterior means."""
        a, b = ab
        for i in range(k):
            a, b = self._climb(i, self.q_bu_z[i](a).mean, a, b)
        return (a, b), self._posterior(k, a, b)

    # ---- the bound ----------------------------------------------------------------
    def _bu_prior(self, i, z_td, g):
        if not self.conditional_bu:
            return self.p_bu_z[i](g)
        return self.p_bu_z[i](self.bu_cond[i](self.bu_cond_proj[i](z_td) + g))

    def stage_terms(self, x, k, start, noise, generator, elements):
        """(log p(x | z), parameters, [per stage i > k: (KL^TD_i, KL^BU_i), or (KL_L,) at the top]) from
        ``start`` = ((a_{k+1}, b_{k+1}), the posterior drawn next); the noise as the module docstring says."""
        (a, b), q = start
        top = self.n_latents - 1
        noises = [None] * self.n_latents if noise is None else [None] * k + list(noise)
        z_bu, log_q_bu, bs = [None] * top, [None] * top, [None] * top
        for i in range(k, top):  # bottom-up: sample z^BU_i, climb
            bs[i] = b
            z_bu[i] = self.posterior_draw(q, _halves(noises[i])[1], generator)
            log_q_bu[i] = log_density(q, z_bu[i], elements)
            a, b = self._climb(i, z_bu[i], a, b)
            q = self._posterior(i + 1, a, b)
        z = self.posterior_draw(q, noises[top], generator)
        kls = [None] * self.n_latents
        kls[top] = (log_density(q, z, elements) - standard_normal_log_density(z, elements),)
        g = self.p_det[top](self.p_proj[top](z))
        for i in reversed(range(top)):  # top-down: z^TD_i, then z^BU_i's prior
            p_td = self.p_td_z[i](g)
            if i >= k:
                q_td = self.q_td_z[i](self.q_td_merge[i](torch.cat([bs[i], g], 1)))
                z_td = self.posterior_draw(q_td, _halves(noises[i])[0], generator)
                kl_td = log_density(q_td, z_td, elements) - log_density(p_td, z_td, elements)
                p_bu = self._bu_prior(i, z_td, g)
                kls[i] = (kl_td, log_q_bu[i] - log_density(p_bu, z_bu[i], elements))
            else:  # decoded from the priors' means: z^TD_i and z^BU_i are not inferred
                z_td = p_td.mean
                z_bu[i] = self._bu_prior(i, z_td, g).mean
            h = self.p_proj[i](torch.cat([z_td, z_bu[i]], 1))
            g = self.p_det[i](h + g if self.skip_stochastic else h)
        log_px, params = self._log_px(x, g)
        return log_px, params, kls[k:]
