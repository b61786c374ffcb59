"""Open a report of ``hvae-detect detect`` in a real headless browser: check that it renders its images, and
take the screenshot of it in docs/.

    apt-get install chromium                     # Debian's package; not installed by the project
    python benchmarks/report_screenshot.py       # writes docs/report.png (needs ../shared/data/mnist.npz)

Fits a detector on 300 MNIST test zeros written as PNG files (``hvae-detect fit --epochs 2``), scores 150
other zeros, 10 ones and 10 Fashion-MNIST images (when fashion_mnist.npz is there) plus one text file with
``hvae-detect detect --top 8``, then loads report.html in headless Chromium twice: ``--dump-dom`` (the page
counts the thumbnails the browser decoded into ``<body data-images-rendered>``; every one must be) and
``--screenshot`` (scaled to ``--width`` pixels wide with Pillow). The browser is looked for as chromium,
chromium-browser, google-chrome; without one the script says so and exits 2.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--virtual-time-budget=5000"]


def find_browser() -> str | None:
    return next((shutil.which(name) for name in BROWSERS if shutil.which(name)), None)


def rendered_images(browser: str, page: Path) -> int:
    """How many thumbnails of ``page`` the browser decoded (the page's own count, read from the dumped DOM)."""
    dom = subprocess.run(
        [browser, *_FLAGS, "--dump-dom", page.resolve().as_uri()], capture_output=True, text=True, timeout=120
    ).stdout
    found = re.search(r'data-images-rendered="(\d+)"', dom)
    if found is None:
        raise RuntimeError(f"the page did not count its images (no data-images-rendered in the DOM): {dom[:300]!r}")
    return int(found.group(1))


def screenshot(browser: str, page: Path, out: Path, width: int, window=(1100, 1500)) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        shot = Path(tmp) / "shot.png"
        subprocess.run(
            [
                browser,
                *_FLAGS,
                f"--window-size={window[0]},{window[1]}",
                f"--screenshot={shot}",
                page.resolve().as_uri(),
            ],
            capture_output=True,
            timeout=120,
            check=True,
        )
        img = Image.open(shot).convert("RGB")
        img = img.resize((width, round(img.height * width / img.width)), Image.LANCZOS)
        out.parent.mkdir(parents=True, exist_ok=True)
        img.save(out, optimize=True)


def _write(folder: Path, images, prefix: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, a in enumerate(images):
        Image.fromarray(a).save(folder / f"{prefix}{i:03d}.png")


def make_report(tmp: Path, data: Path) -> Path:
    with np.load(data / "mnist.npz") as d:
        x, y = d["x_test"], d["y_test"]
    zeros, ones = x[y == 0], x[y == 1]
    _write(tmp / "train", zeros[:300], "zero")
    _write(tmp / "new", zeros[300:450], "zero")
    _write(tmp / "new", ones[:10], "one")
    if (data / "fashion_mnist.npz").is_file():
        with np.load(data / "fashion_mnist.npz") as d:
            _write(tmp / "new", d["x_test"][:10], "fashion")
    (tmp / "new" / "notes.txt").write_text("not an image")
    run = [sys.executable, "-m", "hvae_detect"]
    subprocess.run(
        [*run, "fit", str(tmp / "train"), "--out", str(tmp / "det"), "--epochs", "2", "--quiet"], check=True, cwd=REPO
    )
    subprocess.run(
        [*run, "detect", str(tmp / "det"), str(tmp / "new"), "--out", str(tmp / "report"), "--top", "8", "--quiet"],
        cwd=REPO,
    )  # exit status 1: the text file is reported as unreadable
    return tmp / "report" / "report.html"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(REPO / "docs" / "report.png"))
    p.add_argument("--width", type=int, default=720, help="width of the picture in docs/")
    p.add_argument(
        "--data_root", default=str(Path(os.environ.get("HVAE_DETECT_SHARED", REPO.parent / "shared")) / "data")
    )
    args = p.parse_args(argv)
    browser = find_browser()
    if browser is None:
        print(f"no headless browser found ({', '.join(BROWSERS)}); install Debian's chromium package")
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        page = make_report(Path(tmp), Path(args.data_root))
        shown = len(re.findall("data:image/png;base64,", page.read_text()))
        rendered = rendered_images(browser, page)
        print(f"{browser}: {rendered} of {shown} thumbnails rendered")
        if rendered != shown:
            return 1
        screenshot(browser, page, Path(args.out), args.width)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
