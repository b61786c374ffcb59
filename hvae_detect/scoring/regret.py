"""Likelihood regret (Xiao, Yan and Amit, NeurIPS 2020): how much an image's bound improves when the
encoder is fitted to that image alone.

The amortised encoder of a trained model is good at the images it was trained on and poor at
outliers, so re-optimising only the inference network for one image (the decoder, and with it the
model's density, fixed) gains little for an inlier and much for an outlier:

    regret(x) = L_after(x) - L_before(x)     nats, large for outliers

where L is the importance-weighted bound of ``hvae_detect.scoring.engine`` with ``iw_samples``
samples, before and after ``steps`` Adam steps on the encoder's parameters, each step on the
one-sample ELBO of that image alone.

A regret is a function of the image, as every score of the package is: each image is optimised on
its own (a fresh copy of the encoder, a fresh optimiser, passes of one image), the posterior draws of
every step come from ``hvae_detect.data.randomness`` keyed by (seed, image, step), and L before and
after uses the engine's keyed draws for the same seed - the same draws for both, so much of the
sampling noise cancels in the difference and ``steps=0`` gives exactly 0. The caller's model is never
modified: the work happens on a copy, in eval mode (no dropout).

The cost is ``steps`` forward and backward passes of one image per image (see
benchmarks/quality/regret_cost.py and benchmarks/results/2026-12-06-likelihood-regret.md): an opt-in
statistic, not a default.
"""

from __future__ import annotations

import copy
import math
import numbers

import torch

from hvae_detect.data import randomness
from hvae_detect.scoring.engine import default_max_rows, importance_bounds

__all__ = ["DEFAULT_LEARNING_RATE", "DEFAULT_STEPS", "INFERENCE_MODULES", "inference_parameters", "likelihood_regret"]

# The reference implementation's settings (XavierXiao/Likelihood-Regret, compute_LR.py: 100 Adam
# steps at 2e-4; it also adds a weight decay of 5e-5, left out here: the regret is the bound's gain).
DEFAULT_STEPS = 100
DEFAULT_LEARNING_RATE = 2e-4

# The inference side of each family: the modules that compute q(z | x), by attribute name. Everything
# else (p_proj, p_det, p_z, p_td_z, p_bu_z, bu_cond*, head) is the generative model and stays fixed.
# LVAE's and BIVA's top-down posteriors also read the generative path's features g_{i+1}: those
# features are the decoder's and stay fixed; only the merges and Gaussians that turn them into q move.
INFERENCE_MODULES = {
    "VAE": ("q_det", "q_z", "q_skip"),
    "LVAE": ("q_det", "q_merge", "q_z"),
    "BIVA": (
        "q_bu",
        "q_td",
        "td_from_bu",
        "q_bu_z",
        "bu_up",
        "top_skip",
        "q_top_merge",
        "q_top_z",
        "q_td_merge",
        "q_td_z",
    ),
}


def inference_parameters(model) -> dict[str, torch.nn.Parameter]:
    """{name: parameter} of the inference network (encoder) of ``model``, in ``named_parameters`` order.

    Raises ValueError for a family without an entry in ``INFERENCE_MODULES`` (a family registered
    from outside: which of its modules are inference-side is a property of its architecture that
    cannot be guessed from names).
    """
    family = getattr(model, "family", None)
    if family not in INFERENCE_MODULES:
        raise ValueError(
            f"likelihood regret needs to know which modules of a model form its encoder; the "
            f"{family!r} family has no entry in hvae_detect.scoring.regret.INFERENCE_MODULES "
            f"(known: {sorted(INFERENCE_MODULES)})"
        )
    roots = INFERENCE_MODULES[family]
    return {name: p for name, p in model.named_parameters() if name.split(".", 1)[0] in roots}


