"""Peak resident memory of ``hvae-detect detect`` on a folder of small image files: bounded, not growing with
the folder.

    python benchmarks/memory/folder_memory.py                        # 20,000 PNG files, and a quarter of them
    python benchmarks/memory/folder_memory.py --n 1000 --fit-n 200   # a quick check

Writes ``--n`` 28x28 grey PNG files into a temporary folder, in four sub-folders (MNIST test and training
digits from $HVAE_DETECT_SHARED/data or ../shared/data when present, else generated blobs), fits a detector
on ``--fit-n`` of them (``hvae-detect fit --epochs 1``, the estimator's default architecture), then runs
``hvae-detect detect`` in a child process on the whole folder and on its first quarter (one sub-folder),
and reports each child's peak RSS (``ru_maxrss`` of that child alone, from ``os.wait4``), wall time and
images/s. Streaming holds one batch of images at a time, so the two peaks should be close; the images of
the folder as float32 (what an in-memory array would take) are printed beside them. The folder is deleted
afterwards. Linux (ru_maxrss in KiB).

Measured 2026-12-06, 2 cores shared with other jobs (load average 5), --n 1000 --fit-n 200 (a check, not the
full run): detect on 1,000 files 876.5 MiB peak RSS (34.7 images/s), on 250 files 864.7 MiB.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: harness.py and the groups
import harness  # noqa: E402


def digits(n: int) -> tuple[np.ndarray, str]:
    root = harness.data_root() / "mnist.npz"
    if root.is_file():
        with np.load(root) as data:
            x = np.concatenate([data["x_test"], data["x_train"]])
        return x[np.arange(n) % len(x)], f"MNIST digits from {root}"
    rng = np.random.default_rng(0)
    x = rng.integers(0, 60, (n, 28, 28), dtype=np.uint8)
    x[:, 8:20, 8:20] += 180
    return x, "generated 28x28 blobs (no shared MNIST)"


def write_folder(folder: Path, images: np.ndarray) -> None:
    """PNG files in four sub-folders (quarters of the set): part0/000000.png, ..."""
    for i, a in enumerate(images):
        sub = folder / f"part{i * 4 // len(images)}"
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(a).save(sub / f"{i:06d}.png")


def run_child(argv: list[str]) -> dict:
    """Run ``python -m hvae_detect *argv``; its exit status, peak RSS (MiB) and wall time."""
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "hvae_detect", *argv], cwd=harness.REPO)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {
        "exit": proc.returncode,
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
        "seconds": round(time.perf_counter() - started, 1),
    }


def main(argv=None) -> int:
    p = harness.parser(__doc__)
    p.add_argument("--n", type=int, default=20_000, help="image files in the folder")
    p.add_argument("--fit-n", type=int, default=1000, help="of them, fit the detector on the first ones")
    p.add_argument("--batch-size", type=int, default=256, help="detect's --batch-size")
    p.add_argument("--json", default=None, help="also write the numbers to this file")
    args = p.parse_args(argv)
    x, source = digits(args.n)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        write_folder(tmp / "images", x)
        write_folder(tmp / "train", x[: args.fit_n])
        print(f"wrote {args.n:,} PNG files ({source}) in {time.perf_counter() - t0:.0f} s", flush=True)
        fit = run_child(["fit", str(tmp / "train"), "--out", str(tmp / "det"), "--epochs", "1", "--quiet"])
        if fit["exit"] != 0:
            print(f"fit failed: {fit}")
            return 1
        runs = {}
        for label, images in (("all", tmp / "images"), ("quarter", tmp / "images" / "part0")):
            n = sum(1 for _ in images.rglob("*.png"))
            out = run_child(
                [
                    "detect",
                    str(tmp / "det"),
                    str(images),
                    "--out",
                    str(tmp / f"report-{label}"),
                    "--quiet",
                    "--batch-size",
                    str(args.batch_size),
                ]
            )
            runs[label] = {**out, "images": n, "images_per_s": round(n / out["seconds"], 1)}
    float32_mib = args.n * 28 * 28 * 4 / 2**20
    print(harness.header())
    print(f"fit on {args.fit_n} images: {fit['seconds']} s, peak RSS {fit['peak_rss_mib']} MiB")
    for label, r in runs.items():
        print(
            f"detect on {r['images']:,} files ({label}): exit {r['exit']}, {r['seconds']} s "
            f"({r['images_per_s']} images/s), peak RSS {r['peak_rss_mib']} MiB"
        )
    print(f"(the {args.n:,} images as a float32 array: {float32_mib:.0f} MiB)")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {"n": args.n, "source": source, "fit": fit, "detect": runs, "float32_mib": round(float32_mib, 1)},
                indent=1,
            )
        )
    return 0 if all(r["exit"] == 0 for r in runs.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
