"""Thresholds of normality scores from scores the references did not see.

A statistic with a reference (``hvae_detect.scoring.reference``) has it fitted on the held-out training
images, and scored by it those images look more normal than fresh ones: a Gaussian of d columns (plain
covariance) fitted on n images puts them at a mean squared distance of d, fresh images at
d (n + 1) / (n - d - 2). The contamination quantile of their own scores flagged far more than
``contamination`` of fresh normal images (issue 35; at 0.05: 0.67-0.75 of them with 10 held-out
images, 0.19-0.24 with 40, 0.08 with 200). Here each held-out image is scored by a reference fitted
without it (leave-one-out, ``DEFAULT``), and the threshold is the quantile of those scores; the
references kept, and scored with, are still the ones fitted on every held-out image.

Why leave-one-out (benchmarks/quality/threshold_calibration.py: one small model per data set, Fashion-MNIST
and CIFAR10, held-out sets of n = 10..200 drawn 50 times, 2,000 fresh test images): at n >= 40, for
Fused, FusedECOD, Path, PathCOPOD and T, its mean flagged share was 0.039-0.057 and its spread (sd
0.027) that of an oracle taking the quantile of n other images (0.046-0.062, sd 0.027). It draws
nothing, so the threshold is a function of the held-out images alone. Ten folds did as well
(0.039-0.061) and are used above ``LOO_MAX`` images, where n refits grow costly (leave-one-out took
2-4 s at 1,000 images on 2 shared cores); a split in two spread wider (sd 0.036) and flagged 0.15-0.20
at n = 10; the Gaussian's closed form (``analytic_loo``) matched from n = 40 but flagged 0.12-0.14 at 10.
The quantile rule (``QUANTILE``) matters as much: numpy's default ("linear") puts the 5% quantile of
n scores between the two lowest for n <= 20, and flagged 0.12-0.13 of fresh images at n = 10 and
0.070-0.077 at n = 40 even with no reference (LLR>1); "weibull", the p (n + 1)-th smallest, flags p
on average wherever p (n + 1) >= 1 (LLR>1: 0.051-0.054 at n = 40; leave-one-out with "linear":
0.050-0.074 at n >= 40).

Below ``min_images`` the threshold is not trusted (``warning``): at n = 20-30 leave-one-out flagged
0.018-0.046 for Fused and Path (their lowest out-of-sample scores are those of the images most unlike
the rest), and the quantile of so few images spreads widely (sd up to 0.056, a seed above 0.12 in up
to 10% of draws).
"""

from __future__ import annotations

import math

import numpy as np

from hvae_detect.scoring import fitting, reference, statistics

# What ``threshold`` does by default, as detectors record it (``threshold_calibration_``).
DESCRIPTION = "the contamination quantile (weibull) of leave-one-out scores of the held-out images"
METHODS = ("in-sample", "split", "folds", "loo", "analytic")
DEFAULT = "loo"
QUANTILE = "weibull"
LOO_MAX = 1000  # above it, "loo" refits on FOLDS folds instead (n refits of n images grow as n^2)
FOLDS = 10
# The bound: QUANTILE_TAIL / contamination held-out images for the quantile (two expected below it: 40 at
# 0.05, where every statistic met the targets), and REFERENCE_FACTOR per column of a reference
# (Fused, d = 15, met them at 40 = 2.7 d and not at 20 = 1.3 d; 3 leaves a margin for larger d).
REFERENCE_FACTOR = 3
QUANTILE_TAIL = 2


def quantile(scores, contamination: float, rule: str = QUANTILE) -> float:
    """The ``contamination`` quantile of ``scores`` (``np.percentile`` with ``method=rule``)."""
    return float(np.percentile(np.asarray(scores, dtype=np.float64), 100.0 * contamination, method=rule))


def _subset(outputs: dict, index) -> dict:
    return {name: np.asarray(v)[index] for name, v in outputs.items()}


def _normality(statistic, outputs: dict, k: int, fitted) -> np.ndarray:
    return statistic.normality(statistic.value(outputs, k, {statistic.name: fitted}))


