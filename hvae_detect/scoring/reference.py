"""Models of the in-distribution values of a model's per-image statistics, fitted on held-out
training images, that turn a statistic vector into one normality score (higher = more normal).

Each model has ``fit(V)`` (V: (n, d), one row per held-out training image, e.g. the columns L, L>1,
L>2), ``score(V)`` -> (n,) normality, and ``to_state()`` / ``from_state(arrays, meta)``: its
parameters as float64 numpy arrays (for safetensors) and a JSON-able dict, so that a saved model
loads without pickle (``from_state`` picks the class from ``meta["kind"]``).

An image's score is a function of its own row only: no model here looks at the other rows scored
with it, and the arithmetic of one row does not depend on how many rows come with it (no BLAS
matrix products, whose blocking changes with the number of rows).

- ``Typicality``: the two-sided distance of one statistic from its held-out mean, in standard
  deviations (Nalisnick et al.'s typicality test, for a single image; ``batch_p_value`` tests a batch).
- ``Gaussian``: the Mahalanobis distance under a Gaussian with a Ledoit-Wolf shrunk covariance of
  the standardised columns (a density of the statistics, as DoSE fits one; Morningstar et al. 2021).
- ``ECOD`` and ``COPOD``: sums over columns of empirical tail probabilities -log F (Li et al.).

A detector holds its references by statistic name (``references_``); where one could not be fitted,
an ``Unfitted`` holds the reason in its place, and ``is_fitted`` tells the two apart. Saved, an
``Unfitted`` is its reason string (``Unfitted(reason)`` reads it back).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np


def _matrix(V, name: str = "V") -> np.ndarray:
    """V as a finite (n, d) float64 array; a 1-D array is one column."""
    V = np.asarray(V, dtype=np.float64)
    if V.ndim == 1:
        V = V[:, None]
    if V.ndim != 2 or V.shape[1] == 0:
        raise ValueError(f"{name} must be an (n, d) array of statistics, one row per image, got shape {V.shape}")
    if not np.all(np.isfinite(V)):
        raise ValueError(f"{name} must be finite (a statistic was NaN or infinite)")
    return V


def _spread(V: np.ndarray) -> np.ndarray:
    """Each column's population std, 0 for a column constant up to rounding of its mean."""
    mean, std = V.mean(axis=0), V.std(axis=0)
    return np.where(std > 1e-12 * np.maximum(np.abs(mean), 1.0), std, 0.0)


class _Reference:
    """What every model shares: the checks of fit and score, and the state's kind."""

    kind = ""
    min_rows = 1
    array_names: tuple = ()  # what to_state puts in the arrays (safetensors) and in the metadata (JSON)
    meta_keys: tuple = ()

    def __init__(self):
        self.n_features_: int | None = None

    def fit(self, V):
        """Fit on V (n, d): one row of statistics per held-out training image. Returns self."""
        V = _matrix(V)
        if V.shape[0] < self.min_rows:
            raise ValueError(
                f"{type(self).__name__} needs at least {self.min_rows} held-out images to fit, got {V.shape[0]}"
            )
        self._fit(V)
        self.n_features_ = V.shape[1]  # fitted only once every parameter is
        return self

    def score(self, V) -> np.ndarray:
        """(n,) normality of the rows of V (n, d): higher = more normal."""
        return self._score(self._score_matrix(V))

    def _score_matrix(self, V) -> np.ndarray:
        if self.n_features_ is None:
            raise ValueError(f"{type(self).__name__} is not fitted: call fit(V) on held-out training images first")
        V = _matrix(V)
        if V.shape[1] != self.n_features_:
            raise ValueError(f"V has {V.shape[1]} statistics per image, the model was fitted on {self.n_features_}")
        return V

    def _meta(self, **extra) -> dict:
        if self.n_features_ is None:
            raise ValueError(f"{type(self).__name__} is not fitted: nothing to save")
        return {"kind": self.kind, "n_features": self.n_features_, **extra}

    @classmethod
    def from_state(cls, arrays: dict, meta: dict):
        """The fitted model that ``to_state`` returned; on a subclass, ``meta["kind"]`` must be its own."""
        kind = meta.get("kind") if isinstance(meta, dict) else None
        if kind not in MODELS or cls is not _Reference and kind != cls.kind:
            expected = sorted(MODELS) if cls is _Reference else [cls.kind]
            raise ValueError(f"meta['kind'] must be one of {expected}, got {kind!r}")
        target = MODELS[kind]
        missing = sorted({"n_features", *target.meta_keys} - set(meta)) + sorted(set(target.array_names) - set(arrays))
        if missing:
            raise ValueError(f"the saved {kind} model lacks {missing}")
        d = int(meta["n_features"])
        state = {k: np.asarray(arrays[k], dtype=np.float64) for k in target.array_names}
        for name, shape in target._shapes(d).items():
            if state[name].ndim != len(shape) or any(n not in (None, m) for n, m in zip(shape, state[name].shape)):
                raise ValueError(
                    f"the saved {kind} model's {name!r} has shape {state[name].shape}, expected "
                    f"{tuple('n' if n is None else n for n in shape)} for {d} statistics"
                )
        model = target()
        model.n_features_ = d
        model._set_state(state, meta)
        return model

    @staticmethod
    def _shapes(d: int) -> dict:
        """The shapes of the state's arrays for d statistics (None: any length)."""
        return {}


