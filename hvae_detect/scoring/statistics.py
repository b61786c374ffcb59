"""The statistics of one trained model, as one table.

Each row names a statistic twice - its ``statistic=`` value in the estimator ("llr") and its key in
``ood_scores`` and the score files ("LLR>{k}", one key per k for statistics of one k) - says which way
it points, which engine outputs it needs and how it is computed from them. Everything that reports
statistics (the estimator's ``score_samples`` and ``ood_scores``, ``hvae-detect train``'s validation,
``score``, ``results`` and the demo) reads this table, so adding a statistic is one row here plus its
computation.

Engine outputs are named in the same vocabulary (``hvae_detect.scoring.engine.importance_outputs``):
"L" (the ELBO with S importance samples), "L>k" (the bound with the k lowest latents from the prior,
S' samples), and from L's passes "log p(x|z)" and each stage's KL ("KL1" .. "KLn"), in nats per
image; "bits" is the size of the image the model scored under a lossless compressor
(``hvae_detect.scoring.complexity``); the latent path's norms ("recon error", "|sigma x|", "|mu|i",
"|sigma|i": ``hvae_detect.models.base.HierarchicalModel.latent_path``) come from one more pass with
every latent at its posterior mean; "regret" is the likelihood regret (``hvae_detect.scoring.regret``,
on request only). In ``needs``, "L>*" stands for every L>k, "KL" for every KL and
"path" for every latent-path norm.

Some rows read a *reference*: a model of the in-distribution values of their columns
(``hvae_detect.scoring.reference``), fitted by the estimator's ``fit`` on held-out training images.
Such a row's normality is its reference's score of the image's columns.

One orientation inside the package, scikit-learn's: a *normality* score is higher for more normal
images (``score_samples``). ``ood_scores`` reports each statistic in its own units and direction (LLR>k
in nats, large for outliers); ``normality`` turns one into the shared orientation, and the metrics
(``hvae_detect.reporting.metrics``) take normality scores.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable

import numpy as np

from hvae_detect.scoring import reference
from hvae_detect.scoring.complexity import input_complexity

# Importance-sample counts a statistic can depend on, by the estimator's parameter names.
IW_SAMPLES, IW_SAMPLES_LK = "iw_samples", "iw_samples_lk"
# The lossless compressor of the input-complexity statistics (benchmarks/RESULTS.md, "Statistics of one
# model: choosing on held-out pairs").
COMPLEXITY_CODEC = "png"


@dataclasses.dataclass(frozen=True)
class Statistic:
    """One row of the table.

    ``key`` holds "{k}" for a statistic of one k; ``needs(k)`` names the engine outputs that
    ``compute(outputs, k)`` reads (a dict of (n,) arrays); ``samples`` the importance-sample counts
    its value depends on. A row with a ``reference`` (a kind of ``hvae_detect.scoring.reference``)
    has ``columns(outputs)`` -> (n, d) instead of ``compute``: its normality is the fitted
    reference's score of them. A row ``on_request`` costs far more than the others: ``keys`` (what
    ``ood_scores`` and the score files hold) leaves it out, and only ``statistic=`` computes it.
    """

    name: str
    key: str
    higher_is_normal: bool
    needs: Callable[[int], tuple[str, ...]]
    compute: Callable[[dict, int], np.ndarray] | None
    samples: tuple[str, ...]
    description: str
    reference: str | None = None
    columns: Callable[[dict], np.ndarray] | None = None
    on_request: bool = False

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

    def value(self, outputs: dict, k: int, references: dict | None = None) -> np.ndarray:
        """The statistic in its own units and direction."""
        if self.reference is None:
            return self.compute(outputs, k)
        fitted = (references or {}).get(self.name)
        if fitted is None or isinstance(fitted, str):
            why = fitted or "loaded from a training run, or saved before the statistic existed: fit it"
            raise ValueError(
                f"the statistic {self.name!r} reads a reference fitted on held-out training images, "
                f"and this detector has none ({why}); use another statistic"
            )
        return self.normality(fitted.score(self.columns(outputs)))


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


def _numbered(outputs: dict, prefix: str) -> list[str]:
    """The outputs "<prefix><i>" in the order of i."""
    return sorted(
        (n for n in outputs if re.fullmatch(re.escape(prefix) + r"\d+", n)), key=lambda n: int(n[len(prefix) :])
    )


PATH = "path"  # in ``needs``: every output of the latent-path pass
PATH_OUTPUTS = ("recon error", "|sigma x|", "|mu|", "|sigma|")  # "|mu|" and "|sigma|" numbered per posterior


def path_vector(outputs: dict) -> np.ndarray:
    """(n, d) per image: the logs of the latent path's norms (Huang, He, Lui 2024): the reconstruction
    error, the likelihood's scale, and the mean and scale of every posterior. Logs, because norms are
    positive and skewed, and a Gaussian reference models their logs better."""
    names = ["recon error", "|sigma x|", *_numbered(outputs, "|mu|"), *_numbered(outputs, "|sigma|")]
    return np.log(np.maximum(np.stack([outputs[name] for name in names], axis=1), np.finfo(np.float64).tiny))


def statistic_vector(outputs: dict) -> np.ndarray:
    """(n, d) per image: every L>k, log p(x|z), every stage's KL, the compressed bits and the latent
    path's log-norms (``path_vector``). L itself is left out: with one sample it is log p(x|z) minus
    the KLs, so a Gaussian of both would be singular."""
    names = [*_numbered(outputs, "L>"), "log p(x|z)", *_numbered(outputs, "KL"), "bits"]
    return np.hstack([np.stack([outputs[name] for name in names], axis=1), path_vector(outputs)])


VECTOR_NEEDS = ("L>*", "log p(x|z)", "KL", "bits", PATH)

register(
    Statistic(
        "elbo",
        "L",
        True,
        lambda k: ("L",),
        lambda out, k: out["L"],
        (IW_SAMPLES,),
        "the ELBO L: low for outliers, but often high for simple images of another kind",
    )
)
register(
    Statistic(
        "lk",
        "L>{k}",
        True,
        lambda k: (f"L>{k}",),
        lambda out, k: out[f"L>{k}"],
        (IW_SAMPLES_LK,),
        "L>k, the bound with the k lowest latents taken from the prior",
    )
)
register(
    Statistic(
        "llr",
        "LLR>{k}",
        False,
        lambda k: ("L", f"L>{k}"),
        lambda out, k: out["L"] - out[f"L>{k}"],
        (IW_SAMPLES, IW_SAMPLES_LK),
        "LLR>k = L - L>k (the paper's): large when the high-level latents do not explain the image",
    )
)
register(
    Statistic(
        "complexity",
        "IC",
        False,
        lambda k: ("L", "bits"),
        lambda out, k: input_complexity(out["L"], out["bits"]),
        (IW_SAMPLES,),
        "input complexity -L/ln 2 - bits (Serra et al. 2020), in bits: how many more bits the model "
        f"needs than a lossless compressor ({COMPLEXITY_CODEC})",
    )
)
register(
    Statistic(
        "typicality",
        "T",
        False,
        lambda k: ("L",),
        None,
        (IW_SAMPLES,),
        "two-sided distance of L from the held-out training images' L, in standard deviations",
        reference="typicality",
        columns=lambda out: out["L"][:, None],
    )
)
register(
    Statistic(
        "fused",
        "Fused",
        True,
        lambda k: VECTOR_NEEDS,
        None,
        (IW_SAMPLES, IW_SAMPLES_LK),
        "-(squared Mahalanobis distance) of the statistic vector (every L>k, log p(x|z), the KLs, "
        "compressed bits, the latent path's log-norms) from the held-out training images' (a "
        "Ledoit-Wolf Gaussian)",
        reference="gaussian",
        columns=statistic_vector,
    )
)
register(
    Statistic(
        "latent_path",
        "Path",
        True,
        lambda k: (PATH,),
        None,
        (),
        "-(squared Mahalanobis distance) of the latent path's log-norms (reconstruction error, the "
        "likelihood's scale, each posterior's mean and scale; Huang et al. 2024) from the held-out "
        "training images' (a Ledoit-Wolf Gaussian)",
        reference="gaussian",
        columns=path_vector,
    )
)
register(
    Statistic(
        "latent_path_copod",
        "PathCOPOD",
        True,
        lambda k: (PATH,),
        None,
        (),
        "COPOD of the latent path's log-norms against the held-out training images' (Huang et al. "
        "2024's detector: empirical copula tail probabilities, negated)",
        reference="copod",
        columns=path_vector,
    )
)
register(
    Statistic(
        "likelihood_regret",
        "Regret",
        False,
        lambda k: ("regret",),
        lambda out, k: out["regret"],
        (IW_SAMPLES,),
        "likelihood regret (Xiao et al. 2020): the gain of L in nats when the encoder "
        "is refitted to the image alone (100 Adam steps per image: on request only, 100-400 times the "
        "cost of the other statistics together)",
        on_request=True,
    )
)
register(
    Statistic(
        "fused_ecod",
        "FusedECOD",
        True,
        lambda k: VECTOR_NEEDS,
        None,
        (IW_SAMPLES, IW_SAMPLES_LK),
        "ECOD of the statistic vector against the held-out training images' (empirical tail "
        "probabilities per column, negated)",
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


def of_key(key: str) -> tuple[Statistic, int]:
    """(row, k) of an ``ood_scores`` key such as "LLR>2"."""
    for statistic in TABLE.values():
        k = statistic.k_of(key)
        if k is not None:
            return statistic, k
    raise ValueError(f"{key!r} is not the key of a known statistic ({', '.join(s.key for s in TABLE.values())})")


def keys(ks) -> list[str]:
    """The ``ood_scores`` keys for the k in ``ks``: statistics of no k first, then per k in table order;
    rows ``on_request`` left out."""
    rows = [s for s in TABLE.values() if not s.on_request]
    out = [s.key for s in rows if not s.per_k]
    for k in ks:
        out += [s.key_for(k) for s in rows if s.per_k]
    return out


def outputs_needed(keys_wanted) -> set[str]:
    """The engine outputs that the statistics ``keys_wanted`` read."""
    needed = set()
    for key in keys_wanted:
        statistic, k = of_key(key)
        needed.update(statistic.needs(k))
    return needed


def bounds_needed(outputs: set[str], n_latents: int) -> list[int]:
    """The bounds among ``outputs`` as the engine's ks: 0 for L, k for L>k ("L>*": every k)."""
    every = range(1, n_latents) if "L>*" in outputs else ()
    return sorted({0, *every} | {int(name[2:]) for name in outputs if re.fullmatch(r"L>\d+", name)})


