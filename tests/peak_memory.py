"""Peak memory of one scoring call: what the memory test and the scoring benchmark measure."""

from __future__ import annotations

import ctypes

import torch

from hvae_detect.scoring.engine import importance_bounds


class _Stop(Exception):
    pass


def _rss_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def peak_memory_mib(model, x, s, max_passes=None, max_rows=None):
    """Peak memory of one importance_bounds call above what was resident before it, in MiB.

    CPU: peak RSS (VmHWM, reset through /proc/self/clear_refs). CUDA: max_memory_allocated.
    ``max_passes`` stops the call after that many passes through the sampled layers: every
    pass has the same shape, so the peak is reached in the first ones and S = 1000 need not
    run to the end on a CPU.
    """
    calls = [0]
    inner = model.forward

    def counted(*args, **kwargs):
        if max_passes is not None and calls[0] >= max_passes:
            raise _Stop
        calls[0] += 1
        return inner(*args, **kwargs)

    model.forward = counted
    try:
        if x.is_cuda:
            torch.cuda.synchronize()
            base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
        else:
            try:
                ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed heap back so RSS shows live memory
            except OSError:
                pass
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM to the current RSS
            base = _rss_kib("VmRSS") * 1024
        try:
            importance_bounds(model, x, range(1, model.n_latents), s, seed=0, max_rows=max_rows)
        except _Stop:
            pass
        peak = torch.cuda.max_memory_allocated() if x.is_cuda else _rss_kib("VmHWM") * 1024
    finally:
        del model.forward
    return (peak - base) / 2**20, calls[0]