class Typicality(_Reference):
    """Normality = -|L - mean| / std of one statistic (population std of the held-out values).

    Two-sided: an image is atypical whether the model finds it much less or much more likely than
    the training images (Nalisnick et al. 2019 test a batch's mean; this is the one-image case).
    """

    kind = "typicality"
    min_rows = 2
    meta_keys = ("mean", "std")

    def _fit(self, V):
        if V.shape[1] != 1:
            raise ValueError(f"Typicality takes one statistic (one column, e.g. L), got {V.shape[1]}")
        self.mean_, self.std_ = float(V[:, 0].mean()), float(_spread(V)[0])
        if not self.std_ > 0:
            raise ValueError("the held-out values are all equal: no spread to measure a distance in")

    def _score(self, V):
        return -np.abs(V[:, 0] - self.mean_) / self.std_

    def batch_p_value(self, values) -> float:
        """The typicality test of a batch (Nalisnick et al. 2019): the two-sided p-value that the mean of
        ``values`` (one per image, the statistic this was fitted on, e.g. ``ood_scores(X)["L"]``) comes
        from M images of the held-out kind, with the mean's spread std / sqrt(M) (the central limit
        theorem standing in for the paper's bootstrap, so that nothing but mean and std is saved). Small
        p: the batch is not typical of the training data, even where no single image stands out."""
        V = self._score_matrix(values)
        z = abs(float(V[:, 0].mean()) - self.mean_) / (self.std_ / np.sqrt(V.shape[0]))
        return float(math.erfc(z / math.sqrt(2)))

    def to_state(self) -> tuple[dict, dict]:
        meta = self._meta(mean=getattr(self, "mean_", None), std=getattr(self, "std_", None))
        return {}, meta

    def _set_state(self, arrays: dict, meta: dict) -> None:
        self.mean_, self.std_ = float(meta["mean"]), float(meta["std"])


class Gaussian(_Reference):
    """Normality = -(squared Mahalanobis distance) of the standardised statistics.

    Columns are standardised with the held-out mean and std first (L and L>k are in hundreds of
    nats and strongly correlated; Ledoit-Wolf shrinks towards a multiple of the identity, which
    only makes sense on comparable scales), then scikit-learn's ``LedoitWolf`` gives a shrunk
    covariance whose inverse is kept (with a small ridge where it is singular: a fit on a few
    held-out images, or on a constant column, still gives finite scores). The log-density is this score
    halved plus a constant, so it ranks images the same.
    """

    kind = "gaussian"
    min_rows = 2
    array_names, meta_keys = ("location", "scale", "precision"), ("shrinkage",)

    def _fit(self, V):
        from sklearn.covariance import LedoitWolf

        spread = _spread(V)
        self.location_, self.scale_ = V.mean(axis=0), np.where(spread > 0, spread, 1.0)
        shrunk = LedoitWolf(assume_centered=True).fit((V - self.location_) / self.scale_)
        self.shrinkage_ = float(shrunk.shrinkage_)
        covariance = shrunk.covariance_
        eigenvalues = np.linalg.eigvalsh(covariance)
        if not eigenvalues[0] > 1e-6 * max(eigenvalues[-1], 1e-12):
            # A constant column (measured in its own units), columns that repeat each other, or fewer
            # held-out images than columns: a small ridge keeps the covariance invertible, so that a
            # departure along a direction the held-out images never moved in scores as very atypical.
            ridge = 1e-3 * max(float(np.trace(covariance)) / len(covariance), 1e-12)
            covariance = covariance + ridge * np.eye(len(covariance))
        self.precision_ = np.linalg.inv(covariance)
        self.precision_ = (self.precision_ + self.precision_.T) / 2  # exactly symmetric

    def _score(self, V):
        z = (V - self.location_) / self.scale_
        # row by row: (z P)_i summed over j, then times z_i; numpy's reductions over a middle axis
        # add in a fixed order for each row, whatever the number of rows
        zp = (z[:, :, None] * self.precision_[None]).sum(axis=1)
        return -(zp * z).sum(axis=1)

    def to_state(self) -> tuple[dict, dict]:
        meta = self._meta(shrinkage=getattr(self, "shrinkage_", None))
        return {"location": self.location_, "scale": self.scale_, "precision": self.precision_}, meta

    @staticmethod
    def _shapes(d: int) -> dict:
        return {"location": (d,), "scale": (d,), "precision": (d, d)}

    def _set_state(self, arrays: dict, meta: dict) -> None:
        self.shrinkage_ = float(meta["shrinkage"])
        self.location_, self.scale_, self.precision_ = arrays["location"], arrays["scale"], arrays["precision"]


