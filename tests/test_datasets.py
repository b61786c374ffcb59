"""Dataset names, sources (local npz, torchvision files, download), preprocessing and the offline error."""

from __future__ import annotations

import gzip
import urllib.error
import warnings

import numpy as np
import pytest
import torch
from conftest import shared_path
from PIL import Image

from hvae_detect.data import dataset_files
from hvae_detect.data import datasets as ds
from hvae_detect.data.datasets import (
    DatasetNotFound,
    load_dataset,
    load_raw,
    parse_dataset_name,
    parse_dataset_options,
    to_grey,
)

SHARED = shared_path("data")
needs_shared = pytest.mark.skipif(SHARED is None, reason="../shared/data is not present")


@pytest.fixture
def fake_root(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(
        tmp_path / "mnist.npz",
        x_train=rng.integers(0, 256, (20, 28, 28), dtype=np.uint8),
        y_train=np.zeros(20, np.int64),
        x_test=rng.integers(0, 256, (10, 28, 28), dtype=np.uint8),
        y_test=np.zeros(10, np.int64),
    )
    np.savez(
        tmp_path / "svhn.npz", x_test=rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8), y_test=np.zeros(6, np.int64)
    )
    return tmp_path


@pytest.mark.parametrize(
    "name,base,variant,grey",
    [
        ("FashionMNISTBinarized", "FashionMNIST", "Binarized", False),
        ("MNISTQuantized", "MNIST", "Quantized", False),
        ("KMNISTDequantized", "KMNIST", "Dequantized", False),
        ("notMNISTBinarized", "notMNIST", "Binarized", False),
        ("Omniglot28x28Binarized", "Omniglot28x28", "Binarized", False),
        ("Omniglot28x28InvertedQuantized", "Omniglot28x28Inverted", "Quantized", False),
        ("CIFAR10Dequantized", "CIFAR10", "Dequantized", False),
        ("CIFAR10DequantizedGrey", "CIFAR10", "Dequantized", True),
        ("SVHNQuantizedGrey", "SVHN", "Quantized", True),
        ("OmniglotQuantized", "Omniglot", "Quantized", False),
        ("OmniglotBinarized", "Omniglot", "Binarized", False),
        ("Omniglot28x28InvertedDequantized", "Omniglot28x28Inverted", "Dequantized", False),
        ("SmallNORBBinarized", "SmallNORB", "Binarized", False),
        ("SmallNORB28x28Dequantized", "SmallNORB28x28", "Dequantized", False),
        ("SmallNORB28x28InvertedQuantized", "SmallNORB28x28Inverted", "Quantized", False),
        ("TinyImageNetResizeDequantized", "TinyImageNetResize", "Dequantized", False),
        ("TinyImageNetResizeQuantizedGrey", "TinyImageNetResize", "Quantized", True),
        ("GTSRBQuantized", "GTSRB", "Quantized", False),
        ("GTSRBDequantizedGrey", "GTSRB", "Dequantized", True),
    ],
)
def test_parse_names(name, base, variant, grey):
    spec = parse_dataset_name(name)
    assert (spec.base, spec.variant, spec.grey) == (base, variant, grey)


@pytest.mark.parametrize(
    "name",
    [
        "CIFAR10Binarized",
        "MNISTBinarizedGrey",
        "FooBinarized",
        "MNIST",
        "mnistBinarized",
        "SmallNORBQuantizedGrey",
        "OmniglotDequantizedGrey",
        "SmallNORB96Quantized",
        "GTSRBBinarized",
        "TinyImageNetResizeBinarized",
        "TinyImageNetDequantized",
    ],
)
def test_bad_names(name):
    with pytest.raises(ValueError):
        parse_dataset_name(name)


