"""``hvae-detect fit IMAGES --out DETECTOR_DIR`` and ``hvae-detect detect DETECTOR_DIR IMAGES --out REPORT_DIR``
end to end, on generated image files and on real ones written from ../shared/data (skipped without it).
Tiny images, a tiny architecture and one epoch: each fit takes seconds."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO, SHARED_DATA, TINY, needs_shared_data
from PIL import Image

from hvae_detect import cli
from hvae_detect.commands import fit_images
from hvae_detect.data.image_files import ImageFiles
from hvae_detect.estimator import HVAEOutlierDetector

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def arch(tmp_path_factory):
    path = tmp_path_factory.mktemp("arch") / "tiny.json"
    path.write_text(json.dumps(TINY))
    return str(path)


def _blobs(folder, n, seed, size=12, colour=False, fmt="png"):
    """n images of a bright square on a dark noisy background (the normal ones)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        a = rng.integers(0, 60, (size, size), dtype=np.uint8)
        a[size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] += 180
        if colour:
            a = np.stack([a, a // 2, 255 - a], axis=2)
        Image.fromarray(a).save(folder / f"img{i:03d}.{fmt}", **({"quality": 95} if fmt == "jpg" else {}))
    return folder


def _rows(report):
    with open(report / "scores.csv", newline="") as f:
        return list(csv.DictReader(f))


def _run(*argv):
    return cli.main([str(a) for a in argv])


def test_help_and_usage_errors_import_no_heavy_dependency():
    for argv, code in (
        (["fit", "--help"], 0),
        (["detect", "--help"], 0),
        (["fit", "x"], 2),
        (["detect", "d", "x", "--out", "r", "--top", "-1"], 2),
        (["fit", "x", "--out", "d", "--image-size", "0"], 2),
    ):
        proc = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "hvae_detect", *argv],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == code, proc.stderr[-500:]
        imported = {
            line.rsplit("|", 1)[1].strip().split(".")[0]
            for line in proc.stderr.splitlines()
            if line.startswith("import time:") and line.count("|") == 2
        }
        assert imported and not imported & {"torch", "sklearn", "matplotlib"}, argv


@pytest.mark.slow
def test_grey_folder_end_to_end_with_unreadable_files(tmp_path, arch, capsys):
    train = _blobs(tmp_path / "train", 48, seed=0)
    new = _blobs(tmp_path / "new", 10, seed=1, fmt="jpg")
    rng = np.random.default_rng(2)
    for i in range(3):  # outliers: noise
        Image.fromarray(rng.integers(0, 256, (12, 12), dtype=np.uint8)).save(new / f"noise{i}.png")
    (new / "readme.txt").write_text("not an image")
    good = (new / "noise0.png").read_bytes()
    (new / "cut.png").write_bytes(good[: len(good) // 2])
    Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)).save(new / "big.png")  # another size

    assert _run("fit", train, "--out", tmp_path / "det", "--epochs", 1, "--architecture", arch, "--quiet") == 0
    det = HVAEOutlierDetector.load(tmp_path / "det")
    assert det.image_shape_ == (1, 12, 12) and len(det.history_) == 1

    assert _run("detect", tmp_path / "det", new, "--out", tmp_path / "report", "--top", 4, "--batch-size", 5) == 1
    rows = _rows(tmp_path / "report")
    names = [r["path"].rsplit("/", 1)[1] for r in rows]
    assert names == sorted(names) and len(rows) == 16  # every file, in order
    errors = {r["path"].rsplit("/", 1)[1]: r["error"] for r in rows if r["error"]}
    assert set(errors) == {"readme.txt", "cut.png", "big.png"}
    assert "not an image" in errors["readme.txt"] and "16x16, not 12x12" in errors["big.png"]
    assert all(r["score"] == "" for r in rows if r["error"])
    assert {"path", "score", "flagged", "L", "LLR>1", "Fused", "error"} <= set(rows[0])

    # the scores are the estimator's score_samples of the same images, bit for bit; flagged is predict's
    files = ImageFiles(new, shape=det.image_shape_)
    x = files.to_array()
    scored = [r for r in rows if not r["error"]]
    assert [r["path"] for r in scored] == [n for n in files.names if n not in files.errors]
    np.testing.assert_array_equal(np.array([float(r["score"]) for r in scored]), det.score_samples(x))
    np.testing.assert_array_equal([int(r["flagged"]) for r in scored], (det.predict(x) == -1).astype(int))
    np.testing.assert_array_equal([float(r["L"]) for r in scored], det.ood_scores(x)["L"])
    np.testing.assert_array_equal(det.score_samples(files), det.score_samples(x))  # the iterable of batches

    page = (tmp_path / "report" / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 8  # --top 4: four outlying, four normal
    assert "3 files could not be read" in page and "readme.txt" in page
    lowest = min(scored, key=lambda r: float(r["score"]))["path"]
    assert lowest in page.split("most normal")[0]  # the most outlying image is in the first row of pictures
    assert sorted(p.name for p in (tmp_path / "report").iterdir()) == ["manifest.json", "report.html", "scores.csv"]
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging or lock leftovers

    # a second run refuses to replace the report unless asked
    assert _run("detect", tmp_path / "det", new, "--out", tmp_path / "report", "--quiet") == 2
    assert "--overwrite" in capsys.readouterr().err


@pytest.mark.slow
def test_colour_images_of_mixed_sizes_with_and_without_the_size_policy(tmp_path, arch, capsys):
    train = _blobs(tmp_path / "train", 30, seed=0, size=8, colour=True)
    _blobs(tmp_path / "train" / "larger", 10, seed=3, size=10, colour=True, fmt="jpg")
    assert _run("fit", train, "--out", tmp_path / "det", "--epochs", 1, "--architecture", arch, "--quiet") == 2
    err = capsys.readouterr().err
    assert "differ in size" in err and "img000.png is 8x8" in err and "is 10x10" in err and "--image-size" in err
    assert not (tmp_path / "det").exists()

    assert (
        _run(
            "fit", train, "--out", tmp_path / "det", "--epochs", 1, "--architecture", arch, "--image-size", 8, "--crop"
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "colour" in out and "centre-cropped to 8x8 (2 sizes found)" in out and "--image-size 8x8 --crop" in out
    det = HVAEOutlierDetector.load(tmp_path / "det")
    assert det.image_shape_ == (3, 8, 8)

    new = _blobs(tmp_path / "new", 6, seed=5, size=10, colour=True)
    assert _run("detect", tmp_path / "det", new, "--out", tmp_path / "r1", "--quiet") == 1  # 10x10 without a policy
    assert all("10x10, not 8x8" in r["error"] for r in _rows(tmp_path / "r1"))
    assert _run("detect", tmp_path / "det", new, "--out", tmp_path / "r2", "--image-size", 8, "--crop", "--quiet") == 0
    rows = _rows(tmp_path / "r2")
    x = ImageFiles(new, shape=det.image_shape_, image_size=8, crop=True).to_array()
    np.testing.assert_array_equal([float(r["score"]) for r in rows], det.score_samples(x))


@pytest.mark.slow
def test_an_interrupted_detect_leaves_the_previous_report(tmp_path, arch, monkeypatch):
    train = _blobs(tmp_path / "train", 24, seed=0, size=8)
    assert _run("fit", train, "--out", tmp_path / "det", "--epochs", 1, "--architecture", arch, "--quiet") == 0
    assert _run("detect", tmp_path / "det", train, "--out", tmp_path / "report", "--quiet") == 0
    before = (tmp_path / "report" / "scores.csv").read_bytes()
    calls = []

    def interrupted(self, X, **kwargs):
        calls.append(len(X))
        raise KeyboardInterrupt

    monkeypatch.setattr(HVAEOutlierDetector, "ood_scores", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _run("detect", tmp_path / "det", train, "--out", tmp_path / "report", "--overwrite", "--quiet")
    assert calls and (tmp_path / "report" / "scores.csv").read_bytes() == before
    with pytest.raises(KeyboardInterrupt):
        _run("detect", tmp_path / "det", train, "--out", tmp_path / "fresh", "--quiet")
    assert not (tmp_path / "fresh").exists()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_minutes_chooses_the_epochs_from_a_timed_first_epoch(monkeypatch):
    clock, fitted = [0.0], []

    class Fake:
        def __init__(self, epochs):
            self.epochs = epochs

        def fit(self, X):
            clock[0] += 10.0 * self.epochs + 5.0  # 10 s an epoch, 5 s of scoring
            fitted.append(self.epochs)
            return self

    monkeypatch.setattr(fit_images.time, "perf_counter", lambda: clock[0])
    det = fit_images.fit_within(Fake, None, minutes=2.0, epochs=None, quiet=True)
    assert fitted == [1, 7] and det.epochs == 7 and clock[0] <= 120  # 15 s timed, then 7 epochs in the rest
    fitted.clear()
    assert fit_images.fit_within(Fake, None, minutes=2.0, epochs=3, quiet=True).epochs == 3  # --epochs caps it
    fitted.clear()
    assert fit_images.fit_within(Fake, None, minutes=0.4, epochs=None, quiet=True).epochs == 1 and fitted == [1]


@needs_shared_data
@pytest.mark.slow
def test_real_digits_written_as_png_files(tmp_path, arch):
    """MNIST digits as PNG files: fit on zeros, then score zeros and ones (the ones should score lower)."""
    if not (SHARED_DATA / "mnist.npz").is_file():
        pytest.skip("mnist.npz is not in the shared data")
    with np.load(SHARED_DATA / "mnist.npz") as data:
        x, y = data["x_test"], data["y_test"]
    zeros, ones = x[y == 0], x[y == 1]
    for folder, images in (("train", zeros[:150]), ("new/zeros", zeros[150:190]), ("new/ones", ones[:40])):
        (tmp_path / folder).mkdir(parents=True)
        for i, a in enumerate(images):
            Image.fromarray(a).save(tmp_path / folder / f"{i:03d}.png")
    assert (
        _run("fit", tmp_path / "train", "--out", tmp_path / "det", "--epochs", 1, "--architecture", arch, "--quiet")
        == 0
    )
    assert _run("detect", tmp_path / "det", tmp_path / "new", "--out", tmp_path / "report", "--top", 3, "--quiet") == 0
    rows = _rows(tmp_path / "report")
    assert len(rows) == 80 and not any(r["error"] for r in rows)
    det = HVAEOutlierDetector.load(tmp_path / "det")
    np.testing.assert_array_equal([float(r["score"]) for r in rows[40:]], det.score_samples(zeros[150:190]))
    np.testing.assert_array_equal([float(r["score"]) for r in rows[:40]], det.score_samples(ones[:40]))


@needs_shared_data
@pytest.mark.slow
def test_real_colour_photos_written_as_jpeg_files(tmp_path, arch):
    if not (SHARED_DATA / "cifar10.npz").is_file():
        pytest.skip("cifar10.npz is not in the shared data")
    with np.load(SHARED_DATA / "cifar10.npz") as data:
        x = data["x_test"][:60]
    (tmp_path / "photos").mkdir()
    for i, a in enumerate(x):
        Image.fromarray(a).save(tmp_path / "photos" / f"{i:02d}.jpg", quality=90)
    assert (
        _run(
            "fit",
            tmp_path / "photos",
            "--out",
            tmp_path / "det",
            "--epochs",
            1,
            "--architecture",
            arch,
            "--image-size",
            16,
            "--quiet",
        )
        == 0
    )
    assert HVAEOutlierDetector.load(tmp_path / "det").image_shape_ == (3, 16, 16)
    assert (
        _run(
            "detect", tmp_path / "det", tmp_path / "photos", "--out", tmp_path / "report", "--image-size", 16, "--quiet"
        )
        == 0
    )
    assert len(_rows(tmp_path / "report")) == 60
