"""Where training batches come from, and the random numbers that prepare them.

``load_training_data`` loads the data sets a run names (its training set and validation sets).

Two sources feed ``hvae_detect.training.loop.epoch_records``:

``TensorBatches``  images held in one tensor on the device (``fit`` and a plain ``hvae-detect
                   train``): one permutation per epoch and every draw (binarisation,
                   dequantisation, posterior samples) from one torch.Generator, as always.
``LoaderBatches``  any image source of ``hvae_detect.data.image_sources`` (memory-mapped files,
                   torchvision or any map-style Dataset) read by a DataLoader (worker processes,
                   pinned memory on CUDA) and split over the ranks of a run by a
                   DistributedSampler. ``batch_size`` is the global batch: each of W ranks reads
                   batch_size / W of its images. Every draw is keyed by (seed, epoch, image
                   index) through ``hvae_detect.data.randomness``, so an image gets the same draws
                   whichever rank reads it and however many ranks there are: W ranks with
                   averaged gradients take the step one process takes on the same global batch
                   (up to float rounding), and a run can resume at another world size.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.data import DataLoader, DistributedSampler

from hvae_detect.data import randomness
from hvae_detect.data.datasets import load_dataset
from hvae_detect.data.image_sources import collate, image_source
from hvae_detect.data.inputs import check_image_tensor
from hvae_detect.scoring.engine import importance_noise
from hvae_detect.training.distributed import SINGLE, Context

PREPARE_STREAM = randomness.BINARIZE_STREAM  # uniforms of the binarisation / dequantisation draw
_MASK63 = (1 << 63) - 1


class TensorBatches:
    """Batches of an in-memory tensor (N, C, H, W) in [0, 1] on the training device."""

    def __init__(
        self,
        data: torch.Tensor,
        batch_size: int,
        transform: Callable | None = None,
        generator: torch.Generator | None = None,
    ):
        self.data, self.batch_size, self.transform, self.generator = data, batch_size, transform, generator
        self.device, self.ctx = data.device, SINGLE  # one process holds them all
        self.steps = -(-data.shape[0] // batch_size)

    def epoch(self, epoch: int):
        """(prepared batch, None) per step: draws come from the generator, not from keys."""
        n, gen = self.data.shape[0], self.generator
        perm = torch.randperm(n, generator=gen, device=gen.device if gen is not None else self.device)
        perm = perm.to(self.device)
        for step in range(self.steps):
            x = self.data[perm[step * self.batch_size : (step + 1) * self.batch_size]]
            yield (self.transform(x, gen) if self.transform is not None else x), None


def draw_keys(indices: torch.Tensor, seed: int, epoch: int) -> torch.Tensor:
    """(b,) int64 keys of the draws of images ``indices`` in ``epoch`` of a run seeded ``seed``."""
    salt = (int(seed) * 1_000_003 + int(epoch)) & _MASK63
    return randomness.mix64(randomness.mix64(indices.long()) ^ randomness.mix64(torch.full_like(indices.long(), salt)))


def posterior_noise(model, keys: torch.Tensor, n_samples: int = 1) -> list[torch.Tensor]:
    """Standard-normal draws of every latent for rows (sample, image), sample-major, keyed by ``keys``
    (the draws of L's importance samples, ``hvae_detect.scoring.engine.importance_noise``)."""
    samples = torch.arange(n_samples, device=keys.device).repeat_interleave(keys.shape[0])
    return importance_noise(model, keys.repeat(n_samples), 0, samples)


def generator_noise(model, n_images: int, n_samples: int, generator, device) -> list[torch.Tensor]:
    """Standard-normal draws of every latent for (sample, image) rows from ``generator``, lowest latent
    first: what a model draws inside its pass, drawn before it (a compiled pass takes no generator)."""
    return [
        torch.randn((n_samples * n_images, *shape), generator=generator, device=device) for shape in model.latent_shapes
    ]


def _check(batch):
    """In the loader's worker: floats must be finite and in [0, 1] (uint8 needs no check)."""
    images, indices = collate(batch)
    if images.is_floating_point():
        check_image_tensor(images)
    return images, indices


class LoaderBatches:
    """Batches of a DataLoader over ``data`` split over the ranks of ``ctx``.

    ``prepare(x01, uniforms)`` applies a variant to a batch in [0, 1] given one keyed uniform per
    element (e.g. ``hvae_detect.likelihoods.Bernoulli().keyed_draw``, dynamic binarisation); None keeps x.
    ``workers`` DataLoader worker processes read and check the images (0: in this process).
    """

    def __init__(
        self,
        data,
        batch_size: int,
        *,
        prepare: Callable | None = None,
        seed: int = 0,
        ctx: Context = SINGLE,
        device="cpu",
        workers: int = 0,
        key: str | None = None,
    ):
        self.source = image_source(data, key)
        if batch_size % ctx.world_size:
            raise ValueError(
                f"batch_size {batch_size} is the global batch and must divide evenly over {ctx.world_size} processes"
            )
        if not isinstance(workers, int) or workers < 0:
            raise ValueError(f"data workers must be a non-negative integer, got {workers!r}")
        self.batch_size, self.prepare, self.seed, self.ctx = batch_size, prepare, int(seed), ctx
        self.device = torch.device(device)
        self.image_shape = tuple(self.source.image_shape)
        self.sampler = DistributedSampler(
            self.source, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=self.seed, drop_last=False
        )
        self.loader = DataLoader(
            self.source,
            batch_size=batch_size // ctx.world_size,
            sampler=self.sampler,
            num_workers=workers,
            collate_fn=_check,
            pin_memory=self.device.type == "cuda",
            persistent_workers=workers > 0,
        )
        self.steps = len(self.loader)  # the same on every rank: the sampler pads to equal shares

    def __len__(self) -> int:
        return len(self.source)

    def _prepared(self, images, indices, epoch):
        x = images.to(self.device, non_blocking=True)
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        keys = draw_keys(indices.to(self.device, non_blocking=True), self.seed, epoch)
        if self.prepare is not None:
            x = self.prepare(x, randomness.uniform(keys, PREPARE_STREAM, tuple(x.shape[1:])))
        return x, keys

    def epoch(self, epoch: int):
        """(prepared batch, keys) per step of this rank's share of ``epoch``."""
        self.sampler.set_epoch(epoch)
        for images, indices in self.loader:
            yield self._prepared(images, indices, epoch)

    def first_global_batch(self):
        """(prepared batch, keys) of the whole first global batch of epoch 0, as one process reads it
        (the data-dependent initialisation's batch, the same at every world size)."""
        order = list(DistributedSampler(self.source, num_replicas=1, rank=0, shuffle=True, seed=self.seed))
        indices = order[: self.batch_size]
        if hasattr(self.source, "__getitems__"):
            batch = _check(self.source.__getitems__(indices))
        else:
            batch = _check([self.source[i] for i in indices])
        return self._prepared(*batch, 0)


def load_training_data(config, device, download=True, train_device=None):
    """The data sets that a run's ``config`` (``hvae_detect.commands.run_config.RunConfig``) names: (train
    tensor x/255 on ``train_device`` (default ``device``), transform, [LoadedDataset for each validation
    set, on ``device``]); a dynamic set's transform is its first set's LoadedDataset.transform."""
    root, seed = config.data_root, config.seed
    train_device = device if train_device is None else train_device
    trains = [
        load_dataset(n, o, root, download, config.n_train_examples, seed) for n, o in config.train_datasets.items()
    ]
    shapes = {d.image_shape for d in trains}
    if len(shapes) > 1:
        raise ValueError(f"training datasets have different image shapes {sorted(shapes)}")
    x = torch.cat([d.x for d in trains]).to(train_device)
    vals = [
        load_dataset(n, o, root, download, config.n_val_examples, seed).to(device)
        for n, o in config.val_datasets.items()
    ]
    for v in vals:
        if v.image_shape != trains[0].image_shape:
            raise ValueError(
                f"validation set {v.name} has images of shape {v.image_shape}, the training data "
                f"{trains[0].image_shape}"
            )
    first = trains[0]
    transform = first.transform if first.dynamic else None
    if not first.dynamic:  # one fixed draw for the whole training set
        x = torch.cat([d.to(train_device).fixed() for d in trains])
    return x, transform, vals
