"""Same scores before and after a change: this checkout against another revision, bit for bit.

    python benchmarks/speed/same_scores.py --rev b5f0c1b

For each model family (VAE, LVAE, BIVA) and likelihood (Bernoulli on grey images, the
discretized logistic mixture on colour images), with the estimator's objective and with the
paper's (per-element free nats, data-dependent initialisation, ReLU, the paper's head), one
process per revision fits the same detector on the same random images, scores them
(``ood_scores`` with S = 3, S' = 2, and ``score_samples`` of every statistic), and saves the
detector. This checkout then loads the other revision's saved detectors and a run folder its
``hvae-detect train`` wrote, and scores them. Every array must match bitwise; the script
prints each comparison and exits with 1 on the first difference.
The other revision is checked out into a temporary git worktree and imported from there.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: harness.py and the groups
import harness  # noqa: E402

CHILD = r"""
import json, sys
from pathlib import Path
import numpy as np, torch
torch.set_num_threads(1)
from hvae_detect import HVAEOutlierDetector

out, mode = Path(sys.argv[1]), sys.argv[2]

def conv(ch, k, s):
    return {"block": "ResBlockConv2d", "out_channels": ch, "kernel_size": k, "stride": s}

ARCH = {"config_deterministic": [[conv(8, 3, 2)], [conv(8, 3, 2)], [{"block": "ResBlockDense", "out_features": 16}]],
        "config_stochastic": [{"block": "GaussianConv2d", "latent_features": 2},
                              {"block": "GaussianDense", "latent_features": 4},
                              {"block": "GaussianDense", "latent_features": 2}]}
PAPER = {"free_nats_mode": "element", "data_init": True, "activation": "ReLU", "likelihood_head": "paper"}
STATISTICS = sys.argv[3].split(",")

def images(channels, seed):
    shape = (1, 12, 12) if channels == 1 else (3, 8, 8)
    return np.random.default_rng(seed).integers(0, 256, (48, *shape), dtype=np.uint8)

def scores(det, x):
    got = {f"ood/{k}": v for k, v in det.ood_scores(x).items()}
    for stat in STATISTICS:
        det.set_params(statistic=stat)
        got[f"score_samples/{stat}"] = det.score_samples(x)
    return got

arrays = {}
for family in ("VAE", "LVAE", "BIVA"):
    for channels in (1, 3):
        for objective, extra in (("estimator", {}), ("paper", PAPER)):
            name = f"{family}-{channels}ch-{objective}"
            x = images(channels, 1)
            if mode == "fit":
                det = HVAEOutlierDetector(architecture={"model": family, **ARCH}, epochs=2, batch_size=16, n_mix=2,
                                          iw_samples=3, iw_samples_lk=2, random_state=0, device="cpu", **extra)
                det.fit(images(channels, 0))
                det.save(out / "detectors" / name)
            else:
                det = HVAEOutlierDetector.load(Path(sys.argv[4]) / "detectors" / name, device="cpu")
            arrays.update({f"{name}/{k}": v for k, v in scores(det, x).items()})
if mode == "fit":
    from hvae_detect.cli import main
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(96, 28, 28), dtype=np.uint8)
    (out / "data").mkdir()
    np.savez(out / "data" / "mnist.npz", x_train=x[:64], y_train=np.zeros(64, np.int64), x_test=x[64:],
             y_test=np.zeros(32, np.int64))
    assert main(["train", "--architecture", "small", "--epochs", "1", "--batch_size", "32", "--data_root",
                 str(out / "data"), "--train_datasets", '{"MNISTBinarized": {"dynamic": true, "split": "train"}}',
                 "--val_datasets", '{"MNISTBinarized": {"dynamic": false, "split": "validation"}}',
                 "--save_dir", str(out / "runs"), "--quiet", "--no_download"]) == 0
    run = next((out / "runs").iterdir())
    run.rename(out / "runs" / "run")
det = HVAEOutlierDetector.load((Path(sys.argv[4]) if mode == "load" else out) / "runs" / "run", device="cpu")
x = np.random.default_rng(5).integers(0, 256, (16, 28, 28), dtype=np.uint8)
arrays.update({f"run/{k}": v for k, v in det.ood_scores(x).items()})
np.savez(out / f"scores-{mode}.npz", **arrays)
"""


def child(python_path: Path, out: Path, mode: str, statistics: str, other: Path | None = None):
    args = [sys.executable, "-c", CHILD, str(out), mode, statistics] + ([str(other)] if other else [])
    subprocess.run(args, check=True, cwd=out, env={**os.environ, "PYTHONPATH": str(python_path)})


def compare(a: Path, b: Path, what: str) -> int:
    import numpy as np

    fa, fb = np.load(a), np.load(b)
    bad = 0
    for key in sorted(set(fa.files) & set(fb.files)):
        same = fa[key].dtype == fb[key].dtype and np.array_equal(fa[key], fb[key])
        bad += not same
        if not same:
            print(f"DIFFERENT {what}: {key}: largest difference {np.abs(fa[key] - fb[key]).max():.3g}")
    missing = sorted(set(fa.files) ^ set(fb.files))
    print(
        f"{what}: {len(set(fa.files) & set(fb.files))} arrays compared, {bad} differ"
        + (f"; only in one: {missing}" if missing else "")
    )
    return bad


def main(argv=None) -> int:
    parser = harness.parser(__doc__)
    parser.add_argument("--rev", required=True, help="the revision to compare with (e.g. main before a change)")
    parser.add_argument(
        "--statistics",
        default="llr,elbo,lk",
        help="statistics of score_samples known to both revisions (comma-separated)",
    )
    args = parser.parse_args(argv)
    print(harness.header())
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        old, new = tmp / "old", tmp / "new"
        old.mkdir(), new.mkdir()
        with harness.worktree(args.rev) as tree:
            # The other revision's package with its own kernels inside, as an install lays it out (on
            # PYTHONPATH alone, hvae_detect.kernels would resolve to this checkout's through its install).
            old_src = tmp / "old-src"
            shutil.copytree(tree / "hvae_detect", old_src / "hvae_detect")
            shutil.copytree(tree / "kernels", old_src / "hvae_detect" / "kernels")
            child(old_src, old, "fit", args.statistics)
            child(harness.REPO, new, "fit", args.statistics)
            child(harness.REPO, new, "load", args.statistics, other=old)
        bad = compare(old / "scores-fit.npz", new / "scores-fit.npz", "fit and score, both revisions")
        bad += compare(old / "scores-fit.npz", new / "scores-load.npz", "the other revision's saves, loaded here")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
