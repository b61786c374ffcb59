"""The scoring engine: L and L>k for every k, with importance samples streamed in bounded passes.

``importance_bounds(model, x, ks, S, S', seed)`` (S = ``iw_samples`` importance samples for L, S' =
``iw_samples_lk`` for L>k) does the work of a batch once: the
weight-normalised weights once per call, d_1 (the layers that read only x) and each
prefix z_1..z_k once per image and k; the importance samples then go through the rest
of the model as rows (image, sample) in passes of exactly ``max_rows`` rows, and are
reduced with a streaming logmeanexp, so peak memory is set by the row budget and not
by the number of samples.

A score is a function of the image: every random number comes from
``hvae_detect.data.randomness`` keyed by (seed, image, k, latent, sample), every pass has the
same shape (the last one is padded), and samples are folded in blocks that depend on S
only, so an image's bounds do not depend on its batch, its position or its neighbours.

Every model family (VAE, LVAE, BIVA) goes through the same calls: ``encode_x``, ``prefix``
(whatever tensors and Gaussians it holds are sliced per image) and ``forward`` with ``start``.
"""

from __future__ import annotations

import math

import torch
from torch.nn.utils import parametrize

from hvae_detect.data import randomness
from hvae_detect.kernels.dispatch import logmeanexp, streaming_update
from hvae_detect.models.layers import Gaussian
from hvae_detect.scoring.output_names import KL, LOG_PX, bound_name, numbered

__all__ = [
    "ROW_BUDGET_BYTES",
    "MAX_ROWS",
    "FOLD_SAMPLES",
    "StreamingLogMeanExp",
    "default_max_rows",
    "importance_bounds",
    "importance_noise",
    "importance_outputs",
    "latent_path_outputs",
    "logmeanexp",
]

# Bytes of the largest activation of one scoring pass, per device type: passes near the
# CPU's cache size and, on a GPU, the size where throughput saturates (benchmarks/results/2026-11-27-scoring-speed.md).
ROW_BUDGET_BYTES = {"cpu": 32 * 2**20, "cuda": 128 * 2**20}
MAX_ROWS = 256  # every pass is padded to its row count: keep small models' passes small
FOLD_SAMPLES = 64  # samples folded into the running logmeanexp at a time


class StreamingLogMeanExp:
    """Running (max, sum of exp) over chunks of samples, so S samples never sit in memory at once.

    >>> acc = StreamingLogMeanExp()
    >>> for chunk in chunks:          # each (s_i, N)
    ...     acc.update(chunk)
    >>> acc.result()                  # == logmeanexp(torch.cat(chunks))
    """

    def __init__(self) -> None:
        self.max: torch.Tensor | None = None
        self.sum: torch.Tensor | None = None
        self.count = 0

    def update(self, chunk: torch.Tensor) -> None:
        if chunk.dim() != 2:
            raise ValueError(f"expected a (samples, N) chunk, got shape {tuple(chunk.shape)}")
        chunk = chunk.float()
        if self.max is None:
            self.max = torch.full_like(chunk[0], -math.inf)
            self.sum = torch.zeros_like(chunk[0])
        self.max, self.sum = streaming_update(self.max, self.sum, chunk)
        self.count += chunk.shape[0]

    def result(self) -> torch.Tensor:
        if self.count == 0:
            raise ValueError("logmeanexp of zero importance samples: fold in at least one (samples, N) chunk")
        return self.max + torch.log(self.sum) - math.log(self.count)


