"""Data sets by the paper's names, preprocessed as the paper's code does: the variants (Binarized,
Quantized, Dequantized, Grey), fixed draws for evaluation sets, and ``load_dataset``.

Names, variants and sources are described in ``hvae_detect.data.dataset_names``; the file readers
are in ``hvae_detect.data.dataset_files``.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np
import torch

from hvae_detect.data.dataset_files import load_raw
from hvae_detect.data.dataset_names import (
    BASES,
    DATA_ROOT_ENV,
    SPLITS,
    VARIANTS,
    DatasetNotFound,
    DatasetSpec,
    default_data_root,
    parse_dataset_name,
    parse_dataset_options,
)
from hvae_detect.data.inputs import binarize

__all__ = [
    "BASES",
    "DATA_ROOT_ENV",
    "SPLITS",
    "VARIANTS",
    "DatasetNotFound",
    "DatasetSpec",
    "LoadedDataset",
    "default_data_root",
    "fixed_seed",
    "load_dataset",
    "load_raw",
    "parse_dataset_name",
    "parse_dataset_options",
    "preprocess",
    "to_grey",
]


def to_grey(x: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) in [0, 1] -> (N, 3, H, W): the paper's Grayscale(num_output_channels=3).

    Luminance 0.2126 R + 0.7152 G + 0.0722 B, then the sRGB -> linear expansion
    (v / 12.92 if v <= 0.04045 else ((v + 0.055) / 1.055) ** 2.4), in 3 identical channels.
    """
    if x.shape[1] != 3:
        raise ValueError(f"Grey conversion needs 3 colour channels, got shape {tuple(x.shape)}")
    lum = 0.2126 * x[:, 0] + 0.7152 * x[:, 1] + 0.0722 * x[:, 2]
    lin = torch.where(lum <= 0.04045, lum / 12.92, ((lum + 0.055) / 1.055) ** 2.4)
    return lin.unsqueeze(1).expand(-1, 3, -1, -1).contiguous()


# ---- preprocessing -----------------------------------------------------------------------------


def fixed_seed(name: str, split: str, seed: int = 0) -> int:
    """The seed of a non-dynamic dataset's single draw: fixed per (name, split, seed)."""
    return (zlib.crc32(f"{name}/{split}".encode()) + 1_000_003 * int(seed)) % (2**31 - 1)


def preprocess(
    x01: torch.Tensor,
    variant: str,
    generator: torch.Generator | None = None,
    *,
    levels: int = 256,
    grey: bool = False,
    uniforms: torch.Tensor | None = None,
) -> torch.Tensor:
    """Apply a variant to images in [0, 1] on the 256-level grid (x / 255).

    ``levels`` (Dequantized only): 256 gives (k + u) / 256; 3 gives the paper's Omniglot and SmallNORB28x28
    (2 x + u) / 3. ``grey`` then applies :func:`to_grey` (the paper's CIFAR10/SVHN ``DequantizedGrey``).
    ``uniforms`` (x's shape, in (0, 1)) gives the draw instead of ``generator`` (streamed training keys
    them by image: ``hvae_detect.training.batches``): a pixel is 1 where u < x, or dequantised with u.
    """
    if variant == "Binarized":
        out = binarize(x01, generator, uniforms=uniforms)
    elif variant == "Quantized":
        out = x01
    elif variant == "Dequantized":
        u = (
            torch.rand(x01.shape, generator=generator, device=x01.device, dtype=x01.dtype)
            if uniforms is None
            else uniforms.to(x01.dtype)
        )
        if levels == 256:
            out = (torch.round(x01 * 255) + u) / 256
        elif levels == 3:
            out = (2 * x01 + u) / 3
        else:
            raise ValueError(f"levels must be 256 or 3, got {levels!r}")
    else:
        raise ValueError(f"unknown variant {variant!r}")
    return to_grey(out) if grey else out


@dataclass
class LoadedDataset:
    """A dataset with its options: ``x`` holds x / 255 (float32, N x C x H x W)."""

    spec: DatasetSpec
    split: str
    dynamic: bool
    x: torch.Tensor
    seed: int = 0
    _fixed: torch.Tensor | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def label(self) -> str:
        """'FashionMNIST test' / 'MNIST train': the name the score files and tables use."""
        return f"{self.spec.display_base} {'train' if self.split == 'train' else 'test'}"

    @property
    def image_shape(self) -> tuple:
        return tuple(self.x.shape[1:])

    def __len__(self):
        return self.x.shape[0]

    def _preprocess(self, x01: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """This dataset's variant (and Grey conversion) applied to x / 255."""
        return preprocess(x01, self.spec.variant, generator, levels=self.spec.info.dequant_levels, grey=self.spec.grey)

    def transform(self, batch: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Per-batch preprocessing for training (fresh Bernoulli / dequantisation noise)."""
        return self._preprocess(batch, generator)

    def prepare(self, batch: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
        """Per-batch preprocessing with the draw given as uniforms (``hvae_detect.training.batches.LoaderBatches``)."""
        return preprocess(
            batch, self.spec.variant, levels=self.spec.info.dequant_levels, grey=self.spec.grey, uniforms=uniforms
        )

    def fixed(self) -> torch.Tensor:
        """The whole set preprocessed once with a fixed seed (evaluation sets)."""
        if self._fixed is None:
            gen = torch.Generator(device=self.x.device).manual_seed(fixed_seed(self.name, self.split, self.seed))
            self._fixed = self._preprocess(self.x, gen)
        return self._fixed

    def to(self, device) -> LoadedDataset:
        self.x = self.x.to(device)
        self._fixed = None if self._fixed is None else self._fixed.to(device)
        return self


def load_dataset(
    name: str,
    options: dict | None = None,
    data_root=None,
    download: bool = True,
    max_examples: int | None = None,
    seed: int = 0,
) -> LoadedDataset:
    """Load and wrap a dataset by its paper name with {"dynamic", "split"} options."""
    spec = parse_dataset_name(name)
    opts = parse_dataset_options({name: options or {}})[name]
    raw = load_raw(spec, opts["split"], data_root, download)
    if max_examples is not None:
        raw = raw[:max_examples]
    x = torch.from_numpy(raw.astype(np.float32) / 255.0)
    return LoadedDataset(spec, opts["split"], opts["dynamic"], x, seed)
