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
TinyImageNetResize      tinyimagenet_resize.npz        none (npz only; test split only)          3 x 32 x 32
GTSRB                   gtsrb.npz                      none (npz only; test split only)          3 x 32 x 32
======================  =============================  ========================================  =============

("here" is ../shared/data; see its SOURCES.md.) The ``Grey`` suffix (colour sets) keeps 3 x 32 x 32.

Variants (as in the paper's code):

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
- ``Grey`` suffix (colour sets; the paper has ``DequantizedGrey``, ``QuantizedGrey``
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
their train split is an error that says so. TinyImageNetResize and GTSRB are test sets only
(OOD sets for colour models, not in the paper): ``"train"`` is refused by name, before any file
is read, and ``"validation"`` and ``"test"`` both give the file's ``x_test``.

Tiny ImageNet (resize): the 10,000 unlabelled Tiny ImageNet test images, the images of ODIN's
"TinyImageNet (resize)" OOD set, decoded from their 64 x 64 JPEGs (LOSSY) and resized to 32 x 32
with PIL bicubic; NOT ODIN's file byte for byte (its resize filter is undocumented); labels all 0.
GTSRB: the first 10,000 of the 12,630 GTSRB test images in the official order (a SUBSET), lossless
PPMs that their source resized to 32 x 32 with OpenCV's bilinear on the whole image (no ROI crop,
aspect ratio not kept); labels 0-42. Neither is downloaded: torchvision has no Tiny ImageNet loader,
and its GTSRB gives the variable-size originals, not these; SOURCES.md says how the files were made.

SVHN validation without ``extra``: an ``svhn.npz`` read for ``"validation"`` gives its
``x_extra`` array when it has one. If it holds only ``x_test`` (the ../shared/data copy:
10,000 test images), the test images are used INSTEAD and a warning (once per file)
names the file and the substitution: the numbers then differ from the paper's (SVHN's
authors call the extra images "somewhat less difficult"). A warning rather than an
error, because the paper's CIFAR10 commands name SVHN validation as an OOD set and this
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

import json
import os
import re
from dataclasses import dataclass
from typing import NamedTuple

VARIANTS = ("Binarized", "Quantized", "Dequantized")
SPLITS = ("train", "validation", "test")
DATA_ROOT_ENV = "HVAE_DETECT_DATA_ROOT"


class BaseInfo(NamedTuple):
    """How a base dataset is read and prepared (the first three fields as before: stem, loader, grey)."""

    stem: str  # local <stem>.npz
    loader: str | None  # torchvision class name, "SmallNORB" (official .mat files), or None
    grey: bool  # grey (1 channel) or colour (3 channels)
    size: tuple = (28, 28)  # (H, W) as loaded
    source_size: tuple | None = None  # (H, W) of the source images when they are resized to `size`
    resample: str | None = None  # PIL filter of that resize: "nearest" or "bilinear"
    invert: bool = False  # the paper's "Inverted": 255 - x (after the resize)
    dequant_levels: int = 256  # Dequantized: 256 -> (k + u) / 256; 3 -> (2 x + u) / 3 (paper's Omniglot)
    npz_inverted: bool = False  # the local npz is stored with 255 - x already applied
    test_only: bool = False  # a test set only (no train file, no download): "train" is refused by name


BASES = {
    "FashionMNIST": BaseInfo("fashion_mnist", "FashionMNIST", True),
    "MNIST": BaseInfo("mnist", "MNIST", True),
    "KMNIST": BaseInfo("kmnist", "KMNIST", True),
    "notMNIST": BaseInfo("notmnist", None, True),
    "Omniglot": BaseInfo("omniglot105", "Omniglot", True, (105, 105), dequant_levels=3),
    "Omniglot28x28": BaseInfo(
        "omniglot", "Omniglot", True, (28, 28), (105, 105), "nearest", dequant_levels=3, npz_inverted=True
    ),
    "Omniglot28x28Inverted": BaseInfo(
        "omniglot", "Omniglot", True, (28, 28), (105, 105), "nearest", invert=True, dequant_levels=3, npz_inverted=True
    ),
    "SmallNORB": BaseInfo("smallnorb", "SmallNORB", True, (96, 96)),
    "SmallNORB28x28": BaseInfo("smallnorb", "SmallNORB", True, (28, 28), (96, 96), "bilinear", dequant_levels=3),
    "SmallNORB28x28Inverted": BaseInfo(
        "smallnorb", "SmallNORB", True, (28, 28), (96, 96), "bilinear", invert=True, dequant_levels=3
    ),
    "CIFAR10": BaseInfo("cifar10", "CIFAR10", False, (32, 32)),
    "SVHN": BaseInfo("svhn", "SVHN", False, (32, 32)),
    "TinyImageNetResize": BaseInfo("tinyimagenet_resize", None, False, (32, 32), test_only=True),
    "GTSRB": BaseInfo("gtsrb", None, False, (32, 32), test_only=True),
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
    def info(self) -> BaseInfo:
        return BASES[self.base]

    @property
    def file_stem(self) -> str:
        return BASES[self.base].stem

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
        raise ValueError(
            f"unknown dataset {name!r}; expected <base><variant>[Grey] with base in {sorted(BASES)} "
            f"and variant in {list(VARIANTS)}, e.g. FashionMNISTBinarized or CIFAR10DequantizedGrey"
        )
    base, variant, grey = m.group("base"), m.group("variant"), m.group("grey") is not None
    colour = not BASES[base].grey
    if grey and not colour:
        raise ValueError(
            f"{name!r}: the Grey suffix applies to colour datasets "
            f"({', '.join(b for b, i in BASES.items() if not i.grey)}) only"
        )
    if variant == "Binarized" and colour:
        raise ValueError(f"{name!r}: Binarized is defined for the grey datasets only; use Quantized or Dequantized")
    return DatasetSpec(name, base, variant, grey)


def check_split(spec: DatasetSpec, split: str) -> None:
    """A ValueError for a split the data set does not have, naming the ones it has."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if split == "train" and spec.info.test_only:
        raise ValueError(
            f"{spec.name} is test-only: {spec.file_stem}.npz holds x_test and y_test and there is no "
            f"train split to supply; use split 'validation' or 'test' (both read x_test)"
        )


def parse_dataset_options(value) -> dict:
    """{"Name": {"dynamic": bool, "split": ...}} from a dict or the paper's JSON string; validated."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as e:
            raise ValueError(f"dataset JSON could not be parsed ({e}): {value!r}") from None
    if not isinstance(value, dict) or not value:
        raise ValueError(f"expected a non-empty JSON object of dataset names to options, got {value!r}")
    out = {}
    for name, opts in value.items():
        spec = parse_dataset_name(name)
        opts = dict(opts or {})
        unknown = set(opts) - {"dynamic", "split"}
        if unknown:
            raise ValueError(f"{name}: unknown options {sorted(unknown)}; allowed: dynamic, split")
        split = opts.get("split", "train")
        if split not in SPLITS:
            raise ValueError(f"{name}: split must be one of {SPLITS}, got {split!r}")
        check_split(spec, split)
        dynamic = opts.get("dynamic", split == "train")
        if not isinstance(dynamic, bool):
            raise ValueError(f"{name}: dynamic must be true or false, got {dynamic!r}")
        out[name] = {"dynamic": dynamic, "split": split}
    return out