def test_options():
    opts = parse_dataset_options('{"MNISTBinarized": {"dynamic": false, "split": "validation"}, "KMNISTBinarized": {}}')
    assert opts["MNISTBinarized"] == {"dynamic": False, "split": "validation"}
    assert opts["KMNISTBinarized"] == {"dynamic": True, "split": "train"}
    for bad in ('{"MNISTBinarized": {"split": "dev"}}', '{"MNISTBinarized": {"shuffle": 1}}', "[1]", "{not json"):
        with pytest.raises(ValueError):
            parse_dataset_options(bad)


def test_local_npz_and_variants(fake_root):
    raw = np.load(fake_root / "mnist.npz")["x_test"]
    q = load_dataset("MNISTQuantized", {"split": "validation", "dynamic": False}, fake_root)
    assert q.label == "MNIST test" and q.x.shape == (10, 1, 28, 28)
    np.testing.assert_allclose(q.fixed().numpy()[:, 0], raw / 255.0, atol=1e-6)

    b1 = load_dataset("MNISTBinarized", {"split": "validation", "dynamic": False}, fake_root).fixed()
    b2 = load_dataset("MNISTBinarized", {"split": "validation", "dynamic": False}, fake_root).fixed()
    assert set(torch.unique(b1).tolist()) <= {0.0, 1.0}
    assert torch.equal(b1, b2), "non-dynamic sets are one fixed draw"
    assert not torch.equal(b1, (q.x > 0.5).float()), "binarisation is a Bernoulli draw, not a threshold"

    tr = load_dataset("MNISTBinarized", {"split": "train", "dynamic": True}, fake_root)
    g = torch.Generator().manual_seed(0)
    assert not torch.equal(tr.transform(tr.x, g), tr.transform(tr.x, g)), "dynamic: fresh draw each time"

    d = load_dataset("MNISTDequantized", {"split": "test", "dynamic": False}, fake_root).fixed().numpy()[:, 0]
    raw = raw.astype(np.float64)
    assert np.all(d >= raw / 256.0 - 1e-6) and np.all(d <= (raw + 1) / 256.0 + 1e-6)
    assert np.abs(d - (raw + 0.5) / 256).max() > 1e-3, "dequantisation adds noise"


def _grey_reference(rgb01: np.ndarray) -> np.ndarray:
    """The paper's Grayscale(3) written out per pixel in float64: luminance, sRGB expansion, 3 channels."""
    lum = 0.2126 * rgb01[:, 0] + 0.7152 * rgb01[:, 1] + 0.0722 * rgb01[:, 2]
    lin = np.where(lum <= 0.04045, lum / 12.92, ((lum + 0.055) / 1.055) ** 2.4)
    return np.repeat(lin[:, None], 3, axis=1)


def test_grey_is_three_channel_paper_formula(fake_root):
    # hand-computed pixels: pure red 255 -> lum 0.2126 -> ((0.2126 + 0.055) / 1.055) ** 2.4 = 0.037167;
    # grey 5 -> 5/255 = 0.0196 <= 0.04045 -> 0.0196 / 12.92; white stays 1
    x = torch.tensor([[255, 0, 0], [5, 5, 5], [255, 255, 255]], dtype=torch.float32).T.reshape(1, 3, 1, 3) / 255
    g = to_grey(x)
    assert g.shape == (1, 3, 1, 3) and torch.equal(g[:, 0], g[:, 1]) and torch.equal(g[:, 0], g[:, 2])
    np.testing.assert_allclose(g[0, 0, 0].numpy(), [0.0371673, 5 / 255 / 12.92, 1.0], rtol=1e-4)

    q = load_dataset("SVHNQuantizedGrey", {"split": "test", "dynamic": False}, fake_root)
    assert q.image_shape == (3, 32, 32), "Grey keeps 3 channels so a colour model can score it"
    rgb = np.load(fake_root / "svhn.npz")["x_test"].transpose(0, 3, 1, 2) / 255.0
    np.testing.assert_allclose(q.fixed().numpy(), _grey_reference(rgb), atol=1e-5)

    # Dequantized Grey: the noise is added to the colour image first, then converted (as the paper)
    d = load_dataset("SVHNDequantizedGrey", {"split": "test", "dynamic": False}, fake_root)
    gen = torch.Generator().manual_seed(ds.fixed_seed(d.name, d.split, d.seed))
    colour = ds.preprocess(d.x, "Dequantized", gen)
    torch.testing.assert_close(d.fixed(), to_grey(colour))
    out = d.fixed()
    assert out.shape == (6, 3, 32, 32) and torch.equal(out[:, 0], out[:, 2])
    assert 0 <= out.min() and out.max() < 1
    # load_raw keeps the colour images; the conversion is part of preprocessing
    assert load_raw("SVHNDequantizedGrey", "test", fake_root).shape == (6, 3, 32, 32)
    with pytest.raises(ValueError, match="3 colour channels"):
        to_grey(torch.zeros(2, 1, 4, 4))


