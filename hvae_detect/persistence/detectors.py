"""A fitted detector kept: in a model folder (no pickle) and through pickle (its model's state dict).

A detector folder is a model folder (``hvae_detect.persistence.checkpoints``) whose config.json
also holds "detector": {"params": the constructor's parameters, "fitted": the fitted attributes
other than the model}. A run folder of ``hvae-detect train`` opens as a detector too
(``checkpoints.detector_settings`` says with which parameters).
"""

from __future__ import annotations

import numpy as np
import torch

from hvae_detect.persistence import checkpoints
from hvae_detect.scoring import reference

FITTED = ("likelihood_", "offset_", "threshold_params_", "scoring_seed_", "history_")


def references_to_json(references: dict) -> dict:
    """The fitted references of the statistics (``hvae_detect.scoring.reference``) as JSON: their
    arrays as lists of floats (exact through JSON) beside their metadata; a reason stays a string."""
    out = {}
    for name, fitted in references.items():
        if isinstance(fitted, str):
            out[name] = fitted
        else:
            arrays, meta = fitted.to_state()
            out[name] = {"meta": meta, "arrays": {key: value.tolist() for key, value in arrays.items()}}
    return out


def references_from_json(saved: dict) -> dict:
    return {name: value if isinstance(value, str) else reference.from_state(
                {key: np.asarray(v, dtype=np.float64) for key, v in value["arrays"].items()}, value["meta"])
            for name, value in (saved or {}).items()}


def model_state(model) -> tuple:
    """What pickles a model: (its ModelConfig as JSON, its weights on the CPU, its device type)."""
    return (checkpoints.model_config(model), {k: v.detach().cpu() for k, v in model.state_dict().items()},
            next(model.parameters()).device.type)


def model_from_state(state: tuple):
    """The model of ``model_state``, on its device again (the CPU when CUDA is gone), in eval mode."""
    config, weights, device_type = state
    model = checkpoints.build_model({"model": config})
    model.load_state_dict(weights)
    device = device_type if device_type != "cuda" or torch.cuda.is_available() else "cpu"
    return model.to(device).eval()


class PicklesItsModel:
    """Pickling of an estimator whose ``model_`` is a parametrised module (weight norm), which pickles
    only through its state dict: ``model_state`` in, ``model_from_state`` out."""

    def __getstate__(self):
        state = dict(super().__getstate__())  # a copy: BaseEstimator returns the instance dict itself
        if "model_" in state:
            state["_model_state"] = model_state(state.pop("model_"))
        return state

    def __setstate__(self, state):
        saved = state.pop("_model_state", None)
        super().__setstate__(state)
        if saved is not None:
            self.model_ = model_from_state(saved)


def write_detector(path, detector, overwrite: bool):
    """Write a fitted detector's folder as one unit; an existing detector only with ``overwrite``."""
    checkpoints.check_writable_model_dir(path, overwrite)
    params = detector.get_params()
    params["architecture"] = detector.model_.architecture  # what "auto" chose, resolved
    params["random_state"] = detector.random_state if isinstance(detector.random_state, (int, type(None))) else None
    params["device"] = str(detector.device)
    fitted = {name: getattr(detector, name, None) for name in FITTED}
    fitted["image_shape_"] = list(detector.image_shape_)
    fitted["references_"] = references_to_json(getattr(detector, "references_", {}))
    return checkpoints.write_model_dir(path, detector.model_, {"detector": {"params": params, "fitted": fitted}})


def read_detector(path, device, checkpoint: str = "best"):
    """(model on ``device``, constructor parameters, fitted attributes, the model folder) of a detector
    folder or of a run folder's ``checkpoint``."""
    folder = checkpoints.resolve_model_dir(path, checkpoint)
    model, config = checkpoints.read_model_dir(folder, device)
    params, fitted = checkpoints.detector_settings(folder, config)
    fitted["references_"] = references_from_json(fitted.get("references_"))
    return model, params, fitted, folder
