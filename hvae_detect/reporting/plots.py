"""Figures for the demo and the results command (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402

from hvae_detect.persistence.atomic import atomic_write  # noqa: E402


def draw_roc_curves(ax, curves: dict, title=""):
    """curves: {label: (scores_in, scores_out)} with higher score = more OOD, drawn on ``ax``."""
    for label, (s_in, s_out) in curves.items():
        y = np.r_[np.zeros(len(s_in)), np.ones(len(s_out))]
        fpr, tpr, _ = roc_curve(y, np.r_[s_in, s_out])
        ax.plot(fpr, tpr, label=label, lw=1.2)
    ax.plot([0, 1], [0, 1], ":", color="grey", lw=1)
    ax.set(xlabel="false-positive rate", ylabel="true-positive rate", title=title)
    ax.legend(fontsize=7, loc="lower right")


def plot_roc_curves(curves: dict, path, title="ROC curves (OOD = positive)"):
    fig, ax = plt.subplots(figsize=(5.5, 5))
    draw_roc_curves(ax, curves, title)
    save_figure(fig, path)


def plot_score_histograms(scores: dict, sets: dict, path):
    """One panel per statistic, one histogram per data set. scores: {set: {statistic: array}}."""
    stats = list(next(iter(scores.values())))
    fig, axes = plt.subplots(1, len(stats), figsize=(3.2 * len(stats), 3), squeeze=False)
    for ax, stat in zip(axes[0], stats):
        values = [scores[s][stat] for s in sets]
        lo, hi = np.percentile(np.concatenate(values), [0.5, 99.5])
        for s, v in zip(sets, values):
            ax.hist(np.clip(v, lo, hi), bins=40, range=(lo, hi), alpha=0.5, density=True, label=sets[s])
        ax.set_title(f"{stat} (nats)")
    axes[0][0].legend(fontsize=7)
    save_figure(fig, path)


def plot_reconstructions(inputs: np.ndarray, recons: np.ndarray, path, title=""):
    """Rows of inputs above their reconstructions; arrays (n, C, H, W) in [0, 1]."""
    n = len(inputs)
    fig, axes = plt.subplots(2, n, figsize=(1.1 * n, 2.5), squeeze=False)
    for j in range(n):
        for i, img in enumerate((inputs[j], recons[j])):
            ax = axes[i][j]
            ax.imshow(img.transpose(1, 2, 0).squeeze(-1) if img.shape[0] == 1 else img.transpose(1, 2, 0),
                      cmap="gray", vmin=0, vmax=1)
            ax.axis("off")
    axes[0][0].set_title("input", fontsize=7, loc="left")
    axes[1][0].set_title("reconstruction", fontsize=7, loc="left")
    fig.suptitle(title, fontsize=9)
    save_figure(fig, path)


def save_figure(fig, path):
    """tight_layout, then write ``path`` atomically (format from its suffix) and close the figure."""
    path = Path(path)
    fig.tight_layout()
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", dpi=110))
    finally:
        plt.close(fig)
