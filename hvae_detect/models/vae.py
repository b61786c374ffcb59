"""The hierarchical VAE: bottom-up inference, top-down generation, and its bound terms.

Stages i = 1..L each hold a deterministic stack (from the paper's
``config_deterministic``) and one Gaussian latent z_i. Inference runs bottom-up,

    d_1 = D_1(x),   d_{i+1} = D_{i+1}(P_i(z_i) + d_i),   z_i ~ q(z_i | d_i),

so every stage sees the latent below it and, through the skip connection d_i,
the features below that. Generation runs top-down with a mirrored stack,

    g_L = G_L(R_L(z_L)),   g_i = G_i(R_i(z_i) + g_{i+1}),   z_{i-1} ~ p(z_{i-1} | g_i),

with p(z_L) = N(0, I) and the likelihood head reading g_1.

``model(x, k)`` returns the per-sample terms of L (k = 0) or L>k: the k lowest
latents take their posterior mean going up and their conditional-prior mean
coming down, and only the KL terms of z_{>k} remain (the paper's
use_mode = decode_from_p = [True] * k + [False] * (L - k)).
"""

from __future__ import annotations

import torch.nn as nn

from hvae_detect.models.base import HierarchicalModel, log_density, standard_normal_log_density
from hvae_detect.models.layers import Projection
from hvae_detect.models.stages import gaussian, generative_stack, inference_stack


class VAE(HierarchicalModel):
    """The bottom-up hierarchical VAE of a ``ModelConfig``: ``activation`` before every convolution of
    the residual blocks and before every Gaussian layer; ``skip_stochastic=False`` drops the skip
    connections d_i and g_{i+1} around each latent (the paper's --skip_stochastic False);
    ``q_dropout`` / ``p_dropout`` are the dropout rates inside the inference / generative residual
    blocks (training only). A stage may have no deterministic block."""

    family = "VAE"

    def __init__(self, config):
        super().__init__(config)
        arch, act, n_latents = self.architecture, self.activation, self.n_latents
        dets, stos = arch["config_deterministic"], arch["config_stochastic"]

        self.q_det, self.q_z, self.q_skip = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        stage_shapes = []  # per stage: shapes through its blocks, input first
        shape = self.input_shape
        for i in range(n_latents):
            stack, shapes = inference_stack(shape, dets[i], act, self.q_dropout)
            stage_shapes.append(shapes)
            self.q_det.append(stack)
            self.q_z.append(gaussian(shapes[-1], stos[i], act))
            if i < n_latents - 1:
                self.q_skip.append(Projection(self.q_z[i].out_shape, shapes[-1]))
            shape = shapes[-1]
        self.latent_shapes = [q.out_shape for q in self.q_z]

        # Generative path: stage i mirrors inference stage i (d_i shape -> stage input shape);
        # the bottom stage ends in feature channels, not pixels, and the head maps them to parameters.
        self.p_proj, self.p_det, self.p_z = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        for i, shapes in enumerate(stage_shapes):
            self.p_proj.append(Projection(self.latent_shapes[i], shapes[-1]))
            stack, out_shape = generative_stack(shapes, dets[i], self.input_shape, i == 0, act, self.p_dropout)
            self.p_det.append(stack)
            if i > 0:
                self.p_z.append(gaussian(out_shape, stos[i - 1], act))
        self._finish(stage_shapes)

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
            d = self.q_det[i + 1](self._up(i, q.mean, d))
            q = self.q_z[i + 1](d)
        return d, q

    def _up(self, i, z, d):
        """Input of inference stage i + 2: the projected z_{i+1}, plus the skip d_{i+1}."""
        return self.q_skip[i](z) + d if self.skip_stochastic else self.q_skip[i](z)

    # ---- the bound ------------------------------------------------------------------
    def stage_terms(self, x, k, start, noise, generator, elements):
        """(log p(x | z), parameters, [(KL_i,) for i > k]) from ``start`` = (d_{k+1}, q(z_{k+1}))."""
        n_latents = self.n_latents
        d, q = start
        zs, log_q = [None] * n_latents, [None] * n_latents
        for i in range(k, n_latents):
            if i > k:
                d = self.q_det[i](self._up(i - 1, zs[i - 1], d))
                q = self.q_z[i](d)
            zs[i] = self.posterior_draw(q, None if noise is None else noise[i - k], generator)
            log_q[i] = log_density(q, zs[i], elements)

        kls = [None] * n_latents
        kls[-1] = log_q[-1] - standard_normal_log_density(zs[-1], elements)
        g = None
        for i in reversed(range(n_latents)):
            h = self.p_proj[i](zs[i])
            g = self.p_det[i](h if g is None or not self.skip_stochastic else h + g)
            if i > 0:
                p = self.p_z[i - 1](g)
                if i - 1 >= k:
                    kls[i - 1] = log_q[i - 1] - log_density(p, zs[i - 1], elements)
                else:
                    zs[i - 1] = p.mean  # decode from the prior: z_{<=k} are not inferred
        log_px, params = self._log_px(x, g)
        return log_px, params, [(kl,) for kl in kls[k:]]
