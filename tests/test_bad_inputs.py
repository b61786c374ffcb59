"""Bad inputs get the package's own messages (issue 35): flattened images in files and memory maps, uint8
images of only 0 and 1, lists of images of different shapes, a missing model path, usage errors."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from conftest import TINY

from hvae_detect import HVAEOutlierDetector
from hvae_detect.cli import main
from hvae_detect.data.image_sources import image_batches, image_source, training_images
from hvae_detect.data.inputs import BINARY_SAMPLE, check_images, sample_indices

X = np.random.default_rng(0).integers(0, 256, size=(40, 12, 12), dtype=np.uint8)
PARAMS = dict(architecture=TINY, epochs=1, batch_size=8, random_state=0, device="cpu")


def _binary_warnings(call):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        call()
    return [w for w in caught if "only the values 0 and 1" in str(w.message)]


# ---- flattened images (n, H*W) streamed from a file or a memory map ----


def test_flattened_images_stream_from_a_file_and_a_memory_map_with_their_image_shape(tmp_path):
    flat = X.reshape(len(X), 8, 18).reshape(len(X), -1)  # 144 pixels per row, read as 8 x 18
    np.save(tmp_path / "flat.npy", flat)
    for data in (tmp_path / "flat.npy", str(tmp_path / "flat.npy"), np.load(tmp_path / "flat.npy", mmap_mode="r")):
        assert training_images(data, image_shape=(1, 8, 18)).image_shape == (1, 8, 18)
        images, _ = image_source(data, image_shape=(1, 8, 18)).__getitems__(np.array([3, 0]))
        np.testing.assert_array_equal(images.numpy(), flat[[3, 0]].reshape(2, 1, 8, 18))
    assert training_images(tmp_path / "flat.npy").image_shape == (1, 12, 12)  # a square: one grey channel
    np.save(tmp_path / "odd.npy", flat[:, :140])
    with pytest.raises(ValueError, match="2-D input with 140 features: pass image_shape"):
        training_images(tmp_path / "odd.npy")
    with pytest.raises(ValueError, match="does not hold 144 features"):
        training_images(tmp_path / "flat.npy", image_shape=(1, 12, 13))


def test_fit_reads_flattened_images_from_a_file_and_a_memory_map_as_from_memory(tmp_path):
    np.save(tmp_path / "flat.npy", X.reshape(len(X), -1))
    for data in (str(tmp_path / "flat.npy"), np.load(tmp_path / "flat.npy", mmap_mode="r")):
        det = HVAEOutlierDetector(**PARAMS).fit(data)
        assert det.image_shape_ == (1, 12, 12) and np.isfinite(det.score_samples(X)).all()


def test_fit_streams_non_square_flattened_images_with_the_detectors_image_shape(tmp_path):
    """Needs the estimator to pass its image_shape on: ``training_images(X, image_shape=self.image_shape)``."""
    np.save(tmp_path / "flat.npy", X.reshape(len(X), -1))
    det = HVAEOutlierDetector(image_shape=(1, 8, 18), **PARAMS).fit(np.load(tmp_path / "flat.npy", mmap_mode="r"))
    assert det.image_shape_ == (1, 8, 18)
    assert np.isfinite(det.score_samples(X.reshape(len(X), -1))).all()


# ---- uint8 images of only 0 and 1 ----


def test_uint8_images_of_only_0_and_1_are_warned_about_once_per_call(tmp_path):
    binary = (X > 127).astype(np.uint8)
    assert len(_binary_warnings(lambda: check_images(binary))) == 1
    message = str(_binary_warnings(lambda: check_images(binary))[0].message)
    assert "floats 0.0/1.0" in message and "multiplied by 255" in message
    for data in (binary, torch.from_numpy(binary)):  # 5 batches of 8: one warning
        assert len(_binary_warnings(lambda: list(image_batches(data, None, None, 8, "cpu")))) == 1
    np.save(tmp_path / "binary.npy", binary)
    assert len(_binary_warnings(lambda: training_images(tmp_path / "binary.npy"))) == 1
    for fine in (binary * 255, binary.astype(np.float32), X, np.zeros_like(binary)):
        assert not _binary_warnings(lambda: check_images(fine))
        assert not _binary_warnings(lambda: list(image_batches(fine, None, None, 8, "cpu")))


def test_the_binary_check_reads_a_bounded_sample_spread_over_the_set():
    indices = sample_indices(10**7)
    assert len(indices) == BINARY_SAMPLE and indices[0] == 0 and indices[-1] == 10**7 - 1
    np.testing.assert_array_equal(sample_indices(5), np.arange(5))
    assert len(sample_indices(0)) == 0


# ---- lists of images of different shapes ----


def test_a_list_of_images_of_different_shapes_names_two_of_them():
    images = [X[0], X[1], X[2, :10, :10], X[3]]
    for data in (images, tuple(images)):
        with pytest.raises(
            ValueError,
            match=r"image 0 has shape \(12, 12\) and image 2 has shape \(10, 10\); "
            r"expected images shaped \(H, W\) or \(C, H, W\), all alike",
        ):
            check_images(data)
    with pytest.raises(ValueError, match=r"image 0 has shape \(12, 12\) and image 1 has shape \(3, 12, 12\)"):
        list(image_batches([X[0], np.stack([X[0]] * 3)], None, None, 8, "cpu"))


# ---- a missing model path; usage errors ----


def test_a_missing_model_path_is_said_not_to_exist(tmp_path, capsys):
    missing = tmp_path / "missing"
    assert main(["score", "--model", str(missing), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"hvae-detect score: error: {missing} does not exist")
    with pytest.raises(ValueError, match="does not exist"):
        HVAEOutlierDetector.load(missing)
    missing.mkdir()  # a folder that holds neither
    with pytest.raises(ValueError, match="is neither a run folder"):
        HVAEOutlierDetector.load(missing)


@pytest.mark.parametrize(
    "argv, prog, what",
    [
        ([], "hvae-detect", "the following arguments are required: command"),
        (["nosuch"], "hvae-detect", "invalid choice: 'nosuch'"),
        (["score"], "hvae-detect score", "the following arguments are required: --model"),
        (["demo", "--no-such-flag"], "hvae-detect demo", "unrecognized arguments: --no-such-flag"),
        (["train", "--epochs", "0"], "hvae-detect train", "argument --epochs: expected a positive integer, got 0"),
    ],
)
def test_usage_errors_print_one_line_and_exit_2(argv, prog, what, capsys):
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.splitlines()) == 1
    assert captured.err.startswith(f"{prog}: error: ") and what in captured.err
    assert captured.err.endswith(" (see --help)\n")