class _EmpiricalTails(_Reference):
    """The sorted held-out columns, and an image's tail probabilities against them.

    The image itself counts as one more sample of each column's empirical CDF, so
    F_left(x) = (#{held-out <= x} + 1) / (n + 1) and F_right(x) = (#{held-out >= x} + 1) / (n + 1):
    never 0, and exactly PyOD's value when PyOD scores the image alone against the same training
    rows (PyOD appends the rows it scores to the training set, so its scores of a batch depend on
    the batch; here they do not). The skewness sign of each column is the held-out one.
    """

    array_names = ("sorted", "skew_sign")

    def _fit(self, V):
        self.sorted_ = np.sort(V, axis=0)
        centred = V - V.mean(axis=0)
        third = (centred**3).mean(axis=0)
        self.skew_sign_ = np.sign(third)

    def _neg_log_tails(self, V) -> tuple[np.ndarray, np.ndarray]:
        """(-log F_left, -log F_right), each (n, d)."""
        n = self.sorted_.shape[0]
        below = np.stack([np.searchsorted(self.sorted_[:, j], V[:, j], side="right") for j in range(V.shape[1])], 1)
        above = n - np.stack([np.searchsorted(self.sorted_[:, j], V[:, j], side="left") for j in range(V.shape[1])], 1)
        return -np.log((below + 1.0) / (n + 1.0)), -np.log((above + 1.0) / (n + 1.0))

    def _skew_tail(self, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        """PyOD's U_skew: the left tail for a left-skewed column, the right for a right-skewed one,
        their sum for a symmetric one."""
        s = self.skew_sign_[None]
        return left * -np.sign(s - 1) + right * np.sign(s + 1)

    def to_state(self) -> tuple[dict, dict]:
        meta = self._meta()
        return {"sorted": self.sorted_, "skew_sign": self.skew_sign_}, meta

    @staticmethod
    def _shapes(d: int) -> dict:
        return {"sorted": (None, d), "skew_sign": (d,)}

    def _set_state(self, arrays: dict, meta: dict) -> None:
        self.sorted_, self.skew_sign_ = arrays["sorted"], arrays["skew_sign"]


class ECOD(_EmpiricalTails):
    """Normality = -sum over columns of max(-log F_left, -log F_right, -log F_skew), PyOD's ECOD
    (Li et al., TKDE 2022) as PyOD computes it: the larger tail per column, then the sum."""

    kind = "ecod"

    def _score(self, V):
        left, right = self._neg_log_tails(V)
        return -np.maximum(np.maximum(left, right), self._skew_tail(left, right)).sum(axis=1)


class COPOD(_EmpiricalTails):
    """Normality = -sum over columns of max(-log F_skew, mean of the two tails), PyOD's COPOD
    (Li et al., ICDM 2020)."""

    kind = "copod"

    def _score(self, V):
        left, right = self._neg_log_tails(V)
        return -np.maximum(self._skew_tail(left, right), (left + right) / 2).sum(axis=1)


MODELS = {cls.kind: cls for cls in (Typicality, Gaussian, ECOD, COPOD)}


def from_state(arrays: dict, meta: dict) -> _Reference:
    """The fitted model that ``to_state`` described, of the class named by ``meta["kind"]``."""
    return _Reference.from_state(arrays, meta)


@dataclasses.dataclass(frozen=True)
class Unfitted:
    """In a detector's references, in place of one that could not be fitted: ``reason`` says why (it is
    what a saved detector holds for it)."""

    reason: str


def is_fitted(held) -> bool:
    """Whether ``held`` (a value of ``references_``, or None for a missing one) is a fitted reference that
    can score images, not an ``Unfitted`` or nothing."""
    return isinstance(held, _Reference) and held.n_features_ is not None
