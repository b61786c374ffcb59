"""Image sets that need not fit in memory, as map-style torch Datasets of (image, index).

:func:`image_source` accepts a path of a ``.npy`` file or of an uncompressed ``.npz`` file
(memory-mapped: only the images a batch needs are read), a numpy array (a memmap too) or a
torch tensor, and any map-style torch Dataset (torchvision's, or your own) whose items are
images or (image, label) pairs: PIL images, numpy arrays or tensors; flattened images (n, C*H*W)
with an ``image_shape`` (without one, a perfect square is read as one grey channel). Images are
returned as stored (uint8 0..255 or floats in [0, 1], channels first); a batch is checked and scaled
to [0, 1] on the device (:func:`hvae_detect.data.inputs.check_image_tensor`).

Arrays are read a whole batch at a time (``__getitems__``, in sorted order: a memory-mapped
file is then read forwards), and a memory-mapped source reopens its file in each worker
process instead of pickling its contents. After each read the pages of a memory map are handed
back (``madvise(MADV_DONTNEED)``; they stay in the page cache): otherwise every page that random
batches touch, and the kernel's fault-around neighbours, would count as the process's resident
memory until most of the file did (2.4 GiB peak for a 1.6 GB file, benchmarks/results/2026-11-29-streaming-memory.md).
"""

from __future__ import annotations

import dataclasses
import mmap
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from hvae_detect.data.inputs import (
    check_image_tensor,
    check_images,
    check_shape,
    is_map_dataset,
    resolve_image_shape,
    sample_indices,
    to_numpy,
    warn_if_binary_uint8,
)


def _as_chw_shape(shape, image_shape=None) -> tuple:
    image = resolve_image_shape(shape, image_shape)
    if image[0] not in (1, 3):
        raise ValueError(
            f"expected images shaped (n, H, W) or (n, C, H, W) with C in {{1, 3}}, got an array of "
            f"shape {tuple(shape)}; channels-last arrays must be transposed to channels-first"
        )
    return image


class ArrayImages(Dataset):
    """Images of an array (numpy, memory-mapped numpy, or torch on the CPU), (N, H, W) or (N, C, H, W),
    or (N, d) rows of flattened images of ``image_shape``."""

    def __init__(self, array, image_shape=None):
        if isinstance(array, torch.Tensor):
            array = array.detach().cpu()
        elif not isinstance(array, np.ndarray):
            raise ValueError(f"expected a numpy array or torch tensor of images, got {type(array).__name__}")
        if array.ndim not in (2, 3, 4):
            raise ValueError(
                f"expected images shaped (n, H, W), (n, C, H, W) or (n, d) with an image_shape, got "
                f"an array of shape {tuple(array.shape)}"
            )
        if len(array) == 0:
            raise ValueError(f"expected a non-empty array of images, got shape {tuple(array.shape)}")
        self.image_shape = _as_chw_shape(array.shape, image_shape)
        self._array = array

    @property
    def array(self):
        return self._array

    def __len__(self) -> int:
        return len(self.array)

    def _read(self, indices: np.ndarray) -> torch.Tensor:
        order = np.argsort(indices, kind="stable")
        sorted_indices = indices[order]
        if isinstance(self.array, torch.Tensor):
            sorted_indices = torch.from_numpy(sorted_indices)
        batch = self.array[sorted_indices]  # forward reads of a memory-mapped file
        batch = torch.from_numpy(np.ascontiguousarray(batch)) if isinstance(batch, np.ndarray) else batch
        out = torch.empty_like(batch)
        out[torch.from_numpy(order)] = batch
        _release_pages(self.array)
        return out.reshape(len(indices), *self.image_shape)

    def __getitem__(self, index: int):
        return self._read(np.array([index]))[0], index

    def __getitems__(self, indices):
        """A whole batch in one read: (images (b, C, H, W), indices (b,))."""
        idx = np.asarray(indices, dtype=np.int64)
        return self._read(idx), torch.from_numpy(idx)


def _release_pages(array) -> None:
    """Unmap the pages a read of a memory-mapped array brought in (they stay cached by the kernel)."""
    mapping = getattr(array, "_mmap", None)  # np.memmap's mmap.mmap (None for a view's base owner)
    if mapping is None or not hasattr(mapping, "madvise") or not hasattr(mmap, "MADV_DONTNEED"):
        return
    try:
        mapping.madvise(mmap.MADV_DONTNEED)
    except (OSError, ValueError):  # a closed map, or a platform that refuses: only memory is at stake
        pass


