"""The scoring engine: L and L>k for every k, with importance samples streamed in bounded passes.

``importance_bounds(model, x, ks, S, S')`` does all the work of a batch once: the
weight-normalised weights once per call, d_1 (the layers that read only x) once per
image, each prefix z_1..z_k once per image and k; the importance samples then go
through the rest of the model in passes of at most ``max_rows`` rows (images x
samples), and are reduced with a streaming logmeanexp, so peak memory is set by
the row budget and not by the number of samples.
"""

from __future__ import annotations

import math

import torch
from torch.nn.utils import parametrize

from hvae_detect.kernels.dispatch import logmeanexp, streaming_update

__all__ = ["ROW_BUDGET_BYTES", "StreamingLogMeanExp", "default_max_rows", "draw_noise", "importance_bounds",
           "logmeanexp"]

# Bytes of the largest activation of one scoring pass, per device type: passes near the
# CPU's cache size and, on a GPU, the size where throughput saturates (benchmarks/RESULTS.md).
ROW_BUDGET_BYTES = {"cpu": 32 * 2**20, "cuda": 128 * 2**20}


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
    """Rows (images x samples) per scoring pass that fit ``ROW_BUDGET_BYTES`` on ``device``."""
    budget = ROW_BUDGET_BYTES.get(torch.device(device).type, ROW_BUDGET_BYTES["cpu"])
    return max(1, budget // (4 * model.row_elements))


def draw_noise(model, n, k, n_samples, generator=None, device=None):
    """Standard-normal draws for z_{k+1..L}: one (n_samples, n, *latent shape) tensor per latent.

    Drawn sample by sample and latent by latent, the order in which n_samples separate
    passes of the model would draw them, so batching samples does not change which
    random numbers each sample gets.
    """
    dtype = next(model.parameters()).dtype
    draws = [[torch.randn((n, *model.latent_shapes[i]), generator=generator, device=device, dtype=dtype)
              for i in range(k, model.n_latents)] for _ in range(n_samples)]
    return [torch.stack(per_latent) for per_latent in zip(*draws)]


@torch.no_grad()
def importance_bounds(model, x, ks=None, n_samples=1, n_samples_lk=None, generator=None, max_rows=None) -> dict:
    """L (k = 0) and L>k (k in ``ks``, default 1..L-1) of a batch: {k: (N,)} in nats per image.

    ``n_samples`` importance samples for L, ``n_samples_lk`` (default: the same) for L>k.
    """
    ks = sorted({0, *(range(1, model.n_latents) if ks is None else ks)})
    for k in ks:
        if not 0 <= k < model.n_latents:
            raise ValueError(f"k must be in 0..{model.n_latents - 1}, got {k}")
    n_samples_lk = n_samples if n_samples_lk is None else n_samples_lk
    for name, s in (("n_samples", n_samples), ("n_samples_lk", n_samples_lk)):
        if int(s) < 1:
            raise ValueError(f"{name} (importance samples) must be at least 1, got {s}")
    max_rows = default_max_rows(model, x.device) if max_rows is None else int(max_rows)
    if max_rows < 1:
        raise ValueError(f"max_rows must be positive, got {max_rows}")
    counts = {k: n_samples if k == 0 else n_samples_lk for k in ks}
    # Weight norm computed once per call, not in every pass (the cache lives for the block).
    with model.channels_last_weights(), parametrize.cached():
        return _bounds(model, x, counts, generator, max_rows)


def _bounds(model, x, counts, generator, max_rows):
    n = x.shape[0]
    per_pass = min(n, max_rows)                       # images per pass
    chunk = max(1, max_rows // per_pass)              # samples per pass
    batches = [slice(i, i + per_pass) for i in range(0, n, per_pass)]
    d1 = torch.cat([model.encode_x(x[b]) for b in batches])  # x-only layers: once per image
    out = {}
    for k, total in counts.items():
        prefixes = [model.prefix(d1[b], k) for b in batches]  # shared by every sample
        acc = StreamingLogMeanExp()
        for start in range(0, total, chunk):
            s = min(chunk, total - start)
            noise = draw_noise(model, n, k, s, generator, x.device)
            log_w = x.new_empty((s, n), dtype=torch.float32)
            for b, prefix in zip(batches, prefixes):
                eps = [e[:, b].flatten(0, 1) for e in noise]  # sample-major rows of this batch
                log_w[:, b] = model(x[b], k, s, noise=eps, start=prefix).bound.view(s, -1)
            acc.update(log_w)
        out[k] = acc.result()
    return out
