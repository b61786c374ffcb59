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
from hvae_detect.architectures import family_of, resolve_architecture
from hvae_detect.kernels.layout import LOG_SCALE_MIN, check_log_scale_min, clamp_log_scales
from hvae_detect.layers import (STOCHASTIC, Projection, _wn, activation_fn,
                                 data_dependent_init, standard_normal_log_prob, standard_normal_log_prob_elements,
                                 weight_normed_layers)
from hvae_detect.stages import build_block

# The likelihood head p(x | z1) reading the decoder's last feature map:
#   "paper":   as the paper's code: Bernoulli = activation, then a 3x3 convolution; discretized
#              logistic mixture = a 1x1 convolution (no activation); weight-normalised when the
#              last deterministic block is.
#   "conv3x3": this package's earlier head, a plain 3x3 convolution for both (what folders saved
#              before the option existed hold).
HEADS = ("paper", "conv3x3")


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


class HierarchicalModel(nn.Module):
    """What every model family shares: its options, the likelihood head, weights and layouts.

    A family (``HierarchicalVAE`` here, ``hvae_detect.ladder.LadderVAE``, ``hvae_detect.biva.BIVA``)
    holds ``n_latents`` stages and ``latent_shapes`` (the shape of the standard-normal draws of each
    stage, what ``hvae_detect.scoring.importance_noise`` builds) and implements

        encode_x(x)             work that reads only x
        prefix(encode_x(x), k)  work of L>k that does not depend on a sample: a tuple of tensors
                                and ``Gaussian``s that the engine slices per image
        forward(x, k, n_samples, noise, generator, start, kl_elements) -> BoundTerms

    with one row of ``BoundTerms.kl`` per stage k+1..L, so that the scoring engine and the
    training loop run every family through the same calls.
    """

    family = None  # "VAE", "LVAE" or "BIVA" (hvae_detect.architectures.MODEL_FAMILIES)

    def _setup(self, input_shape, architecture, likelihood, n_mix, activation, likelihood_head, skip_stochastic,
               q_dropout, p_dropout, log_scale_min=LOG_SCALE_MIN) -> dict:
        """Check and keep the options every family takes; returns the resolved architecture."""
        if likelihood not in likelihoods.LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {likelihoods.LIKELIHOODS}, got {likelihood!r}")
        if likelihood_head not in HEADS:
            raise ValueError(f"likelihood_head must be one of {HEADS}, got {likelihood_head!r}")
        for name, rate in (("q_dropout", q_dropout), ("p_dropout", p_dropout)):
            if not 0 <= rate < 1:
                raise ValueError(f"{name} must be in [0, 1), got {rate!r}")
        check_log_scale_min(log_scale_min)
        arch = resolve_architecture(architecture)
        if family_of(arch) != self.family:
            raise ValueError(f"{type(self).__name__} builds the {self.family} family, but the architecture names "
                             f"{family_of(arch)}; build models with hvae_detect.families.make_model")
        self.act = activation_fn(activation)
        self.activation, self.likelihood_head = activation, likelihood_head
        self.skip_stochastic = bool(skip_stochastic)
        self.q_dropout, self.p_dropout = float(q_dropout), float(p_dropout)
        self.architecture = arch
        self.input_shape = tuple(input_shape)
        self.likelihood = likelihood
        self.n_mix = n_mix
        self.log_scale_min = float(log_scale_min)
        self.n_latents = len(arch["config_stochastic"])
        return arch

    def _build_head(self, head_in: int) -> int:
        """The likelihood head p(x | z) reading ``head_in`` feature channels; returns its output channels."""
        arch, likelihood = self.architecture, self.likelihood
        out_ch = likelihoods.param_channels(likelihood, self.input_shape[0], self.n_mix)
        if self.likelihood_head == "conv3x3":
            self.head = nn.Conv2d(head_in, out_ch, 3, padding=1)
            self.head_activation = False
        else:  # the paper's: weight norm from the last deterministic block of the last stage
            last = [cfg for stage in arch["config_deterministic"] for cfg in stage]
            wn = last[-1].get("weightnorm", True) if last else True
            kernel = 3 if likelihood == "bernoulli" else 1
            self.head = _wn(nn.Conv2d(head_in, out_ch, kernel, padding=kernel // 2), wn)
            self.head_activation = likelihood == "bernoulli"
        return out_ch

    def _log_px(self, x, g):
        """(log p(x | z), likelihood parameters) from the decoder's last feature map g."""
        params = self.head(self.act(g) if self.head_activation else g).float()  # float32 likelihood under AMP too
        if self.likelihood == "dlogmix" and self.log_scale_min > LOG_SCALE_MIN:
            params = clamp_log_scales(params, self.input_shape[0], self.log_scale_min)
        return likelihoods.log_prob(self.likelihood, x, params), params

    # ---- weights ----------------------------------------------------------------------
    def init_from_data(self, x, generator=None) -> None:
        """Data-dependent weight-norm initialisation on the batch ``x`` (the paper's first training batch).

        Runs ``x`` through the bound's pass (k = 0, one posterior sample drawn from ``generator``);
        every weight-normalised layer, inference and generative, convolutional, transposed and
        dense, is set so that its outputs on this batch have zero mean and unit variance per output
        channel (``hvae_detect.layers.data_dependent_init``). Layers without weight norm keep
        PyTorch's initialisation.
        """
        if x.shape[0] < 2:
            raise ValueError(f"data-dependent initialisation needs a batch of at least 2 images, got {x.shape[0]}")
        data_dependent_init(weight_normed_layers(self), lambda: self(x, 0, generator=generator))

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


def draw(q, noise, generator=None):
    """A posterior sample: q's mean plus its std times the given standard-normal ``noise``, or a fresh draw."""
    return q.sample(generator) if noise is None else q.mean + q.std * noise


class HierarchicalVAE(HierarchicalModel):
    """``activation`` (a name in ``hvae_detect.layers.ACTIVATIONS``) is used before every
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


def init_from_data(model: HierarchicalModel, x, generator=None) -> None:
    """``model.init_from_data(x, generator)``: data-dependent weight-norm initialisation on one batch."""
    model.init_from_data(x, generator)
