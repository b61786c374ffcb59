"""The one on-disk format of a trained model: a folder with model.safetensors and config.json.

    config.json   {"format_version": 2,
                   "model": {"input_shape", "architecture", "likelihood", "n_mix"},
                   "detector": {"params", "fitted"}       (written by HVAEOutlierDetector.save)
                   "training_state": {...}}                (written by hvae-detect train)
    model.safetensors         the state dict
    optimizer.safetensors     Adam moments and the training generator (training checkpoints only)

A training run keeps such folders as <run>/checkpoints/best and <run>/checkpoints/last
beside run.json (the run's data and settings). Nothing is pickled: tensors go through
safetensors, everything else through JSON.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from hvae_detect.atomic import atomic_write, atomic_write_json
from hvae_detect.model import HierarchicalVAE

FORMAT_VERSION = 2
CHECKPOINTS = ("best", "last")


def model_config(model: HierarchicalVAE) -> dict:
    """What rebuilds ``model`` before its weights are loaded."""
    return {"input_shape": list(model.input_shape), "architecture": model.architecture,
            "likelihood": model.likelihood, "n_mix": model.n_mix}


def build_model(config: dict) -> HierarchicalVAE:
    m = config["model"]
    return HierarchicalVAE(tuple(m["input_shape"]), m["architecture"], m["likelihood"], m["n_mix"])


def write_model_dir(folder, model: HierarchicalVAE, sections: dict) -> Path:
    """Write model.safetensors and config.json (the model section plus ``sections``)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write(folder / "model.safetensors", lambda tmp: save_file(weights, tmp))
    atomic_write_json(folder / "config.json", {"format_version": FORMAT_VERSION, "model": model_config(model),
                                               **sections})
    return folder


def read_config(folder) -> dict:
    """config.json of a model folder in the current format (older formats are converted)."""
    folder = Path(folder)
    path = folder / "config.json"
    if path.is_file():
        config = _read_json(path)
        version = config.get("format_version")
        if version == FORMAT_VERSION:
            return config
        if version == 1 and "params" in config:  # a detector saved by hvae-detect 0.1
            p, f = config["params"], config["fitted"]
            return {"format_version": FORMAT_VERSION,
                    "model": {"input_shape": f["image_shape_"], "architecture": p["architecture"],
                              "likelihood": f["likelihood_"], "n_mix": p["n_mix"]},
                    "detector": {"params": p, "fitted": f}}
        raise ValueError(f"{path}: unsupported format_version {version!r}; this version reads {FORMAT_VERSION} "
                         "and 1")
    run_json = folder.parent.parent / "run.json"
    if (folder / "state.json").is_file() and run_json.is_file():  # a checkpoint of an hvae-detect 0.1 run
        run = _read_json(run_json)
        return {"format_version": FORMAT_VERSION,
                "model": {k: run[k] for k in ("input_shape", "architecture", "likelihood", "n_mix")},
                "training_state": _read_json(folder / "state.json")}
    raise ValueError(f"{folder} is not a saved model: config.json is missing")


def read_model_dir(folder, device="cpu") -> tuple[HierarchicalVAE, dict]:
    """(model with its weights, in eval mode on ``device``; config) of a model folder."""
    folder = Path(folder)
    config = read_config(folder)
    weights = folder / "model.safetensors"
    if not weights.is_file():
        raise ValueError(f"{folder} is not a saved model: model.safetensors is missing")
    model = build_model(config)
    model.load_state_dict(load_file(weights))
    return model.to(device).eval(), config


def resolve_model_dir(path, checkpoint: str = "best") -> Path:
    """The model folder that ``path`` names: itself, or a run folder's checkpoints/<checkpoint>."""
    path = Path(path)
    if checkpoint not in CHECKPOINTS:
        raise ValueError(f"checkpoint must be one of {CHECKPOINTS}, got {checkpoint!r}")
    if (path / "run.json").is_file():
        folder = path / "checkpoints" / checkpoint
        if not (folder / "model.safetensors").is_file():
            raise ValueError(f"run {path} has no '{checkpoint}' checkpoint ({folder / 'model.safetensors'} is "
                             f"missing); pick another with --checkpoint / checkpoint=")
        return folder
    if (path / "config.json").is_file() or (path / "state.json").is_file():
        return path
    raise ValueError(f"{path} is neither a run folder (run.json) nor a saved model (config.json)")


def run_config_of(folder) -> dict | None:
    """run.json of the run that a checkpoint folder belongs to, or None for a detector folder."""
    run_json = Path(folder).parent.parent / "run.json"
    return _read_json(run_json) if run_json.is_file() else None


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: cannot be read as JSON ({e})") from None


# ---- training checkpoints -------------------------------------------------------------

def _optimizer_to_tensors(opt: torch.optim.Optimizer):
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, st in sd["state"].items():
        for key, v in st.items():
            if torch.is_tensor(v):
                tensors[f"state.{pid}.{key}"] = v.detach().cpu().contiguous().reshape(v.shape)
            else:
                scalars[f"{pid}.{key}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _optimizer_from_tensors(opt: torch.optim.Optimizer, tensors: dict, meta: dict, device):
    state: dict = {}
    for name, v in tensors.items():
        if name.startswith("state."):
            _, pid, key = name.split(".", 2)
            state.setdefault(int(pid), {})[key] = v.to(device) if key in ("exp_avg", "exp_avg_sq") else v
    for name, v in meta["scalars"].items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = v
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_checkpoint(folder, model, optimizer, generator, state: dict) -> Path:
    """A model folder plus optimizer.safetensors (Adam moments, generator state); ``state`` (epoch,
    history, ...) goes into config.json as "training_state"."""
    folder = Path(folder)
    tensors, meta = _optimizer_to_tensors(optimizer)
    tensors["rng.generator"] = generator.get_state().cpu()
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / "optimizer.safetensors", lambda tmp: save_file(tensors, tmp))
    return write_model_dir(folder, model, {"training_state": {**state, "optimizer": meta}})


def load_checkpoint(folder, model, optimizer=None, generator=None) -> dict:
    """Load weights (and optimizer and generator state) into place; returns the training state."""
    folder = Path(folder)
    config = read_config(folder)
    model.load_state_dict(load_file(folder / "model.safetensors"))
    state = config.get("training_state")
    if state is None:
        raise ValueError(f"{folder} holds a model but no training state (not a training checkpoint)")
    if optimizer is not None or generator is not None:
        tensors = load_file(folder / "optimizer.safetensors")
        if optimizer is not None:
            _optimizer_from_tensors(optimizer, tensors, state["optimizer"], next(model.parameters()).device)
        if generator is not None:
            generator.set_state(tensors["rng.generator"])
    return state
