"""A fitted detector kept: in a model folder (no pickle) and through pickle (its model's state dict).

A detector folder is a model folder (``hvae_detect.persistence.checkpoints``) whose config.json
also holds "detector": {"params": the constructor's parameters, "fitted": the fitted attributes
other than the model}. A run folder of ``hvae-detect train`` opens as a detector too
(``checkpoints.detector_settings`` says with which parameters).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted

from hvae_detect.devices import resolve_device
from hvae_detect.persistence import checkpoints
from hvae_detect.scoring import reference, statistics

FITTED = ("likelihood_", "offset_", "threshold_params_", "threshold_calibration_", "scoring_seed_", "history_")
# How thresholds were set before threshold_calibration_ was saved.
IN_SAMPLE = "the contamination quantile of the images its references were fitted on (before calibration)"


def references_to_json(references: dict) -> dict:
    """The fitted references of the statistics (``hvae_detect.scoring.reference``) as JSON: their
    arrays as lists of floats (exact through JSON) beside their metadata; an unfitted one's reason as a string."""
    out = {}
    for name, fitted in references.items():
        if not reference.is_fitted(fitted):
            out[name] = fitted.reason
        else:
            arrays, meta = fitted.to_state()
            out[name] = {"meta": meta, "arrays": {key: value.tolist() for key, value in arrays.items()}}
    return out


def references_from_json(saved: dict) -> dict:
    return {
        name: reference.Unfitted(value)
        if isinstance(value, str)
        else reference.from_state(
            {key: np.asarray(v, dtype=np.float64) for key, v in value["arrays"].items()}, value["meta"]
        )
        for name, value in (saved or {}).items()
    }


def model_state(model) -> tuple:
    """What pickles a model: (its ModelConfig as JSON, its weights on the CPU, its device type)."""
    return (
        checkpoints.model_config(model),
        {k: v.detach().cpu() for k, v in model.state_dict().items()},
        next(model.parameters()).device.type,
    )


def model_from_state(state: tuple):
    """The model of ``model_state``, on its device again (the CPU when CUDA is gone), in eval mode."""
    config, weights, device_type = state
    model = checkpoints.build_model({"model": config})
    model.load_state_dict(weights)
    device = device_type if device_type != "cuda" or torch.cuda.is_available() else "cpu"
    return model.to(device).eval()


class Persistence:
    """``save`` and ``load`` of a detector (safetensors and JSON, no pickle), and pickling of an estimator
    whose ``model_`` is a parametrised module (weight norm), which pickles only through its state dict:
    ``model_state`` in, ``model_from_state`` out. The detector provides ``_check_params``, ``_set_model``
    and ``_set_offset``."""

    def save(self, path, overwrite=False):
        """Write ``path``/model.safetensors, config.json and manifest.json as one unit (no pickle). An
        existing detector folder is replaced only with ``overwrite=True``; a folder of anything else never."""
        check_is_fitted(self, "model_")
        return write_detector(path, self, overwrite)

    @classmethod
    def load(cls, path, device="auto", checkpoint="best"):
        """Open a detector written by ``save``, or a run folder written by ``hvae-detect train`` (its
        ``checkpoint``, "best" or "last"; such a detector has no references: it opens with the paper's
        statistic, "llr", and no threshold until ``set_threshold``). No pickle."""
        model, params, fitted, folder = read_detector(path, resolve_device(device), checkpoint)
        det = cls(**params)
        det._check_params()
        det._set_model(model, fitted["scoring_seed_"])
        det.offset_, det.threshold_params_ = None, None
        det.history_, det.references_ = fitted["history_"], fitted["references_"]
        for message in load_notes(det, fitted):
            warnings.warn(message, UserWarning, stacklevel=2)
        if fitted["offset_"] is not None:
            det._set_offset(float(fitted["offset_"]), str(folder / "config.json"))
            # a save from before a threshold parameter existed holds its one value then: the default
            det.threshold_params_ = {**det.threshold_params_, **(fitted.get("threshold_params_") or {})}
            det.threshold_calibration_ = fitted.get("threshold_calibration_") or IN_SAMPLE
        return det

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
        if getattr(self, "references_", None):  # pickled before reasons were Unfitted: they were strings
            self.references_ = {
                name: reference.Unfitted(held) if isinstance(held, str) else held
                for name, held in self.references_.items()
            }


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


def load_notes(detector, fitted: dict) -> list[str]:
    """What a user must know about a detector just read (and the changes made for it): a training run's
    detector has no references, so a statistic that reads one becomes the paper's "llr"; a threshold saved
    before calibration flags more than ``contamination`` of new normal images."""
    notes = []
    statistic = detector.statistic
    if not detector.references_ and fitted["offset_"] is None and statistics.get(statistic).reference is not None:
        detector.statistic = "llr" if detector.n_latents_ > 1 else "elbo"
        notes.append(
            f"this detector has no fitted references (a training run's), so it scores with "
            f"statistic={detector.statistic!r} instead of {statistic!r}; for {statistic!r}, "
            f"set_params(statistic={statistic!r}).set_threshold(X_inliers) fits them on your inliers"
        )
    if (
        fitted["offset_"] is not None
        and not fitted.get("threshold_calibration_")
        and statistics.get(detector.statistic).reference is not None
    ):
        notes.append(
            "this detector's threshold was set by an earlier version as " + IN_SAMPLE + ": it flags more "
            "than contamination of new normal images; refit, or set_threshold(X_inliers) to calibrate it"
        )
    return notes


def read_detector(path, device, checkpoint: str = "best"):
    """(model on ``device``, constructor parameters, fitted attributes, the model folder) of a detector
    folder or of a run folder's ``checkpoint``."""
    folder = checkpoints.resolve_model_dir(path, checkpoint)
    model, config = checkpoints.read_model_dir(folder, device)
    params, fitted = checkpoints.detector_settings(folder, config)
    fitted["references_"] = references_from_json(fitted.get("references_"))
    return model, params, fitted, folder
