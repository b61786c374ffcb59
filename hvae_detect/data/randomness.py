"""Counter-based random numbers keyed by the image: a score is a function of the image.

Every random number used to score an image (its binarisation draw, each importance
sample of each latent for each k) is a hash of (the image's key, a stream id, an
element index), so it does not depend on batch size, batch neighbours, order,
chunking, process count or device. An image's key is a hash of its float32 pixel
values and the detector's seed; identical images get identical random numbers.

The hash is splitmix64's finaliser on int64 tensors (integer arithmetic wraps and is
exact on every device); uniforms take 24 bits, normals come from Box-Muller in float32,
so CPU and CUDA agree to float32 rounding of log/cos/sqrt.
"""

from __future__ import annotations

import math

import torch

_GOLDEN = 0x9E3779B97F4A7C15
_M1 = 0xBF58476D1CE4E5B9
_M2 = 0x94D049BB133111EB
BINARIZE_STREAM = 1  # the uniforms of a binarisation draw; stream ids of importance noise are >= 2 (noise_stream)


def _i64(v: int) -> int:
    """An unsigned 64-bit constant as the int64 with the same bits."""
    return v - (1 << 64) if v >= 1 << 63 else v


def _shr(x: torch.Tensor, n: int) -> torch.Tensor:
    """Logical right shift of int64 bit patterns (torch's >> is arithmetic)."""
    return (x >> n) & ((1 << (64 - n)) - 1)


def mix64(x: torch.Tensor) -> torch.Tensor:
    """splitmix64's finaliser: a bijection of 64-bit patterns that scrambles every bit."""
    x = (x ^ _shr(x, 30)) * _i64(_M1)
    x = (x ^ _shr(x, 27)) * _i64(_M2)
    return x ^ _shr(x, 31)


def image_keys(x: torch.Tensor, seed: int) -> torch.Tensor:
    """(N,) int64 keys of images x (N, ...): a hash of each image's float32 values and ``seed``."""
    bits = x.detach().float().contiguous().flatten(1).view(torch.int32).long()
    index = torch.arange(bits.shape[1], device=x.device, dtype=torch.int64)
    h = mix64(bits * _i64(_GOLDEN) + mix64(index + _i64(_M1)))
    total = h.sum(1)  # addition mod 2^64: the same whatever order the pixels are summed in
    return mix64(total ^ mix64(torch.full_like(total, int(seed) & ((1 << 63) - 1))))


def noise_stream(k: int, latent: int, sample: int) -> int:
    """The stream id of the normal draws of latent ``latent`` in sample ``sample`` of L>k."""
    return 2 + sample * 4096 + k * 64 + latent


def _hash(keys: torch.Tensor, streams: torch.Tensor, n_elements: int) -> torch.Tensor:
    """(R, n_elements) hashes of (key, stream, element index) per row."""
    base = mix64(keys ^ mix64(streams * _i64(_GOLDEN)))
    index = torch.arange(n_elements, device=keys.device, dtype=torch.int64)
    return mix64(base[:, None] + (index + 1)[None, :] * _i64(_GOLDEN))


def _unit(bits24: torch.Tensor) -> torch.Tensor:
    return (bits24.float() + 0.5) * (1.0 / (1 << 24))  # in (0, 1), never 0 or 1


def uniform(keys: torch.Tensor, streams, shape) -> torch.Tensor:
    """Uniforms in (0, 1) of shape (R, *shape) for rows with ``keys`` (R,) and ``streams`` (R,) or int."""
    streams = torch.as_tensor(streams, dtype=torch.int64, device=keys.device).expand(keys.shape)
    h = _hash(keys, streams, math.prod(shape))
    return _unit(_shr(h, 40)).view(keys.shape[0], *shape)


def normal(keys: torch.Tensor, streams, shape) -> torch.Tensor:
    """Standard normals of shape (R, *shape) for rows with ``keys`` (R,) and ``streams`` (R,) or int."""
    streams = torch.as_tensor(streams, dtype=torch.int64, device=keys.device).expand(keys.shape)
    h = _hash(keys, streams, math.prod(shape))
    u1, u2 = _unit(_shr(h, 40)), _unit(_shr(h, 16) & 0xFFFFFF)
    z = torch.sqrt(-2.0 * torch.log(u1)) * torch.cos((2.0 * math.pi) * u2)
    return z.view(keys.shape[0], *shape)
