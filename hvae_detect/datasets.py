"""Datasets by the paper's names: FashionMNISTBinarized, CIFAR10Dequantized, SVHNDequantizedGrey, ...

A name is ``<base><variant>[Grey]``, following the dataset classes of the paper's code
(github JakobHavtorn/hvae-oodd, ``oodd/datasets``):

======================  =============================  ========================================  =============
base                    local file (``--data_root``)   then, in order                            C x H x W
======================  =============================  ========================================  =============
FashionMNIST            fashion_mnist.npz              torchvision FashionMNIST files, download  1 x 28 x 28
MNIST                   mnist.npz                      torchvision MNIST files, download         1 x 28 x 28
KMNIST                  kmnist.npz (test only here)    torchvision KMNIST files, download        1 x 28 x 28
notMNIST                notmnist.npz (test only)       none (npz only)                           1 x 28 x 28
Omniglot                omniglot105.npz                torchvision Omniglot files, download      1 x 105 x 105
Omniglot28x28           omniglot.npz (test only here)  torchvision Omniglot; 105 -> 28 nearest   1 x 28 x 28
Omniglot28x28Inverted   omniglot.npz (test only here)  same, then 255 - x                        1 x 28 x 28
SmallNORB               smallnorb.npz                  official .mat files in smallNORB/         1 x 96 x 96
SmallNORB28x28          smallnorb.npz                  the .mat files; 96 -> 28 bilinear         1 x 28 x 28
SmallNORB28x28Inverted  smallnorb.npz                  same, then 255 - x                        1 x 28 x 28
CIFAR10                 cifar10.npz                    torchvision CIFAR10 files, download       3 x 32 x 32
SVHN                    svhn.npz (test only here)      torchvision SVHN files, download          3 x 32 x 32
======================  =============================  ========================================  =============

("here" is ../shared/data; see its SOURCES.md.) The ``Grey`` suffix (CIFAR10, SVHN) keeps 3 x 32 x 32.

Variants (DESIGN.md, as in the paper's code):

- ``Binarized`` (grey sets only): each pixel is a Bernoulli draw with its
  grey level as probability. ``dynamic: true`` draws afresh every time a batch
  is used (training); ``dynamic: false`` makes ONE draw with a fixed seed derived
  from the dataset name, so every scoring run sees the same binary images.
  Thresholding is never used. (The paper's ``OmniglotBinarized`` is an alias of
  ``OmniglotQuantized``; the 105 x 105 images are 0/1, so a Bernoulli draw is the same.)
- ``Quantized``: x / 255.
- ``Dequantized``: (x + u) / 256 with u ~ U(0, 1) (fresh noise when dynamic,
  one fixed draw otherwise), EXCEPT for Omniglot, Omniglot28x28[Inverted] and
  SmallNORB28x28[Inverted], where the paper's code treats the data as 3-level:
  (2 x / 255 + u) / 3. The 96 x 96 ``SmallNORBDequantized`` is the 8-bit (x + u) / 256.
- ``Grey`` suffix (CIFAR10, SVHN; the paper has ``DequantizedGrey``, ``QuantizedGrey``
  is an extension): after the variant, as the paper's ``Grayscale(num_output_channels=3)``:
  luminance 0.2126 R + 0.7152 G + 0.0722 B of the (dequantised) colour image, then
  the sRGB -> linear expansion (v / 12.92 if v <= 0.04045, else ((v + 0.055) / 1.055) ** 2.4,
  which darkens the image), replicated to 3 identical channels so that a colour model
  scores it. This is NOT PIL's ``convert("L")`` (ITU-R 601-2), which main used before.

Splits, as the paper's code: ``"train"`` is the training split; ``"validation"`` is
the paper's held-out split: the test split of MNIST, FashionMNIST, KMNIST, notMNIST and
CIFAR10, Omniglot's evaluation set (train = background set), SmallNORB's testing file,
and SVHN's ``extra`` split (531,131 images). ``"test"`` reads the test split (for SVHN
its 26,032-image test split; elsewhere the same images as ``"validation"``). The
paper's ``ood-llr.py`` caps every set at the smallest set's size (10,000 with a CIFAR10
validation set), so its "SVHN test" rows are the first 10,000 images of ``extra``
(pass ``max_examples``/``--n_eval_examples`` for the same cap here). Several local files
hold only a test split (kmnist, notmnist, omniglot, svhn in ../shared/data); asking for
their train split is an error that says so.

SVHN validation without ``extra``: an ``svhn.npz`` read for ``"validation"`` gives its
``x_extra`` array when it has one. If it holds only ``x_test`` (the ../shared/data copy:
10,000 test images), the test images are used INSTEAD and a warning (once per file)
names the file and the substitution: the numbers then differ from the paper's (SVHN's
authors call the extra images "somewhat less difficult"). A warning rather than an
error, because the seed's CIFAR10 commands name SVHN validation as an OOD set and this
is the only SVHN data at hand; to get the paper's split, add ``x_extra`` to the npz or
remove the npz so that torchvision's ``extra_32x32.mat`` is read (or downloaded).

Omniglot polarity: torchvision's Omniglot images are black strokes on a white
background, and the paper's ``Omniglot``/``Omniglot28x28`` keep that, while
``Omniglot28x28Inverted`` applies 255 - x (white strokes on black, like MNIST).
The local ``omniglot.npz`` is stored ALREADY INVERTED (white on black), so
from that file ``Omniglot28x28Inverted`` is the array as stored and
``Omniglot28x28`` is 255 - x. The paper resizes 105 -> 28 with nearest neighbour,
which keeps the images 0/255; the ../shared/data copy was resized with interpolation
(SOURCES.md), so reading a non-binary ``omniglot.npz`` warns once that the strokes
differ from the paper's (torchvision's files are resized as the paper when no npz is there).
``omniglot105.npz`` (optional, x_train/x_test of shape (N, 105, 105)) holds the
images as torchvision gives them (black on white).

SmallNORB: torchvision has no loader, and nothing is downloaded. Put
``smallnorb.npz`` in the data root with uint8 ``x_train`` and ``x_test`` of shape
(48600, 96, 96) (each of the 24,300 stereo pairs as two consecutive images, left then
right, the order of the official ``-dat.mat`` files and of the paper's loader; (24300, 2, 96, 96)
is accepted too), or the official files
``smallnorb-5x46789x9x18x6x2x96x96-training-dat.mat`` and
``smallnorb-5x01235x9x18x6x2x96x96-testing-dat.mat`` (or their ``.gz``) in
``<data_root>/smallNORB/``, where the paper's code keeps them.
``SmallNORB28x28`` is PIL's bilinear resize of each image, as the paper's torchvision
``Resize``. The paper defines only ``SmallNORB28x28InvertedQuantized``; the Binarized
and Dequantized Inverted names are accepted by analogy with ``Omniglot28x28Inverted``.

Sources are tried in order: ``<data_root>/<file>.npz`` (arrays x_train,
y_train, x_test, y_test, uint8, grey N x H x W or colour N x H x W x 3), then
torchvision's own files under ``data_root`` (and under ``data_root/CIFAR10`` or
``data_root/SVHN``, the paper's folders), then torchvision's download into
``data_root``. Offline with nothing local, the error says which file to put where.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import zipfile
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from hvae_detect.inputs import binarize

VARIANTS = ("Binarized", "Quantized", "Dequantized")
SPLITS = ("train", "validation", "test")
DATA_ROOT_ENV = "HVAE_DETECT_DATA_ROOT"



class BaseInfo(NamedTuple):
    """How a base dataset is read and prepared (the first three fields as before: stem, loader, grey)."""

    stem: str                       # local <stem>.npz
    loader: str | None              # torchvision class name, "SmallNORB" (official .mat files), or None
    grey: bool                      # grey (1 channel) or colour (3 channels)
    size: tuple = (28, 28)          # (H, W) as loaded
    source_size: tuple | None = None  # (H, W) of the source images when they are resized to `size`
    resample: str | None = None     # PIL filter of that resize: "nearest" or "bilinear"
    invert: bool = False            # the paper's "Inverted": 255 - x (after the resize)
    dequant_levels: int = 256       # Dequantized: 256 -> (k + u) / 256; 3 -> (2 x + u) / 3 (paper's Omniglot)
    npz_inverted: bool = False      # the local npz is stored with 255 - x already applied


BASES = {
    "FashionMNIST": BaseInfo("fashion_mnist", "FashionMNIST", True),
    "MNIST": BaseInfo("mnist", "MNIST", True),
    "KMNIST": BaseInfo("kmnist", "KMNIST", True),
    "notMNIST": BaseInfo("notmnist", None, True),
    "Omniglot": BaseInfo("omniglot105", "Omniglot", True, (105, 105), dequant_levels=3),
    "Omniglot28x28": BaseInfo("omniglot", "Omniglot", True, (28, 28), (105, 105), "nearest",
                              dequant_levels=3, npz_inverted=True),
    "Omniglot28x28Inverted": BaseInfo("omniglot", "Omniglot", True, (28, 28), (105, 105), "nearest", invert=True,
                                      dequant_levels=3, npz_inverted=True),
    "SmallNORB": BaseInfo("smallnorb", "SmallNORB", True, (96, 96)),
    "SmallNORB28x28": BaseInfo("smallnorb", "SmallNORB", True, (28, 28), (96, 96), "bilinear", dequant_levels=3),
    "SmallNORB28x28Inverted": BaseInfo("smallnorb", "SmallNORB", True, (28, 28), (96, 96), "bilinear", invert=True,
                                       dequant_levels=3),
    "CIFAR10": BaseInfo("cifar10", "CIFAR10", False, (32, 32)),
    "SVHN": BaseInfo("svhn", "SVHN", False, (32, 32)),
}

# the paper's torchvision folders below its data root
_TORCHVISION_SUBDIR = {"CIFAR10": "CIFAR10", "SVHN": "SVHN"}

# the official small NORB image files (https://cs.nyu.edu/~ylclab/data/norb-v1.0-small/), in <root>/smallNORB/
SMALLNORB_DIR = "smallNORB"
SMALLNORB_FILES = {"train": "smallnorb-5x46789x9x18x6x2x96x96-training-dat.mat",
                   "test": "smallnorb-5x01235x9x18x6x2x96x96-testing-dat.mat"}

_warned: set = set()


def _warn_once(key, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, UserWarning, stacklevel=3)

_NAME_RE = re.compile(r"^(?P<base>.+?)(?P<variant>Binarized|Quantized|Dequantized)(?P<grey>Grey)?$")


class DatasetNotFound(FileNotFoundError):
    """No local file, no torchvision files and no download: says what to put where."""


@dataclass(frozen=True)
class DatasetSpec:
    """A parsed dataset name."""

    name: str
    base: str
    variant: str
    grey: bool = False

    @property
    def info(self) -> BaseInfo:
        return BASES[self.base]

    @property
    def file_stem(self) -> str:
        return BASES[self.base].stem

    def preprocess(self, x01: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """This dataset's variant (and Grey conversion) applied to x / 255."""
        return preprocess(x01, self.variant, generator, levels=self.info.dequant_levels, grey=self.grey)

    @property
    def display_base(self) -> str:
        """The name without its variant, e.g. 'FashionMNIST' or 'CIFAR10Grey'."""
        return self.base + ("Grey" if self.grey else "")


