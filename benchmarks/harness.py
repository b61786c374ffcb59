"""What every benchmark script shares: its command line, its header line, timing, data, records.

A script in benchmarks/<group>/ makes this module importable with one line, then imports it:

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: harness.py and the groups
    import harness  # noqa: E402

(so ``python benchmarks/<group>/<name>.py`` runs from anywhere; a script imports another one of its
group as ``from <group> import <name>``). This module imports neither torch nor hvae_detect at import
time: hvae_detect sets the OpenMP wait policy before torch is first imported, and some scripts measure
with torch's own policy on purpose (they import torch first).

- ``parser(doc, ...)``: an ArgumentParser described by the script's docstring, with the common flags.
- ``command(file, argv)``, ``header(...)``, ``load()``: what a results file logs about a run.
- ``timed(fn)``, ``seconds(fn)``, ``alternating(names, repeats)``, ``alternate(runs, repeats)``, ``spread(values)``:
  timing, with runs alternated (A, B, B, A, ...) so that a changing load hits every side alike.
- ``set_threads(n)``: torch's thread count.
- ``data_root()``, ``channels_first(x)``, ``images(name, split, n)``: the .npz files of ../shared/data.
- ``record_path(...)``, ``write_record(path, record)``: one run's record in benchmarks/records/.
- ``worktree(rev)``: another revision of the repository, checked out in a temporary folder.
- ``status_kib(field)``, ``reset_peak_rss()``: /proc/<pid>/status, for the memory benchmarks (Linux).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent
REPO = BENCHMARKS.parent
RECORDS = BENCHMARKS / "records"


# ---- the command line ---------------------------------------------------------------------------
def parser(
    doc: str,
    *,
    threads: int | None = None,
    repeats: int | None = None,
    seed: int | None = None,
    device: bool = False,
) -> argparse.ArgumentParser:
    """An ArgumentParser whose --help shows the script's docstring ``doc`` as written, with the common
    flags asked for (each keyword's value is the flag's default): ``--threads`` (torch threads; 0 keeps
    torch's default), ``--repeats`` (timed runs), ``--seed``, and with ``device=True`` ``--device``
    (cuda where torch sees a GPU, else cpu; the script has imported torch by then)."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    if threads is not None:
        p.add_argument("--threads", type=int, default=threads, help="torch threads (0: torch's default)")
    if repeats is not None:
        p.add_argument("--repeats", type=int, default=repeats, help="timed runs of each measurement")
    if seed is not None:
        p.add_argument("--seed", type=int, default=seed)
    if device:
        import torch

        p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return p


def set_threads(n: int | None) -> None:
    """torch's threads: ``n`` (0 keeps torch's default), or with None $OMP_NUM_THREADS, else 1."""
    import torch

    n = int(os.environ.get("OMP_NUM_THREADS", "1")) if n is None else n
    if n > 0:
        torch.set_num_threads(n)


def command(file: str, argv: list[str] | None = None, env: Iterable[str] = ()) -> str:
    """The command that ran, as a results file logs it: ``python benchmarks/<group>/<name>.py ARGS``
    (``argv``: the arguments main() got; None: the process's), after the variables of ``env`` that
    are set (``OMP_NUM_THREADS=1 python ...``)."""
    args = sys.argv[1:] if argv is None else argv
    script = Path(file).resolve()
    try:
        script = script.relative_to(REPO)
    except ValueError:
        pass
    prefix = "".join(f"{name}={os.environ[name]} " for name in env if name in os.environ)
    return " ".join([f"{prefix}python {script.as_posix()}", *args]).rstrip()


def load() -> str:
    """The load averages over 1, 5 and 15 minutes, e.g. "3.61 4.02 3.87" ("n/a" where unknown)."""
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def cpu_name() -> str:
    """The processor's model name (/proc/cpuinfo), else what platform knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def header(*extra: str) -> str:
    """One line saying when and where a run started: UTC date and time, the processor and its CPU
    cores, Python, torch's version, threads and GPU when the script has imported torch (this never
    imports it), the load averages, then ``extra``."""
    parts = [f"{now():%Y-%m-%d %H:%M} UTC", f"{platform.machine()} {cpu_name()}, {os.cpu_count()} CPU cores"]
    parts.append(f"Python {platform.python_version()}")
    torch = sys.modules.get("torch")
    if torch is not None:
        gpu = f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
        threads = torch.get_num_threads()
        parts.append(f"torch {torch.__version__}, {threads} torch thread{'s' * (threads != 1)}{gpu}")
    parts.append(f"load {load()}")
    return " · ".join([*parts, *extra])


# ---- timing -------------------------------------------------------------------------------------
def timed(fn: Callable[[], object], sync: Callable[[], object] | None = None) -> tuple[object, float]:
    """(``fn()``, its wall seconds); ``sync`` (e.g. torch.cuda.synchronize) runs before and after it."""
    if sync is not None:
        sync()
    t0 = time.perf_counter()
    out = fn()
    if sync is not None:
        sync()
    return out, time.perf_counter() - t0


def seconds(fn: Callable[[], object], sync: Callable[[], object] | None = None) -> float:
    """Wall seconds of ``fn()`` (``timed``)."""
    return timed(fn, sync)[1]


def alternating(names: Iterable, repeats: int) -> Iterator[tuple[int, object]]:
    """(repeat, name) in alternating order: the names in order, then reversed, and so on (A, B, B, A,
    ...), so that a load that changes during the runs touches every name alike."""
    names = list(names)
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            yield r, name


def alternate(runs: dict, repeats: int, sync: Callable[[], object] | None = None) -> dict:
    """{name: seconds of each run of ``runs[name]()``}, the runs alternated (``alternating``)."""
    times = {name: [] for name in runs}
    for _, name in alternating(runs, repeats):
        times[name].append(seconds(runs[name], sync))
    return times


def spread(values) -> tuple[float, float, float]:
    """(min, median, max)."""
    values = list(values)
    return min(values), statistics.median(values), max(values)


# ---- data ---------------------------------------------------------------------------------------
def data_root() -> Path:
    """$HVAE_DETECT_SHARED/data, else ../shared/data beside the repository."""
    return Path(os.environ.get("HVAE_DETECT_SHARED", REPO.parent / "shared")) / "data"


def channels_first(x):
    """Images (n, H, W) or (n, H, W, C) as (n, C, H, W)."""
    import numpy as np

    return x[:, None] if x.ndim == 3 else np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def images(name: str, split: str, n: int | None = None):
    """The first n images (all with None) of a data set's split ("train" or "test"), channels first."""
    import numpy as np

    with np.load(data_root() / f"{name}.npz") as f:
        x = f[f"x_{split}"][:n]
    return channels_first(x)


