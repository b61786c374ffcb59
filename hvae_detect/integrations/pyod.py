"""``HVAE``: the hierarchical-VAE detector as a PyOD detector (``pip install "hvae-detect[pyod]"``).

PyOD's conventions, not scikit-learn's: ``decision_function`` is an outlier score (higher = more
outlying: LLR>k with the estimator's defaults), ``labels_`` and ``predict`` are 0 for inliers and 1
for outliers, and ``contamination`` (the share of training images labelled outliers) sets
``threshold_`` on ``decision_scores_``. ``predict_proba``, ``predict_confidence`` and PyOD's score
combination and evaluation helpers come from PyOD's ``BaseDetector`` unchanged.

Images come as PyOD users hold them, one flattened image per row: (n, d) uint8 (0..255) or floats
in [0, 1], read as one grey channel when d is a square number, else shaped by the estimator's
``image_shape`` (e.g. ``(3, 32, 32)``); (n, H, W) and (n, C, H, W) arrays work too. Standardised
features (PyOD's ``standardizer``) are not images and are refused.
"""

from __future__ import annotations

import numbers

import numpy as np
from sklearn.base import clone
from sklearn.utils.validation import check_is_fitted

try:
    from pyod.models.base import BaseDetector
except ImportError as e:  # the optional extra is not installed
    raise ImportError(
        'hvae_detect.integrations.pyod needs PyOD, an optional extra: pip install "hvae-detect[pyod]"'
    ) from e

from hvae_detect.estimator import HVAEOutlierDetector


def _outlier_scores(normality) -> np.ndarray:
    """PyOD's orientation of the estimator's normality scores (``score_samples``): higher = more outlying."""
    return -np.asarray(normality, dtype=np.float64)


class HVAE(BaseDetector):
    """PyOD detector around ``HVAEOutlierDetector`` (Havtorn et al., ICML 2021).

    Parameters
    ----------
    estimator : HVAEOutlierDetector or None, default=None
        The detector to train, with its architecture, statistic, k, epochs, image_shape, device ...
        It is cloned in ``fit`` (the fitted copy is ``estimator_``); its parameters are reachable
        as ``estimator__<name>`` in ``get_params`` / ``set_params``. None: ``HVAEOutlierDetector()``.
    contamination : float in (0, 0.5], default=0.1
        Share of new normal images to label outliers: the estimator's ``contamination``, whose calibrated
        ``offset_`` gives ``threshold_`` (``estimator_.predict(X) == -1`` exactly where ``predict(X) == 1``).
        Training images the model was fitted on score as more normal, so fewer of them are labelled.

    Attributes
    ----------
    estimator_ : HVAEOutlierDetector
        The fitted detector; keep it with ``estimator_.save(path)`` and wrap it again with
        ``HVAE.from_fitted(HVAEOutlierDetector.load(path), X_train)``.
    decision_scores_ : ndarray of shape (n_train,)
        Outlier scores of the training images (higher = more outlying).
    threshold_ : float
        ``decision_scores_`` above it are labelled outliers: ``-estimator_.offset_``.
    labels_ : ndarray of shape (n_train,)
        0 for inliers, 1 for outliers among the training images.
    """

    def __init__(self, estimator=None, contamination=0.1):
        super().__init__(contamination=contamination)
        self.estimator = estimator

    def fit(self, X, y=None):
        """Train the hierarchical VAE on images X (y is ignored, as in every unsupervised PyOD detector)."""
        if self.estimator is not None and not isinstance(self.estimator, HVAEOutlierDetector):
            raise ValueError(f"estimator must be an HVAEOutlierDetector or None, got {type(self.estimator).__name__}")
        self._set_n_classes(y)
        estimator = clone(self.estimator) if self.estimator is not None else HVAEOutlierDetector()
        if isinstance(self.contamination, numbers.Real):
            estimator.set_params(contamination=self.contamination)
        self.estimator_ = estimator.fit(X)
        self.decision_scores_ = _outlier_scores(estimator.train_score_samples_)
        self._process_decision_scores()
        # The threshold is the estimator's, calibrated on its held-out images scored by references fitted
        # without each (PyOD's own, a quantile of every training image's score, would mix in images the
        # model and the references were fitted on, and flag more than contamination of new images).
        self.threshold_ = -float(estimator.offset_)
        self.labels_ = (self.decision_scores_ > self.threshold_).astype(int)
        return self

    def decision_function(self, X):
        """Outlier score of each image, higher = more outlying: minus the estimator's ``score_samples``
        (LLR>k in nats with its defaults, -L for statistic="elbo", -L>k for "lk")."""
        check_is_fitted(self, ["estimator_", "decision_scores_"])
        return _outlier_scores(self.estimator_.score_samples(X))

    @classmethod
    def from_fitted(cls, estimator, X, contamination=0.1):
        """A fitted ``HVAE`` around an already fitted ``HVAEOutlierDetector`` (one opened with
        ``HVAEOutlierDetector.load``, say): the scores of the images X (other inliers; its training images
        score as more normal than new ones) become ``decision_scores_``, and ``threshold_`` and ``labels_``
        follow from ``contamination`` as in PyOD (that share of X labelled). The estimator is used as it
        is; its own ``offset_`` is not changed."""
        if not isinstance(estimator, HVAEOutlierDetector):
            raise ValueError(f"estimator must be a fitted HVAEOutlierDetector, got {type(estimator).__name__}")
        check_is_fitted(estimator, "model_")
        detector = cls(estimator=estimator, contamination=contamination)
        detector._set_n_classes(None)
        detector.estimator_ = estimator
        detector.decision_scores_ = _outlier_scores(estimator.score_samples(X))
        detector._process_decision_scores()
        return detector
