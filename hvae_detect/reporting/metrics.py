"""Detection metrics with out-of-distribution as the positive class.

Every function takes normality scores, oriented as scikit-learn's ``score_samples``: higher means
more normal (``hvae_detect.scoring.statistics.normality`` orients a statistic so). The metrics
themselves treat OOD as the positive class, so an AUROC of 1 means every OOD image scored below
every in-distribution image.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve


def labels_and_ood_scores(normal_in, normal_out) -> tuple[np.ndarray, np.ndarray]:
    """(labels with OOD = 1, scores with higher = more OOD) of two sets of normality scores."""
    normal_in, normal_out = np.asarray(normal_in, float), np.asarray(normal_out, float)
    if normal_in.size == 0 or normal_out.size == 0:
        raise ValueError("need at least one in-distribution and one out-of-distribution score")
    y = np.r_[np.zeros(normal_in.size), np.ones(normal_out.size)]
    s = -np.r_[normal_in, normal_out]
    if not np.all(np.isfinite(s)):
        raise ValueError("scores must be finite")
    return y, s


def fpr_at_tpr(normal_in, normal_out, tpr: float) -> float:
    """False-positive rate at the first threshold reaching the given true-positive rate."""
    y, s = labels_and_ood_scores(normal_in, normal_out)
    fpr, tprs, _ = roc_curve(y, s)
    return float(fpr[np.searchsorted(tprs, tpr, side="left")])


def detection_metrics(normal_in, normal_out) -> dict:
    """AUROC, AUPRC (OOD positive), FPR at 80% and 95% TPR."""
    y, s = labels_and_ood_scores(normal_in, normal_out)
    return {
        "auroc": float(roc_auc_score(y, s)),
        "auprc": float(average_precision_score(y, s)),
        "fpr80": fpr_at_tpr(normal_in, normal_out, 0.8),
        "fpr95": fpr_at_tpr(normal_in, normal_out, 0.95),
    }
