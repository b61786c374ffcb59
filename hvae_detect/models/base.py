"""What every model family shares: ``BoundTerms``, the options, sample tiling, the KL terms'
assembly into the bound, the likelihood head, weights.

A family (``vae.VAE``, ``lvae.LVAE``, ``biva.BIVA``, registered in ``hvae_detect.models.registry``)
subclasses ``HierarchicalModel``, builds its layers from a ``hvae_detect.models.config.ModelConfig``
and implements ``encode_x``, ``prefix`` and ``stage_terms``.
"""

from __future__ import annotations

import contextlib
import math
from typing import NamedTuple

import torch
import torch.nn as nn
from torch.nn.utils import parametrize

from hvae_detect import likelihoods
from hvae_detect.models.layers import (
    Gaussian,
    _wn,
    activation_fn,
    data_dependent_init,
    standard_normal_log_prob,
    standard_normal_log_prob_elements,
    weight_normed_layers,
)

# The likelihood head p(x | z1) reading the decoder's last feature map:
#   "paper":   as the paper's code: the likelihood's own head (Bernoulli = activation, then a 3x3
#              convolution; discretized logistic mixture = a 1x1 convolution, no activation);
#              weight-normalised when the last deterministic block is.
#   "conv3x3": this package's earlier head, a plain 3x3 convolution for both (what folders saved
#              before the option existed hold).
HEADS = ("paper", "conv3x3")


class BoundTerms(NamedTuple):
    """Per-sample terms of a bound; rows are sample-major (row s*N + n is image n)."""

    log_px: torch.Tensor  # (R,) log p(x | z)
    kl: torch.Tensor  # (L - k, R) log q(z_i | .) - log p(z_i | .) for i = k+1..L
    params: torch.Tensor  # likelihood parameters, (R, P, H, W)
    # With kl_elements=True: the element-wise KL of every latent variable of stages k+1..L, in
    # order, (R, *its shape) (the paper's per-element free nats floor each); None otherwise.
    kl_elements: list | None = None

    @property
    def bound(self) -> torch.Tensor:
        """log p(x | z) - sum_{i>k} KL_i, (R,)."""
        return self.log_px - self.kl.sum(0)


def tile(value, n_samples: int):
    """``value`` with its rows repeated ``n_samples`` times, sample-major (row s*N + n is image n): a
    tensor, a ``Gaussian``, or a tuple or list of them (any family's prefix)."""
    if isinstance(value, torch.Tensor):
        return value.repeat((n_samples,) + (1,) * (value.dim() - 1))
    if isinstance(value, Gaussian):
        return value.repeat(n_samples)
    if isinstance(value, (tuple, list)):
        return type(value)(tile(part, n_samples) for part in value)
    raise TypeError(f"samples tile tensors, Gaussians and tuples of them, got {type(value).__name__}")


def log_density(dist: Gaussian, z, elements: bool):
    """log dist(z): per row (R,), or element-wise (z's shape) with ``elements``."""
    return dist.log_prob_elements(z) if elements else dist.log_prob(z)


def standard_normal_log_density(z, elements: bool):
    """log N(z; 0, I): per row (R,), or element-wise with ``elements``."""
    return standard_normal_log_prob_elements(z) if elements else standard_normal_log_prob(z)


def _option(name: str):
    return property(lambda self: getattr(self.config, name), doc=f"``config.{name}``")


class _ChannelsLast(nn.Module):
    """Parametrisation appended after weight norm: hands convolutions channels-last kernels."""

    def forward(self, w):
        return w.contiguous(memory_format=torch.channels_last)


