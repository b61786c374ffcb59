"""The detector's threshold: ``offset_`` calibrated on images the statistics' references never saw, and
what reads it (``decision_function``, ``predict``). A mixin of ``HVAEOutlierDetector``, which supplies
``_engine_outputs``, ``_score_samples`` and ``_statistic_key`` (as PyOD's detectors fill in their base's
template methods)."""

from __future__ import annotations

import numbers
import warnings

import numpy as np
from sklearn.utils.validation import check_is_fitted

from hvae_detect.scoring import calibration, fitting, reference, statistics

# The parameters a threshold holds for: changing one of them needs a new threshold.
THRESHOLD_PARAMS = ("statistic", "k", "iw_samples", "iw_samples_lk", "scoring_precision")


class Thresholds:
    def _calibrate(self, X, source, rate=None, stacklevel=3):
        """Fit every statistic's reference on the images X and set ``offset_`` at the ``rate`` quantile
        (``contamination``) of scores their references did not see: each image is scored by references
        fitted without it (leave-one-out; ``hvae_detect.scoring.calibration`` says why). Returns those scores;
        a warning points ``stacklevel`` frames up (at the user's call)."""
        needs = statistics.outputs_needed([s.key for s in statistics.with_references()] + [self._statistic_key()])
        outputs = self._engine_outputs(X, needs)
        self.references_ = fitting.fit_references(outputs)
        rate = rate or (0.05 if self.contamination == "auto" else self.contamination)
        offset, info = calibration.threshold(
            statistics.get(self.statistic), outputs, self.k, rate, self.scoring_seed_, self.references_
        )
        if info["warning"]:
            warnings.warn(info["warning"], UserWarning, stacklevel=stacklevel)
        self._set_offset(offset, source)
        return info["scores"]

    def _set_offset(self, offset, source):
        if not np.isfinite(offset):
            raise ValueError(
                f"the threshold from {source} is {offset}: the model's scores are not finite "
                "(training diverged?); refit with a lower learning_rate"
            )
        self.offset_ = float(offset)
        self.threshold_params_ = {name: getattr(self, name) for name in THRESHOLD_PARAMS}
        self.threshold_calibration_ = calibration.DESCRIPTION

    def set_threshold(self, X, fpr=0.05):
        """Set ``offset_`` so that a fraction ``fpr`` of the held-out inliers X is predicted an outlier (after
        changing the statistic, k or the samples, or for a model loaded from a training run). A statistic
        whose reference this detector lacks (a training run's) has it fitted on X, calibrated as in ``fit``.
        Returns self."""
        check_is_fitted(self, "model_")
        if not (isinstance(fpr, numbers.Real) and 0 < fpr < 1):
            raise ValueError(f"fpr (the fraction of inliers to flag) must be in (0, 1), got {fpr!r}")
        statistic = statistics.get(self.statistic)
        if statistic.reference is not None and not reference.is_fitted(
            getattr(self, "references_", {}).get(statistic.name)
        ):
            self._calibrate(X, "the held-out inliers, each scored by references fitted without it", fpr)
            return self
        scores = self._score_samples(X)
        message = calibration.warning(statistic, len(scores), 0, fpr, images="held-out inliers")
        if message:
            warnings.warn(message, UserWarning, stacklevel=2)
        self._set_offset(calibration.quantile(scores, fpr), "the held-out inliers")
        return self

    def decision_function(self, X):
        """score_samples - offset_: negative for outliers."""
        check_is_fitted(self, "model_")
        return self._decision_function(X)

    def _decision_function(self, X):
        if self.offset_ is None:
            raise ValueError(
                "this detector has no threshold (offset_ is None: it was loaded from a training "
                "run); set one with set_threshold(X_inliers, fpr=...)"
            )
        now = {name: getattr(self, name) for name in THRESHOLD_PARAMS}
        if now != self.threshold_params_:
            raise ValueError(
                f"offset_ was set for {self.threshold_params_}, but the detector now uses {now}; "
                "set a threshold for the new setting with set_threshold(X_inliers, fpr=...) or fit again"
            )
        return self._score_samples(X) - self.offset_

    def predict(self, X):
        """+1 for inliers, -1 for outliers."""
        check_is_fitted(self, "model_")
        return np.where(self._decision_function(X) < 0, -1, 1)
