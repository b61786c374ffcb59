"""The statistics of one trained model, as one table.

Each row names a statistic twice - its ``statistic=`` value in the estimator ("llr") and its key in
``ood_scores`` and the score files ("LLR>{k}", one key per k for statistics of one k: ``output_key``
writes a key, ``read_key`` reads its row and k back) - says which way it points, which engine outputs
it needs and how it is computed from them. Everything that reports statistics (the estimator's
``score_samples`` and ``ood_scores``, ``hvae-detect train``'s validation, ``score``, ``results`` and
the demo) reads this table, so adding a statistic is one row here plus its computation.

Engine outputs, in ``needs`` too, are named as ``hvae_detect.scoring.output_names`` names them.

Some rows read a *reference*: a model of the in-distribution values of their columns
(``hvae_detect.scoring.reference``), fitted by the estimator's ``fit`` on held-out training images
(``hvae_detect.scoring.fitting``). Such a row's normality is its reference's score of the image's columns.

One orientation inside the package, scikit-learn's: a *normality* score is higher for more normal
images (``score_samples``). ``ood_scores`` reports each statistic in its own units and direction (LLR>k
in nats, large for outliers); ``Statistic.normality`` - the one place a direction is set - turns one
into the shared orientation, and the metrics (``hvae_detect.reporting.metrics``) take normality scores.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from hvae_detect.scoring import reference
from hvae_detect.scoring.complexity import input_complexity
from hvae_detect.scoring.output_names import (
    BITS,
    BOUND,
    ELBO,
    LATENT_PATH,
    REGRET,
    VECTOR_NEEDS,
    numbered,
    path_vector,
    present,
    statistic_vector,
)

# Importance-sample counts a statistic can depend on, by the estimator's parameter names.
IW_SAMPLES, IW_SAMPLES_LK = "iw_samples", "iw_samples_lk"
# The lossless compressor of the input-complexity statistics
# (benchmarks/results/2026-12-06-statistics-choosing-pairs.md).
COMPLEXITY_CODEC = "png"
K_SLOT = "{k}"  # in the key of a statistic of one k: where its k goes
# Why a row has no reference when its detector holds none for it.
NO_REFERENCE = "loaded from a training run, or saved before the statistic existed: fit it"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Statistic:
    """One row of the table, built by keyword.

    ``key`` holds "{k}" for a statistic of one k (``output_key`` fills it in); ``needs(k)`` names the
    engine outputs that ``formula(outputs, k)`` reads (a dict of (n,) arrays); ``samples`` the
    importance-sample counts its value depends on. A row with a ``reference`` (a kind of
    ``hvae_detect.scoring.reference``) has ``columns(outputs)`` -> (n, d) instead of ``formula``: its
    normality is the fitted reference's score of them. A row ``on_request`` costs far more than the
    others: ``keys`` (what ``ood_scores`` and the score files hold) leaves it out, and only
    ``statistic=`` computes it.
    """

    name: str
    key: str
    description: str
    higher_is_normal: bool
    needs: Callable[[int], tuple[str, ...]]
    samples: tuple[str, ...]
    formula: Callable[[dict, int], np.ndarray] | None = None
    reference: str | None = None
    columns: Callable[[dict], np.ndarray] | None = None
    on_request: bool = False

    @property
    def per_k(self) -> bool:
        return K_SLOT in self.key

    def normality(self, values: np.ndarray) -> np.ndarray:
        """``values`` in this statistic's direction oriented as ``score_samples`` (higher = more normal),
        and back: the one place where a score's direction is set."""
        return values if self.higher_is_normal else -values

    def value(self, outputs: dict, k: int, references: dict | None = None) -> np.ndarray:
        """(n,) the statistic in its own units and direction, from the engine's ``outputs`` (and, for a
        row with a reference, the fitted ``references`` by statistic name)."""
        if self.reference is None:
            return self.formula(outputs, k)
        held = (references or {}).get(self.name)
        if not reference.is_fitted(held):
            why = held.reason if isinstance(held, reference.Unfitted) else NO_REFERENCE
            raise ValueError(
                f"the statistic {self.name!r} reads a reference fitted on held-out training images, "
                f"and this detector has none ({why}); use another statistic"
            )
        return self.normality(held.score(self.columns(outputs)))  # a reference scores normality


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


