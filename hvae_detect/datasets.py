"""Datasets by the paper's names: FashionMNISTBinarized, CIFAR10Dequantized, SVHNDequantizedGrey, ...

A name is ``<base><variant>[Grey]``:

======================  ==============================  =========================
base                    local file (``--data_root``)    torchvision fallback
======================  ==============================  =========================
FashionMNIST            fashion_mnist.npz               FashionMNIST
MNIST                   mnist.npz                       MNIST
KMNIST                  kmnist.npz (test only here)     KMNIST
notMNIST                notmnist.npz (test only)        none (npz only)
Omniglot28x28           omniglot.npz (test only)        Omniglot, 105 -> 28 nearest
Omniglot28x28Inverted   omniglot.npz (test only)        Omniglot, 105 -> 28 nearest
CIFAR10                 cifar10.npz                     CIFAR10
SVHN                    svhn.npz (test only here)       SVHN
======================  ==============================  =========================

Variants (DESIGN.md, as in the paper's code):

- ``Binarized`` (grey 28x28 sets only): each pixel is a Bernoulli draw with its
  grey level as probability. ``dynamic: true`` draws afresh every time a batch
  is used (training); ``dynamic: false`` makes ONE draw with a fixed seed derived
  from the dataset name, so every scoring run sees the same binary images.
  Thresholding is never used.
- ``Quantized``: x / 255.
- ``Dequantized``: (x + u) / 256 with u ~ U(0, 1); fresh noise when dynamic,
  one fixed draw otherwise.
- ``Grey`` suffix (CIFAR10, SVHN): 1-channel luminance (ITU-R 601-2,
  0.299 R + 0.587 G + 0.114 B, bit-exact with PIL's ``convert("L")``).

Splits: ``"train"`` is the training split; ``"validation"`` and ``"test"`` are
both the test split (in the paper's code the held-out "validation" set of a
dataset with a test split *is* its test split). Several local files hold only
a test split (kmnist, notmnist, omniglot, svhn in ../shared/data); asking for
their train split is an error that says so.

Omniglot polarity: torchvision's Omniglot images are black strokes on a white
background, and the paper's ``Omniglot28x28`` keeps that, while
``Omniglot28x28Inverted`` applies 255 - x (white strokes on black, like MNIST).
The local ``omniglot.npz`` is stored ALREADY INVERTED (white on black), so
from that file ``Omniglot28x28Inverted`` is the array as stored and
``Omniglot28x28`` is 255 - x.

Sources are tried in order: ``<data_root>/<file>.npz`` (arrays x_train,
y_train, x_test, y_test, uint8, grey N x H x W or colour N x H x W x 3), then
torchvision's own files under ``data_root``, then torchvision's download into
``data_root``. Offline with nothing local, the error says which file to put where.
"""

from __future__ import annotations

import json
import os
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from hvae_detect.inputs import binarize

VARIANTS = ("Binarized", "Quantized", "Dequantized")
SPLITS = ("train", "validation", "test")
DATA_ROOT_ENV = "HVAE_DETECT_DATA_ROOT"

# base name -> (npz file stem, torchvision loader key, grey 28x28?)
BASES = {
    "FashionMNIST": ("fashion_mnist", "FashionMNIST", True),
    "MNIST": ("mnist", "MNIST", True),
    "KMNIST": ("kmnist", "KMNIST", True),
    "notMNIST": ("notmnist", None, True),
    "Omniglot28x28": ("omniglot", "Omniglot", True),
    "Omniglot28x28Inverted": ("omniglot", "Omniglot", True),
    "CIFAR10": ("cifar10", "CIFAR10", False),
    "SVHN": ("svhn", "SVHN", False),
}

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
    def file_stem(self) -> str:
        return BASES[self.base][0]

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
    colour = not BASES[base][2]
    if grey and not colour:
        raise ValueError(f"{name!r}: the Grey suffix applies to colour datasets (CIFAR10, SVHN) only")
    if variant == "Binarized" and colour:
        raise ValueError(f"{name!r}: Binarized is defined for the grey 28x28 datasets only; use Quantized or Dequantized")
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


def _from_npz(path: Path, split: str, name: str) -> np.ndarray:
    with np.load(path, allow_pickle=False) as f:
        key = "x_train" if split == "train" else "x_test"
        if key not in f.files:
            have = [k for k in f.files if k.startswith("x_")]
            raise ValueError(f"{path} holds {have} but not {key}: the {split!r} split of {name} is not available "
                             f"locally (this copy is test-only); use split 'validation'/'test' or supply a full copy")
        return _as_nchw(f[key])


def _torchvision_dataset(key: str, split: str, root: str, download: bool):
    import torchvision.datasets as tvd

    train = split == "train"
    if key == "SVHN":
        return tvd.SVHN(root, split="train" if train else "test", download=download)
    if key == "Omniglot":
        return tvd.Omniglot(root, background=train, download=download)
    return getattr(tvd, key)(root, train=train, download=download)


