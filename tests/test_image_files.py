"""Your own images in: folders, globs and array files through ``hvae_detect.data.image_files`` (Pillow), and the
report page of ``hvae-detect detect`` (``hvae_detect.reporting.html_report``). No model is trained here."""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

from hvae_detect.data.image_files import ImageFiles, list_image_files, parse_image_size
from hvae_detect.reporting.html_report import Thumbnail, histogram_svg, render_report


def _grey(seed, size=(8, 8)):
    return np.random.default_rng(seed).integers(0, 256, size[::-1], dtype=np.uint8)


def _colour(seed, size=(8, 8)):
    return np.random.default_rng(seed).integers(0, 256, (*size[::-1], 3), dtype=np.uint8)


def write(folder, name, pixels, **save):
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, **save)
    return path


@pytest.fixture
def grey_folder(tmp_path):
    folder = tmp_path / "grey"
    for i in range(4):
        write(folder, f"a{i}.png", _grey(i))
    write(folder, "sub/b.jpg", _grey(9), quality=95)
    write(folder, ".hidden/c.png", _grey(10, (5, 5)))  # hidden: left out
    return folder


def test_a_folder_is_read_recursively_in_order_without_hidden_files(grey_folder):
    files = ImageFiles(grey_folder)
    assert [p.split("grey/")[1] for p in files.names] == ["a0.png", "a1.png", "a2.png", "a3.png", "sub/b.jpg"]
    x = files.to_array()
    assert x.shape == (5, 1, 8, 8) and x.dtype == np.uint8
    np.testing.assert_array_equal(x[0, 0], _grey(0))  # PNG: lossless
    assert files.image_shape == (1, 8, 8) and "grey (every image is grey)" in files.description
    assert files.errors == {}


def test_the_iterable_of_batches_and_the_memory_mapped_file_hold_the_same_images(grey_folder, tmp_path):
    files = ImageFiles(grey_folder)
    x = files.to_array()
    np.testing.assert_array_equal(np.concatenate([b.images for b in files.batches(2)]), x)
    np.testing.assert_array_equal(np.concatenate(list(files)), x)
    mapped = files.to_npy(tmp_path / "images.npy")
    assert isinstance(mapped, np.memmap) and mapped.shape == x.shape
    np.testing.assert_array_equal(mapped, x)
    again = ImageFiles(tmp_path / "images.npy")  # and that file is an input itself
    np.testing.assert_array_equal(again.to_array(), x)
    assert again.name(3).endswith("images.npy[3]")


def test_grey_or_colour_is_decided_from_the_images_and_can_be_overridden(tmp_path):
    folder = tmp_path / "mixed"
    write(folder, "g.png", _grey(1))
    write(folder, "rgb_but_grey.png", np.repeat(_grey(2)[..., None], 3, axis=2))
    assert ImageFiles(folder).channels == 1  # colour files whose channels are equal are grey
    write(folder, "z.jpg", _colour(3), quality=90)
    files = ImageFiles(folder)
    assert files.channels == 3 and "z.jpg has colour" in files.description
    assert files.to_array().shape == (3, 3, 8, 8)
    # C order: a channels-last strided batch scores differently in the last float32 bits (scores.csv is exact)
    assert all(b.images.flags.c_contiguous for b in files.batches(2))
    assert ImageFiles(folder, channels="grey").to_array().shape == (3, 1, 8, 8)
    assert ImageFiles(tmp_path / "mixed" / "g.png", channels="colour").to_array().shape == (1, 3, 8, 8)


def test_mixed_sizes_need_a_size_policy_and_the_error_names_two_files(tmp_path):
    folder = tmp_path / "sizes"
    write(folder, "a.png", _grey(1, (8, 8)))
    write(folder, "b.png", _grey(2, (12, 10)))
    with pytest.raises(ValueError, match=r"a\.png is 8x8, .*b\.png is 12x10.*--image-size"):
        ImageFiles(folder)
    resized = ImageFiles(folder, image_size=16)
    assert resized.to_array().shape == (2, 1, 16, 16) and "resized to 16x16 (2 sizes found)" in resized.description
    cropped = ImageFiles(folder, image_size=(6, 4), crop=True)
    assert cropped.to_array().shape == (2, 1, 4, 6) and "centre-cropped to 6x4" in cropped.description
    # a centre crop keeps the middle: a 12x10 image with one bright central column keeps it in the middle
    stripe = np.zeros((10, 12), np.uint8)
    stripe[:, 6] = 255
    write(tmp_path / "stripe", "s.png", stripe)
    out = ImageFiles(tmp_path / "stripe", image_size=10, crop=True).to_array()[0, 0]
    assert out.shape == (10, 10) and out[:, 5].mean() > 100 and out[:, 0].max() < 40


