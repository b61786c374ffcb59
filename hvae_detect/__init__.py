"""hvae-detect: out-of-distribution detection with hierarchical VAEs (LLR>k, Havtorn et al. 2021)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hvae_detect import threads

# Passive OpenMP waiting unless the user chose otherwise, before torch is imported (only then does it
# take effect): a fit beside another busy process then slows by its share of the cores, not 5-10x.
threads.apply_wait_policy()

if TYPE_CHECKING:
    from hvae_detect.estimator import HVAEOutlierDetector

__all__ = ["HVAEOutlierDetector"]
__version__ = "0.1.0"


def __getattr__(name: str):
    # The estimator imports torch and scikit-learn: only on first use, so that the command line's
    # --help (and ``import hvae_detect`` itself) costs no more than the package's own modules.
    if name == "HVAEOutlierDetector":
        from hvae_detect.estimator import HVAEOutlierDetector

        globals()[name] = HVAEOutlierDetector
        return HVAEOutlierDetector
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