class MemoryMappedImages(ArrayImages):
    """An array in a ``.npy`` file, or a member of an uncompressed ``.npz`` file, read through a memory map."""

    def __init__(self, path, key: str | None = None, image_shape=None):
        self.path, self.key = Path(path), key
        self._array = None
        super().__init__(self.array, image_shape)

    @property
    def array(self):
        if self._array is None:
            self._array = _memory_map(self.path, self.key)
        return self._array

    def __getstate__(self):  # a worker process reopens the file instead of receiving its contents
        return {**self.__dict__, "_array": None}


def _memory_map(path: Path, key: str | None) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file of images")
    if path.suffix == ".npy":
        try:
            return np.load(path, mmap_mode="r", allow_pickle=False)
        except ValueError as e:
            raise ValueError(f"{path} cannot be memory-mapped as a .npy array ({e})") from None
    if path.suffix != ".npz":
        raise ValueError(f"{path}: expected a .npy or an uncompressed .npz file of images")
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path} cannot be read as an .npz ({type(e).__name__}: {e})") from None
    with archive:
        members = [n[:-4] for n in archive.namelist() if n.endswith(".npy")]
        if key is None:
            candidates = [m for m in members if m in ("x", "x_train", "images")] or members
            if len(candidates) != 1:
                raise ValueError(f"{path} holds {members}: name the array of images (key=...)")
            key = candidates[0]
        if key not in members:
            raise ValueError(f"{path} holds {members} but not {key!r}")
        info = archive.getinfo(key + ".npy")
        if info.compress_type != zipfile.ZIP_STORED:
            raise ValueError(
                f"{path}: {key!r} is compressed and cannot be memory-mapped; write the file with "
                "np.savez (not np.savez_compressed) or save the array as .npy"
            )
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        local = f.read(30)
        if local[:4] != b"PK\x03\x04":
            raise ValueError(f"{path}: the zip entry of {key!r} is damaged")
        start = (
            info.header_offset + 30 + int.from_bytes(local[26:28], "little") + int.from_bytes(local[28:30], "little")
        )
        f.seek(start)
        version = np.lib.format.read_magic(f)
        readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
        if version not in readers:
            raise ValueError(f"{path}: {key!r} is a .npy of format {version}; expected 1.0 or 2.0")
        shape, fortran, dtype = readers[version](f)
        offset = f.tell()
    if fortran or dtype.hasobject:
        raise ValueError(f"{path}: {key!r} must be a C-ordered numeric array to be memory-mapped")
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape)


def _image_tensor(item) -> torch.Tensor:
    """One image of a Dataset item (a PIL image, an array or a tensor; HWC or CHW) as a CHW tensor."""
    if isinstance(item, torch.Tensor):
        t = item
    else:
        a = np.asarray(item)
        if a.dtype == object or a.ndim not in (2, 3):
            raise ValueError(
                f"a dataset item must be an image (PIL, array or tensor of 2 or 3 dimensions), got "
                f"{type(item).__name__} of shape {getattr(a, 'shape', None)}"
            )
        t = torch.from_numpy(np.ascontiguousarray(a))
        if t.ndim == 3 and t.shape[-1] in (1, 3) and t.shape[0] not in (1, 3):  # PIL and numpy: H x W x C
            t = t.permute(2, 0, 1)
    return t.unsqueeze(0) if t.ndim == 2 else t


class DatasetImages(Dataset):
    """Any map-style Dataset whose items are images or (image, label, ...) tuples; items become (image, index)."""

    def __init__(self, dataset):
        if len(dataset) == 0:
            raise ValueError("the dataset holds no images")
        self.dataset = dataset
        self.image_shape = _as_chw_shape((1, *_image_tensor(self._image(0)).shape))

    def _image(self, index):
        item = self.dataset[int(index)]
        return item[0] if isinstance(item, (tuple, list)) else item

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        image = _image_tensor(self._image(index))
        if tuple(image.shape) != self.image_shape:
            raise ValueError(
                f"item {index} of the dataset has shape {tuple(image.shape)}, the first "
                f"{self.image_shape}: every image must have the same shape"
            )
        return image, index


def image_source(data, key: str | None = None, image_shape=None) -> Dataset:
    """A map-style Dataset of (image, index) with an ``image_shape`` (C, H, W), for any supported ``data``
    (``image_shape``: that of the rows of a 2-D array or file of flattened images)."""
    if isinstance(data, (ArrayImages, DatasetImages)):
        return data
    if isinstance(data, (str, Path)):
        return MemoryMappedImages(data, key, image_shape)
    if isinstance(data, (np.ndarray, torch.Tensor)):
        return ArrayImages(data, image_shape)
    if hasattr(data, "__getitem__") and hasattr(data, "__len__"):
        return DatasetImages(data)
    raise ValueError(
        f"expected a path of a .npy/.npz file, an array, a tensor or a map-style Dataset of images, "
        f"got {type(data).__name__}"
    )