class HierarchicalModel(nn.Module):
    """What every model family shares: its options, the bound's assembly, the likelihood head, weights.

    A family holds ``n_latents`` stages and ``latent_shapes`` (the shape of the standard-normal
    draws of each stage, what ``hvae_detect.scoring.engine.importance_noise`` builds) and implements

        encode_x(x)             work that reads only x
        prefix(encode_x(x), k)  work of L>k that does not depend on a sample: a tuple of tensors
                                and ``Gaussian``s that the engine slices per image
        stage_terms(x, k, start, noise, generator, elements)
                                -> (log p(x | z), likelihood parameters, [per stage k+1..L: a tuple of
                                   the KL terms of its latent variables])

    sampling every posterior through ``posterior_draw`` (so that ``latent_path`` sees them), and
    ``forward`` (here, the same for all) tiles the samples, runs ``stage_terms`` and adds each
    stage's KL terms into one row of ``BoundTerms.kl``, so that the scoring engine and the training
    loop run every family through the same calls. A family's ``__init__`` builds its layers in a
    fixed order (the initial weights come from the global generator in that order) and ends with
    ``_finish``.
    """

    family = None  # the registered name: the package's own families declare it, register_family sets it
    stage_blocks_required = False  # whether every stage needs a block (merge blocks copy its last one)
    architecture_flags: tuple = ()  # the family's own true/false architecture keys
    # How many feature maps of a stage's shape sit side by side in the widest activation (merge
    # blocks read two, concatenated): what ``row_elements`` scales with.
    concatenated_features = 1

    input_shape = _option("input_shape")
    architecture = _option("architecture")
    likelihood = _option("likelihood")  # the name, as saved configurations and ``likelihood_`` hold it
    n_mix = _option("n_mix")
    activation = _option("activation")
    likelihood_head = _option("likelihood_head")
    skip_stochastic = _option("skip_stochastic")
    q_dropout = _option("q_dropout")
    p_dropout = _option("p_dropout")
    log_scale_min = _option("log_scale_min")

    def __init__(self, config):
        super().__init__()
        if config.family != self.family:
            raise ValueError(
                f"{type(self).__name__} builds the {self.family} family, but the architecture names "
                f"{config.family}; build models with hvae_detect.models.registry.make_model"
            )
        self.config = config
        self.observation = likelihoods.make_likelihood(config.likelihood, config.n_mix, config.log_scale_min)
        self.act = activation_fn(config.activation)
        self.n_latents = len(config.architecture["config_stochastic"])

    def _finish(self, stage_shapes) -> None:
        """Build the likelihood head on the bottom stage's first feature map (the input's channels when
        a VAE stage has no block) and size ``row_elements``: the elements of the largest activation of
        one image, what a scoring pass's memory scales with. ``stage_shapes``: per stage, the shapes
        through its inference stack, input first."""
        bottom = stage_shapes[0]
        out_ch = self._build_head(bottom[1][0] if len(bottom) > 1 else self.input_shape[0])
        self.row_elements = max(
            [self.concatenated_features * math.prod(s) for shapes in stage_shapes for s in shapes]
            + [out_ch * math.prod(self.input_shape[1:])]
        )

    def _build_head(self, head_in: int) -> int:
        """The likelihood head p(x | z) reading ``head_in`` feature channels; returns its output channels."""
        out_ch = self.observation.param_channels(self.input_shape[0])
        if self.likelihood_head == "conv3x3":
            self.head = nn.Conv2d(head_in, out_ch, 3, padding=1)
            self.head_activation = False
        else:  # the paper's: weight norm from the last deterministic block of the last stage
            last = [cfg for stage in self.architecture["config_deterministic"] for cfg in stage]
            wn = last[-1].get("weightnorm", True) if last else True
            kernel = self.observation.paper_kernel_size
            self.head = _wn(nn.Conv2d(head_in, out_ch, kernel, padding=kernel // 2), wn)
            self.head_activation = self.observation.paper_activation
        return out_ch

    def _log_px(self, x, g):
        """(log p(x | z), likelihood parameters) from the decoder's last feature map g."""
        params = self.head(self.act(g) if self.head_activation else g).float()  # float32 likelihood under AMP too
        return self.observation.log_prob(x, params), params

    # ---- the bound ------------------------------------------------------------------
    def forward(self, x, k=0, n_samples=1, noise=None, generator=None, start=None, kl_elements=False) -> BoundTerms:
        """Terms of L (k = 0) or L>k for ``n_samples`` samples of z_{>k} per image.

        ``noise`` optionally gives the standard-normal draws of z_{k+1..L}, one
        (n_samples * N, *latent shape) tensor per stage, instead of drawing them from
        ``generator``. ``start`` optionally passes ``prefix(encode_x(x), k)`` computed once.
        ``kl_elements=True`` (training with the paper's per-element free nats) also returns the
        element-wise KLs (``BoundTerms.kl_elements``), whose sums make the rows of ``BoundTerms.kl``.
        """
        start = start if start is not None else self.prefix(self.encode_x(x), k)
        if n_samples > 1:
            start, x = tile(start, n_samples), tile(x, n_samples)
        log_px, params, stages = self.stage_terms(x, k, start, noise, generator, kl_elements)
        rows = []
        for kls in stages:
            row = None
            for kl in kls:
                kl = kl.flatten(1).sum(1) if kl_elements else kl
                row = kl if row is None else row + kl
            rows.append(row)
        return BoundTerms(
            log_px, torch.stack(rows), params, [kl for kls in stages for kl in kls] if kl_elements else None
        )

    # ---- weights ----------------------------------------------------------------------
    def init_from_data(self, x, generator=None) -> None:
        """Data-dependent weight-norm initialisation on the batch ``x`` (the paper's first training batch).

        Runs ``x`` through the bound's pass (k = 0, one posterior sample drawn from ``generator``);
        every weight-normalised layer, inference and generative, convolutional, transposed and
        dense, is set so that its outputs on this batch have zero mean and unit variance per output
        channel (``hvae_detect.models.layers.data_dependent_init``). Layers without weight norm keep
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
        (benchmarks/results/2026-11-27-scoring-speed.md). Only the weights' layout changes, not their values; the
        parameters and the state dict are untouched. Works under autograd.
        """
        added = []
        try:
            for module in self.modules():
                if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)) and parametrize.is_parametrized(
                    module, "weight"
                ):
                    parametrize.register_parametrization(module, "weight", _ChannelsLast(), unsafe=True)
                    added.append(module)
            yield
        finally:
            for module in added:
                module.parametrizations.weight.pop(-1)

    # ---- the latent path -----------------------------------------------------------------
    def posterior_draw(self, q, noise, generator=None):
        """``draw(q, noise, generator)``, the one way families sample a posterior; inside ``latent_path``
        it also records q, so that the path's statistics need nothing more from a family."""
        recorded = getattr(self, "_recorded_posteriors", None)
        if recorded is not None:
            recorded.append(q)
        return draw(q, noise, generator)

    @torch.no_grad()
    def latent_path(self, x) -> dict:
        """Norms along L's pass with every latent at its posterior mean (Huang, He, Lui 2024): per image
        (N,) "recon error" (squared distance of x from the likelihood's mean), "|sigma x|" (norm of the
        likelihood's per-pixel standard deviations) and, per posterior in the order the family draws
        them, "|mu|i" and "|sigma|i" (norms of its mean and standard deviation)."""
        zeros = [torch.zeros((x.shape[0], *shape), device=x.device, dtype=x.dtype) for shape in self.latent_shapes]
        self._recorded_posteriors = []
        try:
            params = self(x, 0, noise=zeros).params
            posteriors = self._recorded_posteriors
        finally:
            self._recorded_posteriors = None
        if not posteriors:
            raise ValueError(
                f"the {self.family} family samples its posteriors without posterior_draw, so its "
                "latent path cannot be recorded"
            )
        channels = self.input_shape[0]
        out = {
            "recon error": (x - self.observation.mean(params, channels)).flatten(1).square().sum(1),
            "|sigma x|": self.observation.std(params, channels).flatten(1).norm(dim=1),
        }
        for i, q in enumerate(posteriors, 1):
            out[f"|mu|{i}"] = q.mean.flatten(1).norm(dim=1)
            out[f"|sigma|{i}"] = q.std.flatten(1).norm(dim=1)
        return out

    @torch.no_grad()
    def reconstruct(self, x):
        """Mean image after encoding x with posterior means and decoding them (L's pass, zero noise)."""
        zeros = [torch.zeros((x.shape[0], *shape), device=x.device, dtype=x.dtype) for shape in self.latent_shapes]
        params = self(x, 0, noise=zeros).params
        return self.observation.mean(params, self.input_shape[0])


def draw(q, noise, generator=None):
    """A posterior sample: q's mean plus its std times the given standard-normal ``noise``, or a fresh draw."""
    return q.sample(generator) if noise is None else q.mean + q.std * noise


def init_from_data(model: HierarchicalModel, x, generator=None) -> None:
    """``model.init_from_data(x, generator)``: data-dependent weight-norm initialisation on one batch."""
    model.init_from_data(x, generator)