def test_unreadable_files_are_recorded_with_the_reason_and_the_rest_are_read(grey_folder):
    (grey_folder / "notes.txt").write_text("not an image")
    good = (grey_folder / "a0.png").read_bytes()
    (grey_folder / "truncated.png").write_bytes(good[: len(good) // 2])
    (grey_folder / "garbage.jpg").write_bytes(b"\xff\xd8\xff" + bytes(50))
    files = ImageFiles(grey_folder)
    x = files.to_array()
    assert x.shape == (5, 1, 8, 8)
    assert set(files.errors) == {str(grey_folder / n) for n in ("notes.txt", "truncated.png", "garbage.jpg")}
    assert "not an image" in files.errors[str(grey_folder / "notes.txt")]
    assert "truncated" in files.errors[str(grey_folder / "truncated.png")].lower()
    batches = list(files.batches(3))
    assert sum(len(b.indices) for b in batches) == 5 and sum(len(b.failed) for b in batches) == 3


def test_empty_and_missing_inputs_are_clear_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no files"):
        ImageFiles(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="no such folder"):
        ImageFiles(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="no file matches"):
        ImageFiles(str(tmp_path / "*.png"))
    (tmp_path / "only_text").mkdir()
    (tmp_path / "only_text" / "a.txt").write_text("x")
    with pytest.raises(ValueError, match="none of the 1 files could be read"):
        ImageFiles(tmp_path / "only_text")


def test_a_glob_picks_its_files(grey_folder):
    files = ImageFiles(str(grey_folder / "**" / "*.jpg"))
    assert len(files) == 1 and files.name(0).endswith("b.jpg")
    assert [p.name for p in list_image_files(str(grey_folder / "a*.png"))] == ["a0.png", "a1.png", "a2.png", "a3.png"]


def test_a_detector_shape_fixes_channels_and_size(tmp_path):
    folder = tmp_path / "new"
    write(folder, "a.png", _colour(1))
    write(folder, "b.png", _grey(2, (10, 10)))
    files = ImageFiles(folder, shape=(1, 8, 8))
    x = files.to_array()
    assert x.shape == (1, 1, 8, 8)  # the colour image made grey; the 10x10 one is an error of its own
    assert "it is 10x10, not 8x8" in files.errors[str(folder / "b.png")]
    assert ImageFiles(folder, shape=(3, 8, 8), image_size=8).to_array().shape == (2, 3, 8, 8)
    with pytest.raises(ValueError, match="differs from the detector's 8x8"):
        ImageFiles(folder, shape=(1, 8, 8), image_size=9)


def test_array_files_channels_last_and_named_keys(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (5, 8, 8, 3), dtype=np.uint8)
    np.savez(tmp_path / "set.npz", x_train=x, y_train=np.zeros(5))
    files = ImageFiles(tmp_path / "set.npz")  # x_train is picked among x_train and y_train
    np.testing.assert_array_equal(files.to_array(), x.transpose(0, 3, 1, 2))
    np.savez(tmp_path / "two.npz", a=x, b=x)
    with pytest.raises(ValueError, match="name the images"):
        ImageFiles(tmp_path / "two.npz")
    assert ImageFiles(f"{tmp_path / 'two.npz'}:b").name(0).endswith("two.npz:b[0]")
    np.save(tmp_path / "grey.npy", x[..., 0])
    assert ImageFiles(tmp_path / "grey.npy").to_array().shape == (5, 1, 8, 8)


def test_parse_image_size():
    assert parse_image_size(None) is None
    assert (
        parse_image_size(28) == (28, 28) and parse_image_size("64x48") == (64, 48) and parse_image_size("7") == (7, 7)
    )
    for bad in ("0", "axb", "1x2x3", (0, 3)):
        with pytest.raises(ValueError):
            parse_image_size(bad)


def _png(seed):
    import io

    buffer = io.BytesIO()
    Image.fromarray(_grey(seed)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_the_report_page_is_self_contained_with_thumbnails_histogram_and_errors():
    scores = np.concatenate([np.random.default_rng(0).normal(size=300), [-50.0]])
    outliers = [Thumbnail("odd <1>.png", -50.0, True, _png(1)), Thumbnail("b.png", -2.5, True, _png(2))]
    normals = [Thumbnail("n.png", 2.9, False, _png(3)), Thumbnail("gone.png", 2.8, False, None, "vanished")]
    page = render_report(
        title="t",
        summary=["scored 301"],
        scores=scores,
        threshold=-1.6,
        outliers=outliers,
        normals=normals,
        errors=[("bad.txt", "not an image file Pillow can read")],
    )
    assert page.startswith("<!DOCTYPE html>") and page.count("data:image/png;base64,") == 3
    assert "odd &lt;1&gt;.png" in page and "<1>" not in page  # names are escaped
    assert "threshold -1.6" in page and "<svg" in page and "scores below" in page  # the long tail is pooled
    assert "bad.txt" in page and "vanished" in page and "1 files could not be read" in page
    assert not re.search(r'(src|href)="(?!data:)', page)  # nothing fetched from elsewhere
    assert "no finite score" in histogram_svg([np.nan], None)
