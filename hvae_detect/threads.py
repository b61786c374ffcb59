"""How the CPU threads wait: passive OpenMP waiting, so that a run beside another busy process
slows down by about its fair share of the cores, not by 5-10x.

Why: torch's CPU kernels (ATen, MKL, oneDNN) run on GNU OpenMP (libgomp; see
``torch.__config__.parallel_info()``). By default a thread that finishes its part of a parallel
region spins for about 300,000 iterations before it sleeps. Alone on the machine that saves a
wake-up; beside another CPU-bound process it is the slowdown: at every barrier the thread that
is ahead burns its time slice spinning while the thread it waits for sits descheduled behind
the other process, and a training step crosses thousands of barriers. With
``OMP_WAIT_POLICY=PASSIVE`` a waiting thread sleeps at once and gives its core back.
``benchmarks/speed/shared_cores.py`` measures both (benchmarks/results/2026-12-06-shared-cores.md).

libgomp reads its settings once, when torch is first imported, so ``apply_wait_policy`` must run
before that: ``import hvae_detect`` calls it (it has no effect when torch came first), which every
entry point (``hvae-detect``, ``python -m hvae_detect``) runs first. It never overrides the user: when any of
``USER_SETTINGS`` is set (e.g. ``OMP_WAIT_POLICY=ACTIVE`` to keep spinning) nothing changes, and
thread counts (torch's default, ``OMP_NUM_THREADS``, ``torch.set_num_threads``) are not touched.
"""

from __future__ import annotations

import os
import sys

POLICY = {"OMP_WAIT_POLICY": "PASSIVE"}
# Any of these set by the user means they chose how threads wait (GNU or Intel OpenMP): keep it.
USER_SETTINGS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME", "KMP_LIBRARY")


def apply_wait_policy(environ=None, modules=None) -> str:
    """Set ``POLICY`` in the environment unless the user set a wait policy or torch is already
    imported (its OpenMP runtime has read the environment; changing it now would only reach child
    processes). Returns what happened: "applied", "user setting kept" or "too late: torch imported".
    Child processes (DataLoader workers, torchrun ranks) inherit the setting."""
    environ = os.environ if environ is None else environ
    modules = sys.modules if modules is None else modules
    if any(name in environ for name in USER_SETTINGS):
        return "user setting kept"
    if "torch" in modules:
        return "too late: torch imported"
    environ.update(POLICY)
    return "applied"
