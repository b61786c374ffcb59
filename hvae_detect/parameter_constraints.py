"""The constraints on ``HVAEOutlierDetector``'s parameters, which scikit-learn's ``_validate_params``
checks (each parameter is documented once, in the estimator's docstring)."""

from __future__ import annotations

import torch
from sklearn.utils._param_validation import Integral, Interval, Real, StrOptions

from hvae_detect.kernels.layout import LOG_SCALE_MIN
from hvae_detect.models.base import HEADS
from hvae_detect.models.layers import ACTIVATIONS
from hvae_detect.precision import PRECISIONS
from hvae_detect.training.config import FREE_NATS_MODES


def _positive(kind):
    return Interval(kind, 1 if kind is Integral else 0, None, closed="left" if kind is Integral else "neither")


CONSTRAINTS = {
    "architecture": [str, dict],
    "likelihood": [StrOptions({"auto", "bernoulli", "dlogmix"})],
    "statistic": [str],  # a name in the statistics table, checked against it (statistics.get)
    **dict.fromkeys(
        ("k", "iw_samples", "iw_samples_lk", "batch_size", "train_samples", "n_mix"), [_positive(Integral)]
    ),
    "epochs": [_positive(Integral), StrOptions({"auto"})],
    "learning_rate": [_positive(Real), StrOptions({"auto"})],
    "free_nats": [Interval(Real, 0, None, closed="left")],
    **dict.fromkeys(
        ("free_nats_epochs", "warmup_epochs"), [Interval(Real, 0, None, closed="left"), StrOptions({"auto"})]
    ),
    "free_nats_mode": [StrOptions(set(FREE_NATS_MODES))],
    **dict.fromkeys(("data_init", "train_importance_weighted", "compile"), ["boolean"]),
    "activation": [StrOptions(set(ACTIVATIONS))],
    "likelihood_head": [StrOptions(set(HEADS))],
    "log_scale_min": [Interval(Real, LOG_SCALE_MIN, 0, closed="left")],
    "image_shape": [tuple, list, None],
    "contamination": [StrOptions({"auto"}), Interval(Real, 0, 0.5, closed="right")],
    "holdout": [Interval(Real, 0, 0.5, closed="left")],
    "device": [str, torch.device],
    **dict.fromkeys(("precision", "scoring_precision"), [StrOptions(set(PRECISIONS))]),
    "random_state": ["random_state"],
    "verbose": ["verbose"],
}
