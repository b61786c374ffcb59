"""Input complexity: compressed sizes of single images and Serra et al.'s statistic."""

import io
import math
import sys
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from hvae_detect.scoring.complexity import CODECS, ENCODERS, as_uint8_images, compressed_bits, input_complexity

PILLOW_CODECS = ("png", "webp", "jpeg2000")


def _available(codec):
    if codec == "jpegxl":
        pytest.importorskip("imagecodecs")


def _decode(codec, data: bytes) -> np.ndarray:
    if codec == "jpegxl":
        import imagecodecs

        return imagecodecs.jpegxl_decode(data)
    return np.asarray(Image.open(io.BytesIO(data)))


def test_png_size_of_a_one_row_image_counted_from_the_format():
    # PNG: 8-byte signature, IHDR chunk (4 length + 4 type + 13 data + 4 CRC = 25 bytes), one IDAT
    # chunk (12 bytes around its zlib stream) and IEND (12 bytes). The zlib stream of one all-zero
    # row of 3 grey pixels holds the scanline's filter byte 0 and the 3 pixels: 4 zero bytes.
    idat = 12 + len(zlib.compress(bytes(4), 9))
    assert compressed_bits(np.zeros((1, 1, 3), np.uint8), "png") == [8 * (8 + 25 + idat + 12)]


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("shape", [(5, 7), (6, 4, 3)])
def test_every_codec_is_lossless_and_counts_its_bytes(codec, shape):
    _available(codec)
    image = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    data = ENCODERS[codec](image)
    decoded = _decode(codec, data)
    if decoded.shape != image.shape:  # lossless WebP stores grey as three equal channels
        assert decoded.shape == (*image.shape, 3) and (decoded == decoded[..., :1]).all()
        decoded = decoded[..., 0]
    np.testing.assert_array_equal(decoded, image)
    chw = image[None] if image.ndim == 2 else image.transpose(2, 0, 1)[None]
    assert compressed_bits(chw, codec) == [8 * len(data)]


@pytest.mark.parametrize("codec", CODECS)
def test_a_constant_image_is_smaller_than_noise(codec):
    _available(codec)
    noise = np.random.default_rng(1).integers(0, 256, (1, 3, 16, 16), dtype=np.uint8)
    constant = np.full_like(noise, 128)
    assert compressed_bits(constant, codec)[0] < compressed_bits(noise, codec)[0] / 4


def test_floats_are_quantised_to_the_255_grid_and_binary_images_to_0_and_255():
    x = np.random.default_rng(2).integers(0, 256, (3, 1, 6, 6), dtype=np.uint8)
    np.testing.assert_array_equal(as_uint8_images(x / 255.0), x[:, 0])
    np.testing.assert_array_equal(as_uint8_images((x / 255.0).astype(np.float32)), x[:, 0])
    draw = x > 127
    for same in (draw.astype(np.float32), draw.astype(np.uint8) * 255):
        np.testing.assert_array_equal(compressed_bits(same, "png"), compressed_bits(draw, "png"))


def test_layouts_give_the_same_sizes():
    x = np.random.default_rng(3).integers(0, 256, (4, 9, 9), dtype=np.uint8)
    np.testing.assert_array_equal(compressed_bits(x, "png"), compressed_bits(x[:, None], "png"))
    colour = np.random.default_rng(4).integers(0, 256, (2, 3, 8, 8), dtype=np.uint8)
    assert as_uint8_images(colour).shape == (2, 8, 8, 3)
    np.testing.assert_array_equal(as_uint8_images(colour)[1, 2, 5], colour[1, :, 2, 5])


@settings(max_examples=15, deadline=None)
@given(
    images=arrays(np.uint8, st.tuples(st.integers(1, 5), st.just(3), st.integers(2, 9), st.integers(2, 9))),
    codec=st.sampled_from(PILLOW_CODECS),
    order=st.randoms(use_true_random=False),
)
def test_an_image_gets_the_same_size_alone_in_a_batch_and_permuted(images, codec, order):
    batch = compressed_bits(images, codec)
    alone = np.array([compressed_bits(images[i : i + 1], codec)[0] for i in range(len(images))])
    permutation = list(range(len(images)))
    order.shuffle(permutation)
    np.testing.assert_array_equal(batch, alone)
    np.testing.assert_array_equal(compressed_bits(images[permutation], codec), batch[permutation])


def test_input_complexity_converts_nats_to_bits():
    # L = -100 ln 2 nats is a code length of 100 bits; a compressor needing 60 bits leaves S = 40
    np.testing.assert_allclose(
        input_complexity([-100 * math.log(2), -10 * math.log(2)], [60.0, 30.0]), [40.0, -20.0], rtol=0, atol=1e-12
    )


@pytest.mark.parametrize(
    "images, message",
    [
        (np.zeros((2, 2, 5, 5), np.uint8), "C in"),
        (np.zeros((5, 5), np.uint8), "shape"),
        (np.zeros((2, 5, 0), np.uint8), "at least one pixel"),
        (np.full((1, 4, 4), 1.5), r"\[0, 1\]"),
        (np.full((1, 4, 4), np.nan), "finite"),
        (np.zeros((1, 4, 4), np.int32), "dtype"),
    ],
)
def test_bad_images_are_refused_with_what_was_expected(images, message):
    with pytest.raises(ValueError, match=message):
        compressed_bits(images, "png")


def test_bad_codec_and_mismatched_statistics_are_refused():
    with pytest.raises(ValueError, match="codec must be one of"):
        compressed_bits(np.zeros((1, 4, 4), np.uint8), "gif")
    with pytest.raises(ValueError, match="one length"):
        input_complexity(np.zeros(3), np.zeros(2))
    with pytest.raises(ValueError, match="finite"):
        input_complexity([np.nan], [1.0])


def test_jpegxl_without_imagecodecs_names_the_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "imagecodecs", None)  # import imagecodecs now raises ImportError
    with pytest.raises(ImportError, match="pip install imagecodecs"):
        compressed_bits(np.zeros((1, 4, 4), np.uint8), "jpegxl")