def terms_needed(outputs: set[str]) -> bool:
    """Whether ``outputs`` need the terms of L's passes: "log p(x|z)" or the KLs ("KL" means every stage's)."""
    return any(name == "log p(x|z)" or name.startswith("KL") for name in outputs)


def path_needed(outputs: set[str]) -> bool:
    """Whether ``outputs`` need the latent-path pass."""
    return PATH in outputs or any(name.startswith(PATH_OUTPUTS) for name in outputs)


def compute(key: str, outputs: dict, references: dict | None = None) -> np.ndarray:
    """The statistic ``key`` in its own units and direction, from the engine's named outputs (and the
    fitted references, for the rows that read one)."""
    statistic, k = of_key(key)
    return statistic.value(outputs, k, references)


def normality(key: str, values: np.ndarray) -> np.ndarray:
    """Values of the statistic ``key`` oriented as ``score_samples`` (higher = more normal)."""
    return of_key(key)[0].normality(values)


def fit_references(outputs: dict) -> dict:
    """{name: its reference fitted on held-out images' ``outputs``} for every row that reads one; where
    one cannot be fitted (too few images, a constant column), the reason in its place."""
    fitted = {}
    for statistic in with_references():
        missing = [name for name in statistic.needs(0) if not _present(name, outputs)]
        if missing:
            fitted[statistic.name] = f"its reference could not be fitted: the outputs {missing} were not computed"
            continue
        try:
            fitted[statistic.name] = reference.MODELS[statistic.reference]().fit(statistic.columns(outputs))
        except ValueError as e:
            fitted[statistic.name] = f"its reference could not be fitted: {e}"
    return fitted


