"""The one on-disk format of a trained model: a folder with model.safetensors and config.json.

    config.json   {"format_version": 2,
                   "model": {"input_shape", "architecture", "likelihood", "n_mix", "activation",
                             "likelihood_head", "skip_stochastic", "q_dropout", "p_dropout",
                             "log_scale_min"}    (hvae_detect.models.config.ModelConfig.to_json),
                                  (the architecture's "model" key is the family, VAE / LVAE / BIVA;
                                   absent in folders of VAEs saved before the families existed)
                   "detector": {"params", "fitted"}       (written by HVAEOutlierDetector.save)
                   "training_state": {...}}                (written by hvae-detect train)
    model.safetensors         the state dict
    optimizer.safetensors     Adam moments and the training generator (training checkpoints only)
    manifest.json             SHA-256 of each file above, written last; the folder is written and
                              replaced as one unit (hvae_detect.persistence.atomic.write_folder) and checked on load

A training run keeps such folders as <run>/checkpoints/best and <run>/checkpoints/last
beside run.json (the run's data and settings). Nothing is pickled: tensors go through
safetensors, everything else through JSON.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from hvae_detect.models.base import HierarchicalModel
from hvae_detect.models.config import ModelConfig
from hvae_detect.models.registry import make_model
from hvae_detect.persistence.atomic import recover_folder, verify_folder, write_folder
from hvae_detect.training.config import TrainingConfig

FORMAT_VERSION = 2
CHECKPOINTS = ("best", "last")


def model_config(model: HierarchicalModel) -> dict:
    """What rebuilds ``model`` (of any family) before its weights are loaded: config.json's "model"."""
    return model.config.to_json()


def build_model(config: dict) -> HierarchicalModel:
    """The model of a config.json (its "model" section; keys older folders lack take ModelConfig's defaults)."""
    return make_model(ModelConfig.from_json(config["model"]))


def write_model_dir(folder, model: HierarchicalModel, sections: dict, extra_tensors: dict | None = None) -> Path:
    """Write model.safetensors, config.json (the model section plus ``sections``) and, when given,
    optimizer.safetensors as one unit with a manifest of checksums (``hvae_detect.persistence.atomic.write_folder``)."""
    weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    config = {"format_version": FORMAT_VERSION, "model": model_config(model), **sections}
    text = json.dumps(config, indent=2, allow_nan=False)
    files = {
        "model.safetensors": lambda tmp: save_file(weights, tmp),
        "config.json": lambda tmp: Path(tmp).write_text(text),
    }
    if extra_tensors is not None:
        files["optimizer.safetensors"] = lambda tmp: save_file(extra_tensors, tmp)
    return write_folder(folder, files)


OWN_FILES = {"model.safetensors", "config.json", "optimizer.safetensors", "manifest.json"}


def check_writable_model_dir(folder, overwrite: bool) -> None:
    """Refuse to replace a saved model without ``overwrite``, and to write into a folder of other files."""
    folder = Path(folder)
    if not folder.exists():
        return
    if not folder.is_dir():
        raise ValueError(f"{folder} exists and is not a folder")
    present = {p.name for p in folder.iterdir()}
    foreign = present - OWN_FILES
    if foreign or ("config.json" in present and "model.safetensors" not in present):
        raise ValueError(
            f"{folder} holds files that hvae-detect did not write ({', '.join(sorted(foreign or present))});"
            " save into a new or empty folder"
        )
    if present and not overwrite:
        raise ValueError(f"{folder} already holds a saved model; pass overwrite=True to replace it")


def read_config(folder) -> dict:
    """config.json of a model folder in the current format (older formats are converted)."""
    folder = Path(folder)
    path = folder / "config.json"
    if path.is_file():
        version = _read_json(path).get("format_version")
        if version == FORMAT_VERSION:
            verify_folder(folder)  # every file of the set complete and unchanged
            return _read_json(path)
        config = _read_json(path)
        if version == 1 and "params" in config:  # a detector saved by hvae-detect 0.1
            p, f = config["params"], config["fitted"]
            return {
                "format_version": FORMAT_VERSION,
                "model": {
                    "input_shape": f["image_shape_"],
                    "architecture": p["architecture"],
                    "likelihood": f["likelihood_"],
                    "n_mix": p["n_mix"],
                },
                "detector": {"params": p, "fitted": f},
            }
        raise ValueError(f"{path}: unsupported format_version {version!r}; this version reads {FORMAT_VERSION} and 1")
    run_json = folder.parent.parent / "run.json"
    if (folder / "state.json").is_file() and run_json.is_file():  # a checkpoint of an hvae-detect 0.1 run
        run = _read_json(run_json)
        return {
            "format_version": FORMAT_VERSION,
            "model": {k: run[k] for k in ("input_shape", "architecture", "likelihood", "n_mix")},
            "training_state": _read_json(folder / "state.json"),
        }
    raise ValueError(f"{folder} is not a saved model: config.json is missing")


