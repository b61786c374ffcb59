"""Where a data set's raw images come from: local .npz files, torchvision's files or download,
the official small NORB .mat files (names and sources: ``hvae_detect.data.dataset_names``)."""

from __future__ import annotations

import gzip
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch

from hvae_detect.data.dataset_names import (
    DATA_ROOT_ENV,
    DatasetNotFound,
    DatasetSpec,
    check_split,
    default_data_root,
    parse_dataset_name,
)

# the paper's torchvision folders below its data root
_TORCHVISION_SUBDIR = {"CIFAR10": "CIFAR10", "SVHN": "SVHN"}

# the official small NORB image files (https://cs.nyu.edu/~ylclab/data/norb-v1.0-small/), in <root>/smallNORB/
SMALLNORB_DIR = "smallNORB"
SMALLNORB_FILES = {
    "train": "smallnorb-5x46789x9x18x6x2x96x96-training-dat.mat",
    "test": "smallnorb-5x01235x9x18x6x2x96x96-testing-dat.mat",
}

_warned: set = set()


def _warn_once(key, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, UserWarning, stacklevel=3)


# ---- raw arrays ------------------------------------------------------------------------------


def _as_nchw(x: np.ndarray) -> np.ndarray:
    if x.dtype != np.uint8:
        raise ValueError(f"expected uint8 images, got {x.dtype}")
    if x.ndim == 3:
        return x[:, None]
    if x.ndim == 4 and x.shape[-1] in (1, 3):
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    if x.ndim == 4 and x.shape[1] in (1, 3):
        return x
    raise ValueError(f"cannot read images of shape {x.shape}")


def _npz_key(path: Path, files, spec: DatasetSpec, split: str) -> str:
    if split == "train":
        return "x_train"
    if split == "validation" and spec.base == "SVHN":  # the paper's SVHN validation split is `extra`
        if "x_extra" in files:
            return "x_extra"
        if "x_test" in files:
            _warn_once(
                ("svhn-extra", str(path.resolve())),
                f"{path} has no x_extra: {spec.name} split 'validation' is SVHN's `extra` split in the "
                f"paper's code, but this file has no extra split, so its x_test "
                f"(SVHN test images) is used INSTEAD; numbers can differ from the paper's. Add x_extra to "
                f"the file, or remove it so torchvision's extra_32x32.mat is read or downloaded.",
            )
    return "x_test"


def _from_npz(path: Path, split: str, spec: DatasetSpec) -> np.ndarray:
    try:
        f = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path} cannot be read as an .npz of uint8 images ({type(e).__name__}: {e})") from None
    with f:
        key = _npz_key(path, f.files, spec, split)
        if key not in f.files:
            have = [k for k in f.files if k.startswith("x_")]
            raise ValueError(
                f"{path} holds {have} but not {key}: the {split!r} split of {spec.name} is not "
                f"available locally (this copy is test-only); use split 'validation'/'test' or supply "
                f"a full copy"
            )
        x = f[key]
    if spec.info.loader == "SmallNORB" and x.ndim == 4 and x.shape[1] == 2:  # (pairs, 2, H, W) -> left, right, ...
        x = x.reshape(-1, *x.shape[2:])
    return _as_nchw(x)


def _read_norb_mat(path: Path) -> np.ndarray:
    """A small NORB binary matrix file of bytes (magic 0x1E3D4C55): (pairs, 2, 96, 96) -> (2 * pairs, 96, 96)."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    magic, ndim = np.frombuffer(raw[:8], "<i4")
    if magic != 0x1E3D4C55:
        raise ValueError(f"{path} is not a small NORB byte matrix (magic {magic:#x}, expected 0x1e3d4c55)")
    dims = np.frombuffer(raw[8 : 8 + 4 * max(int(ndim), 3)], "<i4")[:ndim].tolist()
    data = np.frombuffer(raw, np.uint8, offset=8 + 4 * max(int(ndim), 3))
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path}: header says {dims} but holds {data.size} bytes")
    return data.reshape(-1, dims[-2], dims[-1])


def _smallnorb_files(root: Path, split: str, errors: list) -> np.ndarray | None:
    name = SMALLNORB_FILES["train" if split == "train" else "test"]
    for cand in (root / SMALLNORB_DIR / name, root / SMALLNORB_DIR / (name + ".gz")):
        if cand.is_file():
            return _read_norb_mat(cand)[:, None]
    errors.append(f"no {root / SMALLNORB_DIR / name}[.gz]")
    return None


def _torchvision_dataset(key: str, split: str, root: str, download: bool):
    import torchvision.datasets as tvd

    train = split == "train"
    if key == "SVHN":
        return tvd.SVHN(root, split={"train": "train", "validation": "extra", "test": "test"}[split], download=download)
    if key == "Omniglot":
        return tvd.Omniglot(root, background=train, download=download)
    return getattr(tvd, key)(root, train=train, download=download)


def _torchvision_arrays(ds, key: str) -> np.ndarray:
    if key == "Omniglot":  # 105x105 PIL images, black strokes on white (0/255)
        return np.stack([np.asarray(ds[i][0].convert("L")) for i in range(len(ds))])[:, None]
    data = ds.data
    data = data.numpy() if isinstance(data, torch.Tensor) else np.asarray(data)
    if key == "SVHN":  # already (N, 3, H, W)
        return np.ascontiguousarray(data.astype(np.uint8))
    return _as_nchw(data.astype(np.uint8))


def _resize(x: np.ndarray, size: tuple, resample: str) -> np.ndarray:
    """Each (1, H, W) image resized with PIL, as torchvision's Resize((h, w), NEAREST/BILINEAR) on a PIL image."""
    from PIL import Image

    flt = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR}[resample]
    h, w = size
    return np.stack([np.asarray(Image.fromarray(img[0]).resize((w, h), flt)) for img in x])[:, None]