def available(key: str, outputs: dict, references: dict | None = None) -> bool:
    """Whether ``outputs`` (and ``references``) hold what statistic ``key`` reads."""
    statistic, k = of_key(key)
    fitted = (references or {}).get(statistic.name)
    if statistic.reference is not None and (fitted is None or isinstance(fitted, str)):
        return False
    return all(_present(name, outputs) for name in statistic.needs(k))


def _present(name: str, outputs: dict) -> bool:
    """Whether ``outputs`` hold the engine output ``name`` (of ``needs``' vocabulary)."""
    if name == "L>*":  # every L>k of the model: one fewer than its KLs (none for a one-latent model)
        bounds = sum(bool(re.fullmatch(r"L>\d+", n)) for n in outputs)
        kls = sum(bool(re.fullmatch(r"KL\d+", n)) for n in outputs)
        return bounds == kls - 1 if kls else bounds > 0
    if name == "KL":
        return any(re.fullmatch(r"KL\d+", n) for n in outputs)
    return "recon error" in outputs if name == PATH else name in outputs


def scores(outputs: dict, ks, references: dict | None = None) -> dict:
    """{key: values} of every statistic for the k in ``ks`` that these outputs and references allow, in
    ``keys`` order (``hvae-detect train``'s validation, for one, has the bounds only)."""
    return {key: compute(key, outputs, references) for key in keys(ks) if available(key, outputs, references)}


def sample_counts(key: str, counts: dict) -> dict:
    """The importance-sample counts (of ``counts``, by parameter name) that statistic ``key`` depends on."""
    return {name: counts[name] for name in of_key(key)[0].samples}
