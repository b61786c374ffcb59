"""The engine's outputs for a set of images, batch by batch: what the statistics of a detector read."""

from __future__ import annotations

import numbers

import numpy as np

from hvae_detect.data.image_sources import image_batches
from hvae_detect.precision import autocast
from hvae_detect.scoring import output_names, statistics
from hvae_detect.scoring.complexity import compressed_bits
from hvae_detect.scoring.engine import default_max_rows, importance_outputs, latent_path_outputs
from hvae_detect.scoring.regret import likelihood_regret


def _count(value, name: str) -> int:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} (importance samples) must be a positive integer, got {value!r}")
    return int(value)


def image_outputs(
    model,
    X,
    needed,
    *,
    seed: int,
    iw_samples: int,
    iw_samples_lk: int,
    image_shape=None,
    batch_size: int | None = None,
    precision: str = "float32",
) -> dict:
    """The outputs named in ``needed`` ("L", "L>k", "log p(x|z)", "KL...", "bits", "path", "regret"; see
    ``hvae_detect.scoring.output_names``) of every image of X: (n,) float64 arrays.

    X: anything ``hvae_detect.data.image_sources.image_batches`` reads (``image_shape`` for 2-D input),
    images of the model's input shape. Each batch takes the likelihood's evaluation draw (one fixed
    draw per image, keyed by ``seed``) before it is scored; "bits" compresses that draw. ``precision``
    ("float32", "bfloat16", "auto"; ``hvae_detect.precision``) is that of the model's passes for L, L>k
    and the latent path; the likelihood and the densities stay float32, as does the regret's refit.
    """
    iw_samples, iw_samples_lk = _count(iw_samples, "iw_samples"), _count(iw_samples_lk, "iw_samples_lk")
    device = next(model.parameters()).device
    batch_size = batch_size or 4 * default_max_rows(model, device)  # whole passes at S = 1
    ks, terms = output_names.bounds_needed(needed, model.n_latents), output_names.terms_needed(needed)
    parts = []
    for x in image_batches(X, image_shape, model.input_shape, batch_size, device):
        x = model.observation.evaluation_draw(x, seed)
        with autocast(device, precision):
            out = importance_outputs(model, x, ks, iw_samples, iw_samples_lk, seed=seed, with_terms=terms)
            if output_names.path_needed(needed):
                out.update(latent_path_outputs(model, x))
        if output_names.REGRET in needed:
            out[output_names.REGRET] = likelihood_regret(model, x, seed=seed, iw_samples=iw_samples)
        parts.append({name: v.double().cpu().numpy() for name, v in out.items()})
        if output_names.BITS in needed:  # the image the model scored, compressed losslessly on its own
            parts[-1][output_names.BITS] = compressed_bits(x.cpu().numpy(), statistics.COMPLEXITY_CODEC)
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