def _fit_size(x: np.ndarray, spec: DatasetSpec, where: str) -> np.ndarray:
    info = spec.info
    hw = tuple(x.shape[-2:])
    if hw == tuple(info.size):
        return x
    if info.source_size is not None and hw == tuple(info.source_size):
        return _resize(x, info.size, info.resample)
    expected = [info.size] + ([info.source_size] if info.source_size else [])
    raise ValueError(
        f"{where} holds {hw[0]}x{hw[1]} images; {spec.display_base} needs "
        + " or ".join(f"{h}x{w}" for h, w in expected)
    )


def _offline_message(spec: DatasetSpec, root: Path, split: str, errors: list[str]) -> str:
    stem, loader, where = spec.file_stem, spec.info.loader, root.resolve()
    key = "x_train" if split == "train" else "x_test"
    if spec.base == "SVHN" and split == "validation":
        key = "x_extra (SVHN's extra split; x_test is used instead with a warning)"
    h, w = spec.info.source_size or spec.info.size
    shape = f" of shape (N, {h}, {w})" if spec.info.grey else f" of shape (N, {h}, {w}, 3)"
    if loader == "SmallNORB":
        shape = f" of shape (48600, {h}, {w}) (stereo pairs as consecutive images)"
    arrays = (
        f"uint8 x_test{shape} and its labels y_test"
        if spec.info.test_only
        else f"uint8 arrays x_train, y_train, x_test, y_test; at least {key}{shape}"
    )
    msg = (
        f"{spec.name} ({split} split) not found. Put {stem}.npz ({arrays}) in {where} "
        f"(pass --data_root DIR or set {DATA_ROOT_ENV})"
    )
    if loader == "SmallNORB":
        name = SMALLNORB_FILES["train" if split == "train" else "test"]
        msg += (
            f", or the official small NORB file {name} (or .gz; from "
            f"https://cs.nyu.edu/~ylclab/data/norb-v1.0-small/) in {where / SMALLNORB_DIR} "
            f"(torchvision has no SmallNORB loader; nothing is downloaded)"
        )
    elif loader is not None:
        msg += f", or torchvision's {loader} files under {where}, or allow a download"
    elif spec.info.test_only:
        msg += (
            f". There is no torchvision download for {spec.base}, so nothing is downloaded; "
            f"../shared/data/SOURCES.md says how the file was made"
        )
    else:
        msg += " (torchvision has no loader for this dataset)"
    return msg + ". Tried: " + "; ".join(errors)


def load_raw(name_or_spec, split: str = "train", data_root=None, download: bool = True) -> np.ndarray:
    """uint8 (N, C, H, W) images of a dataset before its variant's preprocessing.

    Applies the base dataset's resize (Omniglot28x28, SmallNORB28x28) and polarity (Inverted). A Grey
    name gives the COLOUR images here: the paper's grey conversion follows the dequantisation, so it is
    part of :func:`preprocess`. ``split`` "validation" is the paper's held-out split (SVHN: extra).
    """
    spec = name_or_spec if isinstance(name_or_spec, DatasetSpec) else parse_dataset_name(name_or_spec)
    check_split(spec, split)
    info = spec.info
    root = Path(data_root if data_root is not None else default_data_root())
    npz = root / f"{spec.file_stem}.npz"
    errors = []
    x, where = None, None
    if npz.is_file():
        x, where = _from_npz(npz, split, spec), str(npz)
    else:
        errors.append(f"no {npz}")
        if info.loader == "SmallNORB":
            x, where = _smallnorb_files(root, split, errors), str(root / SMALLNORB_DIR)
        elif info.loader is not None:
            sub = _TORCHVISION_SUBDIR.get(info.loader)
            tries = [(root, False)] + ([(root / sub, False)] if sub and (root / sub).is_dir() else [])
            tries += [(root, True)] if download else []
            for r, dl in tries:
                try:
                    ds = _torchvision_dataset(info.loader, split, str(r), dl)
                    x, where = _torchvision_arrays(ds, info.loader), f"torchvision {info.loader} under {r}"
                    break
                except Exception as e:  # noqa: BLE001 - torchvision raises RuntimeError, URLError, OSError...
                    errors.append(
                        f"torchvision {info.loader}{' download' if dl else ''} in {r}: {type(e).__name__}: {e}"[:300]
                    )
        if x is None:
            raise DatasetNotFound(_offline_message(spec, root, split, errors))
    stored_inverted = info.npz_inverted and where == str(npz)
    if where == str(npz) and spec.base.startswith("Omniglot28x28") and x.size and np.any((x > 0) & (x < 255)):
        _warn_once(
            ("omniglot-resize", str(npz.resolve())),
            f"{npz} is not 0/255-valued: it was not resized from 105x105 with nearest neighbour as the "
            f"paper's Omniglot28x28 is (../shared/data's copy was resized with interpolation, see its "
            f"SOURCES.md), so strokes and likelihoods differ from the paper's. Without this file, "
            f"torchvision's Omniglot files are read and resized as the paper does.",
        )
    x = _fit_size(x, spec, where)
    if info.invert != stored_inverted:
        x = 255 - x
    return x
