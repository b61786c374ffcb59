"""Your own images as the estimator's input: a folder, a glob or a .npy / .npz file, decoded with Pillow.

    from hvae_detect.data.image_files import ImageFiles

    train = ImageFiles("photos/", image_size=64, crop=True)   # 64x64, centre-cropped; grey or colour decided
    print(train.description)                                   # what was decided, in one sentence
    det = HVAEOutlierDetector().fit(train.to_array())          # uint8 (n, C, H, W) in memory
    new = ImageFiles("new/", shape=det.image_shape_, image_size=64, crop=True)
    scores = det.score_samples(new)            # an iterable of uint8 batches: one batch in memory at a time
    new.errors                                 # {name: reason} of the files that could not be read

``images``: a folder (every file under it, recursively, in sorted order, leaving out hidden files and
folders), a glob pattern (``"shots/**/*.jpg"``), one image file, or a ``.npy`` / ``.npz`` file of
images ((n, H, W), (n, C, H, W) or channels-last (n, H, W, C); a .npy is memory-mapped; name an .npz's
array as ``FILE.npz:KEY`` unless it holds one, or one called x, x_train or images). PNG, JPEG, BMP, TIFF,
WebP and every other format Pillow reads are decoded (the EXIF orientation applied; an alpha channel is
dropped; 16-bit grey scaled to 8 bits); a file that is not an image, or is truncated or corrupt, is not
an error of the whole set: it is skipped and recorded in ``errors`` with the reason.

Size policy: without ``image_size`` every image must have the size of the first (else a ValueError names
two files of different sizes); with ``image_size`` (an int N for NxN, or (width, height)) every image is
resized to it (bicubic; the aspect ratio is not kept), or with ``crop=True`` scaled to cover it and then
centre-cropped. Channels: ``"auto"`` takes one grey channel when every image is grey (grey files, and
colour files whose three channels are equal) and three otherwise; ``"grey"`` / ``"colour"`` force it.
``shape`` (C, H, W), a fitted detector's ``image_shape_``, fixes both instead: no survey is made, images
are converted to C channels, and an image of another size is an error of that file unless
``image_size`` (then equal to (W, H)) asks for resizing or cropping.
"""

from __future__ import annotations

import dataclasses
import glob
import io
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from hvae_detect.data.image_decode import (
    ArrayFileImages,
    FileImages,
    ImageReadError,
    grey_content,
    is_grey_mode,
    npy_header,
    to_mode,
)
from hvae_detect.persistence.atomic import atomic_write

__all__ = ["Batch", "ImageFiles", "ImageReadError", "list_image_files", "parse_image_size"]

RESAMPLE = Image.BICUBIC  # (Image.Resampling.BICUBIC from Pillow 9.1; pyproject allows 9.0)
BATCH = 256  # images per batch of ``batches`` / iteration
_ARRAY_SUFFIXES = (".npy", ".npz")


def _size_text(size) -> str:
    return f"{size[0]}x{size[1]}"


def parse_image_size(value) -> tuple[int, int] | None:
    """``image_size`` as (width, height): an int N (NxN), "N", "WxH", or a (W, H) pair; None stays None."""
    if value is None:
        return None
    if isinstance(value, str):
        parts = value.strip().lower().split("x")
        if len(parts) not in (1, 2) or not all(p.strip().isdigit() for p in parts):
            raise ValueError(f"image size {value!r}: expected N or WIDTHxHEIGHT, e.g. 64 or 64x48")
        value = [int(parts[0]), int(parts[-1])]
    sizes = [int(value)] * 2 if np.isscalar(value) else [int(v) for v in value]
    if len(sizes) != 2 or min(sizes) < 1:
        raise ValueError(f"image size {value!r}: expected a positive N or (width, height)")
    return sizes[0], sizes[1]


