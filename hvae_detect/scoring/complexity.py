"""Input complexity: the size of an image under a general-purpose lossless compressor, and the
statistic of Serra et al. (2020) that subtracts it from the model's code length.

A compressor is a universal model of images: simple images (constant, smooth, few colours) compress
well and also receive a high likelihood from a deep generative model, which is why L alone ranks
simple outliers as normal. ``S(x) = -L(x)/ln 2 - bits(x)`` removes that part: how many more bits the
model needs than the compressor for this image.

Each image is compressed on its own, so its size does not depend on the other images of the call.
The size is the whole encoded stream in bits, headers included; for images of one shape the
headers are a near-constant offset that shifts S but not its ranking.
"""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image


def _pillow(image: np.ndarray, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, fmt, **options)
    return buffer.getvalue()


def _png(image: np.ndarray) -> bytes:
    return _pillow(image, "PNG", compress_level=9)


def _webp(image: np.ndarray) -> bytes:
    # quality is the encoder's effort in lossless mode; method 6 (the slowest) is not smaller on small
    # images and is tens of times slower than the default method 4
    # (benchmarks/results/2026-12-06-statistics-choosing-pairs.md).
    return _pillow(image, "WEBP", lossless=True, quality=100, method=4)


def _jpeg2000(image: np.ndarray) -> bytes:
    # the reversible 5/3 wavelet without quality layers is lossless; no_jp2 writes the bare codestream
    return _pillow(image, "JPEG2000", irreversible=False, no_jp2=True)


def _jpegxl(image: np.ndarray) -> bytes:
    try:
        import imagecodecs
    except ImportError as e:
        raise ImportError('codec "jpegxl" needs the optional package imagecodecs: pip install imagecodecs') from e
    # effort 7 is libjxl's default; 9 is about three times slower for a few bytes less per small image
    return imagecodecs.jpegxl_encode(image, lossless=True, effort=7, numthreads=1)


ENCODERS = {"png": _png, "webp": _webp, "jpeg2000": _jpeg2000, "jpegxl": _jpegxl}
CODECS = tuple(ENCODERS)


def as_uint8_images(images) -> np.ndarray:
    """Images as uint8, one (H, W) grey or (H, W, C) colour array per row, for the encoders.

    Parameters
    ----------
    images : array of shape (n, H, W) or (n, C, H, W) with C in {1, 3}
        uint8 (0..255) as they are; bool as 0 / 255; floats in [0, 1] quantised to
        ``round(255 x)``, the grid of the model's "Quantized" inputs ``x / 255`` (so uint8 -> / 255
        -> this gives the uint8 back, and a binarised draw of 0.0 / 1.0 becomes 0 / 255).

    Returns
    -------
    ndarray of shape (n, H, W) or (n, H, W, 3), uint8
    """
    x = np.asarray(images)
    if x.ndim == 4 and x.shape[1] in (1, 3):
        x = x[:, 0] if x.shape[1] == 1 else x.transpose(0, 2, 3, 1)
    elif x.ndim != 3:
        raise ValueError(f"expected images of shape (n, H, W) or (n, C, H, W) with C in (1, 3), got {x.shape}")
    if x.shape[1] == 0 or x.shape[2] == 0:
        raise ValueError(f"expected images of at least one pixel, got shape {np.shape(images)}")
    if x.dtype == np.uint8:
        return np.ascontiguousarray(x)
    if x.dtype == np.bool_:
        return np.ascontiguousarray(x.astype(np.uint8) * np.uint8(255))
    if np.issubdtype(x.dtype, np.floating):
        if not np.all(np.isfinite(x)) or x.size and (x.min() < 0 or x.max() > 1):
            raise ValueError("float images must be finite and in [0, 1]")
        return np.ascontiguousarray(np.rint(x.astype(np.float64) * 255).astype(np.uint8))
    raise ValueError(f"expected uint8 (0..255), bool or float (0..1) images, got dtype {x.dtype}")


def compressed_bits(images, codec: str = "png") -> np.ndarray:
    """Size in bits of each image compressed losslessly on its own.

    Parameters
    ----------
    images : array of shape (n, H, W) or (n, C, H, W), C in {1, 3}
        uint8, bool or floats in [0, 1]; see ``as_uint8_images`` for how they are quantised. To
        measure the image a Bernoulli model scored, pass its binarised draw.
    codec : {"png", "webp", "jpeg2000", "jpegxl"}
        "png": Pillow at compress_level 9; "webp": Pillow's lossless WebP (grey images are stored
        as three equal channels, which lossless WebP codes at almost no cost); "jpeg2000": Pillow /
        OpenJPEG, reversible wavelet; "jpegxl": imagecodecs (optional package), lossless.

    Returns
    -------
    ndarray of shape (n,), float64
        8 x the encoded stream's length in bytes.
    """
    if codec not in ENCODERS:
        raise ValueError(f"codec must be one of {list(CODECS)}, got {codec!r}")
    encode = ENCODERS[codec]
    return np.array([8.0 * len(encode(image)) for image in as_uint8_images(images)], dtype=np.float64)


def input_complexity(elbo_nats, bits) -> np.ndarray:
    """Serra et al.'s statistic ``S(x) = -L(x) / ln 2 - bits(x)``, in bits; higher = more OOD.

    Parameters
    ----------
    elbo_nats : array of shape (n,)
        L(x), the model's bound on log p(x) in nats per image; -L / ln 2 is its code length in bits
        (1 nat = 1 / ln 2 bits).
    bits : array of shape (n,)
        ``compressed_bits`` of the same images: the image the model scored (its binarised draw
        for a Bernoulli model).

    Returns
    -------
    ndarray of shape (n,), float64
        Its negative is the normality score (higher = more normal) that the metrics take.

    References
    ----------
    .. [1] J. Serrà, D. Álvarez, V. Gómez, O. Slizovskaia, J. F. Núñez and J. Luque, "Input complexity
           and out-of-distribution detection with likelihood-based generative models", ICLR 2020.
    """
    elbo, size = np.asarray(elbo_nats, dtype=np.float64), np.asarray(bits, dtype=np.float64)
    if elbo.ndim != 1 or elbo.shape != size.shape:
        raise ValueError(
            f"expected L and bits as two (n,) arrays of one length, got shapes {elbo.shape} and {size.shape}"
        )
    if not (np.all(np.isfinite(elbo)) and np.all(np.isfinite(size))):
        raise ValueError("L and bits must be finite")
    return -elbo / math.log(2.0) - size
