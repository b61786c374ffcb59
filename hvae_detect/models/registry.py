"""The model families and the architecture presets, by name: what an architecture's "model" key
and ``make_model`` choose from.

A family is a ``HierarchicalModel`` subclass built from a ``ModelConfig``; adding one is its class
plus one ``register_family(name, cls)``, after which architectures, presets, the estimator, saved
folders and ``hvae-detect train --model`` all accept its name. "HVAE" is accepted on input as
this package's earlier name of the VAE; the canonical name is what configurations store.

The names and presets are read without importing torch (the command line's help shows them): the
package's own families are imported when a class is first asked for.
"""

from __future__ import annotations

import copy
import importlib

# The package's own families: name -> the module that defines the class of that name.
_BUILT_IN = {"VAE": "hvae_detect.models.vae", "LVAE": "hvae_detect.models.lvae", "BIVA": "hvae_detect.models.biva"}
_FAMILIES: dict[str, type | None] = dict.fromkeys(_BUILT_IN)  # None: not imported yet
ALIASES = {"HVAE": "VAE"}  # accepted on input only


def register_family(name: str, cls: type) -> None:
    """Make ``cls`` (a ``HierarchicalModel`` subclass) the family called ``name`` (compared
    case-insensitively) and set ``cls.family`` to it."""
    from hvae_detect.models.base import HierarchicalModel

    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"a family's name must be an identifier such as 'VAE', got {name!r}")
    if not (isinstance(cls, type) and issubclass(cls, HierarchicalModel)):
        raise ValueError(f"a family is a subclass of HierarchicalModel, got {cls!r}")
    if name.upper() in {n.upper() for n in (*_FAMILIES, *ALIASES)}:
        raise ValueError(f"the model name {name!r} is taken ({', '.join(model_names())})")
    if cls in _FAMILIES.values():
        raise ValueError(f"{cls.__name__} is already the {cls.family} family")
    _FAMILIES[name] = cls
    cls.family = name


def unregister_family(name: str) -> None:
    """Forget the family ``name`` that ``register_family`` added."""
    family = model_family(name)
    if family in _BUILT_IN:
        raise ValueError(f"{family} is one of the package's own families and stays registered")
    del _FAMILIES[family]


def family_names() -> tuple[str, ...]:
    """The registered families' canonical names."""
    return tuple(_FAMILIES)


def model_names() -> tuple[str, ...]:
    """Every name a model is asked for by (the families and their aliases), as --model lists them."""
    return tuple(n for family in _FAMILIES for n in (family, *sorted(a for a, f in ALIASES.items() if f == family)))


def model_family(name) -> str:
    """The canonical family of a model name, case-insensitive ("HVAE" is "VAE")."""
    if isinstance(name, str):
        upper = name.upper()
        for family in _FAMILIES:
            if family.upper() == upper:
                return family
        if upper in ALIASES:
            return ALIASES[upper]
    raise ValueError(f"model must be one of {list(model_names())} (case-insensitive), got {name!r}")


def family_class(name) -> type:
    """The class of the family called ``name``."""
    family = model_family(name)
    if _FAMILIES[family] is None:
        _FAMILIES[family] = getattr(importlib.import_module(_BUILT_IN[family]), family)
    return _FAMILIES[family]


def make_model(config):
    """The model a ``hvae_detect.models.config.ModelConfig`` describes, of its architecture's family."""
    return family_class(config.family)(config)


# ---- presets ----------------------------------------------------------------------------------


def _conv(ch, k, s):
    return {
        "block": "ResBlockConv2d",
        "out_channels": ch,
        "kernel_size": k,
        "stride": s,
        "weightnorm": True,
        "gated": False,
    }


def _seed_deterministic(ch, last_stride):
    return [
        [_conv(ch, 5, 1), _conv(ch, 5, 1), _conv(ch, 5, 2)],
        [_conv(ch, 3, 1), _conv(ch, 3, 1), _conv(ch, 3, 2)],
        [_conv(ch, 3, 1), _conv(ch, 3, 1), _conv(ch, 3, last_stride)],
    ]


PRESETS = {
    # The paper's FashionMNIST/MNIST command.
    "paper-mnist": {
        "config_deterministic": _seed_deterministic(64, 1),
        "config_stochastic": [
            {"block": "GaussianConv2d", "latent_features": 8, "weightnorm": True},
            {"block": "GaussianDense", "latent_features": 16, "weightnorm": True},
            {"block": "GaussianDense", "latent_features": 8, "weightnorm": True},
        ],
    },
    # The paper's CIFAR10/SVHN command.
    "paper-cifar": {
        "config_deterministic": _seed_deterministic(256, 2),
        "config_stochastic": [
            {"block": "GaussianConv2d", "latent_features": 128, "weightnorm": True},
            {"block": "GaussianConv2d", "latent_features": 64, "weightnorm": True},
            {"block": "GaussianDense", "latent_features": 32, "weightnorm": True},
        ],
    },
    # The paper's shape (conv latent, then two dense latents) at a width and depth
    # that trains in minutes on two CPU cores.
    "small": {
        "config_deterministic": [
            [_conv(32, 5, 1), _conv(32, 5, 2)],
            [_conv(32, 3, 1), _conv(32, 3, 2)],
            [_conv(32, 3, 1)],
        ],
        "config_stochastic": [
            {"block": "GaussianConv2d", "latent_features": 8, "weightnorm": True},
            {"block": "GaussianDense", "latent_features": 16, "weightnorm": True},
            {"block": "GaussianDense", "latent_features": 8, "weightnorm": True},
        ],
    },
}
# One latent: a dense bottleneck of 100 dimensions under three stride-2 residual blocks (32x32 -> 4x4),
# the narrow one-level VAE of Huang, He & Lui (2024) in this package's blocks. Its posterior-mean path
# cannot carry every detail of an image, which is what makes that path's norms separate colour images.
PRESETS["bottleneck"] = {
    "config_deterministic": [[_conv(32, 3, 2), _conv(64, 3, 2), _conv(128, 3, 2)]],
    "config_stochastic": [{"block": "GaussianDense", "latent_features": 100, "weightnorm": True}],
}
# The paper's code builds BIVA from the same --config_* structures (--model BIVA): the paper's
# stage configurations run through BIVA stages, and the "small" one for CPU budgets.
for _name, _base in (
    ("biva-mnist", "paper-mnist"),
    ("biva-cifar", "paper-cifar"),
    ("biva-small", "small"),
    ("lvae-small", "small"),
):
    PRESETS[_name] = {"model": _name.split("-")[0].upper(), **copy.deepcopy(PRESETS[_base])}
# BIVA at the reduced CPU layout of benchmarks/paper/ood_table.py's Fashion-MNIST row (the paper's three
# stages and latents, one 3x3 block per stage, 16/32/32 channels): the HVAE row's model as BIVA.
PRESETS["biva-reduced-grey"] = {
    "model": "BIVA",
    "config_deterministic": [[_conv(16, 3, 2)], [_conv(32, 3, 2)], [_conv(32, 3, 1)]],
    "config_stochastic": [
        {"block": "GaussianConv2d", "latent_features": 8, "weightnorm": True},
        {"block": "GaussianDense", "latent_features": 16, "weightnorm": True},
        {"block": "GaussianDense", "latent_features": 8, "weightnorm": True},
    ],
}
