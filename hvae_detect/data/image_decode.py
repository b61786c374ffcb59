"""Decoding one image for ``hvae_detect.data.image_files``: image files through Pillow, and the images of a
.npy / .npz file, each a source of ``name(i)``, ``open(i)`` (a PIL image) and ``header(i)`` (its size, cheaply).

A file that cannot be used raises ``ImageReadError`` whose message is the reason (not an image Pillow
reads, truncated, corrupt, too large to decode safely). Images are turned upright by their EXIF
orientation; ``to_mode`` converts to grey ("L") or colour ("RGB"), dropping an alpha channel and scaling
16-bit and float grey to 8 bits.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

_GREY_MODES = {"1", "L", "LA", "La", "I", "F"}
_ARRAY_KEYS = ("x", "x_train", "images")


class ImageReadError(ValueError):
    """One image cannot be used; the message is the reason, as the report and scores.csv give it."""


def _alpha_free(img: Image.Image) -> Image.Image:
    if img.mode == "P" and "transparency" in img.info:
        return img.convert("RGBA")
    return img


def is_grey_mode(img: Image.Image) -> bool:
    if img.mode in _GREY_MODES or img.mode.startswith("I;16"):
        return True
    if img.mode in ("P", "PA"):
        palette = np.asarray(img.getpalette() or [], dtype=np.int64)
        rgb = palette[: len(palette) // 3 * 3].reshape(-1, 3)
        return bool(np.all(rgb == rgb[:, :1]))
    return False


def to_mode(img: Image.Image, channels: int) -> Image.Image:
    """``img`` as "L" (channels 1) or "RGB" (3), 16-bit and float grey scaled to 8 bits."""
    if img.mode.startswith("I") or img.mode == "F":
        a = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or a.max(initial=0) > 255 else 255.0
        if img.mode == "F" and a.max(initial=0) <= 1.0:
            top = 1.0
        img = Image.fromarray(np.clip(np.rint(a * (255.0 / top)), 0, 255).astype(np.uint8))
    img = _alpha_free(img)
    return img.convert("L" if channels == 1 else "RGB")


def grey_content(img: Image.Image) -> bool:
    """Whether a decoded image is grey: a grey mode, or three equal channels."""
    if is_grey_mode(img):
        return True
    a = np.asarray(to_mode(img, 3))
    return bool(np.all(a[..., 0] == a[..., 1]) and np.all(a[..., 1] == a[..., 2]))


def npy_header(n: int, shape) -> bytes:
    """A .npy 1.0 header of uint8 (n, *shape) whose length does not depend on n (rewritten once n is known)."""
    text = "{'descr': '|u1', 'fortran_order': False, 'shape': (%20d, %s), }" % (n, ", ".join(map(str, shape)))
    total = -(-(10 + len(text) + 1) // 64) * 64
    text = text + " " * (total - 10 - len(text) - 1) + "\n"
    return np.lib.format.magic(1, 0) + len(text).to_bytes(2, "little") + text.encode("latin1")


class FileImages:
    """Image files, opened with Pillow."""

    def __init__(self, paths: list[Path]):
        self.paths = paths

    def __len__(self):
        return len(self.paths)

    def name(self, i: int) -> str:
        return str(self.paths[i])

    def open(self, i: int) -> Image.Image:
        """The decoded image, upright (EXIF orientation); raises ImageReadError with the reason."""
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Pillow's warnings about odd but readable files
                with Image.open(self.paths[i]) as img:
                    img.load()
                    return ImageOps.exif_transpose(img)
        except Image.DecompressionBombError as e:
            raise ImageReadError(f"too large to decode safely ({e})") from None
        except Image.UnidentifiedImageError:
            raise ImageReadError("not an image file Pillow can read") from None
        except (OSError, ValueError, SyntaxError, EOFError) as e:  # truncated, corrupt, unreadable
            raise ImageReadError(f"{type(e).__name__}: {e}") from None

    def header(self, i: int) -> tuple[tuple[int, int], bool]:
        """((width, height) upright, whether its mode is grey) from the header alone; raises ImageReadError."""
        try:
            with Image.open(self.paths[i]) as img:
                w, h = img.size
                if img.getexif().get(0x0112) in (5, 6, 7, 8):  # rotated by a quarter turn
                    w, h = h, w
                return (w, h), is_grey_mode(img)
        except Image.UnidentifiedImageError:
            raise ImageReadError("not an image file Pillow can read") from None
        except (OSError, ValueError, SyntaxError, EOFError) as e:
            raise ImageReadError(f"{type(e).__name__}: {e}") from None


class ArrayFileImages:
    """The images of a .npy / .npz file (a .npy memory-mapped)."""

    def __init__(self, spec: str):
        file, _, key = spec.partition(".npz:")
        path = Path(file + ".npz" if key else file)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file of images")
        if path.suffix == ".npy":
            try:
                array = np.load(path, mmap_mode="r", allow_pickle=False)
            except ValueError as e:
                raise ValueError(f"{path} cannot be read as a .npy array of images ({e})") from None
        else:
            with np.load(path, allow_pickle=False) as archive:
                names = list(archive.files)
                if not key:
                    named = [n for n in names if n in _ARRAY_KEYS] if len(names) > 1 else names
                    if len(named) != 1:
                        raise ValueError(f"{path} holds {names}: name the images as {path}:KEY")
                    key = named[0]
                if key not in names:
                    raise ValueError(f"{path} holds {names} but not {key!r}")
                array = archive[key]
        last = array.ndim == 4 and array.shape[-1] in (1, 3) and array.shape[1] not in (1, 3)
        if array.ndim not in (3, 4) or (array.ndim == 4 and not last and array.shape[1] not in (1, 3)):
            raise ValueError(
                f"{path}: expected images shaped (n, H, W), (n, C, H, W) or (n, H, W, C) with C in "
                f"{{1, 3}}, got an array of shape {array.shape}"
            )
        if array.dtype != np.uint8 and array.dtype.kind != "f":
            raise ValueError(f"{path}: expected uint8 (0..255) or float (0..1) images, got {array.dtype}")
        if len(array) == 0:
            raise ValueError(f"{path} holds no images")
        self.label, self.array, self.channels_last = f"{path}:{key}" if key else str(path), array, last

    def __len__(self):
        return len(self.array)

    def name(self, i: int) -> str:
        return f"{self.label}[{i}]"

    def open(self, i: int) -> Image.Image:
        a = np.asarray(self.array[i])
        if a.dtype.kind == "f":
            if not np.all(np.isfinite(a)) or a.min(initial=0) < 0 or a.max(initial=0) > 1:
                raise ImageReadError("float pixels outside [0, 1]")
            a = np.rint(a * 255).astype(np.uint8)
        if a.ndim == 3 and not self.channels_last:
            a = a.transpose(1, 2, 0)
        if a.ndim == 3 and a.shape[-1] == 1:
            a = a[..., 0]
        return Image.fromarray(np.ascontiguousarray(a))  # uint8: (H, W) is "L", (H, W, 3) "RGB"

    def header(self, i: int):
        img = self.open(i)
        return img.size, img.mode == "L"