def list_image_files(images) -> list[Path]:
    """The files named by ``images``: a folder (recursive, sorted, no hidden files), a glob, or one file."""
    spec = str(images)
    path = Path(spec)
    if path.is_dir():
        found = []
        for root, dirs, files in os.walk(path):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            found += [Path(root) / f for f in files if not f.startswith(".")]
        if not found:
            raise ValueError(f"{path} holds no files: expected a folder of images (PNG, JPEG, BMP, TIFF, WebP)")
        return sorted(found)
    if path.is_file():
        return [path]
    if any(c in spec for c in "*?["):  # a glob pattern
        found = sorted(Path(p) for p in glob.glob(spec, recursive=True) if Path(p).is_file())
        if not found:
            raise ValueError(f"no file matches {spec!r}")
        return found
    raise FileNotFoundError(f"{spec}: no such folder, file or glob of images")


@dataclasses.dataclass
class Batch:
    """Part of an image set: ``indices`` of the images read, ``images`` uint8 (b, C, H, W) of them, and
    ``failed`` [(index, reason)] of those that could not be read."""

    indices: list[int]
    images: np.ndarray
    failed: list[tuple[int, str]]


class ImageFiles:
    """A folder, glob or array file of images as the estimator's input (see the module docstring)."""

    def __init__(self, images, image_size=None, crop: bool = False, channels: str = "auto", shape=None):
        if channels not in ("auto", "grey", "colour"):
            raise ValueError(f"channels: expected auto, grey or colour, got {channels!r}")
        spec = str(images)
        self._source = (
            ArrayFileImages(spec)
            if spec.endswith(_ARRAY_SUFFIXES) or ".npz:" in spec
            else FileImages(list_image_files(images))
        )
        self.size, self.crop = parse_image_size(image_size), bool(crop)
        self.errors: dict[str, str] = {}
        self._failed: dict[int, str] = {}
        if shape is not None:
            c, h, w = (int(v) for v in shape)
            if self.size is not None and self.size != (w, h):
                raise ValueError(
                    f"image size {_size_text(self.size)} differs from the detector's {w}x{h}: leave "
                    f"it out or give {w}x{h}"
                )
            self.channels, self.resize = c, self.size is not None
            self.size = (w, h)
            how = (
                ("resized" if not self.crop else "centre-cropped") + f" to {w}x{h}"
                if self.resize
                else f"{w}x{h} (an image of another size is an error unless an image size is given)"
            )
            self.description = f"{len(self)} files, read as {'grey' if c == 1 else 'colour'} {how}"
            return
        self.resize = self.size is not None
        self._survey(channels)

    def __len__(self) -> int:
        return len(self._source)

    def name(self, i: int) -> str:
        """The path (or FILE[i] of an array) of image ``i``, as scores.csv names it."""
        return self._source.name(i)

    @property
    def names(self) -> list[str]:
        return [self._source.name(i) for i in range(len(self))]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the images as read."""
        return (self.channels, self.size[1], self.size[0])

    def _fail(self, i: int, reason: str) -> None:
        self._failed[i] = reason
        self.errors[self._source.name(i)] = reason

    def _survey(self, channels: str) -> None:
        """Sizes from the headers; grey or colour from the modes (and the pixels of colour-mode images)."""
        first, other, sizes, colour_at = None, None, set(), None
        for i in range(len(self)):
            try:
                size, grey_mode = self._source.header(i)
                if (
                    channels == "auto"
                    and colour_at is None
                    and not grey_mode
                    and not grey_content(self._source.open(i))
                ):
                    colour_at = i
            except ImageReadError as e:
                self._fail(i, str(e))
                continue
            sizes.add(size)
            if first is None:
                first = (i, size)
            elif other is None and size != first[1]:
                other = (i, size)
        if first is None:
            raise ValueError(
                f"none of the {len(self)} files could be read as an image "
                f"(first: {self._source.name(0)}: {self._failed[0]})"
            )
        if other is not None and not self.resize:
            raise ValueError(
                f"the images differ in size: {self.name(first[0])} is {_size_text(first[1])}, "
                f"{self.name(other[0])} is {_size_text(other[1])}; give an image size to resize them "
                "all to it (--image-size WIDTHxHEIGHT, with --crop to centre-crop instead)"
            )
        if channels == "auto":
            self.channels = 1 if colour_at is None else 3
            why = (
                f"colour ({self.name(colour_at)} has colour)" if colour_at is not None else "grey (every image is grey)"
            )
        else:
            self.channels, why = (1, "grey (as asked)") if channels == "grey" else (3, "colour (as asked)")
        if self.resize:
            how = f"{'centre-cropped' if self.crop else 'resized'} to {_size_text(self.size)}"
            how += f" ({len(sizes)} sizes found)" if len(sizes) > 1 else f" (all {_size_text(first[1])})"
        else:
            self.size, how = first[1], f"all {_size_text(first[1])}"
        bad = f"; {len(self._failed)} unreadable" if self._failed else ""
        self.description = f"{len(self)} files{bad}: {why}, {how}"

    def read(self, i: int) -> np.ndarray:
        """Image ``i`` as uint8 (C, H, W) by the policy; raises ImageReadError with the reason."""
        if i in self._failed:
            raise ImageReadError(self._failed[i])
        img = to_mode(self._source.open(i), self.channels)
        if img.size != self.size:
            if not self.resize:
                raise ImageReadError(
                    f"it is {_size_text(img.size)}, not {_size_text(self.size)} (give an image size to resize it)"
                )
            img = ImageOps.fit(img, self.size, RESAMPLE) if self.crop else img.resize(self.size, RESAMPLE)
        a = np.asarray(img, dtype=np.uint8)
        return a[None] if a.ndim == 2 else np.ascontiguousarray(a.transpose(2, 0, 1))  # C order: see batches

    def batches(self, batch_size: int = BATCH) -> Iterator[Batch]:
        """The images in order, ``batch_size`` files at a time; unreadable ones are also added to ``errors``."""
        for start in range(0, len(self), batch_size):
            indices, images, failed = [], [], []
            for i in range(start, min(start + batch_size, len(self))):
                try:
                    images.append(self.read(i))
                    indices.append(i)
                except ImageReadError as e:
                    failed.append((i, str(e)))
                    self._fail(i, str(e))
            # C-contiguous, as ``to_array``: the scoring's float32 bits depend on the memory layout of its input
            stacked = np.ascontiguousarray(np.stack(images)) if images else np.zeros((0, *self.image_shape), np.uint8)
            yield Batch(indices, stacked, failed)

    def __iter__(self) -> Iterator[np.ndarray]:
        """uint8 (b, C, H, W) batches of the readable images: the estimator's iterable of batches."""
        return (b.images for b in self.batches() if len(b.indices))

    def to_array(self, progress=None) -> np.ndarray:
        """Every readable image, uint8 (n, C, H, W) in memory (``progress(k)``: called as files are read)."""
        out = np.empty((len(self), *self.image_shape), np.uint8)
        n = 0
        for batch in self.batches():
            out[n : n + len(batch.indices)] = batch.images
            n += len(batch.indices)
            if progress is not None:
                progress(len(batch.indices) + len(batch.failed))
        return out[:n].copy() if n < len(out) else out

    def to_npy(self, path) -> np.memmap:
        """Write every readable image to the .npy file ``path`` (a batch at a time, atomically) and return it
        memory-mapped: for a set larger than memory (``fit`` then streams it)."""

        def write(tmp):
            with open(tmp, "wb") as f:
                f.write(npy_header(len(self), self.image_shape))
                n = 0
                for batch in self.batches():
                    f.write(batch.images.tobytes())
                    n += len(batch.indices)
                f.seek(0)
                f.write(npy_header(n, self.image_shape))  # the same length: the count is padded

        atomic_write(path, write)
        return np.load(path, mmap_mode="r")

    def thumbnail_png(self, i: int, max_side: int = 128) -> bytes:
        """Image ``i`` as a PNG of at most ``max_side`` pixels a side (as stored, not as the model reads it)."""
        img = self._source.open(i)
        img = to_mode(img, 1 if is_grey_mode(img) else 3)
        img.thumbnail((max_side, max_side), RESAMPLE)
        buffer = io.BytesIO()
        img.save(buffer, format="PNG")
        return buffer.getvalue()
