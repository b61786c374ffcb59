"""Detection metrics with out-of-distribution as the positive class.

Every function takes scores where *higher means more out-of-distribution*
(for L or L>k pass their negation; LLR>k as is).
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve


def _labels_scores(scores_in, scores_out):
    scores_in, scores_out = np.asarray(scores_in, float), np.asarray(scores_out, float)
    if scores_in.size == 0 or scores_out.size == 0:
        raise ValueError("need at least one in-distribution and one out-of-distribution score")
    y = np.r_[np.zeros(scores_in.size), np.ones(scores_out.size)]
    s = np.r_[scores_in, scores_out]
    if not np.all(np.isfinite(s)):
        raise ValueError("scores must be finite")
    return y, s


def fpr_at_tpr(scores_in, scores_out, tpr: float) -> float:
    """False-positive rate at the first threshold reaching the given true-positive rate."""
    y, s = _labels_scores(scores_in, scores_out)
    fpr, tprs, _ = roc_curve(y, s)
    return float(fpr[np.searchsorted(tprs, tpr, side="left")])


def detection_metrics(scores_in, scores_out) -> dict:
    """AUROC, AUPRC (OOD positive), FPR at 80% and 95% TPR."""
    y, s = _labels_scores(scores_in, scores_out)
    return {
        "auroc": float(roc_auc_score(y, s)),
        "auprc": float(average_precision_score(y, s)),
        "fpr80": fpr_at_tpr(scores_in, scores_out, 0.8),
        "fpr95": fpr_at_tpr(scores_in, scores_out, 0.95),
    }


def ood_direction(statistic: str) -> int:
    """+1 when a larger value of the statistic means more OOD (LLR>k), -1 for bounds (L, L>k)."""
    return 1 if statistic.startswith("LLR") else -1