def read_model_dir(folder, device="cpu") -> tuple[HierarchicalModel, dict]:
    """(model with its weights, in eval mode on ``device``; config) of a model folder.

    Checks the manifest's checksums (format 2) and that every weight is finite; a file that
    fails is named in the ValueError.
    """
    folder = Path(folder)
    config = read_config(folder)
    weights = folder / "model.safetensors"
    if not weights.is_file():
        raise ValueError(f"{folder} is not a saved model: model.safetensors is missing")
    model = build_model(config)
    model.load_state_dict(_load_weights(weights))
    return model.to(device).eval(), config


def _load_weights(path: Path) -> dict:
    try:
        state = load_file(path)
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types for truncated files
        raise ValueError(f"{path} cannot be read as safetensors ({type(e).__name__}: {e})") from None
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise ValueError(f"{path} holds NaN or infinite weights ({', '.join(bad[:3])}); refusing to load it")
    return state


def resolve_model_dir(path, checkpoint: str = "best") -> Path:
    """The model folder that ``path`` names: itself, or a run folder's checkpoints/<checkpoint>."""
    path = Path(path)
    recover_folder(path)
    if checkpoint not in CHECKPOINTS:
        raise ValueError(f"checkpoint must be one of {CHECKPOINTS}, got {checkpoint!r}")
    if (path / "run.json").is_file():
        folder = path / "checkpoints" / checkpoint
        recover_folder(folder)
        if not (folder / "model.safetensors").is_file():
            raise ValueError(
                f"run {path} has no '{checkpoint}' checkpoint ({folder / 'model.safetensors'} is "
                f"missing); pick another with --checkpoint / checkpoint="
            )
        return folder
    if (path / "config.json").is_file() or (path / "state.json").is_file():
        return path
    if not path.exists():
        raise ValueError(
            f"{path} does not exist, so it is neither a run folder (run.json) nor a saved model "
            "(config.json): check the path"
        )
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
    """A model folder plus optimizer.safetensors (Adam moments, generator state), written as one unit;
    ``state`` (epoch, history, ...) goes into config.json as "training_state"."""
    tensors, meta = _optimizer_to_tensors(optimizer)
    tensors["rng.generator"] = generator.get_state().cpu()
    return write_model_dir(folder, model, {"training_state": {**state, "optimizer": meta}}, extra_tensors=tensors)


def load_checkpoint(folder, model, optimizer=None, generator=None) -> dict:
    """Load weights (and optimizer and generator state) into place; returns the training state."""
    folder = Path(folder)
    config = read_config(folder)
    model.load_state_dict(_load_weights(folder / "model.safetensors"))
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


def detector_settings(folder, config: dict) -> tuple[dict, dict]:
    """(constructor parameters, fitted attributes) of the detector a model folder holds: a saved
    detector's own (older names converted), or for a training run's checkpoint the model's options,
    the run's training settings and seed, no threshold, and its training history."""
    if "detector" in config:
        params, fitted = dict(config["detector"]["params"]), config["detector"]["fitted"]
        if "score" in params:  # written by hvae-detect 0.1
            params["statistic"] = params.pop("score")
            params["iw_samples_lk"] = params.get("iw_samples_lk") or params["iw_samples"]
        if params.get("image_shape") is not None:
            params["image_shape"] = tuple(params["image_shape"])
        return params, fitted
    run = run_config_of(folder) or {}
    m = ModelConfig.from_json(config["model"])
    params = {
        "architecture": m.architecture,
        "likelihood": m.likelihood,
        "n_mix": m.n_mix,
        "activation": m.activation,
        "likelihood_head": m.likelihood_head,
        "log_scale_min": m.log_scale_min,
        "random_state": run.get("seed"),
        **{k: run[k] for k in TrainingConfig.field_names() if k in run},
    }
    fitted = {
        "scoring_seed_": run.get("seed", 0),
        "offset_": None,
        "history_": config["training_state"].get("history", []),
    }
    return params, fitted