def read_as_used(X) -> bool:
    """Whether X is read a batch at a time rather than held in memory: an np.memmap, the path of a .npy or
    .npz file, or a map-style Dataset. The one place that decides it, for ``fit`` and for scoring alike."""
    return (
        isinstance(X, (np.memmap, Path)) or is_map_dataset(X) or (isinstance(X, str) and X.endswith((".npy", ".npz")))
    )


@dataclasses.dataclass(frozen=True)
class TrainingImages:
    """The images ``fit`` was given, decided once: held in memory (``images`` a checked (n, C, H, W)
    array, ``source`` None), or read as used (``source`` the Dataset that training streams, ``images``
    what scoring reads again: X itself, or for a path that Dataset)."""

    images: object
    source: Dataset | None
    image_shape: tuple

    @property
    def streamed(self) -> bool:
        return self.source is not None


def training_images(X, image_shape=None, min_images: int = 2) -> TrainingImages:
    """X checked as training images (``image_shape``: that of flattened images (n, d)). Warns about uint8
    images of only 0 and 1 (from a sample of ``hvae_detect.data.inputs.BINARY_SAMPLE`` images spread over
    the set)."""
    if not read_as_used(X):
        x = check_images(X, image_shape, min_samples=min_images)
        return TrainingImages(x, None, tuple(x.shape[1:]))
    source = image_source(X, image_shape=image_shape)
    if len(source) < min_images:
        raise ValueError(f"expected at least {min_images} images, got {len(source)}")
    if isinstance(source, ArrayImages):
        warn_if_binary_uint8(source.__getitems__(sample_indices(len(source)))[0])
    else:  # items of a Dataset are read one by one: a smaller sample
        warn_if_binary_uint8(torch.stack([source[int(i)][0] for i in sample_indices(len(source), 32)]))
    return TrainingImages(source if isinstance(X, (str, Path)) else X, source, tuple(source.image_shape))


def collate(items):
    """Batches of ``__getitems__`` pass through; (image, index) items are stacked."""
    if isinstance(items, tuple) and len(items) == 2 and isinstance(items[0], torch.Tensor) and items[0].ndim == 4:
        return items
    images, indices = zip(*items)
    return torch.stack(images), torch.as_tensor(indices, dtype=torch.int64)


def image_batches(X, image_shape, expected_shape, batch_size: int, device):
    """Validated float32 (b, C, H, W) batches of X on ``device``, one batch in memory at a time.

    X: a numpy array (memory-mapped arrays are read a slice at a time), a torch tensor on
    any device (kept there when it is already on ``device``), an array-like, a map-style
    torch Dataset of images (read through a DataLoader), or an iterable of batches (items
    may be (images, labels) pairs). uint8 images of only 0 and 1 are warned about once, from the first
    batch.
    """
    if read_as_used(X) and not isinstance(X, np.memmap):  # a memmap is read a slice at a time below
        loader = torch.utils.data.DataLoader(
            image_source(X, image_shape=image_shape), batch_size=batch_size, collate_fn=collate
        )
        X = (images for images, _ in loader)
    if isinstance(X, (np.ndarray, torch.Tensor)) or hasattr(X, "__array__") or isinstance(X, (list, tuple)):
        sources = [X if isinstance(X, (np.ndarray, torch.Tensor)) else to_numpy(X)]
        if len(sources[0]) < 1:
            raise ValueError("expected at least 1 images, got 0")
        check_shape(sources[0].shape, image_shape, expected_shape, 1)
    elif hasattr(X, "__iter__"):
        sources = (item[0] if isinstance(item, (tuple, list)) else item for item in X)
    else:
        raise ValueError(
            f"expected a numpy array, a torch tensor or an iterable of image batches, got {type(X).__name__}"
        )
    seen = 0
    for source in sources:
        for start in range(0, len(source), batch_size):
            part = source[start : start + batch_size]
            # contiguous: a channels-last array would change the arithmetic's order, and a score must be a
            # function of the image, not of its memory layout
            if isinstance(part, torch.Tensor):
                yield (
                    check_image_tensor(part, image_shape, expected_shape, warn_binary=not seen).to(device).contiguous()
                )
            else:
                x = check_images(part, image_shape, expected_shape, warn_binary=not seen)
                yield torch.from_numpy(np.ascontiguousarray(x)).to(device)
            seen += len(part)
    if not seen:
        raise ValueError("expected at least 1 images, got 0")
