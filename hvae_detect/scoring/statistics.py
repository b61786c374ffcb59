"""The statistics of one trained model, as one table.

Each row names a statistic twice - its ``statistic=`` value in the estimator ("llr") and its key in
``ood_scores`` and the score files ("LLR>{k}", one key per k for statistics of one k) - says which way
it points, which engine outputs it needs and how it is computed from them. Everything that reports
statistics (the estimator's ``score_samples`` and ``ood_scores``, ``hvae-detect train``'s validation,
``score``, ``results`` and the demo) reads this table, so adding a statistic is one row here plus its
computation.

Engine outputs are named in the same vocabulary (``hvae_detect.scoring.engine.importance_outputs``):
"L" (the ELBO with S importance samples), "L>k" (the bound with the k lowest latents from the prior,
S' samples), and from L's passes "log p(x|z)" and each stage's KL ("KL1" .. "KLn"), in nats per image.

One orientation inside the package, scikit-learn's: a *normality* score is higher for more normal
images (``score_samples``). ``ood_scores`` reports each statistic in its own units and direction (LLR>k
in nats, large for outliers); ``normality`` turns one into the shared orientation, and the metrics
(``hvae_detect.reporting.metrics``) take normality scores.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Callable

import numpy as np

# Importance-sample counts a statistic can depend on, by the estimator's parameter names.
IW_SAMPLES, IW_SAMPLES_LK = "iw_samples", "iw_samples_lk"


@dataclasses.dataclass(frozen=True)
class Statistic:
    """One row of the table.

    ``key`` holds "{k}" for a statistic of one k; ``needs(k)`` names the engine outputs that
    ``compute(outputs, k)`` reads (a dict of (n,) arrays); ``samples`` the importance-sample counts
    its value depends on.
    """

    name: str
    key: str
    higher_is_normal: bool
    needs: Callable[[int], tuple[str, ...]]
    compute: Callable[[dict, int], np.ndarray]
    samples: tuple[str, ...]
    description: str

    @property
    def per_k(self) -> bool:
        return "{k}" in self.key

    def key_for(self, k: int) -> str:
        return self.key.format(k=k)

    def k_of(self, key: str) -> int | None:
        """The k of ``key`` when this row produced it (0 for a statistic of no k), else None."""
        if not self.per_k:
            return 0 if key == self.key else None
        head, tail = self.key.split("{k}")
        match = re.fullmatch(re.escape(head) + r"(\d+)" + re.escape(tail), key)
        return int(match.group(1)) if match else None

    def normality(self, values: np.ndarray) -> np.ndarray:
        """``values`` oriented as ``score_samples``: higher = more normal."""
        return values if self.higher_is_normal else -values


TABLE: dict[str, Statistic] = {}


def register(statistic: Statistic) -> Statistic:
    """Add a row; its name and key must be new."""
    clash = [s.name for s in TABLE.values() if statistic.name == s.name or statistic.key == s.key]
    if clash:
        raise ValueError(f"a statistic named {statistic.name!r} or keyed {statistic.key!r} exists already ({clash[0]})")
    TABLE[statistic.name] = statistic
    return statistic


def unregister(name: str) -> None:
    TABLE.pop(name, None)


register(Statistic("elbo", "L", True, lambda k: ("L",), lambda out, k: out["L"], (IW_SAMPLES,),
                   "the ELBO L: low for outliers, but often high for simple images of another kind"))
register(Statistic("lk", "L>{k}", True, lambda k: (f"L>{k}",), lambda out, k: out[f"L>{k}"], (IW_SAMPLES_LK,),
                   "L>k, the bound with the k lowest latents taken from the prior"))
register(Statistic("llr", "LLR>{k}", False, lambda k: ("L", f"L>{k}"), lambda out, k: out["L"] - out[f"L>{k}"],
                   (IW_SAMPLES, IW_SAMPLES_LK),
                   "LLR>k = L - L>k (the paper's): large when the high-level latents do not explain the image"))


def get(name: str) -> Statistic:
    """The row of ``statistic=name``; a ValueError lists the known names."""
    if name not in TABLE:
        raise ValueError(f"statistic must be one of {sorted(TABLE)}, got {name!r}")
    return TABLE[name]


def names() -> tuple[str, ...]:
    return tuple(TABLE)


def of_key(key: str) -> tuple[Statistic, int]:
    """(row, k) of an ``ood_scores`` key such as "LLR>2"."""
    for statistic in TABLE.values():
        k = statistic.k_of(key)
        if k is not None:
            return statistic, k
    raise ValueError(f"{key!r} is not the key of a known statistic ({', '.join(s.key for s in TABLE.values())})")


def keys(ks) -> list[str]:
    """The ``ood_scores`` keys for the k in ``ks``: statistics of no k first, then per k in table order."""
    out = [s.key for s in TABLE.values() if not s.per_k]
    for k in ks:
        out += [s.key_for(k) for s in TABLE.values() if s.per_k]
    return out


def outputs_needed(keys_wanted) -> set[str]:
    """The engine outputs that the statistics ``keys_wanted`` read."""
    needed = set()
    for key in keys_wanted:
        statistic, k = of_key(key)
        needed.update(statistic.needs(k))
    return needed


def bounds_needed(outputs: set[str]) -> list[int]:
    """The bounds among ``outputs`` as the engine's ks: 0 for L, k for L>k."""
    return sorted({0} | {int(name[2:]) for name in outputs if name.startswith("L>")})


def terms_needed(outputs: set[str]) -> bool:
    """Whether ``outputs`` need the terms of L's passes: "log p(x|z)" or the KLs ("KL" means every stage's)."""
    return any(name == "log p(x|z)" or name.startswith("KL") for name in outputs)


def compute(key: str, outputs: dict) -> np.ndarray:
    """The statistic ``key`` in its own units and direction, from the engine's named outputs."""
    statistic, k = of_key(key)
    return statistic.compute(outputs, k)


def normality(key: str, values: np.ndarray) -> np.ndarray:
    """Values of the statistic ``key`` oriented as ``score_samples`` (higher = more normal)."""
    return of_key(key)[0].normality(values)


def scores(outputs: dict, ks) -> dict:
    """{key: values} of every statistic for the k in ``ks``, in ``keys`` order."""
    return {key: compute(key, outputs) for key in keys(ks)}


def sample_counts(key: str, counts: dict) -> dict:
    """The importance-sample counts (of ``counts``, by parameter name) that statistic ``key`` depends on."""
    return {name: counts[name] for name in of_key(key)[0].samples}
