"""Dataset names, sources (local npz, torchvision files, download), preprocessing and the offline error."""

from __future__ import annotations

import urllib.error

import numpy as np
import pytest
import torch

from conftest import shared_path

from hvae_detect import datasets as ds
from hvae_detect.datasets import (DatasetNotFound, load_dataset, load_raw, parse_dataset_name,
                                  parse_dataset_options, to_grey)

SHARED = shared_path("data")
needs_shared = pytest.mark.skipif(SHARED is None, reason="../shared/data is not present")


@pytest.fixture
def fake_root(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "mnist.npz", x_train=rng.integers(0, 256, (20, 28, 28), dtype=np.uint8),
             y_train=np.zeros(20, np.int64), x_test=rng.integers(0, 256, (10, 28, 28), dtype=np.uint8),
             y_test=np.zeros(10, np.int64))
    np.savez(tmp_path / "svhn.npz", x_test=rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8),
             y_test=np.zeros(6, np.int64))
    return tmp_path


@pytest.mark.parametrize("name,base,variant,grey", [
    ("FashionMNISTBinarized", "FashionMNIST", "Binarized", False),
    ("MNISTQuantized", "MNIST", "Quantized", False),
    ("KMNISTDequantized", "KMNIST", "Dequantized", False),
    ("notMNISTBinarized", "notMNIST", "Binarized", False),
    ("Omniglot28x28Binarized", "Omniglot28x28", "Binarized", False),
    ("Omniglot28x28InvertedQuantized", "Omniglot28x28Inverted", "Quantized", False),
    ("CIFAR10Dequantized", "CIFAR10", "Dequantized", False),
    ("CIFAR10DequantizedGrey", "CIFAR10", "Dequantized", True),
    ("SVHNQuantizedGrey", "SVHN", "Quantized", True),
])
def test_parse_names(name, base, variant, grey):
    spec = parse_dataset_name(name)
    assert (spec.base, spec.variant, spec.grey) == (base, variant, grey)


@pytest.mark.parametrize("name", ["CIFAR10Binarized", "MNISTBinarizedGrey", "FooBinarized", "MNIST", "mnistBinarized"])
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


def test_grey_and_test_only(fake_root):
    x = load_raw("SVHNDequantizedGrey", "test", fake_root)
    rgb = np.load(fake_root / "svhn.npz")["x_test"]
    assert x.shape == (6, 1, 32, 32)
    from PIL import Image

    np.testing.assert_array_equal(x[0, 0], np.asarray(Image.fromarray(rgb[0]).convert("L")))
    assert load_raw("SVHNDequantized", "validation", fake_root).shape == (6, 3, 32, 32)
    with pytest.raises(ValueError, match="x_train"):
        load_raw("SVHNDequantized", "train", fake_root)
    assert to_grey(np.zeros((2, 1, 4, 4), np.uint8)).shape == (2, 1, 4, 4)


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


def test_omniglot_polarity_torchvision(tmp_path, monkeypatch):
    """torchvision's Omniglot is black strokes on white: Omniglot28x28 keeps it, Inverted flips it."""
    import torchvision.datasets as tvd
    from PIL import Image

    class FakeOmniglot:
        def __init__(self, root, background=True, download=False):
            img = np.full((105, 105), 255, np.uint8)
            img[40:60, 50:55] = 0
            self.items = [(Image.fromarray(img), 0)]

        def __len__(self):
            return 1

        def __getitem__(self, i):
            return self.items[i]

    monkeypatch.setattr(tvd, "Omniglot", FakeOmniglot)
    plain = load_raw("Omniglot28x28Binarized", "test", tmp_path)
    inv = load_raw("Omniglot28x28InvertedBinarized", "test", tmp_path)
    assert plain.shape == (1, 1, 28, 28) and plain.mean() > 200 and inv.mean() < 50
    np.testing.assert_array_equal(inv, 255 - plain)


@needs_shared
def test_shared_data():
    fm = load_dataset("FashionMNISTBinarized", {"split": "validation", "dynamic": False}, SHARED, max_examples=50)
    assert fm.x.shape == (50, 1, 28, 28) and fm.label == "FashionMNIST test"
    assert load_dataset("FashionMNISTBinarized", {"split": "train"}, SHARED, max_examples=5).label == "FashionMNIST train"
    # omniglot.npz is stored inverted (white strokes on black, like MNIST)
    inv = load_raw("Omniglot28x28InvertedBinarized", "test", SHARED)
    plain = load_raw("Omniglot28x28Binarized", "test", SHARED)
    assert inv.mean() < 64 < 192 < plain.mean()
    np.testing.assert_array_equal(plain, 255 - inv)
    for name in ("KMNISTBinarized", "notMNISTBinarized", "SVHNDequantized"):
        with pytest.raises(ValueError, match="test-only"):
            load_raw(name, "train", SHARED)
    assert load_raw("CIFAR10DequantizedGrey", "test", SHARED).shape == (10000, 1, 32, 32)


def test_fixed_seed_depends_on_name_and_split():
    assert ds.fixed_seed("MNISTBinarized", "test") == ds.fixed_seed("MNISTBinarized", "test")
    assert ds.fixed_seed("MNISTBinarized", "test") != ds.fixed_seed("KMNISTBinarized", "test")
    assert ds.fixed_seed("MNISTBinarized", "test") != ds.fixed_seed("MNISTBinarized", "train")
