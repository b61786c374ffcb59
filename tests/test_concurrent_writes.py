"""Two writers, one folder: writers exclude each other through the lock beside the folder, a waiting
writer never deletes what the other is writing, and a failed write (full disk, read-only folder)
names the folder and its cause and leaves the previous set as it was."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, TINY
from safetensors import SafetensorError

from hvae_detect import HVAEOutlierDetector
from hvae_detect.persistence import atomic, checkpoints
from hvae_detect.persistence.atomic import lock_path, recover_folder, verify_folder, write_folder, writer_lock

SAVES = 20

# Loads the detector once, waits for the parent's go, then saves it SAVES times into one folder,
# each save with its own threshold; prints (threshold, start, end) of every save as JSON.
WRITER = r"""
import json, os, sys, time
from hvae_detect import HVAEOutlierDetector
source, target, go, base, saves = sys.argv[1:6]
det = HVAEOutlierDetector.load(source, device="cpu")
open(go + "." + base, "w").close()  # ready
while not os.path.exists(go):
    time.sleep(0.002)
log = []
for i in range(int(saves)):
    det.offset_ = float(base) + i
    start = time.time()
    det.save(target, overwrite=True)
    log.append((det.offset_, start, time.time()))
print(json.dumps(log))
"""


@pytest.fixture(scope="module")
def saved_detector(tmp_path_factory):
    root = tmp_path_factory.mktemp("writers")
    X = np.random.default_rng(0).integers(0, 256, size=(16, 1, 12, 12), dtype=np.uint8)
    det = HVAEOutlierDetector(architecture=TINY, epochs=1, batch_size=8, random_state=0, device="cpu").fit(X)
    det.save(root / "source")
    return root / "source", det, X


def _dot_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.parent.iterdir() if p.name.startswith(f".{folder.name}."))


def test_two_processes_saving_into_one_folder_end_with_one_complete_set(saved_detector, tmp_path):
    source, det, X = saved_detector
    target, go = tmp_path / "shared", tmp_path / "go"
    bases = (1000.0, 2000.0)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    children = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(source), str(target), str(go), str(b), str(SAVES)],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for b in bases
    ]
    deadline = time.monotonic() + 60
    while not all(Path(f"{go}.{b}").exists() for b in bases):  # both loaded: start them together
        assert time.monotonic() < deadline and all(c.poll() is None for c in children), [
            c.communicate()[1][-2000:] for c in children if c.poll() is not None
        ]
        time.sleep(0.01)
    go.touch()
    logs = []
    for child in children:
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0 and "Error" not in err, err[-3000:]
        logs.append(json.loads(out))
    assert [len(log) for log in logs] == [SAVES, SAVES]
    # The two writers really overlapped in time, so each had to wait for the other.
    (a_start, a_end), (b_start, b_end) = [(log[0][1], log[-1][2]) for log in logs]
    assert a_start < b_end and b_start < a_end
    # Saves are serialized: the folder holds whichever writer saved last, its last save, whole.
    verify_folder(target)
    loaded = HVAEOutlierDetector.load(target, device="cpu")
    last = max((log[-1] for log in logs), key=lambda entry: entry[2])
    assert loaded.offset_ == last[0]
    np.testing.assert_array_equal(loaded.score_samples(X[:4]), det.score_samples(X[:4]))
    assert {p.name for p in target.iterdir()} == {"model.safetensors", "config.json", "manifest.json"}
    assert _dot_files(target) == []  # no staging folder, no lock file left


def _files(text="new"):
    """A set with a model folder's names (so check_writable_model_dir accepts it) holding ``text``."""
    return {name: (lambda tmp: Path(tmp).write_text(text)) for name in ("config.json", "model.safetensors")}


def test_a_waiting_writer_names_the_holder_and_deletes_nothing(tmp_path):
    target = write_folder(tmp_path / "d", _files("old"))
    staging = tmp_path / ".d.new-0123abcd"  # what the holder is writing at this moment
    with writer_lock(target):
        staging.mkdir()
        (staging / "config.json").write_text("half")
        assert lock_path(target).parent == target.parent and lock_path(target).exists()
        checkpoints.check_writable_model_dir(target, overwrite=True)  # the lock is not inside the folder
        t0 = time.monotonic()
        with pytest.raises(TimeoutError) as err:
            write_folder(target, _files(), wait=0.3)
        assert time.monotonic() - t0 >= 0.3
        message = str(err.value)
        assert str(target) in message and f"pid {os.getpid()}" in message and "\n" not in message
        recover_folder(target)  # a reader changes nothing either
        assert (staging / "config.json").read_text() == "half" and (target / "config.json").read_text() == "old"
    assert not lock_path(target).exists()  # released and removed
    write_folder(target, _files())  # the holder is gone: its staging folder is provably abandoned
    assert (target / "config.json").read_text() == "new" and _dot_files(target) == []


