"""Triton kernels of hvae-detect (installed as hvae_detect.kernels; triton is imported lazily)."""
