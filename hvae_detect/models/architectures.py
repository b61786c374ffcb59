"""Architectures: the paper's JSON structures and their validation (the presets are in
``hvae_detect.models.registry``, with the families).

An architecture is a dict with two keys, exactly as the paper's command line
takes them, and optionally the model family:
  "model": a registered family, as the paper's --model: "VAE" (alias "HVAE"; the default when
      absent: the bottom-up hierarchical VAE), "LVAE" (ladder VAE) or "BIVA" (bidirectional inference);
  a family's own true/false keys (its ``architecture_flags``): "conditional_bu" (BIVA, default
      false as the paper's code: the bottom-up latent's prior also reads the top-down latent of its stage);
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

from hvae_detect.models.registry import PRESETS, family_class, family_names, model_family

_CONV = {"block", "out_channels", "kernel_size", "stride", "weightnorm", "gated"}
_DENSE = {"block", "out_features", "weightnorm", "gated"}
_STOCH = {"block", "latent_features", "weightnorm"}
_TOP = {"config_deterministic", "config_stochastic", "model"}

AUTO = "auto"  # the estimator's architecture="auto": ``auto_preset`` picks by the images

__all__ = [
    "AUTO",
    "PRESETS",
    "auto_preset",
    "family_of",
    "json_text_or_file",
    "model_family",
    "resolve_architecture",
    "validate_architecture",
    "with_family",
]


def family_of(architecture: dict) -> str:
    """The family of a resolved architecture: its "model" key, "VAE" when absent (every older saved model)."""
    return model_family(architecture.get("model", "VAE"))


def auto_preset(input_shape, hierarchical: bool = False) -> str:
    """The preset that architecture="auto" picks for images of ``input_shape`` (C, H, W).

    Colour images get "bottleneck", a one-level VAE whose narrow dense latent cannot carry every
    detail of an image, so that its latent path's norms separate other kinds of images (Huang, He &
    Lui 2024); the hierarchical "small" did not on colour images
    (benchmarks/results/2026-12-06-colour-default.md). Grey images, and any statistic that needs a
    hierarchy (``hierarchical``: L>k, LLR>k), get "small".
    """
    return "bottleneck" if input_shape[0] == 3 and not hierarchical else "small"


def with_family(architecture, model: str | None) -> dict:
    """``architecture`` resolved, its family set to ``model`` (a --model value) when given; a preset or
    dict that already names another family is refused rather than silently changed."""
    arch = resolve_architecture(architecture)
    if model is None:
        return arch
    family = model_family(model)
    if "model" in arch and arch["model"] != family:
        raise ValueError(
            f"the architecture is a {arch['model']} model but the model asked for is {family}; give one of them"
        )
    if family != "VAE" or "model" in arch:
        arch = {"model": family, **{k: v for k, v in arch.items() if k != "model"}}
    return resolve_architecture(arch)


def _family_flags() -> dict[str, list[str]]:
    """{architecture key: the families that take it} of the families' own true/false keys."""
    flags: dict[str, list[str]] = {}
    for family in family_names():
        for flag in family_class(family).architecture_flags:
            flags.setdefault(flag, []).append(family)
    return flags


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
                f"'config_deterministic' and 'config_stochastic', got {architecture!r}"
            ) from None
    if not isinstance(architecture, dict):
        raise ValueError(f"architecture must be a preset name or a dict, got {type(architecture).__name__}")
    missing = {"config_deterministic", "config_stochastic"} - set(architecture)
    if missing:
        raise ValueError(f"architecture dict is missing {sorted(missing)}")
    flags = _family_flags()
    _check_keys(architecture, _TOP | set(flags), "architecture")
    arch = {
        "config_deterministic": copy.deepcopy(architecture["config_deterministic"]),
        "config_stochastic": copy.deepcopy(architecture["config_stochastic"]),
    }
    if "model" in architecture:  # kept only when given: older saved architectures stay as they were
        arch = {"model": model_family(architecture["model"]), **arch}
    for flag in sorted(set(architecture) & set(flags)):
        if family_of(arch) not in flags[flag]:
            raise ValueError(
                f"architecture: '{flag}' applies to the {' and '.join(flags[flag])} model only, not {family_of(arch)}"
            )
        if not isinstance(architecture[flag], bool):
            raise ValueError(f"architecture: '{flag}' must be true or false, got {architecture[flag]!r}")
        arch[flag] = architecture[flag]
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
        if not stage and family_class(family_of(arch)).stage_blocks_required:
            raise ValueError(
                f"config_deterministic[{i}] is empty: the {family_of(arch)} model needs at least one block per stage"
            )
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
                raise ValueError(
                    f"{where}: block must be 'ResBlockConv2d' or 'ResBlockDense', got {blk.get('block')!r}"
                )
    for i, layer in enumerate(sto):
        where = f"config_stochastic[{i}]"
        if not isinstance(layer, dict) or layer.get("block") not in ("GaussianConv2d", "GaussianDense"):
            raise ValueError(f"{where}: block must be 'GaussianConv2d' or 'GaussianDense'")
        _check_keys(layer, _STOCH, where)
        _positive_int(layer, "latent_features", where)
