"""Input checks and preprocessing shared by the estimator and the commands.

Images arrive as numpy arrays (memory-mapped too) or torch tensors on any device,
uint8 in 0..255 or floats in [0, 1], shaped (n, H, W), (n, C, H, W) with C in
{1, 3}, or (n, d) with an ``image_shape``. Everything else is a ValueError that says what was
expected. Batches of any source (iterables, Datasets) are read by
``hvae_detect.data.image_sources.image_batches``. uint8 images that hold only 0 and 1 (binary
images stored as uint8) would be read as nearly black: :func:`warn_if_binary_uint8` warns, once per
call, from a bounded sample of at most ``BINARY_SAMPLE`` images spread over the set.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
import torch.utils.data

_FLOATS = (np.float16, np.float32, np.float64)
BINARY_SAMPLE = 256  # images read by the check for uint8 images of only 0 and 1 (spread over the set)


def sample_indices(n: int, at_most: int = BINARY_SAMPLE) -> np.ndarray:
    """At most ``at_most`` indices spread evenly over 0..n-1, in increasing order."""
    return np.unique(np.linspace(0, n - 1, min(n, at_most)).astype(np.int64)) if n else np.zeros(0, np.int64)


def warn_if_binary_uint8(images) -> None:
    """Warn when uint8 ``images`` (an array or tensor: a sample, see ``sample_indices``) hold only 0 and 1."""
    if isinstance(images, torch.Tensor):
        binary = images.dtype == torch.uint8 and images.numel() > 0 and int(images.max()) == 1
    else:
        binary = images.dtype == np.uint8 and images.size > 0 and int(images.max()) == 1
    if binary:
        warnings.warn(
            "the uint8 images hold only the values 0 and 1, and uint8 is read as 0..255, so they are "
            "nearly black to the model; pass binary images as floats 0.0/1.0 or multiplied by 255",
            UserWarning,
            stacklevel=2,
        )


def _ragged(X) -> str:
    """What is wrong with a list of images that numpy cannot stack."""

    def shape(item):
        try:
            return tuple(int(v) for v in np.shape(item))
        except ValueError:
            return None

    shapes = [shape(item) for item in X]
    for i, s in enumerate(shapes):
        if s != shapes[0] or s is None:
            first = "has no regular shape" if shapes[0] is None else f"has shape {shapes[0]}"
            other = "has no regular shape" if s is None else f"has shape {s}"
            where = f"image 0 {first}" + (f" and image {i} {other}" if i else "")
            return (
                f"the images of a list must all have the same shape: {where}; expected images shaped (H, W) "
                "or (C, H, W), all alike (resize or crop them first)"
            )
    return "expected a numeric array of images, got a list that numpy cannot stack into one"


def to_numpy(X):
    if hasattr(X, "tocsr") or hasattr(X, "toarray"):
        raise ValueError("sparse input is not supported: pass a dense array of images")
    if isinstance(X, torch.Tensor):
        return X.detach().cpu().numpy()
    if hasattr(X, "__array__") or isinstance(X, (list, tuple)):
        try:
            arr = np.asarray(X)
        except ValueError:  # numpy's "inhomogeneous shape"
            if isinstance(X, (list, tuple)):
                raise ValueError(_ragged(X)) from None
            raise
        if arr.dtype == object:
            if isinstance(X, (list, tuple)):
                raise ValueError(_ragged(X))
            raise ValueError("expected a numeric array of images, got an object array")
        return arr
    raise ValueError(f"expected a numpy array or torch tensor of images, got {type(X).__name__}")


def resolve_image_shape(shape, image_shape=None):
    """(C, H, W) of one image for an array of ``shape``; raises ValueError otherwise."""
    if len(shape) == 2:
        d = shape[1]
        if image_shape is not None:
            image_shape = tuple(int(v) for v in image_shape)
            if len(image_shape) == 2:
                image_shape = (1, *image_shape)
            if len(image_shape) != 3 or math.prod(image_shape) != d:
                raise ValueError(f"image_shape {image_shape} does not hold {d} features per row")
            return image_shape
        side = math.isqrt(d)
        if side * side != d or d == 0:
            raise ValueError(
                f"2-D input with {d} features: pass image_shape=(C, H, W); only a perfect "
                "square is read as one grey channel"
            )
        return (1, side, side)
    if len(shape) == 3:
        return (1, shape[1], shape[2])
    if len(shape) == 4:
        return tuple(shape[1:])
    raise ValueError(f"expected images shaped (n, H, W), (n, C, H, W) or (n, d), got an array of shape {tuple(shape)}")


def check_shape(shape, image_shape, expected_shape, min_samples):
    """(C, H, W) of one image of an array of ``shape``, after every shape check."""
    if len(shape) < 2:
        raise ValueError(f"expected images shaped (n, H, W), (n, C, H, W) or (n, d), got shape {tuple(shape)}")
    if shape[0] < min_samples:
        raise ValueError(
            f"expected at least {min_samples} images, got {shape[0]} (n_samples = {shape[0]}, shape={tuple(shape)})"
        )
    if len(shape) == 2 and shape[1] == 0:
        raise ValueError(f"0 feature(s) (shape={tuple(shape)}) while a minimum of 1 is required.")
    image = resolve_image_shape(shape, image_shape)
    if image[0] not in (1, 3):
        raise ValueError(
            f"expected 1 or 3 channels in (n, C, H, W), got C = {image[0]} (shape {tuple(shape)}); "
            "channels-last arrays must be transposed to channels-first"
        )
    if expected_shape is not None and tuple(image) != tuple(expected_shape):
        raise ValueError(f"the detector was fitted on images of shape {tuple(expected_shape)}, got {tuple(image)}")
    return image


def check_images(X, image_shape=None, expected_shape=None, min_samples=1, warn_binary=True) -> np.ndarray:
    """Validate images and return them as float32 (n, C, H, W) in [0, 1]; ``warn_binary``: warn about
    uint8 images of only 0 and 1 (from a sample of them)."""
    arr = to_numpy(X)
    if np.iscomplexobj(arr):
        raise ValueError("Complex data not supported: expected uint8 or float images")
    if arr.dtype.type in _FLOATS and arr.size and not np.all(np.isfinite(arr)):
        raise ValueError("images contain NaN or infinite values")
    shape = check_shape(arr.shape, image_shape, expected_shape, min_samples)
    if arr.dtype == np.uint8:
        if warn_binary:
            warn_if_binary_uint8(arr[sample_indices(len(arr))])
        out = arr.astype(np.float32) / 255.0
    elif arr.dtype.type in _FLOATS:
        if not np.all(np.isfinite(arr)):
            raise ValueError("images contain NaN or infinite values")
        if arr.size and (arr.min() < 0 or arr.max() > 1):
            raise ValueError(
                f"float images must lie in [0, 1], got values in [{arr.min()}, {arr.max()}]; pass uint8 for 0..255 data"
            )
        out = arr.astype(np.float32)
    else:
        raise ValueError(f"expected uint8 (0..255) or float (0..1) images, got dtype {arr.dtype}")
    return out.reshape(arr.shape[0], *shape)


def check_image_tensor(
    x: torch.Tensor, image_shape=None, expected_shape=None, min_samples=1, warn_binary=True
) -> torch.Tensor:
    """``check_images`` for a torch tensor, on its own device: float32 (n, C, H, W) in [0, 1]."""
    shape = check_shape(x.shape, image_shape, expected_shape, min_samples)
    if x.dtype == torch.uint8:
        if warn_binary:
            warn_if_binary_uint8(x[torch.from_numpy(sample_indices(len(x))).to(x.device)])
        out = x.float() / 255.0
    elif x.dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        if x.numel() and not bool(torch.isfinite(x).all()):
            raise ValueError("images contain NaN or infinite values")
        if x.numel() and (bool(x.min() < 0) or bool(x.max() > 1)):
            raise ValueError(
                f"float images must lie in [0, 1], got values in [{x.min().item()}, {x.max().item()}]; "
                "pass uint8 for 0..255 data"
            )
        out = x.float()
    else:
        raise ValueError(f"expected uint8 (0..255) or float (0..1) images, got dtype {x.dtype}")
    return out.reshape(x.shape[0], *shape)


def is_map_dataset(X) -> bool:
    """A map-style torch Dataset (indexable, with a length), not an array."""
    return (
        isinstance(X, torch.utils.data.Dataset)
        and not isinstance(X, torch.utils.data.IterableDataset)
        and hasattr(X, "__len__")
        and not isinstance(X, (np.ndarray, torch.Tensor))
    )


def binarize(
    x: torch.Tensor, generator: torch.Generator | None = None, *, uniforms: torch.Tensor | None = None
) -> torch.Tensor:
    """One Bernoulli draw per pixel with the grey level as probability (the paper's "Binarized").

    The draw comes from ``generator`` through torch.bernoulli (training batches held in memory,
    the data sets' fixed draws), or, given ``uniforms`` (x's shape, in (0, 1)), a pixel is 1
    where u < x (draws keyed by the image: streamed training batches, scoring).
    """
    if uniforms is None:
        return torch.bernoulli(x, generator=generator)
    if generator is not None:
        raise ValueError("binarize draws from a generator or from given uniforms, not both")
    if uniforms.shape != x.shape:
        raise ValueError(f"uniforms of shape {tuple(uniforms.shape)} for images of shape {tuple(x.shape)}")
    return (uniforms.to(x.dtype) < x).to(x.dtype)


def hold_out(n: int, fraction: float, seed: int) -> np.ndarray | None:
    """Which of n images to hold out (a boolean mask): ``round(fraction * n)`` drawn with ``seed``; None
    when fewer than 2 images would be held out or remain."""
    n_held = int(round(fraction * n))
    if n_held < 2 or n - n_held < 2:
        return None
    held = np.zeros(n, dtype=bool)
    held[np.random.RandomState(seed).permutation(n)[:n_held]] = True
    return held
