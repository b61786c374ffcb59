"""Triton kernels of hvae-detect, installed as hvae_detect.kernels: layout, references, kernels, dispatch."""