def test_svhn_validation_is_extra(fake_root, tmp_path_factory):
    # a test-only svhn.npz: validation substitutes x_test, with one warning naming the file
    with pytest.warns(UserWarning, match=r"svhn\.npz has no x_extra.*x_test.*INSTEAD"):
        v = load_raw("SVHNDequantized", "validation", fake_root)
    np.testing.assert_array_equal(v, np.load(fake_root / "svhn.npz")["x_test"].transpose(0, 3, 1, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_raw("SVHNQuantized", "validation", fake_root)  # once per file
        load_raw("SVHNQuantized", "test", fake_root)  # the test split is no substitution
    with pytest.raises(ValueError, match="x_train"):
        load_raw("SVHNDequantized", "train", fake_root)

    # with x_extra, validation reads it and test reads x_test
    root = tmp_path_factory.mktemp("svhn_extra")
    np.savez(root / "svhn.npz", x_test=np.zeros((2, 32, 32, 3), np.uint8), x_extra=np.full((5, 32, 32, 3), 9, np.uint8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_raw("SVHNDequantized", "validation", root).shape == (5, 3, 32, 32)
        assert load_raw("SVHNDequantized", "test", root).max() == 0


def test_svhn_torchvision_splits(tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    calls = []

    class FakeSVHN:
        def __init__(self, root, split="train", download=False):
            calls.append(split)
            self.data = np.zeros((2, 3, 32, 32), np.uint8)

    monkeypatch.setattr(tvd, "SVHN", FakeSVHN)
    for split in ("train", "validation", "test"):
        assert load_raw("SVHNDequantized", split, tmp_path).shape == (2, 3, 32, 32)
    assert calls == ["train", "extra", "test"]

    # the paper's folder <root>/SVHN is tried after <root>, before a download
    class PaperFolder:
        def __init__(self, root, split="train", download=False):
            calls.append((root, download))
            if not root.endswith("SVHN"):
                raise RuntimeError("Dataset not found or corrupted.")
            self.data = np.ones((1, 3, 32, 32), np.uint8)

    (tmp_path / "SVHN").mkdir()
    calls.clear()
    monkeypatch.setattr(tvd, "SVHN", PaperFolder)
    assert load_raw("SVHNQuantized", "test", tmp_path).shape == (1, 3, 32, 32)
    assert calls == [(str(tmp_path), False), (str(tmp_path / "SVHN"), False)]


def test_offline_error_names_the_file(tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    class Offline:
        def __init__(self, root, train=True, download=False, **kw):
            if download:
                raise urllib.error.URLError("no network")
            raise RuntimeError("Dataset not found. You can use download=True to download it")

    monkeypatch.setattr(tvd, "FashionMNIST", Offline)
    with pytest.raises(DatasetNotFound) as e:
        load_dataset("FashionMNISTBinarized", {"split": "train"}, tmp_path)
    msg = str(e.value)
    assert "fashion_mnist.npz" in msg and str(tmp_path.resolve()) in msg and "download" in msg
    with pytest.raises(DatasetNotFound, match="notmnist.npz"):
        load_raw("notMNISTBinarized", "test", tmp_path, download=False)


def test_torchvision_files_fallback(tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    calls = []

    class Local:
        def __init__(self, root, train=True, download=False):
            calls.append(download)
            self.data = torch.full((3, 28, 28), 7, dtype=torch.uint8)

    monkeypatch.setattr(tvd, "KMNIST", Local)
    x = load_raw("KMNISTBinarized", "test", tmp_path)
    assert x.shape == (3, 1, 28, 28) and calls == [False], "local torchvision files are used before a download"


class _FakeOmniglot:
    """torchvision's Omniglot: 105x105 PIL images, black strokes (0) on white (255)."""

    def __init__(self, root, background=True, download=False):
        rng = np.random.default_rng(1 if background else 2)
        self.items = []
        for _ in range(3):
            img = np.full((105, 105), 255, np.uint8)
            img[rng.integers(0, 105, 400), rng.integers(0, 105, 400)] = 0
            img[40:60, 50:55] = 0
            self.items.append((Image.fromarray(img), 0))

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def test_omniglot_as_the_paper(tmp_path, monkeypatch):
    """torchvision's Omniglot is black strokes on white: Omniglot28x28 keeps it (nearest resize), Inverted flips it."""
    import torchvision.datasets as tvd
    import torchvision.transforms as T

    monkeypatch.setattr(tvd, "Omniglot", _FakeOmniglot)
    plain = load_raw("Omniglot28x28Binarized", "test", tmp_path)
    inv = load_raw("Omniglot28x28InvertedBinarized", "test", tmp_path)
    assert plain.shape == (3, 1, 28, 28) and plain.mean() > 200 and inv.mean() < 50
    np.testing.assert_array_equal(inv, 255 - plain)
    # the paper's transform: Resize((28, 28), NEAREST) on the PIL image
    resize = T.Resize((28, 28), interpolation=T.InterpolationMode.NEAREST)
    src = _FakeOmniglot(None, background=False)
    np.testing.assert_array_equal(plain[:, 0], np.stack([np.asarray(resize(src[i][0])) for i in range(3)]))
    assert set(np.unique(plain)) <= {0, 255}

    # 105x105 Omniglot by the paper's name; train = background set, validation = evaluation set
    full = load_raw("OmniglotQuantized", "validation", tmp_path)
    assert full.shape == (3, 1, 105, 105)
    np.testing.assert_array_equal(full[0, 0], np.asarray(src[0][0]))
    assert not np.array_equal(load_raw("OmniglotQuantized", "train", tmp_path), full)

    # Dequantized Omniglot is the paper's 3-level (2 x + u) / 3: 0 -> [0, 1/3), 1 -> [2/3, 1)
    for name in ("OmniglotDequantized", "Omniglot28x28Dequantized", "Omniglot28x28InvertedDequantized"):
        d = load_dataset(name, {"split": "validation", "dynamic": False}, tmp_path)
        out, x = d.fixed(), d.x
        assert torch.all(out[x == 0] < 1 / 3) and torch.all(out[x == 1] >= 2 / 3 - 1e-6) and out.max() < 1
        gen = torch.Generator().manual_seed(ds.fixed_seed(d.name, d.split, d.seed))
        torch.testing.assert_close(out, (2 * x + torch.rand(x.shape, generator=gen)) / 3)


def test_omniglot_npz_resize_warning(tmp_path, monkeypatch):
    """A non-binary 28x28 omniglot.npz (the shared copy) warns once that it is not the paper's nearest resize."""
    x = np.zeros((2, 28, 28), np.uint8)
    x[:, 10:15, 10:15] = 255
    np.savez(tmp_path / "omniglot.npz", x_test=x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_raw("Omniglot28x28InvertedQuantized", "test", tmp_path).max() == 255  # 0/255: no warning
    x[:, 15, 10:15] = 128
    np.savez(tmp_path / "omniglot.npz", x_test=x)
    dataset_files._warned.clear()
    with pytest.warns(UserWarning, match="omniglot.npz is not 0/255-valued.*nearest"):
        inv = load_raw("Omniglot28x28InvertedQuantized", "test", tmp_path)
    np.testing.assert_array_equal(inv[:, 0], x)  # stored inverted: Inverted is the array as stored
    np.testing.assert_array_equal(load_raw("Omniglot28x28Quantized", "test", tmp_path)[:, 0], 255 - x)
    import torchvision.datasets as tvd

    class Offline:
        def __init__(self, *a, **kw):
            raise RuntimeError("Dataset not found or corrupted.")

    monkeypatch.setattr(tvd, "Omniglot", Offline)
    with pytest.raises(DatasetNotFound, match="omniglot105.npz"):  # 105x105 Omniglot's own file, not omniglot.npz
        load_raw("OmniglotQuantized", "test", tmp_path)
    # a 28x28 array where 105x105 images belong is an error naming the sizes
    np.savez(tmp_path / "omniglot105.npz", x_test=x)
    with pytest.raises(ValueError, match="28x28 images; Omniglot needs 105x105"):
        load_raw("OmniglotQuantized", "test", tmp_path)


@pytest.mark.parametrize("base, stem", [("TinyImageNetResize", "tinyimagenet_resize"), ("GTSRB", "gtsrb")])
def test_colour_test_sets(tmp_path, monkeypatch, base, stem):
    """Tiny ImageNet (resize) and GTSRB: their own npz, test split only, no torchvision source or download."""
    import torchvision.datasets as tvd

    def no_torchvision(*a, **kw):
        raise AssertionError("a test-only npz set must not ask torchvision")

    monkeypatch.setattr(tvd, "GTSRB", no_torchvision)
    assert parse_dataset_name(f"{base}Quantized").file_stem == stem
    # train is refused by name, before any file is read, wherever a split is asked for
    for ask in (
        lambda: load_raw(f"{base}Dequantized", "train", tmp_path),
        lambda: load_dataset(f"{base}Quantized", None, tmp_path),
        lambda: parse_dataset_options({f"{base}DequantizedGrey": {"split": "train", "dynamic": True}}),
    ):
        with pytest.raises(
            ValueError,
            match=rf"{base}\w+ is test-only: {stem}\.npz holds x_test .*no train split.*"
            r"'validation' or 'test'",
        ):
            ask()
    with pytest.raises(DatasetNotFound) as e:
        load_raw(f"{base}Quantized", "test", tmp_path)
    msg = str(e.value)
    assert f"{stem}.npz" in msg and str(tmp_path.resolve()) in msg and "(N, 32, 32, 3)" in msg
    assert f"no torchvision download for {base}" in msg and "SOURCES.md" in msg and "x_train" not in msg

    x = np.random.default_rng(5).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    np.savez(tmp_path / f"{stem}.npz", x_test=x, y_test=np.zeros(4, np.int64))
    for split in ("validation", "test"):
        np.testing.assert_array_equal(load_raw(f"{base}Quantized", split, tmp_path), x.transpose(0, 3, 1, 2))
    d = load_dataset(f"{base}Dequantized", {"split": "validation", "dynamic": False}, tmp_path)
    assert d.label == f"{base} test" and d.image_shape == (3, 32, 32)
    k = torch.round(d.x * 255)
    assert torch.all(d.fixed() >= k / 256) and torch.all(d.fixed() < (k + 1) / 256)
    g = load_dataset(f"{base}QuantizedGrey", {"split": "test", "dynamic": False}, tmp_path)
    np.testing.assert_allclose(g.fixed().numpy(), _grey_reference(x.transpose(0, 3, 1, 2) / 255.0), atol=1e-5)
    with pytest.raises(ValueError, match="test-only"):
        load_raw(f"{base}Quantized", "train", tmp_path)  # a file at hand changes nothing


@pytest.fixture
def norb_root(tmp_path):
    rng = np.random.default_rng(3)
    np.savez(
        tmp_path / "smallnorb.npz",
        x_train=rng.integers(0, 256, (4, 96, 96), dtype=np.uint8),
        y_train=np.zeros(2, np.int64),
        x_test=rng.integers(0, 256, (2, 2, 96, 96), dtype=np.uint8),
        y_test=np.zeros(2, np.int64),
    )
    return tmp_path


def test_smallnorb(norb_root):
    import torchvision.transforms as T

    f = np.load(norb_root / "smallnorb.npz")
    tr = load_raw("SmallNORBQuantized", "train", norb_root)
    np.testing.assert_array_equal(tr[:, 0], f["x_train"])
    va = load_raw("SmallNORBQuantized", "validation", norb_root)
    assert va.shape == (4, 1, 96, 96), "stereo pairs become consecutive images (left, right)"
    np.testing.assert_array_equal(va[1, 0], f["x_test"][0, 1])
    # the paper's 28x28: torchvision Resize((28, 28), BILINEAR) on the PIL image; Inverted: 1 - x
    resize = T.Resize((28, 28), interpolation=T.InterpolationMode.BILINEAR)
    small = load_raw("SmallNORB28x28Quantized", "validation", norb_root)
    ref = np.stack([np.asarray(resize(Image.fromarray(img))) for img in f["x_test"].reshape(-1, 96, 96)])
    np.testing.assert_array_equal(small[:, 0], ref)
    np.testing.assert_array_equal(load_raw("SmallNORB28x28InvertedQuantized", "validation", norb_root), 255 - small)
    # Dequantized: 8-bit at 96x96, the paper's 3-level (2 x + u) / 3 at 28x28
    d96 = load_dataset("SmallNORBDequantized", {"split": "validation", "dynamic": False}, norb_root)
    k = torch.round(d96.x * 255)
    assert torch.all(d96.fixed() >= k / 256) and torch.all(d96.fixed() < (k + 1) / 256)
    d28 = load_dataset("SmallNORB28x28Dequantized", {"split": "validation", "dynamic": False}, norb_root)
    gen = torch.Generator().manual_seed(ds.fixed_seed(d28.name, d28.split, d28.seed))
    torch.testing.assert_close(d28.fixed(), (2 * d28.x + torch.rand(d28.x.shape, generator=gen)) / 3)
    b = load_dataset("SmallNORB28x28InvertedBinarized", {"split": "validation", "dynamic": False}, norb_root)
    assert b.image_shape == (1, 28, 28) and set(torch.unique(b.fixed()).tolist()) <= {0.0, 1.0}


def _norb_mat(path, images):
    """A small NORB byte-matrix file: magic 0x1E3D4C55, ndim 4, dims, then the bytes."""
    header = np.array([0x1E3D4C55, 4, *images.shape], "<i4").tobytes()
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(header + images.tobytes())


def test_smallnorb_official_files_and_offline_message(tmp_path):
    with pytest.raises(DatasetNotFound) as e:
        load_raw("SmallNORB28x28Quantized", "validation", tmp_path)
    msg = str(e.value)
    assert "smallnorb.npz" in msg and "(48600, 96, 96)" in msg and str(tmp_path.resolve()) in msg
    assert str((tmp_path / "smallNORB").resolve()) in msg and dataset_files.SMALLNORB_FILES["test"] in msg
    rng = np.random.default_rng(4)
    test = rng.integers(0, 256, (3, 2, 96, 96), dtype=np.uint8)
    train = rng.integers(0, 256, (1, 2, 96, 96), dtype=np.uint8)
    (tmp_path / "smallNORB").mkdir()
    _norb_mat(tmp_path / "smallNORB" / dataset_files.SMALLNORB_FILES["test"], test)
    _norb_mat(tmp_path / "smallNORB" / (dataset_files.SMALLNORB_FILES["train"] + ".gz"), train)
    np.testing.assert_array_equal(load_raw("SmallNORBQuantized", "test", tmp_path)[:, 0], test.reshape(6, 96, 96))
    np.testing.assert_array_equal(load_raw("SmallNORBQuantized", "train", tmp_path)[:, 0], train.reshape(2, 96, 96))
    assert load_raw("SmallNORB28x28InvertedQuantized", "validation", tmp_path).shape == (6, 1, 28, 28)


@needs_shared
def test_shared_data():
    fm = load_dataset("FashionMNISTBinarized", {"split": "validation", "dynamic": False}, SHARED, max_examples=50)
    assert fm.x.shape == (50, 1, 28, 28) and fm.label == "FashionMNIST test"
    assert (
        load_dataset("FashionMNISTBinarized", {"split": "train"}, SHARED, max_examples=5).label == "FashionMNIST train"
    )
    # omniglot.npz is stored inverted (white strokes on black, like MNIST), and not resized as the paper's
    dataset_files._warned.clear()
    with pytest.warns(UserWarning, match="omniglot.npz is not 0/255-valued"):
        inv = load_raw("Omniglot28x28InvertedBinarized", "test", SHARED)
    plain = load_raw("Omniglot28x28Binarized", "test", SHARED)
    assert inv.mean() < 64 < 192 < plain.mean()
    np.testing.assert_array_equal(plain, 255 - inv)
    for name in ("KMNISTBinarized", "notMNISTBinarized", "SVHNDequantized"):
        with pytest.raises(ValueError, match="test-only"):
            load_raw(name, "train", SHARED)
    grey = load_dataset("CIFAR10DequantizedGrey", {"split": "test", "dynamic": False}, SHARED, max_examples=20)
    assert grey.fixed().shape == (20, 3, 32, 32) and torch.equal(grey.fixed()[:, 0], grey.fixed()[:, 1])
    with pytest.warns(UserWarning, match="svhn.npz has no x_extra"):
        assert load_raw("SVHNDequantized", "validation", SHARED).shape == (10000, 3, 32, 32)


@needs_shared
@pytest.mark.parametrize(
    "name, stem, classes",
    [("TinyImageNetResizeDequantized", "tinyimagenet_resize", {0}), ("GTSRBDequantized", "gtsrb", set(range(43)))],
)
def test_shared_colour_test_sets(name, stem, classes):
    """The new names read ../shared/data's files as SOURCES.md describes them: 10,000 colour test images."""
    if not (SHARED / f"{stem}.npz").is_file():
        pytest.skip(f"../shared/data/{stem}.npz is not present")
    with np.load(SHARED / f"{stem}.npz") as f:
        assert set(f.files) == {"x_test", "y_test"} and set(np.unique(f["y_test"])) == classes
        first = f["x_test"][:3].transpose(0, 3, 1, 2)
    x = load_raw(name, "test", SHARED)
    assert x.shape == (10000, 3, 32, 32) and x.dtype == np.uint8
    np.testing.assert_array_equal(x[:3], first)
    np.testing.assert_array_equal(load_raw(name, "validation", SHARED)[:3], first)
    with pytest.raises(ValueError, match="test-only"):
        load_raw(name, "train", SHARED)
    grey = load_dataset(name + "Grey", {"split": "test", "dynamic": False}, SHARED, max_examples=8).fixed()
    assert grey.shape == (8, 3, 32, 32) and torch.equal(grey[:, 0], grey[:, 2])


def test_fixed_seed_depends_on_name_and_split():
    assert ds.fixed_seed("MNISTBinarized", "test") == ds.fixed_seed("MNISTBinarized", "test")
    assert ds.fixed_seed("MNISTBinarized", "test") != ds.fixed_seed("KMNISTBinarized", "test")
    assert ds.fixed_seed("MNISTBinarized", "test") != ds.fixed_seed("MNISTBinarized", "train")
