"""The flags of ``hvae-detect fit`` and ``hvae-detect detect`` (your own images), added to the command line
by ``hvae_detect.cli``. The work lives in ``hvae_detect.commands.fit_images`` and ``.detect``, imported only
when the command runs, so that ``--help`` and usage errors are answered without torch.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
from pathlib import Path


def _module_doc(name: str) -> str | None:
    """The docstring of module ``name``, read from its source without running it."""
    try:
        return ast.get_docstring(ast.parse(Path(importlib.util.find_spec(name).origin).read_text()))
    except (OSError, TypeError, SyntaxError):
        return None


def int_at_least(minimum: int, what: str):
    """An argparse type: an integer >= ``minimum``, else a usage error naming ``what`` was expected."""

    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text}")
        return value

    return parse


_positive_int = int_at_least(1, "a positive integer")
_non_negative_int = int_at_least(0, "a non-negative integer")


def _image_size(text):
    """An argparse type: N or WIDTHxHEIGHT, as (width, height)."""
    parts = text.strip().lower().split("x")
    if len(parts) not in (1, 2) or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"expected N or WIDTHxHEIGHT (e.g. 64 or 64x48), got {text!r}")
    return (int(parts[0]), int(parts[-1]))


def _positive_float(text):
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _cmd_fit(args) -> int:
    from hvae_detect.commands.fit_images import fit_images

    return fit_images(
        args.images,
        args.out,
        image_size=args.image_size,
        crop=args.crop,
        channels=args.channels,
        epochs=args.epochs,
        minutes=args.minutes,
        architecture=args.architecture,
        batch_size=args.batch_size,
        device=args.device,
        seed=args.seed,
        overwrite=args.overwrite,
        quiet=args.quiet,
    )


def _cmd_detect(args) -> int:
    from hvae_detect.commands.detect import detect

    return detect(
        args.detector,
        args.images,
        args.out,
        top=args.top,
        image_size=args.image_size,
        crop=args.crop,
        batch_size=args.batch_size,
        device=args.device,
        overwrite=args.overwrite,
        quiet=args.quiet,
    )


_IMAGES_HELP = (
    "a folder of images (PNG, JPEG, BMP, TIFF, WebP; read recursively, hidden files left out), a "
    "glob, or a .npy / .npz file (FILE.npz:KEY names its array)"
)


def _add_image_flags(p, detect: bool):
    p.add_argument("images", metavar="IMAGES", help=_IMAGES_HELP)
    p.add_argument(
        "--image-size",
        type=_image_size,
        default=None,
        metavar="SIZE",
        help="N or WIDTHxHEIGHT: bring every image to this size (resized, aspect ratio not kept; with "
        "--crop scaled to cover it and centre-cropped)"
        + (
            ". Must be the detector's size; without it an image of another size is an error of that file"
            if detect
            else ". Needed when the images differ in size"
        ),
    )
    p.add_argument("--crop", action="store_true", help="with --image-size: centre-crop instead of resizing")
    p.add_argument(
        "--batch-size",
        type=_positive_int,
        default=256 if detect else None,
        help="images read and scored at a time" if detect else "training batch (default: the estimator's)",
    )
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--overwrite", action="store_true", help="replace what --out holds from an earlier run")
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary")


def add_fit(sub):
    p = sub.add_parser(
        "fit",
        help="learn what normal looks like from a folder of your own images",
        description=_module_doc("hvae_detect.commands.fit_images"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_image_flags(p, detect=False)
    p.add_argument(
        "--out",
        required=True,
        metavar="DETECTOR_DIR",
        help="folder for the detector (HVAEOutlierDetector.load reads it)",
    )
    p.add_argument(
        "--channels",
        default="auto",
        choices=("auto", "grey", "colour"),
        help="auto: grey when every image is grey, else colour (said in the output)",
    )
    p.add_argument("--epochs", type=_positive_int, default=None, help="training epochs (default: the estimator's)")
    p.add_argument(
        "--minutes",
        type=_positive_float,
        default=None,
        help="wall-clock budget for fitting: as many epochs as fit in it (at most --epochs)",
    )
    p.add_argument(
        "--architecture", default=None, help="a preset name or JSON (text or a .json file); default: the estimator's"
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (the split, training, scoring)")
    p.set_defaults(run=_cmd_fit)


def add_detect(sub):
    p = sub.add_parser(
        "detect",
        help="score your own images with a detector: scores.csv and report.html",
        description=_module_doc("hvae_detect.commands.detect"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("detector", metavar="DETECTOR_DIR", help="a folder written by hvae-detect fit or .save")
    _add_image_flags(p, detect=True)
    p.add_argument("--out", required=True, metavar="REPORT_DIR", help="folder for scores.csv and report.html")
    p.add_argument(
        "--top",
        type=_non_negative_int,
        default=20,
        metavar="N",
        help="thumbnails of the N most outlying and N most normal images in the report (default 20)",
    )
    p.set_defaults(run=_cmd_detect)
