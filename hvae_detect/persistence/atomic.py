"""Writes that fail closed: a reader sees the old file (or folder) or the new one, never half.

Files and folders get the modes ``open()`` / ``mkdir()`` would give them under the user's
umask (a replaced file keeps its mode), not the owner-only modes of temporary files.
A folder of several files is written as a unit: the whole set goes into a fresh temporary
folder with a manifest of SHA-256 checksums, is flushed to disk, and then takes the
target's place in one atomic exchange (``renameat2(RENAME_EXCHANGE)`` on Linux; elsewhere
two renames, and ``recover_folder`` completes an exchange a kill interrupted).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import hashlib
import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Callable

MANIFEST = "manifest.json"


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


def write_folder(target, files: dict[str, Callable[[str], None]]) -> Path:
    """Write ``files`` ({name: write(tmp_path)}) as one unit into folder ``target``, with a
    manifest of their SHA-256 checksums; the previous contents of ``target`` are replaced whole."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    recover_folder(target, cleanup=True)
    tmp = target.parent / f".{target.name}.new-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        file_mode = 0o666 & ~_umask()
        for name, write in files.items():
            write(str(tmp / name))
        digests = {name: sha256(tmp / name) for name in files}
        (tmp / MANIFEST).write_text(json.dumps({"files": digests}, indent=1))
        for name in [*files, MANIFEST]:
            with open(tmp / name, "rb+") as f:
                os.fsync(f.fileno())
            os.chmod(tmp / name, file_mode)
        os.chmod(tmp, 0o777 & ~_umask())
        _fsync_dir(tmp)
        if target.exists() and _exchange(tmp, target):
            _fsync_dir(target.parent)
            shutil.rmtree(tmp)  # now holds the old set
            return target
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
    return target


def _complete(folder: Path) -> bool:
    try:
        verify_folder(folder)
        return True
    except ValueError:
        return False


def recover_folder(target, cleanup: bool = False) -> None:
    """Finish what a kill interrupted in ``write_folder``: if ``target`` is missing, the newest
    complete new set (else the old set) takes its place. ``cleanup`` (writers only: a reader
    must not remove a set another process is still writing) also removes the leftovers."""
    target = Path(target)
    if not target.parent.is_dir():
        return
    new = sorted(target.parent.glob(f".{target.name}.new-*"), key=lambda p: p.stat().st_mtime, reverse=True)
    old = sorted(target.parent.glob(f".{target.name}.old-*"), key=lambda p: p.stat().st_mtime, reverse=True)
    if not target.exists():
        for candidate in [*new, *old]:
            if _complete(candidate):
                os.rename(candidate, target)
                _fsync_dir(target.parent)
                break
    for leftover in [*new, *old] if cleanup else []:
        if leftover.exists():
            shutil.rmtree(leftover, ignore_errors=True)


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
