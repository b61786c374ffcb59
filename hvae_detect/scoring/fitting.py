"""The references of the statistics (``hvae_detect.scoring.reference``), fitted on the engine's outputs
of held-out images: what a detector holds in ``references_``, by statistic name."""

from __future__ import annotations

from hvae_detect.scoring import reference, statistics
from hvae_detect.scoring.output_names import present


def fit_reference(statistic: statistics.Statistic, outputs: dict):
    """A new reference of the kind ``statistic`` reads, fitted on the columns of ``outputs`` ((n,) arrays,
    one per engine output); a ValueError where it cannot be (too few images, a constant column)."""
    return reference.MODELS[statistic.reference]().fit(statistic.columns(outputs))


def fit_references(outputs: dict) -> dict:
    """{name: its reference fitted on held-out images' ``outputs``} for every row that reads one; where
    one cannot be fitted (too few images, a constant column, outputs not computed), a
    ``reference.Unfitted`` that says why."""
    fitted = {}
    for statistic in statistics.with_references():
        missing = [name for name in statistic.needs(0) if not present(name, outputs)]
        if missing:
            why = f"its reference could not be fitted: the outputs {missing} were not computed"
            fitted[statistic.name] = reference.Unfitted(why)
            continue
        try:
            fitted[statistic.name] = fit_reference(statistic, outputs)
        except ValueError as e:
            fitted[statistic.name] = reference.Unfitted(f"its reference could not be fitted: {e}")
    return fitted