register(
    Statistic(
        name="elbo",
        key="L",
        description="the ELBO L: low for outliers, but often high for simple images of another kind",
        higher_is_normal=True,
        needs=lambda k: (ELBO,),
        samples=(IW_SAMPLES,),
        formula=lambda out, k: out[ELBO],
    )
)
register(
    Statistic(
        name="lk",
        key="L>{k}",
        description="L>k, the bound with the k lowest latents taken from the prior",
        higher_is_normal=True,
        needs=lambda k: (numbered(BOUND, k),),
        samples=(IW_SAMPLES_LK,),
        formula=lambda out, k: out[numbered(BOUND, k)],
    )
)
register(
    Statistic(
        name="llr",
        key="LLR>{k}",
        description="LLR>k = L - L>k (the paper's): large when the high-level latents do not explain the image",
        higher_is_normal=False,
        needs=lambda k: (ELBO, numbered(BOUND, k)),
        samples=(IW_SAMPLES, IW_SAMPLES_LK),
        formula=lambda out, k: out[ELBO] - out[numbered(BOUND, k)],
    )
)
register(
    Statistic(
        name="complexity",
        key="IC",
        description="input complexity -L/ln 2 - bits (Serra et al. 2020), in bits: how many more bits the model "
        f"needs than a lossless compressor ({COMPLEXITY_CODEC})",
        higher_is_normal=False,
        needs=lambda k: (ELBO, BITS),
        samples=(IW_SAMPLES,),
        formula=lambda out, k: input_complexity(out[ELBO], out[BITS]),
    )
)
register(
    Statistic(
        name="typicality",
        key="T",
        description="two-sided distance of L from the held-out training images' L, in standard deviations",
        higher_is_normal=False,
        needs=lambda k: (ELBO,),
        samples=(IW_SAMPLES,),
        reference="typicality",
        columns=lambda out: out[ELBO][:, None],
    )
)
register(
    Statistic(
        name="fused",
        key="Fused",
        description="-(squared Mahalanobis distance) of the statistic vector (every L>k, log p(x|z), the KLs, "
        "compressed bits, the latent path's log-norms) from the held-out training images' (a "
        "Ledoit-Wolf Gaussian)",
        higher_is_normal=True,
        needs=lambda k: VECTOR_NEEDS,
        samples=(IW_SAMPLES, IW_SAMPLES_LK),
        reference="gaussian",
        columns=statistic_vector,
    )
)
register(
    Statistic(
        name="latent_path",
        key="Path",
        description="-(squared Mahalanobis distance) of the latent path's log-norms (reconstruction error, the "
        "likelihood's scale, each posterior's mean and scale; Huang et al. 2024) from the held-out "
        "training images' (a Ledoit-Wolf Gaussian)",
        higher_is_normal=True,
        needs=lambda k: (LATENT_PATH,),
        samples=(),
        reference="gaussian",
        columns=path_vector,
    )
)
register(
    Statistic(
        name="latent_path_copod",
        key="PathCOPOD",
        description="COPOD of the latent path's log-norms against the held-out training images' (Huang et al. "
        "2024's detector: empirical copula tail probabilities, negated)",
        higher_is_normal=True,
        needs=lambda k: (LATENT_PATH,),
        samples=(),
        reference="copod",
        columns=path_vector,
    )
)
register(
    Statistic(
        name="likelihood_regret",
        key="Regret",
        description="likelihood regret (Xiao et al. 2020): the gain of L in nats when the encoder "
        "is refitted to the image alone (100 Adam steps per image: on request only, 100-400 times the "
        "cost of the other statistics together)",
        higher_is_normal=False,
        needs=lambda k: (REGRET,),
        samples=(IW_SAMPLES,),
        formula=lambda out, k: out[REGRET],
        on_request=True,
    )
)
register(
    Statistic(
        name="fused_ecod",
        key="FusedECOD",
        description="ECOD of the statistic vector against the held-out training images' (empirical tail "
        "probabilities per column, negated)",
        higher_is_normal=True,
        needs=lambda k: VECTOR_NEEDS,
        samples=(IW_SAMPLES, IW_SAMPLES_LK),
        reference="ecod",
        columns=statistic_vector,
    )
)