def default_data_root() -> str:
    return os.environ.get(DATA_ROOT_ENV, "./data")


def parse_dataset_name(name: str) -> DatasetSpec:
    """Split 'SVHNDequantizedGrey' into base 'SVHN', variant 'Dequantized', grey True."""
    m = _NAME_RE.match(name)
    if m is None or m.group("base") not in BASES:
        raise ValueError(f"unknown dataset {name!r}; expected <base><variant>[Grey] with base in {sorted(BASES)} "
                         f"and variant in {list(VARIANTS)}, e.g. FashionMNISTBinarized or CIFAR10DequantizedGrey")
    base, variant, grey = m.group("base"), m.group("variant"), m.group("grey") is not None
    colour = not BASES[base].grey
    if grey and not colour:
        raise ValueError(f"{name!r}: the Grey suffix applies to colour datasets (CIFAR10, SVHN) only")
    if variant == "Binarized" and colour:
        raise ValueError(f"{name!r}: Binarized is defined for the grey datasets only; use Quantized or Dequantized")
    return DatasetSpec(name, base, variant, grey)


def parse_dataset_options(value) -> dict:
    """{"Name": {"dynamic": bool, "split": ...}} from a dict or the seed's JSON string; validated."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as e:
            raise ValueError(f"dataset JSON could not be parsed ({e}): {value!r}") from None
    if not isinstance(value, dict) or not value:
        raise ValueError(f"expected a non-empty JSON object of dataset names to options, got {value!r}")
    out = {}
    for name, opts in value.items():
        parse_dataset_name(name)
        opts = dict(opts or {})
        unknown = set(opts) - {"dynamic", "split"}
        if unknown:
            raise ValueError(f"{name}: unknown options {sorted(unknown)}; allowed: dynamic, split")
        split = opts.get("split", "train")
        if split not in SPLITS:
            raise ValueError(f"{name}: split must be one of {SPLITS}, got {split!r}")
        dynamic = opts.get("dynamic", split == "train")
        if not isinstance(dynamic, bool):
            raise ValueError(f"{name}: dynamic must be true or false, got {dynamic!r}")
        out[name] = {"dynamic": dynamic, "split": split}
    return out


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
            _warn_once(("svhn-extra", str(path.resolve())),
                       f"{path} has no x_extra: {spec.name} split 'validation' is SVHN's `extra` split in the "
                       f"paper's code, but this file has no extra split, so its x_test "
                       f"(SVHN test images) is used INSTEAD; numbers can differ from the paper's. Add x_extra to "
                       f"the file, or remove it so torchvision's extra_32x32.mat is read or downloaded.")
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
            raise ValueError(f"{path} holds {have} but not {key}: the {split!r} split of {spec.name} is not "
                             f"available locally (this copy is test-only); use split 'validation'/'test' or supply "
                             f"a full copy")
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
    dims = np.frombuffer(raw[8:8 + 4 * max(int(ndim), 3)], "<i4")[:ndim].tolist()
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
    raise ValueError(f"{where} holds {hw[0]}x{hw[1]} images; {spec.display_base} needs "
                     + " or ".join(f"{h}x{w}" for h, w in expected))


def _offline_message(spec: DatasetSpec, root: Path, split: str, errors: list[str]) -> str:
    stem, loader, where = spec.file_stem, spec.info.loader, root.resolve()
    key = "x_train" if split == "train" else "x_test"
    if spec.base == "SVHN" and split == "validation":
        key = "x_extra (SVHN's extra split; x_test is used instead with a warning)"
    h, w = spec.info.source_size or spec.info.size
    shape = f" of shape (N, {h}, {w})" if spec.info.grey else f" of shape (N, {h}, {w}, 3)"
    if loader == "SmallNORB":
        shape = f" of shape (48600, {h}, {w}) (stereo pairs as consecutive images)"
    msg = (f"{spec.name} ({split} split) not found. Put {stem}.npz (uint8 arrays x_train, y_train, x_test, y_test; "
           f"at least {key}{shape}) in {where} (pass --data_root DIR or set {DATA_ROOT_ENV})")
    if loader == "SmallNORB":
        name = SMALLNORB_FILES["train" if split == "train" else "test"]
        msg += (f", or the official small NORB file {name} (or .gz; from "
                f"https://cs.nyu.edu/~ylclab/data/norb-v1.0-small/) in {where / SMALLNORB_DIR} "
                f"(torchvision has no SmallNORB loader; nothing is downloaded)")
    elif loader is not None:
        msg += f", or torchvision's {loader} files under {where}, or allow a download"
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
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
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
                    errors.append(f"torchvision {info.loader}{' download' if dl else ''} in {r}: "
                                  f"{type(e).__name__}: {e}"[:300])
        if x is None:
            raise DatasetNotFound(_offline_message(spec, root, split, errors))
    stored_inverted = info.npz_inverted and where == str(npz)
    if where == str(npz) and spec.base.startswith("Omniglot28x28") and x.size and np.any((x > 0) & (x < 255)):
        _warn_once(("omniglot-resize", str(npz.resolve())),
                   f"{npz} is not 0/255-valued: it was not resized from 105x105 with nearest neighbour as the "
                   f"paper's Omniglot28x28 is (../shared/data's copy was resized with interpolation, see its "
                   f"SOURCES.md), so strokes and likelihoods differ from the paper's. Without this file, "
                   f"torchvision's Omniglot files are read and resized as the paper does.")
    x = _fit_size(x, spec, where)
    if info.invert != stored_inverted:
        x = 255 - x
    return x


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


def preprocess(x01: torch.Tensor, variant: str, generator: torch.Generator | None = None, *,
               levels: int = 256, grey: bool = False) -> torch.Tensor:
    """Apply a variant to images in [0, 1] on the 256-level grid (x / 255).

    ``levels`` (Dequantized only): 256 gives (k + u) / 256; 3 gives the paper's Omniglot and SmallNORB28x28
    (2 x + u) / 3. ``grey`` then applies :func:`to_grey` (the paper's CIFAR10/SVHN ``DequantizedGrey``).
    """
    if variant == "Binarized":
        out = binarize(x01, generator)
    elif variant == "Quantized":
        out = x01
    elif variant == "Dequantized":
        u = torch.rand(x01.shape, generator=generator, device=x01.device, dtype=x01.dtype)
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

    def transform(self, batch: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Per-batch preprocessing for training (fresh Bernoulli / dequantisation noise)."""
        return self.spec.preprocess(batch, generator)

    def fixed(self) -> torch.Tensor:
        """The whole set preprocessed once with a fixed seed (evaluation sets)."""
        if self._fixed is None:
            gen = torch.Generator(device=self.x.device).manual_seed(fixed_seed(self.name, self.split, self.seed))
            self._fixed = self.spec.preprocess(self.x, gen)
        return self._fixed

    def to(self, device) -> "LoadedDataset":
        self.x = self.x.to(device)
        self._fixed = None if self._fixed is None else self._fixed.to(device)
        return self


def load_dataset(name: str, options: dict | None = None, data_root=None, download: bool = True,
                 max_examples: int | None = None, seed: int = 0) -> LoadedDataset:
    """Load and wrap a dataset by its paper name with {"dynamic", "split"} options."""
    spec = parse_dataset_name(name)
    opts = parse_dataset_options({name: options or {}})[name]
    raw = load_raw(spec, opts["split"], data_root, download)
    if max_examples is not None:
        raw = raw[:max_examples]
    x = torch.from_numpy(raw.astype(np.float32) / 255.0)
    return LoadedDataset(spec, opts["split"], opts["dynamic"], x, seed)
