"""Figures for the demo and the results command (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402

from hvae_detect.persistence.atomic import atomic_write  # noqa: E402
from hvae_detect.reporting.metrics import labels_and_ood_scores  # noqa: E402


def draw_roc_curves(ax, curves: dict, title=""):
    """curves: {label: (normal_in, normal_out)}, normality scores (higher = more normal), drawn on ``ax``
    with OOD as the positive class."""
    for label, (s_in, s_out) in curves.items():
        fpr, tpr, _ = roc_curve(*labels_and_ood_scores(s_in, s_out))
        ax.plot(fpr, tpr, label=label, lw=1.2)
    ax.plot([0, 1], [0, 1], ":", color="grey", lw=1)
    ax.set(xlabel="false-positive rate", ylabel="true-positive rate", title=title)
    ax.legend(fontsize=7, loc="lower right")


def save_figure(fig, path):
    """tight_layout, then write ``path`` atomically (format from its suffix) and close the figure."""
    path = Path(path)
    fig.tight_layout()
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", dpi=110))
    finally:
        plt.close(fig)