def get(name: str) -> Statistic:
    """The row of ``statistic=name``; a ValueError lists the known names."""
    if name not in TABLE:
        raise ValueError(f"statistic must be one of {sorted(TABLE)}, got {name!r}")
    return TABLE[name]


def check_k(name: str, k: int, n_latents: int) -> None:
    """k matters to the statistics of one k (L>k, LLR>k) only, which need 1 <= k < n_latents: a model of one
    latent has none of them."""
    if get(name).per_k and not 1 <= k < n_latents:
        if n_latents < 2:
            raise ValueError(
                f"the statistic {name!r} needs a model with at least 2 latents (it takes the k lowest "
                f"from the prior), and this one has {n_latents}; use another statistic"
            )
        raise ValueError(f"k must be in 1..{n_latents - 1} for a model with {n_latents} latents, got {k}")


def names() -> tuple[str, ...]:
    return tuple(TABLE)


def with_references() -> list[Statistic]:
    return [s for s in TABLE.values() if s.reference is not None]


def output_key(name: str, k: int = 0) -> str:
    """The key of statistic ``name`` at ``k`` in ``ood_scores`` and the score files ("LLR>2" of "llr" and
    2); a statistic of no k has one key, whatever k."""
    return get(name).key.replace(K_SLOT, str(k))


def _k_in(key: str, statistic: Statistic) -> int | None:
    """The k of ``key`` when ``statistic`` wrote it (0 for a statistic of no k), else None."""
    if not statistic.per_k:
        return 0 if key == statistic.key else None
    head, tail = statistic.key.split(K_SLOT)
    digits = key[len(head) : len(key) - len(tail)]
    fits = key.startswith(head) and key.endswith(tail) and len(key) > len(head) + len(tail)
    return int(digits) if fits and digits.isdecimal() else None


def read_key(key: str) -> tuple[Statistic, int]:
    """(row, k) of an ``ood_scores`` key such as "LLR>2": what ``output_key`` wrote it from."""
    for statistic in TABLE.values():
        k = _k_in(key, statistic)
        if k is not None:
            return statistic, k
    raise ValueError(f"{key!r} is not the key of a known statistic ({', '.join(s.key for s in TABLE.values())})")


def keys(ks) -> list[str]:
    """The ``ood_scores`` keys for the k in ``ks``: statistics of no k first, then per k in table order;
    rows ``on_request`` left out."""
    rows = [s for s in TABLE.values() if not s.on_request]
    out = [s.key for s in rows if not s.per_k]
    for k in ks:
        out += [output_key(s.name, k) for s in rows if s.per_k]
    return out


def outputs_needed(keys_wanted) -> set[str]:
    """The engine outputs that the statistics ``keys_wanted`` read."""
    needed = set()
    for key in keys_wanted:
        statistic, k = read_key(key)
        needed.update(statistic.needs(k))
    return needed


def normality(key: str, values: np.ndarray) -> np.ndarray:
    """Values of the statistic ``key`` oriented as ``score_samples`` (higher = more normal)."""
    return read_key(key)[0].normality(values)


def available(key: str, outputs: dict, references: dict | None = None) -> bool:
    """Whether ``outputs`` (and ``references``) hold what statistic ``key`` reads."""
    statistic, k = read_key(key)
    if statistic.reference is not None and not reference.is_fitted((references or {}).get(statistic.name)):
        return False
    return all(present(name, outputs) for name in statistic.needs(k))


def ood_scores(outputs: dict, ks, references: dict | None = None) -> dict:
    """{key: values} of every statistic for the k in ``ks`` that these outputs and references allow, in
    ``keys`` order, each in its own units and direction (what the estimator's ``ood_scores`` returns;
    ``hvae-detect train``'s validation, for one, has the bounds only)."""
    out = {}
    for key in keys(ks):
        if available(key, outputs, references):
            statistic, k = read_key(key)
            out[key] = statistic.value(outputs, k, references)
    return out


def sample_counts(key: str, counts: dict) -> dict:
    """The importance-sample counts (of ``counts``, by parameter name) that statistic ``key`` depends on."""
    return {name: counts[name] for name in read_key(key)[0].samples}