def n_rows(outputs: dict) -> int:
    return len(next(iter(outputs.values())))


def dimension(statistic, outputs: dict) -> int:
    """d: the number of columns the statistic's reference models (1 for a statistic without one)."""
    return 1 if statistic.reference is None else int(statistic.columns(_subset(outputs, slice(0, 1))).shape[1])


def fold_of(n: int, folds: int, seed: int) -> np.ndarray:
    """(n,) fold number of each image: ``folds`` folds of near-equal size, drawn with ``seed``."""
    fold = np.empty(n, dtype=np.int64)
    fold[np.random.default_rng(seed).permutation(n)] = np.arange(n) % folds
    return fold


def out_of_fold(statistic, outputs: dict, k: int, folds: int, seed: int) -> np.ndarray:
    """(n,) normality of each image under a reference fitted on the images outside its fold (``folds`` = n:
    leave-one-out)."""
    n = n_rows(outputs)
    fold, scores = fold_of(n, folds, seed), np.empty(n)
    for f in range(folds):
        inside = fold == f
        fitted = fitting.fit_reference(statistic, _subset(outputs, ~inside))
        scores[inside] = _normality(statistic, _subset(outputs, inside), k, fitted)
    return scores


def analytic_loo(statistic, outputs: dict, k: int, fitted) -> np.ndarray:
    """(n,) leave-one-out normality in closed form from the reference fitted on all n images.

    Typicality: exact (the mean and std without the image). Gaussian: exact for a plain covariance
    (squared distance D -> n D / (n - 1 - D), Sherman-Morrison), approximate with Ledoit-Wolf's: the
    shrunk part (1 - shrinkage) S gets the rank-one update, the shrinkage and the standardisation are
    kept. ECOD and COPOD: exact (the tail counts and skewness signs without the image), but no faster
    than refitting."""
    V = np.asarray(statistic.columns(outputs), dtype=np.float64)
    n = V.shape[0]
    if isinstance(fitted, reference.Typicality):
        u = V[:, 0] - fitted.mean_
        var = (n * fitted.std_**2 - n / (n - 1) * u**2) / (n - 1)
        score = -np.abs(n / (n - 1) * u) / np.sqrt(np.maximum(var, np.finfo(np.float64).tiny))
    elif isinstance(fitted, reference.Gaussian):
        D = -fitted.score(V)
        score = -n * D / np.maximum(n - 1 - (1 - fitted.shrinkage_) * D, 1e-12 * n)
    elif isinstance(fitted, (reference.ECOD, reference.COPOD)):
        loo, score = type(fitted)(), np.empty(n)
        loo.n_features_ = fitted.n_features_
        for i in range(n):  # the columns without row i: one searchsorted per column, O(n d) each
            rest = np.delete(V, i, axis=0)
            loo.sorted_ = np.stack(
                [np.delete(col, np.searchsorted(col, V[i, j])) for j, col in enumerate(fitted.sorted_.T)], axis=1
            )
            loo.skew_sign_ = np.sign(((rest - rest.mean(axis=0)) ** 3).mean(axis=0))
            score[i] = loo.score(V[i : i + 1])[0]
    else:
        raise ValueError(f"no closed-form leave-one-out for a {type(fitted).__name__} reference")
    return score  # a reference's score is the row's normality already


def min_images(d: int, contamination: float) -> int:
    """The fewest held-out images whose threshold is trusted: ``QUANTILE_TAIL`` expected images below
    the quantile, and ``REFERENCE_FACTOR`` images per column of a reference of d columns (d = 0: none)."""
    return max(math.ceil(QUANTILE_TAIL / contamination - 1e-9), REFERENCE_FACTOR * d)


