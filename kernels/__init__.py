"""Triton kernels of hvae-detect, installed as hvae_detect.kernels.

layout.py (the mixture's parameter layout), reference.py (the PyTorch references),
dlogmix.py and logsumexp.py (the kernels with their torch wrappers) and dispatch.py
(the public entry points: the one input check, then a kernel or its reference).
"""
