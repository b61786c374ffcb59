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

import math

import torch
import torch.nn as nn

from hvae_detect.kernels.layout import LOG_SCALE_MIN
from hvae_detect.models.base import BoundTerms, HierarchicalModel, draw
from hvae_detect.models.layers import STOCHASTIC, Projection, standard_normal_log_prob, standard_normal_log_prob_elements
from hvae_detect.models.stages import build_block


class HierarchicalVAE(HierarchicalModel):
    """``activation`` (a name in ``hvae_detect.models.layers.ACTIVATIONS``) is used before every
    convolution of the residual blocks and before every Gaussian layer; ``likelihood_head`` is
    one of ``HEADS``; ``skip_stochastic=False`` drops the skip connections d_i and g_{i+1} around
    each latent (the paper's --skip_stochastic False); ``q_dropout`` / ``p_dropout`` are the
    dropout rates inside the inference / generative residual blocks (training only);
    ``log_scale_min`` floors the discretized logistic mixture's log-scales (default -7, PixelCNN++'s;
    a higher floor keeps every component at least about a bin wide).
    The constructor's defaults are this package's earlier model (SiLU, 3x3 head), so that
    saved folders without these keys rebuild what they hold."""

    family = "VAE"

    def __init__(self, input_shape, architecture="small", likelihood="bernoulli", n_mix=10, activation="SiLU",
                 likelihood_head="conv3x3", skip_stochastic=True, q_dropout=0.0, p_dropout=0.0,
                 log_scale_min=LOG_SCALE_MIN):
        super().__init__()
        arch = self._setup(input_shape, architecture, likelihood, n_mix, activation, likelihood_head,
                           skip_stochastic, q_dropout, p_dropout, log_scale_min)
        n_latents = self.n_latents

        self.q_det, self.q_z, self.q_skip = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        stage_shapes = []  # per stage: shapes through its blocks, input first
        shape = self.input_shape
        for i in range(n_latents):
            shapes, blocks = [shape], []
            for cfg in arch["config_deterministic"][i]:
                blocks.append(build_block(shapes[-1], cfg, activation=activation, dropout=q_dropout))
                shapes.append(blocks[-1].out_shape)
            stage_shapes.append(shapes)
            sto = arch["config_stochastic"][i]
            self.q_det.append(nn.Sequential(*blocks))
            self.q_z.append(STOCHASTIC[sto["block"]](shapes[-1], sto["latent_features"], sto.get("weightnorm", True),
                                                     activation=activation))
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
            blocks = [build_block(shapes[j + 1], cfgs[j], out_shape=shapes[j], activation=activation, dropout=p_dropout)
                      for j in reversed(range(len(cfgs)))]
            self.p_det.append(nn.Sequential(*blocks))
            if i > 0:
                sto = arch["config_stochastic"][i - 1]
                self.p_z.append(STOCHASTIC[sto["block"]](shapes[0], sto["latent_features"], sto.get("weightnorm", True),
                                                         activation=activation))
        head_in = stage_shapes[0][1][0] if len(stage_shapes[0]) > 1 else self.input_shape[0]
        out_ch = self._build_head(head_in)
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
            d = self.q_det[i + 1](self._up(i, q.mean, d))
            q = self.q_z[i + 1](d)
        return d, q

    def _up(self, i, z, d):
        """Input of inference stage i + 2: the projected z_{i+1}, plus the skip d_{i+1}."""
        return self.q_skip[i](z) + d if self.skip_stochastic else self.q_skip[i](z)

    # ---- the bound ------------------------------------------------------------------
    def forward(self, x, k=0, n_samples=1, noise=None, generator=None, start=None, kl_elements=False):
        """Terms of L (k = 0) or L>k for ``n_samples`` samples of z_{>k} per image.

        ``noise`` optionally gives the standard-normal draws of z_{k+1..L}, one
        (n_samples * N, *latent shape) tensor per latent, instead of drawing them from
        ``generator``. ``start`` optionally passes ``prefix(encode_x(x), k)`` computed once.

        Returns ``BoundTerms``; with ``kl_elements=True`` (training with the paper's per-element
        free nats) returns ``(BoundTerms, [KL_i element-wise, (R, *latent shape) for i > k])``,
        whose sums are the rows of ``BoundTerms.kl``.
        """
        n_latents = self.n_latents
        d, q = start if start is not None else self.prefix(self.encode_x(x), k)
        if n_samples > 1:
            d, q = d.repeat((n_samples,) + (1,) * (d.dim() - 1)), q.repeat(n_samples)
            x = x.repeat(n_samples, 1, 1, 1)
        zs, log_q = [None] * n_latents, [None] * n_latents
        for i in range(k, n_latents):
            if i > k:
                d = self.q_det[i](self._up(i - 1, zs[i - 1], d))
                q = self.q_z[i](d)
            zs[i] = draw(q, None if noise is None else noise[i - k], generator)
            log_q[i] = q.log_prob_elements(zs[i]) if kl_elements else q.log_prob(zs[i])

        kls = [None] * n_latents
        if kl_elements:
            kls[-1] = log_q[-1] - standard_normal_log_prob_elements(zs[-1])
        else:
            kls[-1] = log_q[-1] - standard_normal_log_prob(zs[-1])
        g = None
        for i in reversed(range(n_latents)):
            h = self.p_proj[i](zs[i])
            g = self.p_det[i](h if g is None or not self.skip_stochastic else h + g)
            if i > 0:
                p = self.p_z[i - 1](g)
                if i - 1 >= k:
                    log_p = p.log_prob_elements(zs[i - 1]) if kl_elements else p.log_prob(zs[i - 1])
                    kls[i - 1] = log_q[i - 1] - log_p
                else:
                    zs[i - 1] = p.mean  # decode from the prior: z_{<=k} are not inferred
        log_px, params = self._log_px(x, g)
        if kl_elements:
            elements = kls[k:]
            return BoundTerms(log_px, torch.stack([e.flatten(1).sum(1) for e in elements]), params), elements
        return BoundTerms(log_px, torch.stack(kls[k:]), params)
