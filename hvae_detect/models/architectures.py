"""Architectures: the seed's JSON structures, presets, and their validation.

An architecture is a dict with two keys, exactly as the paper's command line
takes them, and optionally the model family:
  "model": "VAE" (alias "HVAE"; the default when absent: the bottom-up hierarchical VAE),
      "LVAE" (ladder VAE) or "BIVA" (bidirectional inference), as the paper's --model;
  "conditional_bu": true | false (BIVA only, default false as the paper's code: the bottom-up
      latent's prior also reads the top-down latent of its stage);
  "config_deterministic": one list of block dicts per stage, e.g.
      {"block": "ResBlockConv2d", "out_channels": 64, "kernel_size": 5,
       "stride": 2, "weightnorm": true, "gated": false}
      or {"block": "ResBlockDense", "out_features": 256, "weightnorm": true, "gated": false}
  "config_stochastic": one dict per stage, e.g.
      {"block": "GaussianConv2d" | "GaussianDense", "latent_features": 8, "weightnorm": true}
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

_CONV = {"block", "out_channels", "kernel_size", "stride", "weightnorm", "gated"}
_DENSE = {"block", "out_features", "weightnorm", "gated"}
_STOCH = {"block", "latent_features", "weightnorm"}
_TOP = {"config_deterministic", "config_stochastic", "model", "conditional_bu"}

# Model families as the paper's --model names them; "HVAE" is this package's name for "VAE".
MODEL_FAMILIES = ("VAE", "LVAE", "BIVA")
_FAMILY_ALIASES = {"VAE": "VAE", "HVAE": "VAE", "LVAE": "LVAE", "BIVA": "BIVA"}


def _conv(ch, k, s):
    return {"block": "ResBlockConv2d", "out_channels": ch, "kernel_size": k, "stride": s,
            "weightnorm": True, "gated": False}


def _seed_deterministic(ch, last_stride):
    return [
        [_conv(ch, 5, 1), _conv(ch, 5, 1), _conv(ch, 5, 2)],
        [_conv(ch, 3, 1), _conv(ch, 3, 1), _conv(ch, 3, 2)],
        [_conv(ch, 3, 1), _conv(ch, 3, 1), _conv(ch, 3, last_stride)],
    ]


PRESETS = {
    # The seed's FashionMNIST/MNIST command.
    "paper-mnist": {
        "config_deterministic": _seed_deterministic(64, 1),
        "config_stochastic": [
            {"block": "GaussianConv2d", "latent_features": 8, "weightnorm": True},
            {"block": "GaussianDense", "latent_features": 16, "weightnorm": True},
            {"block": "GaussianDense", "latent_features": 8, "weightnorm": True},
        ],
    },
    # The seed's CIFAR10/SVHN command.
    "paper-cifar": {
        "config_deterministic": _seed_deterministic(256, 2),
        "config_stochastic": [
            {"block": "GaussianConv2d", "latent_features": 128, "weightnorm": True},
            {"block": "GaussianConv2d", "latent_features": 64, "weightnorm": True},
            {"block": "GaussianDense", "latent_features": 32, "weightnorm": True},
        ],
    },
    # The seed's shape (conv latent, then two dense latents) at a width and depth
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
# The paper's code builds BIVA from the same --config_* structures (--model BIVA): the seed's
# stage configurations run through BIVA stages, and the "small" one for CPU budgets.
for _name, _base in (("biva-mnist", "paper-mnist"), ("biva-cifar", "paper-cifar"), ("biva-small", "small"),
                     ("lvae-small", "small")):
    PRESETS[_name] = {"model": _name.split("-")[0].upper(), **copy.deepcopy(PRESETS[_base])}
# BIVA at the reduced CPU layout of benchmarks/ood_table.py's Fashion-MNIST row (the seed's three
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


def model_family(name) -> str:
    """The canonical family ("VAE", "LVAE" or "BIVA") of a model name, case-insensitive ("HVAE" is "VAE")."""
    family = _FAMILY_ALIASES.get(name.upper()) if isinstance(name, str) else None
    if family is None:
        raise ValueError(f"model must be one of {sorted(_FAMILY_ALIASES)} (case-insensitive), got {name!r}")
    return family


def family_of(architecture: dict) -> str:
    """The family of a resolved architecture: its "model" key, "VAE" when absent (every older saved model)."""
    return model_family(architecture.get("model", "VAE"))


def json_text_or_file(value, flag: str):
    """A command-line JSON value: JSON text, or the path of a file holding it (as the paper's
    --config_* flags accept). Non-strings are returned as they are."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError as e:
        text_error = e
    path = Path(value).expanduser()
    try:
        is_file = not value.lstrip().startswith(("[", "{")) and path.is_file()
    except (OSError, ValueError):  # not a possible path (too long, NUL bytes)
        is_file = False
    if is_file:
        try:
            return json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{flag}: {path} does not hold valid JSON ({e})") from None
    raise ValueError(f"{flag}: neither valid JSON ({text_error}) nor the path of a JSON file: {value[:80]!r}")


