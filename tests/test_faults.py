"""Fail closed, lose nothing: kills during training and saving, tampered files, modes, overwrites."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO, TINY
from safetensors.torch import load_file, save_file

from hvae_detect import HVAEOutlierDetector
from hvae_detect.cli import main
from hvae_detect.persistence.atomic import atomic_write_text, verify_folder

# Runs the command line in a child that SIGKILLs itself at the N-th file operation or training step.
KILLER = r"""
import os, signal, sys
import hvae_detect.persistence.atomic as atomic, hvae_detect.persistence.checkpoints as checkpoints, hvae_detect.training.loop as training
N, count = int(sys.argv[1]), [0]
def tick():
    count[0] += 1
    if count[0] == N:
        os.kill(os.getpid(), signal.SIGKILL)
def wrap(module, name):
    inner = getattr(module, name)
    def hooked(*args, **kwargs):
        tick(); out = inner(*args, **kwargs); tick(); return out
    setattr(module, name, hooked)
for module, name in ((training, "training_loss"), (checkpoints, "save_file"), (atomic, "sha256"),
                     (atomic, "_exchange"), (atomic, "_fsync_dir")):
    wrap(module, name)
if sys.argv[2] == "save":
    import numpy as np
    from hvae_detect import HVAEOutlierDetector
    det = HVAEOutlierDetector.load(sys.argv[3], device="cpu")
    det.offset_ = float(sys.argv[5])
    det.save(sys.argv[4], overwrite=True)
else:
    from hvae_detect.cli import main
    sys.exit(main(sys.argv[2:]))
