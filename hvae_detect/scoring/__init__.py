"""Scoring: the engine that computes L and every L>k with importance samples, streamed.

``logmeanexp`` and ``StreamingLogMeanExp`` are the public reductions over importance samples.
"""

from hvae_detect.scoring.engine import StreamingLogMeanExp, logmeanexp

__all__ = ["StreamingLogMeanExp", "logmeanexp"]