def resolve_architecture(architecture) -> dict:
    """Return a validated deep copy of a preset name, a dict, or a JSON string (see the module docstring)."""
    if isinstance(architecture, str):
        if architecture in PRESETS:
            return copy.deepcopy(PRESETS[architecture])
        try:
            architecture = json.loads(architecture)
        except json.JSONDecodeError:
            raise ValueError(
                f"architecture must be one of {sorted(PRESETS)} or a dict/JSON with "
                f"'config_deterministic' and 'config_stochastic', got {architecture!r}") from None
    if not isinstance(architecture, dict):
        raise ValueError(f"architecture must be a preset name or a dict, got {type(architecture).__name__}")
    missing = {"config_deterministic", "config_stochastic"} - set(architecture)
    if missing:
        raise ValueError(f"architecture dict is missing {sorted(missing)}")
    _check_keys(architecture, _TOP, "architecture")
    arch = {
        "config_deterministic": copy.deepcopy(architecture["config_deterministic"]),
        "config_stochastic": copy.deepcopy(architecture["config_stochastic"]),
    }
    if "model" in architecture:  # kept only when given: older saved architectures stay as they were
        arch = {"model": model_family(architecture["model"]), **arch}
    if "conditional_bu" in architecture:
        if family_of(arch) != "BIVA":
            raise ValueError(f"architecture: 'conditional_bu' applies to the BIVA model only, not {family_of(arch)}")
        if not isinstance(architecture["conditional_bu"], bool):
            raise ValueError("architecture: 'conditional_bu' must be true or false, got "
                             f"{architecture['conditional_bu']!r}")
        arch["conditional_bu"] = architecture["conditional_bu"]
    validate_architecture(arch)
    return arch


def _check_keys(d, allowed, where):
    unknown = set(d) - allowed
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)}; allowed: {sorted(allowed)}")


def _positive_int(d, key, where):
    v = d.get(key)
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise ValueError(f"{where}: '{key}' must be a positive integer, got {v!r}")


def validate_architecture(arch: dict) -> None:
    det, sto = arch["config_deterministic"], arch["config_stochastic"]
    if not isinstance(det, list) or not isinstance(sto, list) or not sto:
        raise ValueError("config_deterministic and config_stochastic must be non-empty lists")
    if len(det) != len(sto):
        raise ValueError(f"need one deterministic stack per stochastic layer, got {len(det)} and {len(sto)}")
    for i, stage in enumerate(det):
        if not isinstance(stage, list):
            raise ValueError(f"config_deterministic[{i}] must be a list of block dicts")
        if not stage and family_of(arch) != "VAE":  # their merge blocks copy a stage's last block
            raise ValueError(f"config_deterministic[{i}] is empty: the {family_of(arch)} model needs at least one "
                             "block per stage")
        for j, blk in enumerate(stage):
            where = f"config_deterministic[{i}][{j}]"
            if not isinstance(blk, dict):
                raise ValueError(f"{where} must be a dict")
            if blk.get("block") == "ResBlockConv2d":
                _check_keys(blk, _CONV, where)
                for key in ("out_channels", "kernel_size"):
                    _positive_int(blk, key, where)
                if blk.get("stride", 1) not in (1, 2):
                    raise ValueError(f"{where}: stride must be 1 or 2, got {blk.get('stride')!r}")
                if blk["kernel_size"] % 2 == 0:
                    raise ValueError(f"{where}: kernel_size must be odd, got {blk['kernel_size']}")
            elif blk.get("block") == "ResBlockDense":
                _check_keys(blk, _DENSE, where)
                _positive_int(blk, "out_features", where)
            else:
                raise ValueError(f"{where}: block must be 'ResBlockConv2d' or 'ResBlockDense', got {blk.get('block')!r}")
    for i, layer in enumerate(sto):
        where = f"config_stochastic[{i}]"
        if not isinstance(layer, dict) or layer.get("block") not in ("GaussianConv2d", "GaussianDense"):
            raise ValueError(f"{where}: block must be 'GaussianConv2d' or 'GaussianDense'")
        _check_keys(layer, _STOCH, where)
        _positive_int(layer, "latent_features", where)
