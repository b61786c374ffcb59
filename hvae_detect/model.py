"""The hierarchical VAE: bottom-up inference, top-down generation, and its bounds.

Stages i = 1..L each hold a deterministic stack (from the seed's
``config_deterministic``) and one Gaussian latent z_i. Inference runs bottom-up,

    d_1 = D_1(x),   d_{i+1} = D_{i+1}(P_i(z_i) + d_i),   z_i ~ q(z_i | d_i),

so every stage sees the latent below it and, through the skip connection d_i,
the features below that. Generation runs top-down with a mirrored stack,

    g_L = G_L(R_L(z_L)),   g_i = G_i(R_i(z_i) + g_{i+1}),   z_{i-1} ~ p(z_{i-1} | g_i),

with p(z_L) = N(0, I) and the likelihood head reading g_1.

``log_weights(x, k, ...)`` gives per-sample bounds of L (k = 0) and L>k: the k
lowest latents take their posterior mean going up and their conditional-prior
mean coming down, and only the KL terms of z_{>k} remain (the seed's
use_mode = decode_from_p = [True] * k + [False] * (L - k)).
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn as nn
from torch.nn.utils import parametrize

from hvae_detect.config import resolve_architecture
from hvae_detect.layers import (STOCHASTIC, Projection, ResBlockConv2d, ResBlockDense,
                                standard_normal_log_prob)
from hvae_detect.likelihoods import (bernoulli_log_prob, discretized_logistic_mixture_log_prob,
                                     dlogmix_param_channels, split_dlogmix_params)
from hvae_detect.scoring import StreamingLogMeanExp

LIKELIHOODS = ("bernoulli", "dlogmix")

# Bytes of the largest activation of one scoring pass; sets the default row budget of
# ``ood_scores`` (rows = images x samples per pass). On CPU, passes whose feature maps
# stay near the last-level cache are fastest: 32 MiB gives 167 rows on paper-mnist, which
# measured ~15% faster per image than 512 rows (single thread, CPU time); past a few
# dozen rows the cores are busy anyway. On an H200 (benchmarks/RESULTS.md), 128 rows of
# paper-cifar scored within 3% of 2048 rows, and on paper-mnist at batch 500 a 640-row pass
# kept S = 1000 at 0.94x the peak memory of S = 1 where 2 GiB (10,699 rows) took 18x:
# 128 MiB gives 128 and 668 rows.
ROW_BUDGET_BYTES = {"cpu": 32 * 2**20, "cuda": 128 * 2**20}


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
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {likelihood!r}")
        arch = resolve_architecture(architecture)
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
        c = self.input_shape[0]
        out_ch = c if likelihood == "bernoulli" else dlogmix_param_channels(c, n_mix)
        self.head = nn.Conv2d(head_in, out_ch, 3, padding=1)
        # Elements of the largest activation of one image: sets the default row budget of ood_scores.
        self.row_elements = max([math.prod(s) for shapes in stage_shapes for s in shapes]
                                + [out_ch * math.prod(self.input_shape[1:])])

    # ---- likelihood -------------------------------------------------------------
    def log_px(self, x, params):
        if self.likelihood == "bernoulli":
            return bernoulli_log_prob(x, params)
        return discretized_logistic_mixture_log_prob(x, params)

    def mean_image(self, params):
        """Expected pixel values under p(x | z), for reconstructions and plots."""
        if self.likelihood == "bernoulli":
            return torch.sigmoid(params)
        logits, means, _, _ = split_dlogmix_params(params, self.input_shape[0])
        w = torch.softmax(logits, dim=1).unsqueeze(1)
        return ((w * means).sum(2).clamp(-1, 1) + 1) / 2

    # ---- the shared bottom-up work -------------------------------------------------
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

    # ---- per-sample terms -----------------------------------------------------------
    def sampled_terms(self, x, d, q, k, n_samples=1, generator=None, noise=None):
        """log p(x | z) and the KL terms (log q - log p) of z_{>k} for ``n_samples`` samples.

        ``d, q`` come from ``prefix``; rows are sample-major (row s*N + n is image n).
        ``noise`` optionally gives the standard-normal draws of z_{k+1..L}, one (S*N, ...)
        tensor per latent, instead of drawing them from ``generator``.
        Returns (log_px (S*N,), [kl_i (S*N,) for i = k+1..L], params).
        """
        n_latents = self.n_latents
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
        return self.log_px(x, params), kls[k:], params

    def log_weights(self, x, k=0, n_samples=1, generator=None):
        """Per-sample bounds log p(x|z) - sum_{i>k} KL_i, shape (n_samples, N)."""
        d, q = self.prefix(self.encode_x(x), k)
        log_px, kls, _ = self.sampled_terms(x, d, q, k, n_samples, generator)
        return (log_px - torch.stack(kls).sum(0)).view(n_samples, x.shape[0])

    # ---- weights ----------------------------------------------------------------------
    @contextlib.contextmanager
    def channels_last_weights(self):
        """For the duration, weight-normalised convolution kernels come out channels-last.

        oneDNN ran this model's 64-channel 3x3/5x5 convolutions 1.5-2.4x faster in NHWC
        than in NCHW on CPU (NCHW is reordered on every call), and a channels-last kernel
        makes a convolution's output channels-last too, so the whole network follows.
        Only how the weights are laid out changes, not their values; the parameters and
        the state dict are untouched. Works under autograd, so training can use it.
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

    # ---- scoring ---------------------------------------------------------------------
    def default_max_rows(self, device):
        """Rows (images x samples) per scoring pass that fit ``ROW_BUDGET_BYTES`` on ``device``."""
        budget = ROW_BUDGET_BYTES.get(torch.device(device).type, ROW_BUDGET_BYTES["cpu"])
        return max(1, budget // (4 * self.row_elements))

    def draw_noise(self, n, k, n_samples, generator=None, device=None):
        """Standard-normal draws for z_{k+1..L}: one (n_samples, n, *latent shape) tensor per latent.

        Drawn sample by sample and latent by latent, the order in which n_samples separate
        passes of the model would draw them, so batching samples does not change which
        random numbers each sample gets.
        """
        dtype = next(self.parameters()).dtype
        draws = [[torch.randn((n, *self.latent_shapes[i]), generator=generator, device=device, dtype=dtype)
                  for i in range(k, self.n_latents)] for _ in range(n_samples)]
        return [torch.stack(per_latent) for per_latent in zip(*draws)]

    @torch.no_grad()
    def ood_scores(self, x, ks=None, n_samples=1, n_samples_lk=None, generator=None, max_rows=None):
        """L and L>k (k in ``ks``, default 1..L-1) for a batch, in nats per image.

        One call does all the work of a batch: weight-normalised weights once, d_1 once
        per image, each prefix once per image and k; the importance samples then go
        through the rest of the model in passes of at most ``max_rows`` rows (images x
        samples; default: ``default_max_rows``), sub-batching the images when N alone
        exceeds it, and are reduced with a streaming logmeanexp. Peak memory is thus set
        by ``max_rows``, not by the number of samples. The random numbers are those of
        separate passes per sample and per k (``draw_noise``). Returns {k: (N,)}, k = 0 for L.
        """
        ks = sorted({0, *(range(1, self.n_latents) if ks is None else ks)})
        for k in ks:
            if not 0 <= k < self.n_latents:
                raise ValueError(f"k must be in 0..{self.n_latents - 1}, got {k}")
        n_samples_lk = n_samples if n_samples_lk is None else n_samples_lk
        max_rows = self.default_max_rows(x.device) if max_rows is None else int(max_rows)
        if max_rows < 1:
            raise ValueError(f"max_rows must be positive, got {max_rows}")
        counts = {k: n_samples if k == 0 else n_samples_lk for k in ks}
        # Weight norm computed once per call, not in every pass (the cache lives for the block).
        with self.channels_last_weights(), parametrize.cached():
            return self._ood_scores(x, counts, generator, max_rows)

    def _ood_scores(self, x, counts, generator, max_rows):
        n = x.shape[0]
        per_pass = min(n, max_rows)                       # images per pass
        chunk = max(1, max_rows // per_pass)              # samples per pass
        batches = [slice(i, i + per_pass) for i in range(0, n, per_pass)]
        d1 = torch.cat([self.encode_x(x[b]) for b in batches])  # x-only layers: once per image
        out = {}
        for k, total in counts.items():
            prefixes = [self.prefix(d1[b], k) for b in batches]  # shared by every sample
            acc = StreamingLogMeanExp()
            for start in range(0, total, chunk):
                s = min(chunk, total - start)
                noise = self.draw_noise(n, k, s, generator, x.device)
                log_w = x.new_empty((s, n), dtype=torch.float32)
                for b, (d, q) in zip(batches, prefixes):
                    eps = [e[:, b].flatten(0, 1) for e in noise]  # sample-major rows of this batch
                    log_px, kls, _ = self.sampled_terms(x[b], d, q, k, s, noise=eps)
                    log_w[:, b] = (log_px - torch.stack(kls).sum(0)).view(s, -1)
                acc.update(log_w)
            out[k] = acc.result()
        return out

    @torch.no_grad()
    def reconstruct(self, x):
        """Mean image after encoding x with posterior means and decoding them.

        The k = 0 bound's forward pass with zero noise: every z_i is its posterior mean.
        """
        d, q = self.prefix(self.encode_x(x), 0)
        zeros = [torch.zeros((x.shape[0], *shape), device=x.device, dtype=x.dtype) for shape in self.latent_shapes]
        _, _, params = self.sampled_terms(x, d, q, 0, noise=zeros)
        return self.mean_image(params)
