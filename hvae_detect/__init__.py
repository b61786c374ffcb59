"""hvae-detect: out-of-distribution detection with hierarchical VAEs (LLR>k, Havtorn et al. 2021)."""

from hvae_detect.estimator import HVAEOutlierDetector

__all__ = ["HVAEOutlierDetector"]
__version__ = "0.1.0"