"""


def _run_killed(n, argv, cwd):
    return subprocess.run([sys.executable, "-c", KILLER, str(n), *argv], cwd=cwd, capture_output=True, text=True)


def _train_argv(root, save_dir, epochs=4):
    arch = {
        "config_deterministic": [
            [{"block": "ResBlockConv2d", "out_channels": 4, "kernel_size": 3, "stride": 2}],
            [],
            [],
        ],
        "config_stochastic": TINY["config_stochastic"],
    }
    return [
        "train",
        "--epochs",
        str(epochs),
        "--batch_size",
        "32",
        "--test_every",
        "1",
        "--free_nats_epochs",
        "2",
        "--warmup_epochs",
        "1",
        "--train_datasets",
        '{"MNISTBinarized": {"dynamic": true, "split": "train"}}',
        "--val_datasets",
        '{"MNISTBinarized": {"dynamic": false, "split": "validation"}}',
        "--config_deterministic",
        json.dumps(arch["config_deterministic"]),
        "--config_stochastic",
        json.dumps(arch["config_stochastic"]),
        "--data_root",
        str(root),
        "--save_dir",
        str(save_dir),
        "--device",
        "cpu",
        "--no_download",
        "--quiet",
    ]


def _state(run, which):
    return json.loads((run / "checkpoints" / which / "config.json").read_text())["training_state"]


@pytest.mark.slow
def test_sigkill_anywhere_then_resume_gives_the_uninterrupted_weights(noise_mnist_root, tmp_path):
    assert main(_train_argv(noise_mnist_root, tmp_path / "ref")) == 0
    (ref,) = (tmp_path / "ref").iterdir()
    ref_weights = load_file(ref / "checkpoints" / "last" / "model.safetensors")
    ref_best = _state(ref, "best")["best"]
    killed = resumed = 0
    # A run has ~35 events per epoch (training steps, each file, checksum, exchange and fsync);
    # 23 kill points from the end of the first epoch to the end of the run.
    for n in range(30, 142, 5):
        save_dir = tmp_path / f"kill{n}"
        out = _run_killed(n, _train_argv(noise_mnist_root, save_dir), REPO)
        if out.returncode == 0:
            continue  # the run finished before the n-th event
        assert out.returncode == -signal.SIGKILL, out.stderr[-2000:]
        killed += 1
        runs = [p for p in save_dir.iterdir() if not p.name.startswith(".")] if save_dir.exists() else []
        if not runs or not (runs[0] / "checkpoints" / "last").exists():
            continue  # killed before the first checkpoint: nothing to resume (and nothing lost)
        run = runs[0]
        best_before = _state(run, "best")["best"]["elbo"] if (run / "checkpoints" / "best").exists() else None
        assert main(["train", "--resume", str(run), "--device", "cpu", "--quiet"]) == 0
        resumed += 1
        verify_folder(run / "checkpoints" / "last")
        weights = load_file(run / "checkpoints" / "last" / "model.safetensors")
        for key, value in ref_weights.items():
            assert np.array_equal(weights[key].numpy(), value.numpy()), (n, key)
        best = _state(run, "best")["best"]
        assert best == ref_best and (best_before is None or best["elbo"] >= best_before)
        epochs = [json.loads(line)["epoch"] for line in (run / "log.jsonl").read_text().splitlines()]
        assert epochs == [1, 2, 3, 4], (n, epochs)
        assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]  # no leftovers
    assert killed >= 20 and resumed >= 18, (killed, resumed)


def test_resume_without_a_complete_last_checkpoint_refuses(noise_mnist_root, tmp_path, capsys):
    assert main(_train_argv(noise_mnist_root, tmp_path, epochs=2)) == 0
    (run,) = tmp_path.iterdir()
    best = (run / "checkpoints" / "best" / "model.safetensors").read_bytes()
    (run / "checkpoints" / "last" / "model.safetensors").unlink()
    assert main(["train", "--resume", str(run), "--device", "cpu", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "cannot resume" in err and "model.safetensors" in err and len(err.strip().splitlines()) == 1
    assert (run / "checkpoints" / "best" / "model.safetensors").read_bytes() == best  # nothing lost
    assert main(["score", "--model", str(run), "--checkpoint", "last", "--quiet"]) == 2  # no fallback


@pytest.fixture(scope="module")
def two_detectors(tmp_path_factory):
    root = tmp_path_factory.mktemp("dets")
    X = np.random.default_rng(0).integers(0, 256, size=(24, 1, 12, 12), dtype=np.uint8)
    det = HVAEOutlierDetector(architecture=TINY, epochs=1, batch_size=8, random_state=0, device="cpu").fit(X)
    det.save(root / "a")
    return root, det, X


@pytest.mark.slow
def test_sigkill_during_save_leaves_the_old_or_the_new_detector(two_detectors, tmp_path):
    root, det, X = two_detectors
    old_offset, new_offset = det.offset_, det.offset_ + 1.0
    seen = set()
    for n in range(7, 31, 2):  # the child's load takes the first ~6 events; its save the next ~16
        target = tmp_path / f"t{n}"
        det.save(target)  # the old detector
        out = _run_killed(n, ["save", str(root / "a"), str(target), str(new_offset)], REPO)
        assert out.returncode in (0, -signal.SIGKILL), out.stderr[-2000:]
        loaded = HVAEOutlierDetector.load(target, device="cpu")  # complete, checksums verified
        assert loaded.offset_ in (old_offset, new_offset)
        seen.add(loaded.offset_)
        np.testing.assert_array_equal(loaded.score_samples(X[:4]), det.score_samples(X[:4]))
    assert seen == {old_offset, new_offset}


def test_tampered_files_are_refused_with_the_file_named(two_detectors, tmp_path):
    root, det, X = two_detectors
    folder = tmp_path / "d"
    det.save(folder)
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0x10  # one bit of one weight
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="model.safetensors does not match its SHA-256"):
        HVAEOutlierDetector.load(folder)
    weights.write_bytes(bytes(data[: len(data) // 2]))  # truncated
    with pytest.raises(ValueError, match="model.safetensors"):
        HVAEOutlierDetector.load(folder)
    det.save(folder, overwrite=True)
    state = load_file(weights)
    state[next(iter(state))][:] = float("nan")
    save_file(state, weights)
    _refresh_manifest(folder)  # even with a matching checksum, NaN weights are refused
    with pytest.raises(ValueError, match="NaN or infinite weights"):
        HVAEOutlierDetector.load(folder)
    det.save(folder, overwrite=True)
    config = json.loads((folder / "config.json").read_text())
    for bad, match in ((float("nan"), "threshold"), (float("inf"), "threshold")):
        config["detector"]["fitted"]["offset_"] = bad
        (folder / "config.json").write_text(json.dumps(config))
        _refresh_manifest(folder)
        with pytest.raises(ValueError, match=match):
            HVAEOutlierDetector.load(folder)
    config["detector"]["fitted"]["offset_"] = 0.0
    config["detector"]["params"]["statistic"] = "median"
    (folder / "config.json").write_text(json.dumps(config))
    _refresh_manifest(folder)
    with pytest.raises(ValueError, match="statistic"):
        HVAEOutlierDetector.load(folder)
    (folder / "config.json").write_text("{not json")
    _refresh_manifest(folder)
    with pytest.raises(ValueError, match="config.json"):
        HVAEOutlierDetector.load(folder)


def _refresh_manifest(folder):
    from hvae_detect.persistence.atomic import MANIFEST, sha256

    names = json.loads((folder / MANIFEST).read_text())["files"]
    (folder / MANIFEST).write_text(json.dumps({"files": {n: sha256(folder / n) for n in names}}))


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_files_follow_the_umask_and_replacements_keep_their_mode(two_detectors, tmp_path, umask):
    root, det, X = two_detectors
    old = os.umask(umask)
    try:
        folder = det.save(tmp_path / "d")
        text = atomic_write_text(tmp_path / "notes.txt", "a")
    finally:
        os.umask(old)
    for path in [*folder.iterdir(), text]:
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask, path
    assert folder.stat().st_mode & 0o777 == 0o777 & ~umask
    os.chmod(text, 0o640)
    atomic_write_text(text, "b")
    assert text.stat().st_mode & 0o777 == 0o640


def test_nothing_is_overwritten_without_asking(two_detectors, tmp_path):
    root, det, X = two_detectors
    det.save(tmp_path / "d")
    with pytest.raises(ValueError, match="overwrite=True"):
        det.save(tmp_path / "d")
    det.save(tmp_path / "d", overwrite=True)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="did not write"):
        det.save(mine, overwrite=True)
    assert (mine / "config.json").read_text() == "{}"


@pytest.mark.parametrize(
    "flags, names",
    [
        (["--batch_size", "0"], "batch_size"),
        (["--free_nats", "nan"], "free_nats"),
        (["--learning_rate", "-1"], "learning_rate"),
        (["--n_mix", "0"], "n_mix"),
        (["--n_train_examples", "-3"], "n_train_examples"),
        (["--epochs", "0"], "epochs"),
    ],
)
def test_command_line_usage_errors_are_one_line_and_exit_2(noise_mnist_root, tmp_path, capsys, flags, names):
    try:
        code = main(_train_argv(noise_mnist_root, tmp_path / "m") + flags)
    except SystemExit as e:  # argparse's own checks
        code = e.code
    err = capsys.readouterr().err.strip().splitlines()
    # the flag named as the user spelled it or as --help shows it (dashes)
    assert code == 2 and (names in err[-1] or names.replace("_", "-") in err[-1]) and "Traceback" not in "\n".join(err)
    assert not (tmp_path / "m").exists() or not any((tmp_path / "m").iterdir())  # no empty run folder


def test_divergence_and_bad_files_fail_with_one_line(noise_mnist_root, tmp_path, capsys):
    assert main(_train_argv(noise_mnist_root, tmp_path / "m", epochs=2) + ["--learning_rate", "1e6"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "NaN" in err[0].replace("nan", "NaN")
    for run in (tmp_path / "m").iterdir():  # nothing non-finite was saved as best
        assert not (run / "checkpoints" / "best").exists() or np.isfinite(_state(run, "best")["best"]["elbo"])
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "scores-x.npz").write_bytes(b"not a zip")
    assert main(["results", str(tmp_path / "s")]) == 2
    assert "scores-x.npz" in capsys.readouterr().err
    assert main(["score", "--model", str(tmp_path / "nowhere")]) == 2
    assert "nowhere" in capsys.readouterr().err


def test_a_corrupt_data_file_is_named(tmp_path, capsys):
    (tmp_path / "mnist.npz").write_bytes(b"not an npz")
    assert main(_train_argv(tmp_path, tmp_path / "m", epochs=1)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "mnist.npz" in err[0] and not (tmp_path / "m").exists()