def warning(statistic, n: int, d: int, contamination: float, images: str = "held-out images") -> str | None:
    """The message for a threshold set from n ``images`` below ``min_images``, else None. d: the columns
    of the statistic's reference when it was fitted on these images, 0 when it was not (a threshold
    from other inliers: only the quantile's bound applies)."""
    d = d if statistic.reference is not None else 0
    need = min_images(d, contamination)
    if n >= need:
        return None
    if d:
        what = f"a reference of d={d} columns fitted on them and contamination={contamination:g} need"
        simpler = f', or a statistic without a reference such as "llr" ({min_images(0, contamination)} images)'
    else:
        what, simpler = f"the contamination={contamination:g} quantile needs", ""
    return (
        f"the threshold of the statistic {statistic.name!r} comes from {n} {images}, fewer than the "
        f"{need} that {what}: the share of new normal images it flags may be far from {contamination:g}. "
        f"Use more training images or a larger holdout (at least {need} held-out images){simpler}, or set "
        f"the threshold on other inliers with set_threshold(X_inliers)."
    )


def threshold(
    statistic,
    outputs: dict,
    k: int,
    contamination: float,
    seed: int,
    references: dict | None = None,
    method: str = DEFAULT,
    folds: int = FOLDS,
    rule: str = QUANTILE,
) -> tuple[float, dict]:
    """(offset, info): the ``contamination`` quantile of the held-out images' normality, for a row of
    the statistics table (or its name) and the engine ``outputs`` of the held-out images ((n,) arrays).

    A row without a reference: the quantile of its normality. A row with one: of scores its reference
    did not see, by ``method`` ("loo": each image scored by a reference fitted without it, ``folds``
    folds instead above ``LOO_MAX`` images; "folds": ``folds`` folds; "analytic": ``analytic_loo``;
    "split": fitted on half, the quantile of the other half; "in-sample": the old, biased rule).
    ``references`` are those fitted on all n images (fitted here where missing; where
    ``fitting.fit_references`` left a ``reference.Unfitted`` instead, the statistic's ValueError).
    info: "method" (the one used), "n", "d", "scores" (the normality the quantile was taken of: the
    out-of-sample ones are what ``train_score_samples_`` should hold for the held-out images),
    "references" (those the offset belongs to: the split's half for "split", else ``references``) and
    "warning" (``warning``'s message or None). A fold whose reference cannot be fitted (too few images,
    a constant column) falls back to the in-sample quantile, with a warning that says so."""
    statistic = statistics.get(statistic) if isinstance(statistic, str) else statistic
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if not 0 < contamination < 1:
        raise ValueError(f"contamination must be in (0, 1), got {contamination!r}")
    n, references = n_rows(outputs), dict(references or {})
    d = dimension(statistic, outputs)
    info = {
        "method": "plain" if statistic.reference is None else method,
        "n": n,
        "d": d,
        "references": references,
        "warning": warning(statistic, n, d, contamination),
    }
    if statistic.reference is None:
        info["scores"] = statistic.normality(statistic.value(outputs, k))
        return quantile(info["scores"], contamination, rule), info
    fitted = references.get(statistic.name)
    if isinstance(fitted, reference.Unfitted):  # it could not be fitted: the statistic's own error says why
        statistic.value(outputs, k, references)
    if fitted is None:
        fitted = references[statistic.name] = fitting.fit_reference(statistic, outputs)
    try:
        if method == "loo":
            info["method"] = "loo" if n <= LOO_MAX else f"folds={folds}"
            scores = out_of_fold(statistic, outputs, k, n if n <= LOO_MAX else min(folds, n), seed)
        elif method == "folds":
            scores = out_of_fold(statistic, outputs, k, min(folds, n), seed)
        elif method == "analytic":
            scores = analytic_loo(statistic, outputs, k, fitted)
        elif method == "split":
            part = fold_of(n, 2, seed) == 0
            half = fitting.fit_reference(statistic, _subset(outputs, part))
            info["references"] = {**references, statistic.name: half}
            scores = _normality(statistic, _subset(outputs, ~part), k, half)
        else:
            scores = _normality(statistic, outputs, k, fitted)
    except ValueError as e:
        info["method"], scores = "in-sample", _normality(statistic, outputs, k, fitted)
        info["warning"] = (
            f"{info['warning'] or ''} The out-of-sample calibration failed ({e}): the threshold is "
            f"the quantile of the images the reference was fitted on, and flags more than "
            f"contamination={contamination:g} of new normal images."
        ).strip()
    info["scores"] = scores
    return quantile(scores, contamination, rule), info
