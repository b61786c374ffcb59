"""Data that need not fit in memory: memory-mapped files, map-style Datasets, DataLoader batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import TINY, tiny_model
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from hvae_detect import HVAEOutlierDetector
from hvae_detect.data.image_sources import MemoryMappedImages, image_source
from hvae_detect.likelihoods import Bernoulli
from hvae_detect.training.batches import LoaderBatches, draw_keys
from hvae_detect.training.config import TrainingConfig
from hvae_detect.training.loop import train_epochs

X = np.random.default_rng(0).integers(0, 256, size=(40, 12, 12), dtype=np.uint8)


class PilImages(torch.utils.data.Dataset):
    """As torchvision's datasets: (PIL image, label) items."""

    def __init__(self, x):
        self.x = x

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return Image.fromarray(self.x[i]), 0


def _sources(tmp_path):
    np.save(tmp_path / "x.npy", X)
    np.savez(tmp_path / "x.npz", x_train=X, y_train=np.zeros(len(X)))
    return {
        "array": X,
        "tensor": torch.from_numpy(X),
        "npy": tmp_path / "x.npy",
        "npz": str(tmp_path / "x.npz"),
        "dataset": PilImages(X),
    }


def test_every_source_reads_the_same_images_and_files_are_memory_mapped(tmp_path):
    for name, data in _sources(tmp_path).items():
        source = image_source(data)
        assert source.image_shape == (1, 12, 12) and len(source) == 40, name
        image, index = source[7]
        assert index == 7 and torch.equal(image, torch.from_numpy(X[7])[None]), name
        if hasattr(source, "__getitems__"):
            images, indices = source.__getitems__([5, 1, 30])
            assert torch.equal(images, torch.from_numpy(X[[5, 1, 30]])[:, None]) and indices.tolist() == [5, 1, 30]
    for name in ("npy", "npz"):
        source = image_source(_sources(tmp_path)[name])
        assert isinstance(source.array, np.memmap), name
        assert "_array" in source.__getstate__() and source.__getstate__()["_array"] is None  # workers reopen


def test_compressed_or_unsuitable_files_are_refused_with_the_reason(tmp_path):
    np.savez_compressed(tmp_path / "c.npz", x=X)
    with pytest.raises(ValueError, match="compressed.*np.savez"):
        MemoryMappedImages(tmp_path / "c.npz")
    np.savez(tmp_path / "two.npz", a=X, b=X)
    with pytest.raises(ValueError, match="name the array"):
        MemoryMappedImages(tmp_path / "two.npz")
    np.save(tmp_path / "hwc.npy", np.zeros((4, 8, 8, 5), np.uint8))
    with pytest.raises(ValueError, match="channels"):
        image_source(tmp_path / "hwc.npy")
    with pytest.raises(FileNotFoundError, match="nowhere.npy"):
        image_source(tmp_path / "nowhere.npy")
    with pytest.raises(ValueError, match="float images must lie in"):
        next(LoaderBatches(np.full((4, 8, 8), 2.0, np.float32), 2).epoch(0))


def _batches(data, workers=0, epoch=0):
    batches = LoaderBatches(data, 8, prepare=Bernoulli().keyed_draw, seed=3, workers=workers)
    return [(x.clone(), keys.clone()) for x, keys in batches.epoch(epoch)]


def test_worker_processes_and_memory_maps_give_the_batches_of_the_array(tmp_path):
    reference = _batches(X)
    for data, workers in ((tmp_path / "x.npy", 2), (PilImages(X), 2), (torch.from_numpy(X), 0)):
        if not isinstance(data, (PilImages, torch.Tensor)):
            np.save(data, X)
        got = _batches(data, workers)
        assert len(got) == len(reference) == 5
        for (a, ka), (b, kb) in zip(reference, got):
            assert torch.equal(a, b) and torch.equal(ka, kb)
    other_epoch = _batches(X, epoch=1)
    assert not all(torch.equal(a, b) for (a, _), (b, _) in zip(reference, other_epoch))  # fresh order and draws


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(0, 10**6), min_size=1, max_size=30, unique=True), st.integers(0, 5), st.integers(0, 9))
def test_a_draw_belongs_to_its_image_seed_and_epoch_not_to_its_batch(indices, seed, epoch):
    idx = torch.tensor(indices)
    keys = draw_keys(idx, seed, epoch)
    perm = torch.randperm(len(indices))
    assert torch.equal(draw_keys(idx[perm], seed, epoch), keys[perm])  # any batch, any order, any rank
    assert torch.equal(torch.cat([draw_keys(idx[:1], seed, epoch), draw_keys(idx[1:], seed, epoch)]), keys)
    assert not torch.equal(draw_keys(idx, seed, epoch + 1), keys) and not torch.equal(
        draw_keys(idx, seed + 1, epoch), keys
    )


def test_streamed_training_is_the_same_from_an_array_a_file_and_a_dataset(tmp_path):
    config = TrainingConfig(epochs=1, batch_size=8, learning_rate=1e-3)
    np.save(tmp_path / "x.npy", X)
    weights = []
    for data in (X, tmp_path / "x.npy", PilImages(X)):
        model = tiny_model(seed=0).train()
        history = train_epochs(model, LoaderBatches(data, 8, prepare=Bernoulli().keyed_draw, seed=1), config)
        assert np.isfinite(history[0]["elbo"]) and len(history[0]["images_per_s"]) == 1
        weights.append(model.state_dict())
    for other in weights[1:]:
        for key, value in weights[0].items():
            assert torch.equal(value, other[key]), key


def test_the_estimator_fits_and_scores_a_memory_mapped_file_and_a_dataset(tmp_path):
    np.save(tmp_path / "x.npy", X)
    params = dict(architecture=TINY, epochs=1, batch_size=8, random_state=0, device="cpu")
    from_file = HVAEOutlierDetector(**params).fit(str(tmp_path / "x.npy"))
    from_memmap = HVAEOutlierDetector(**params).fit(np.load(tmp_path / "x.npy", mmap_mode="r"))
    in_memory = HVAEOutlierDetector(**params).fit(X)  # the in-memory path: other draws, another model
    for det in (from_file, from_memmap):
        assert det.image_shape_ == (1, 12, 12) and np.isfinite(det.offset_)
        np.testing.assert_array_equal(det.score_samples(PilImages(X)), det.score_samples(X))
    np.testing.assert_array_equal(from_file.score_samples(X), from_memmap.score_samples(X))
    assert not np.array_equal(in_memory.score_samples(X), from_file.score_samples(X))
