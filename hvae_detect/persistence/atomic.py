"""Writes that fail closed: a reader sees the old file (or folder) or the new one, never half.

Files and folders get the modes ``open()`` / ``mkdir()`` would give them under the user's
umask (a replaced file keeps its mode), not the owner-only modes of temporary files.
A folder of several files is written as a unit: the whole set goes into a fresh temporary
folder with a manifest of SHA-256 checksums, is flushed to disk, and then takes the
target's place in one atomic exchange (``renameat2(RENAME_EXCHANGE)`` on Linux; elsewhere
two renames, and ``recover_folder`` completes an exchange a kill interrupted).

Writers of one folder exclude each other; readers take no lock. A writer holds an advisory
``flock`` on ``.<name>.lock`` beside the folder (beside: the folder holds only its set) from
before it clears leftovers, through staging, to the final rename. The lock file names its
holder (pid, host) and is unlinked on release; the kernel drops a killed writer's lock and the
next writer takes the file over. Holding the lock proves no other writer is active, so every
``.<name>.new-*`` / ``.old-*`` folder then present is abandoned and is removed. A second
writer polls for the lock up to ``WRITER_WAIT_S`` seconds, then raises a TimeoutError naming
the folder and the holder; it never deletes what another writer is writing. Single files
(``atomic_write``) need no lock: each writer renames its own temporary file, the last wins.

Without lock support (no ``fcntl``, or ``flock`` refused with ENOLCK / EOPNOTSUPP, as on some
network or FUSE mounts) writers are not excluded: a RuntimeWarning says so, each still swaps
in its own complete set, and none removes a staging folder it did not create (none can be
proved abandoned), so leftovers of killed writes stay until a locking writer removes them.

A write that fails before the exchange (full disk, read-only or forbidden folder) removes
its staging folder, leaves the previous contents as they were, and raises an OSError (errno
kept) with one line naming the folder, the step and the cause.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import glob
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no flock
    fcntl = None

MANIFEST = "manifest.json"
WRITER_WAIT_S = 300.0  # how long a writer waits for another writer of the same folder
_NO_LOCKS = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS}


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(target, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` on a temporary file beside ``target``, then rename it over ``target``."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    mode = target.stat().st_mode & 0o7777 if target.exists() else 0o666 & ~_umask()
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(target.parent)
    return target


def atomic_write_text(target, text: str) -> Path:
    return atomic_write(target, lambda tmp: Path(tmp).write_text(text))


def atomic_write_json(target, obj) -> Path:
    return atomic_write_text(target, json.dumps(obj, indent=2, allow_nan=False))


def sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return False
    libc = ctypes.CDLL(libc_name, use_errno=True)
    if not hasattr(libc, "renameat2"):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if libc.renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    if ctypes.get_errno() in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(ctypes.get_errno(), f"cannot exchange {a} and {b}: {os.strerror(ctypes.get_errno())}")


def lock_path(target) -> Path:
    """The lock file of folder ``target``: ``.<name>.lock`` beside it."""
    target = Path(target)
    return target.parent / f".{target.name}.lock"


def _holder(lock: Path) -> str:
    with contextlib.suppress(OSError):
        return lock.read_text().strip() or "unnamed"
    return "gone"


def _acquire(target: Path, lock: Path, wait: float) -> int | None:
    """A descriptor of ``lock`` holding its flock, or None where the filesystem has no locks."""
    deadline, pause = time.monotonic() + wait, 0.005
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            raise _write_error(target, f"creating its lock {lock.name}", e) from None
        try:
            if fcntl is None:
                raise OSError(errno.ENOSYS, "no fcntl module")
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    errno.ETIMEDOUT,
                    f"cannot write {target}: another writer ({_holder(lock)}) has held {lock} for over {wait:g} s",
                ) from None
            time.sleep(pause)
            pause = min(2 * pause, 0.1)
            continue
        except OSError as e:
            os.close(fd)
            if e.errno in _NO_LOCKS:
                warnings.warn(
                    f"{lock}: this filesystem has no file locks ({e.strerror}); writers of {target} are "
                    "not excluded from each other, and leftovers of interrupted writes are kept",
                    RuntimeWarning,
                    stacklevel=2,
                )
                return None
            raise _write_error(target, f"locking {lock.name}", e) from None
        try:  # a releasing holder unlinks the file: a lock on an unlinked file excludes nobody
            if os.path.samestat(os.fstat(fd), os.stat(lock)):
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


@contextlib.contextmanager
def writer_lock(target, wait: float = WRITER_WAIT_S):
    """Hold the writers' lock of folder ``target``; yields True, or False where the filesystem has no locks.

    Raises TimeoutError naming the folder and the holder when another writer keeps it ``wait`` seconds.
    """
    target = Path(target)
    lock = lock_path(target)
    fd = _acquire(target, lock, wait)
    if fd is None:
        yield False
        return
    try:
        with contextlib.suppress(OSError):  # the name is for error messages only: a full disk may refuse it
            os.ftruncate(fd, 0)
            os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode())
        yield True
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock)  # before unlocking, so a waiter never locks a file that is already gone
        os.close(fd)


def _errno_of(e: BaseException) -> int | None:
    """The errno of an OSError, or of an I/O error reported as text (safetensors: "... (os error 28)")."""
    if isinstance(e, OSError):
        return e.errno
    found = re.search(r"\(os error (\d+)\)", str(e))
    return int(found.group(1)) if found else None


def _write_error(target: Path, doing: str, e: BaseException) -> OSError:
    """One line naming the folder, the step and the cause; OSError(errno, ...) picks the subclass
    (PermissionError for EACCES, ...)."""
    code = _errno_of(e)
    cause = os.strerror(code) if code else str(e).splitlines()[0]
    message = f"cannot write {target}: {cause} ({doing}); its previous contents are unchanged"
    return OSError(code, message) if code else OSError(message)


def write_folder(target, files: dict[str, Callable[[str], None]], wait: float = WRITER_WAIT_S) -> Path:
    """Write ``files`` ({name: write(tmp_path)}) as one unit into folder ``target``, with a
    manifest of their SHA-256 checksums; the previous contents of ``target`` are replaced whole.

    Holds ``writer_lock(target, wait)`` throughout (see the module docstring). An I/O error
    while staging (full disk, read-only folder) raises a one-line OSError naming ``target``."""
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _write_error(target, f"creating {target.parent}", e) from None
    with writer_lock(target, wait) as locked:
        _recover(target, cleanup=locked)
        _stage_and_exchange(target, files)
    return target


def _stage_and_exchange(target: Path, files: dict[str, Callable[[str], None]]) -> None:
    """Stage ``files`` beside ``target`` and exchange them into place; the caller holds the lock."""
    tmp = target.parent / f".{target.name}.new-{uuid.uuid4().hex[:8]}"
    doing = f"creating {tmp.name}"
    try:
        tmp.mkdir()
        file_mode = 0o666 & ~_umask()
        for name, write in files.items():
            doing = f"writing {name}"
            write(str(tmp / name))
        doing = f"writing {MANIFEST}"
        digests = {name: sha256(tmp / name) for name in files}
        (tmp / MANIFEST).write_text(json.dumps({"files": digests}, indent=1))
        doing = "flushing the new set to disk"
        for name in [*files, MANIFEST]:
            with open(tmp / name, "rb+") as f:
                os.fsync(f.fileno())
            os.chmod(tmp / name, file_mode)
        os.chmod(tmp, 0o777 & ~_umask())
        _fsync_dir(tmp)
    except BaseException as e:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, Exception) and _errno_of(e) is not None:
            raise _write_error(target, doing, e) from None
        raise
    try:
        if target.exists() and _exchange(tmp, target):
            _fsync_dir(target.parent)
            shutil.rmtree(tmp)  # now holds the old set
            return
        old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
        if target.exists():
            os.rename(target, old)
        os.rename(tmp, target)
        _fsync_dir(target.parent)
        if old.exists():
            shutil.rmtree(old)
    except BaseException:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        raise


def _complete(folder: Path) -> bool:
    try:
        verify_folder(folder)
        return True
    except ValueError:
        return False


def _leftovers(target: Path, kind: str) -> list[Path]:
    """``.<name>.<kind>-*`` folders beside ``target``, newest first (ones that vanish meanwhile are skipped)."""
    found = []
    for path in target.parent.glob(f".{glob.escape(target.name)}.{kind}-*"):
        with contextlib.suppress(FileNotFoundError):
            found.append((path.stat().st_mtime, path))
    return [path for _, path in sorted(found, reverse=True)]


def _recover(target: Path, cleanup: bool) -> None:
    """``recover_folder``'s work; the caller holds the writers' lock (or, reading, knows no writer does)."""
    new, old = _leftovers(target, "new"), _leftovers(target, "old")
    if not target.exists():
        for candidate in [*new, *old]:
            if _complete(candidate):
                os.rename(candidate, target)
                _fsync_dir(target.parent)
                break
    for leftover in [*new, *old] if cleanup else []:
        if leftover.exists():
            shutil.rmtree(leftover, ignore_errors=True)


def recover_folder(target, cleanup: bool = False, wait: float = WRITER_WAIT_S) -> None:
    """Finish what a kill interrupted in ``write_folder``: if ``target`` is missing, the newest
    complete new set (else the old set) takes its place.

    ``cleanup`` (writers) waits for the writers' lock and, holding it, also removes the leftovers:
    none can belong to a live writer then. A reader (no ``cleanup``) does nothing while ``target``
    exists; otherwise it recovers only when no writer holds the lock (one that does is mid-exchange
    and puts a set in place itself), or when the folder cannot be locked (read-only: no writer either)."""
    target = Path(target)
    if not target.parent.is_dir():
        return
    if cleanup:
        with writer_lock(target, wait) as locked:
            _recover(target, cleanup=locked)
        return
    if target.exists() or not (_leftovers(target, "new") or _leftovers(target, "old")):
        return
    try:
        with writer_lock(target, wait=0):
            _recover(target, cleanup=False)
    except TimeoutError:
        return
    except OSError:  # cannot create the lock file: nobody can write here either
        with contextlib.suppress(OSError):
            _recover(target, cleanup=False)


def verify_folder(folder) -> None:
    """Raise ValueError naming the file unless every file of the manifest matches its checksum."""
    folder = Path(folder)
    path = folder / MANIFEST
    try:
        digests = json.loads(path.read_text())["files"]
    except FileNotFoundError:
        raise ValueError(f"{path} is missing: {folder} is not a complete saved set") from None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path} cannot be read ({e})") from None
    for name, digest in digests.items():
        file = folder / name
        if not file.is_file():
            raise ValueError(f"{file} is missing (listed in {path})")
        if sha256(file) != digest:
            raise ValueError(f"{file} does not match its SHA-256 in {path}: the file is corrupt or was changed")