def _torchvision_arrays(ds, key: str) -> np.ndarray:
    if key == "Omniglot":  # 105x105 PIL images, black strokes on white; resize as the paper (nearest)
        from PIL import Image

        imgs = [np.asarray(ds[i][0].convert("L").resize((28, 28), Image.NEAREST)) for i in range(len(ds))]
        return np.stack(imgs)[:, None]
    data = ds.data
    data = data.numpy() if isinstance(data, torch.Tensor) else np.asarray(data)
    if key == "SVHN":  # already (N, 3, H, W)
        return np.ascontiguousarray(data.astype(np.uint8))
    return _as_nchw(data.astype(np.uint8))


def _offline_message(spec: DatasetSpec, root: Path, split: str, errors: list[str]) -> str:
    stem = spec.file_stem
    key = "x_train" if split == "train" else "x_test"
    msg = (f"{spec.name} ({split} split) not found. Put {stem}.npz (uint8 arrays x_train, y_train, x_test, y_test; "
           f"at least {key}) in {root.resolve()} (pass --data_root DIR or set {DATA_ROOT_ENV})")
    if BASES[spec.base][1] is not None:
        msg += f", or torchvision's {BASES[spec.base][1]} files under {root.resolve()}, or allow a download"
    else:
        msg += " (torchvision has no loader for this dataset)"
    return msg + ". Tried: " + "; ".join(errors)


def load_raw(name_or_spec, split: str = "train", data_root=None, download: bool = True) -> np.ndarray:
    """uint8 (N, C, H, W) images of a dataset before its variant's preprocessing.

    Applies the base dataset's polarity (Omniglot) and the Grey conversion.
    ``split`` "validation" and "test" both read the test split.
    """
    spec = name_or_spec if isinstance(name_or_spec, DatasetSpec) else parse_dataset_name(name_or_spec)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    root = Path(data_root if data_root is not None else default_data_root())
    npz = root / f"{spec.file_stem}.npz"
    errors = []
    x, source = None, None
    if npz.is_file():
        x, source = _from_npz(npz, split, spec.name), "npz"
    else:
        errors.append(f"no {npz}")
        tv_key = BASES[spec.base][1]
        if tv_key is not None:
            for dl in ((False, True) if download else (False,)):
                try:
                    ds = _torchvision_dataset(tv_key, split, str(root), dl)
                    x, source = _torchvision_arrays(ds, tv_key), "torchvision"
                    break
                except Exception as e:  # noqa: BLE001 - torchvision raises RuntimeError, URLError, OSError...
                    errors.append(f"torchvision {tv_key}{' download' if dl else ''}: {type(e).__name__}: {e}"[:300])
        if x is None:
            raise DatasetNotFound(_offline_message(spec, root, split, errors))
    if spec.base == "Omniglot28x28Inverted" and source == "torchvision":
        x = 255 - x
    elif spec.base == "Omniglot28x28" and source == "npz":
        x = 255 - x  # the local file is stored inverted (white strokes on black)
    if spec.grey:
        x = to_grey(x)
    return x


def to_grey(x: np.ndarray) -> np.ndarray:
    """(N, 3, H, W) uint8 -> (N, 1, H, W) luminance, exactly as PIL's convert('L') (torchvision's Grayscale)."""
    if x.shape[1] == 1:
        return x
    r, g, b = (x[:, i].astype(np.int64) for i in range(3))
    lum = (r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16  # ITU-R 601-2 in PIL's fixed point
    return lum.astype(np.uint8)[:, None]


# ---- preprocessing -----------------------------------------------------------------------------

def fixed_seed(name: str, split: str, seed: int = 0) -> int:
    """The seed of a non-dynamic dataset's single draw: fixed per (name, split, seed)."""
    return (zlib.crc32(f"{name}/{split}".encode()) + 1_000_003 * int(seed)) % (2**31 - 1)


def preprocess(x01: torch.Tensor, variant: str, generator: torch.Generator | None = None) -> torch.Tensor:
    """Apply a variant to images in [0, 1] on the 256-level grid (x / 255)."""
    if variant == "Binarized":
        return binarize(x01, generator)
    if variant == "Quantized":
        return x01
    if variant == "Dequantized":
        levels = torch.round(x01 * 255)
        u = torch.rand(x01.shape, generator=generator, device=x01.device, dtype=x01.dtype)
        return (levels + u) / 256
    raise ValueError(f"unknown variant {variant!r}")


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
        return preprocess(batch, self.spec.variant, generator)

    def fixed(self) -> torch.Tensor:
        """The whole set preprocessed once with a fixed seed (evaluation sets)."""
        if self._fixed is None:
            gen = torch.Generator(device=self.x.device).manual_seed(fixed_seed(self.name, self.split, self.seed))
            self._fixed = preprocess(self.x, self.spec.variant, gen)
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