def preset_name(det) -> str:
    """The preset a fitted detector's model was built from (what architecture="auto" picked), or "custom"."""
    from hvae_detect.models.architectures import PRESETS, resolve_architecture

    return next((name for name in PRESETS if resolve_architecture(name) == det.model_.architecture), "custom")


# ---- records ------------------------------------------------------------------------------------
def record_path(directory, started: dt.datetime, name: str) -> Path:
    """Where a run's record goes: its start (UTC, to the minute), then ``name``."""
    return Path(directory) / f"{started:%Y-%m-%dT%H%MZ}_{name}.json"


def write_record(path, record: dict) -> Path:
    """Write ``record`` (benchmarks/records/README.md says its fields) as JSON at ``path``; never
    replaces a file, so a record once logged stays what was measured."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(path, "x") as f:
            f.write(json.dumps(record, indent=2) + "\n")
    except FileExistsError:
        raise FileExistsError(f"{path} exists; a record is never overwritten (move it, or another --record)") from None
    return path


# ---- another revision ---------------------------------------------------------------------------
@contextlib.contextmanager
def worktree(rev: str) -> Iterator[Path]:
    """Revision ``rev`` of this repository checked out (git worktree, detached) in a temporary folder."""
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "tree"
        subprocess.run(
            ["git", "-C", str(REPO), "worktree", "add", "--detach", str(tree), rev], check=True, capture_output=True
        )
        try:
            yield tree
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)], capture_output=True)


# ---- memory (Linux) -----------------------------------------------------------------------------
def status_kib(field: str, pid="self") -> int:
    """A field of /proc/<pid>/status in KiB (VmRSS, VmHWM, RssFile, ...), or 0 where it is absent."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def reset_peak_rss() -> None:
    """Reset this process's VmHWM to its current RSS: the peak that follows is the code's after this."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