def test_a_waiting_writer_goes_on_when_the_holder_finishes(tmp_path):
    target = write_folder(tmp_path / "d", _files("old"))
    held, release = threading.Event(), threading.Event()

    def holder():
        with writer_lock(target):
            held.set()
            release.wait(10)

    thread = threading.Thread(target=holder)
    thread.start()
    held.wait(10)
    threading.Timer(0.2, release.set).start()
    write_folder(target, _files(), wait=10)
    thread.join()
    assert (target / "config.json").read_text() == "new" and _dot_files(target) == []


def test_the_lock_file_of_a_killed_writer_is_taken_over(tmp_path):
    target = write_folder(tmp_path / "d", _files("old"))
    lock_path(target).write_text("pid 999999 on elsewhere")  # no process holds its flock any more
    stale = tmp_path / ".d.new-dead0000"
    stale.mkdir()
    write_folder(target, _files(), wait=0)
    assert (target / "config.json").read_text() == "new" and _dot_files(target) == []


def test_a_reader_leaves_a_mid_exchange_folder_to_its_writer(tmp_path):
    """Where the exchange is two renames, the folder is briefly missing: a reader must not move a set
    into its place while the writer holds the lock, and recovers it once nobody does."""
    target = write_folder(tmp_path / "d", _files("old"))
    with writer_lock(target):
        os.rename(target, tmp_path / ".d.old-0000aaaa")
        recover_folder(target)
        assert not target.exists()
    recover_folder(target)
    assert (target / "config.json").read_text() == "old"


@pytest.mark.parametrize("lockless", ["flock refused", "no fcntl"])
def test_without_file_locks_writes_go_on_and_keep_other_staging_folders(tmp_path, monkeypatch, lockless):
    target = write_folder(tmp_path / "d", _files("old"))
    if lockless == "no fcntl":
        monkeypatch.setattr(atomic, "fcntl", None)
    else:

        def refuse(fd, op):
            raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

        monkeypatch.setattr(atomic.fcntl, "flock", refuse)
    other = tmp_path / ".d.new-0123abcd"  # maybe another writer's, maybe abandoned: nobody can tell
    other.mkdir()
    with pytest.warns(RuntimeWarning, match="no file locks"):
        write_folder(target, _files())
    assert (target / "config.json").read_text() == "new" and other.is_dir()


# ---------------------------------------------------------------- full disk, read-only folder


def _enospc_safetensors(tensors, path):
    raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")


def _fail_for_staging(real, code):
    def fail(self, *args, **kwargs):
        if ".new-" in str(self):
            raise OSError(code, os.strerror(code), str(self))
        return real(self, *args, **kwargs)

    return fail


FAILURES = {  # how the write fails -> (errno, what the message names)
    "full disk in safetensors": (errno.ENOSPC, "model.safetensors"),
    "full disk in config.json": (errno.ENOSPC, "config.json"),
    "read-only folder": (errno.EROFS, "creating .shared.new-"),
    "no permission for the lock": (errno.EACCES, "lock"),
}


@pytest.mark.parametrize("failure", FAILURES)
def test_a_failed_save_names_folder_and_cause_and_keeps_the_previous_set(
    saved_detector, tmp_path, monkeypatch, failure
):
    source, det, X = saved_detector
    target = tmp_path / "shared"
    det.save(target)
    before = {p.name: p.read_bytes() for p in target.iterdir()}
    code, names = FAILURES[failure]
    if failure == "full disk in safetensors":
        monkeypatch.setattr(checkpoints, "save_file", _enospc_safetensors)
    elif failure == "full disk in config.json":
        monkeypatch.setattr(Path, "write_text", _fail_for_staging(Path.write_text, code))
    elif failure == "read-only folder":
        monkeypatch.setattr(Path, "mkdir", _fail_for_staging(Path.mkdir, code))
    else:
        real_open = os.open

        def refuse_lock(path, *args, **kwargs):
            if str(path).endswith(".lock"):
                raise PermissionError(code, os.strerror(code), str(path))
            return real_open(path, *args, **kwargs)

        monkeypatch.setattr(os, "open", refuse_lock)
    with pytest.raises(OSError) as err:
        det.save(target, overwrite=True)
    message = str(err.value)
    assert err.value.errno == code and "\n" not in message, message
    assert str(target) in message and os.strerror(code) in message and names in message, message
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert HVAEOutlierDetector.load(target, device="cpu").offset_ == det.offset_
    assert _dot_files(target) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_really_read_only_folder(saved_detector, tmp_path):
    source, det, X = saved_detector
    target = tmp_path / "ro" / "shared"
    det.save(target)
    before = {p.name: p.read_bytes() for p in target.iterdir()}
    os.chmod(target.parent, 0o555)
    try:
        with pytest.raises(PermissionError, match="cannot write .*shared"):
            det.save(target, overwrite=True)
    finally:
        os.chmod(target.parent, 0o755)
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before and _dot_files(target) == []