def default_max_rows(model, device) -> int:
    """Rows (image, sample) per scoring pass: ``ROW_BUDGET_BYTES`` on ``device``, at most ``MAX_ROWS``."""
    budget = ROW_BUDGET_BYTES.get(torch.device(device).type, ROW_BUDGET_BYTES["cpu"])
    return max(1, min(MAX_ROWS, budget // (4 * model.row_elements)))


def importance_noise(model, keys, k, samples):
    """Standard-normal draws of z_{k+1..L} for rows with image keys ``keys`` (R,) and sample
    indices ``samples`` (R,): one (R, *latent shape) tensor per stage. The one builder of keyed
    latent draws: scoring's, and streamed training's (``hvae_detect.training.batches.posterior_noise``)."""
    return [
        randomness.normal(keys, randomness.noise_stream(k, i, samples), model.latent_shapes[i])
        for i in range(k, model.n_latents)
    ]


@torch.no_grad()
def importance_bounds(model, x, ks=None, iw_samples=1, iw_samples_lk=None, seed=0, max_rows=None) -> dict:
    """L (k = 0) and L>k (k in ``ks``, default 1..L-1) of images x: {k: (N,)} in nats per image.

    ``iw_samples`` importance samples S for L, ``iw_samples_lk`` S' (default: the same) for L>k;
    the random numbers are keyed by ``seed`` and each image (``hvae_detect.data.randomness``).
    """
    return _bounds_and_terms(model, x, ks, iw_samples, iw_samples_lk, seed, max_rows, with_terms=False)[0]


@torch.no_grad()
def importance_outputs(
    model, x, ks=None, iw_samples=1, iw_samples_lk=None, seed=0, max_rows=None, with_terms=True
) -> dict:
    """The engine's outputs for images x, named as ``hvae_detect.scoring.output_names`` names them:
    "L" and "L>k" (k in ``ks``) as ``importance_bounds`` gives them and, ``with_terms``, from the same
    passes of L the mean over its S samples of "log p(x|z)" and of every stage's KL ("KL1" (lowest)
    .. "KLn"); each (N,) in nats."""
    bounds, terms = _bounds_and_terms(model, x, ks, iw_samples, iw_samples_lk, seed, max_rows, with_terms)
    out = {bound_name(k): v for k, v in bounds.items()}
    if with_terms:  # terms: (N, 1 + n_latents), log p(x|z) then the KL of each stage
        out[LOG_PX] = terms[:, 0]
        out.update({numbered(KL, i): terms[:, i] for i in range(1, terms.shape[1])})
    return out


@torch.no_grad()
def latent_path_outputs(model, x, max_rows=None) -> dict:
    """``model.latent_path`` of images x (its outputs: "recon error", "|sigma x|", "|mu|i", "|sigma|i"),
    in padded passes of ``max_rows`` images so that an image's values do not depend on its batch; each
    (N,) float32. No random numbers: every latent sits at its posterior mean."""
    max_rows = default_max_rows(model, x.device) if max_rows is None else int(max_rows)
    if max_rows < 1:
        raise ValueError(f"max_rows must be positive, got {max_rows}")
    n, parts = x.shape[0], []
    with model.channels_last_weights(), parametrize.cached():
        for start in range(0, n, max_rows):
            path = model.latent_path(x[_pass_rows(start, n, max_rows, x.device)])  # {name: (max_rows,)}, padded
            parts.append({name: v[: min(max_rows, n - start)].float() for name, v in path.items()})  # unpadded
    if not parts:
        return {}
    return {name: torch.cat([p[name] for p in parts]) for name in parts[0]}


def _bounds_and_terms(model, x, ks, iw_samples, iw_samples_lk, seed, max_rows, with_terms):
    """({k: (N,) bound}, the mean (log p(x|z), KL per stage) of L's samples (N, 1 + n_latents) or None)."""
    ks = sorted({0, *(range(1, model.n_latents) if ks is None else ks)})
    for k in ks:
        if not 0 <= k < model.n_latents:
            raise ValueError(f"k must be in 0..{model.n_latents - 1}, got {k}")
    iw_samples_lk = iw_samples if iw_samples_lk is None else iw_samples_lk
    for name, s in (("iw_samples", iw_samples), ("iw_samples_lk", iw_samples_lk)):
        if int(s) < 1:
            raise ValueError(f"{name} (importance samples) must be at least 1, got {s}")
    max_rows = default_max_rows(model, x.device) if max_rows is None else int(max_rows)
    if max_rows < 1:
        raise ValueError(f"max_rows must be positive, got {max_rows}")
    counts = {k: int(iw_samples) if k == 0 else int(iw_samples_lk) for k in ks}
    if x.shape[0] == 0:
        return {k: x.new_zeros(0) for k in ks}, (x.new_zeros(0, 1 + model.n_latents) if with_terms else None)
    keys = randomness.image_keys(x, seed)  # (N,)
    # Weight norm computed once per call, not in every pass (the cache lives for the block).
    with model.channels_last_weights(), parametrize.cached():
        prefixes = _prefixes(model, x, ks, max_rows)
        results = {k: _bound(model, x, keys, k, counts[k], prefixes[k], max_rows, with_terms and k == 0) for k in ks}
    return {k: r[0] for k, r in results.items()}, results[0][1]


def _pass_rows(start, total, rows, device):
    """Indices start..start+rows-1, the ones past ``total`` replaced by the last valid one."""
    return torch.arange(start, start + rows, device=device).clamp(max=total - 1)


def _rows(prefix, index):
    """The rows ``index`` of a prefix: a tensor, a ``Gaussian`` or a tuple/list of them (any family's)."""
    if isinstance(prefix, torch.Tensor):
        return prefix[index]
    if isinstance(prefix, Gaussian):
        return Gaussian(prefix.mean[index], prefix.std[index])
    if isinstance(prefix, (tuple, list)):
        return type(prefix)(_rows(part, index) for part in prefix)
    raise TypeError(f"a model's prefix holds tensors, Gaussians and tuples of them, got {type(prefix).__name__}")


def _concat(prefixes):
    """Prefixes of consecutive passes joined along the image dimension."""
    first = prefixes[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(prefixes)
    if isinstance(first, Gaussian):
        return Gaussian(torch.cat([p.mean for p in prefixes]), torch.cat([p.std for p in prefixes]))
    return type(first)(_concat(parts) for parts in zip(*prefixes))


def _prefixes(model, x, ks, rows):
    """For every k: ``model.prefix(model.encode_x(x), k)`` of every image (for the VAE: d_{k+1} and
    q(z_{k+1})), in passes of ``rows`` images."""
    n = x.shape[0]
    parts = {k: [] for k in ks}
    for start in range(0, n, rows):
        d1 = model.encode_x(x[_pass_rows(start, n, rows, x.device)])  # (rows, ...), padded
        valid = slice(0, min(rows, n - start))  # the pass's real images
        for k in ks:
            parts[k].append(_rows(model.prefix(d1, k), valid))
    return {k: _concat(p) for k, p in parts.items()}


def _bound(model, x, keys, k, iw_samples, prefix, rows, with_terms=False):
    """(N,) logmeanexp over ``iw_samples`` samples of the bound L>k, and with ``with_terms`` the mean over
    the samples of log p(x|z) and of each stage's KL, (N, 1 + stages) (else None).

    The N * S rows (image, sample) are numbered sample-major (row r: image r % N, sample r // N) and go
    through the model ``rows`` at a time; each row's values (bound, then the terms) wait in ``pending``
    until every image has a block of samples, which is folded in."""
    n = x.shape[0]
    total = n * iw_samples
    acc, pending, term_sum = StreamingLogMeanExp(), [], None
    for start in range(0, total, rows):
        row = _pass_rows(start, total, rows, x.device)  # (rows,) the pass's row numbers, padded
        image, sample = row % n, row // n  # (rows,) each
        noise = importance_noise(model, keys[image], k, sample)
        terms = model(x[image], k, noise=noise, start=_rows(prefix, image))
        valid = min(rows, total - start)
        bound = terms.bound[:valid].float()[:, None]  # (valid, 1)
        pending.append(  # (valid, 1) or with the terms (valid, 2 + stages): bound, log p(x|z), KL per stage
            bound
            if not with_terms
            else torch.cat([bound, terms.log_px[:valid].float()[:, None], terms.kl[:, :valid].float().T], 1)
        )
        last = start + rows >= total
        done = sum(p.shape[0] for p in pending) // n  # samples complete for every image
        fold = done if last else done // FOLD_SAMPLES * FOLD_SAMPLES  # full blocks until the end
        if fold:
            waiting = torch.cat(pending)  # (waiting rows, 1 or 2 + stages), sample-major from a sample's start
            for first in range(0, fold, FOLD_SAMPLES):  # block boundaries depend on S only
                block_samples = min(FOLD_SAMPLES, fold - first)
                block = waiting[first * n : (first + block_samples) * n].view(block_samples, n, -1)  # (s, N, c)
                acc.update(block[..., 0].contiguous())  # (s, N) bounds
                for sample_terms in block[..., 1:] if with_terms else ():  # (N, 1 + stages): no sum across images
                    term_sum = sample_terms.clone() if term_sum is None else term_sum + sample_terms
            pending = [waiting[fold * n :]]  # the rows of samples not yet complete
    return acc.result(), (term_sum / iw_samples if with_terms else None)
