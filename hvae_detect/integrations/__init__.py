"""The detector in other libraries' interfaces, each an optional extra imported only when asked for.

- ``hvae_detect.integrations.pyod``: ``HVAE``, a PyOD ``BaseDetector``
  (``pip install "hvae-detect[pyod]"``).
- ``hvae_detect.integrations.pytorch_ood``: ``HVAE``, a pytorch-ood ``Detector``
  (``pip install "hvae-detect[pytorch-ood]"``).

Both wrap an ``HVAEOutlierDetector``; keep a fitted one with its own ``save`` / ``load`` (no pickle).
"""