def _check(steps, learning_rate, iw_samples, seed) -> None:
    if not isinstance(steps, numbers.Integral) or isinstance(steps, bool) or steps < 0:
        raise ValueError(f"steps (encoder optimisation steps per image) must be an integer >= 0, got {steps!r}")
    if (
        not isinstance(learning_rate, numbers.Real)
        or isinstance(learning_rate, bool)
        or not math.isfinite(learning_rate)
        or learning_rate <= 0
    ):
        raise ValueError(f"learning_rate (Adam's step size) must be a finite number > 0, got {learning_rate!r}")
    if not isinstance(iw_samples, numbers.Integral) or isinstance(iw_samples, bool) or iw_samples < 1:
        raise ValueError(
            f"iw_samples (importance samples of L before and after) must be an integer >= 1, got {iw_samples!r}"
        )
    if not isinstance(seed, numbers.Integral) or isinstance(seed, bool):
        raise ValueError(f"seed must be an integer, got {seed!r}")


def step_noise(model, key: torch.Tensor, step: int) -> list[torch.Tensor]:
    """The standard-normal draws of every latent in optimisation step ``step`` of the image with ``key``
    (1,): one (1, *latent shape) tensor per stage. Their stream ids are negative, so they never repeat
    the engine's (``randomness.noise_stream``, >= 2) or the binarisation's (1)."""
    first = 1 + step * model.n_latents
    return [randomness.normal(key, -(first + i), shape) for i, shape in enumerate(model.latent_shapes)]


def likelihood_regret(
    model,
    x,
    *,
    steps: int = DEFAULT_STEPS,
    learning_rate: float = DEFAULT_LEARNING_RATE,
    seed: int = 0,
    iw_samples: int = 1,
) -> torch.Tensor:
    """Likelihood regret of every image of x: (N,) float32 in nats, on x's device; large for outliers.

    Parameters
    ----------
    model : HierarchicalModel
        A trained model of a family in ``INFERENCE_MODULES``; left unchanged (parameters, buffers and
        train/eval mode).
    x : torch.Tensor
        (N, C, H, W) images as the engine scores them: already the likelihood's evaluation draw
        (``model.observation.evaluation_draw(x01, seed)``), on the model's device.
    steps : int
        Adam steps on the encoder per image (>= 0; 0 gives exactly 0).
    learning_rate : float
        Adam's step size (> 0), betas (0.9, 0.999).
    seed : int
        Keys every random number, as the engine's ``seed``: L before equals the engine's L of the same
        seed and ``iw_samples`` (up to float rounding of a different pass size).
    iw_samples : int
        Importance samples of L before and after (each step uses one sample).
    """
    _check(steps, learning_rate, iw_samples, seed)
    if x.dim() != 4 or tuple(x.shape[1:]) != tuple(model.input_shape):
        raise ValueError(f"x must be (N, {', '.join(map(str, model.input_shape))}) images, got shape {tuple(x.shape)}")
    inference_parameters(model)  # an unknown family is refused before any work
    if x.shape[0] == 0:
        return x.new_zeros(0)
    work = copy.deepcopy(model).eval()
    params = inference_parameters(work)
    for p in work.parameters():  # the decoder's weights need no gradient; the encoder's do
        p.requires_grad_(False)
    for p in params.values():
        p.requires_grad_(True)
    initial = {name: p.detach().clone() for name, p in params.items()}
    keys = randomness.image_keys(x, seed)
    rows = min(int(iw_samples), default_max_rows(work, x.device))  # pass size: a function of S alone
    out = torch.empty(x.shape[0], dtype=torch.float32, device=x.device)
    for i in range(x.shape[0]):
        xi = x[i : i + 1].contiguous()
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(initial[name])
        before = importance_bounds(work, xi, (), iw_samples, seed=seed, max_rows=rows)[0]
        if steps:
            _optimise(work, params, xi, keys[i : i + 1], int(steps), float(learning_rate))
        after = importance_bounds(work, xi, (), iw_samples, seed=seed, max_rows=rows)[0]
        out[i] = (after - before)[0]
    return out


def _optimise(model, params, x, key, steps, learning_rate) -> None:
    """``steps`` Adam steps on ``params`` maximising the one-sample ELBO of the single image x."""
    optimizer = torch.optim.Adam(list(params.values()), lr=learning_rate, betas=(0.9, 0.999), foreach=True)
    with torch.enable_grad():
        for step in range(steps):
            loss = -model(x, 0, noise=step_noise(model, key, step)).bound.sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
