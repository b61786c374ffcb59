"""``hvae-detect detect DETECTOR_DIR IMAGES --out REPORT_DIR``: score your own images, flag the outliers, and
write a report of them.

DETECTOR_DIR is a folder written by ``hvae-detect fit`` or ``HVAEOutlierDetector.save``. IMAGES (a folder,
a glob or a .npy / .npz file) is read as the detector's images: converted to its grey or colour, and of its
size (an image of another size is an error of that file unless ``--image-size`` asks to resize it, or with
``--crop`` to centre-crop it, as ``fit`` did). The images stream through the detector a batch at a time
(``--batch-size`` files), so a folder larger than memory works; REPORT_DIR receives, as one atomic unit
(``hvae_detect.persistence.atomic.write_folder``, with a manifest.json of checksums; an interruption leaves
the previous contents or nothing, never half a report):

    scores.csv   a header row, then one row per file in order: path, score (the detector's
                 ``score_samples``: higher = more normal), flagged (1 below the detector's threshold,
                 0 above; empty without a threshold), every statistic of ``ood_scores`` (each in its own
                 units), error (why a file could not be read; its other columns are then empty)
    report.html  one self-contained page: the histogram of the scores with the threshold, the ``--top N``
                 most outlying and most normal images as thumbnails with their scores, the unreadable files

The exit status is 1 when any file could not be read (the rest are scored and reported), else 0.
"""

from __future__ import annotations

import csv
import heapq
import math
from pathlib import Path

import numpy as np

from hvae_detect.commands.common import log

REPORT_FILES = ("scores.csv", "report.html")
TOP = 20  # default --top
THUMBNAIL_SIDE = 128


def check_report_dir(out, overwrite: bool) -> None:
    """Refuse to replace a report without ``overwrite``, and any folder of other files."""
    out = Path(out)
    if not out.exists():
        return
    if not out.is_dir():
        raise ValueError(f"{out} exists and is not a folder")
    present = {p.name for p in out.iterdir()}
    if present - {*REPORT_FILES, "manifest.json"}:
        raise ValueError(
            f"{out} holds other files ({', '.join(sorted(present)[:5])}); write the report into a new or empty folder"
        )
    if present and not overwrite:
        raise ValueError(f"{out} already holds a report; pass --overwrite to replace it")


def _text(value: float) -> str:
    """A float as the shortest text that reads back as the same float64 (scores.csv is exact)."""
    return repr(float(value))


class _Scores:
    """What the page needs of a streamed scoring: every score, the ``top`` lowest and highest, the errors."""

    def __init__(self, top: int):
        self.top, self.parts, self.low, self.high = top, [], [], []
        self.errors: list[tuple[str, str]] = []
        self.n_errors = self.n_flagged = 0

    def add(self, indices, scores, flagged):
        self.parts.append(scores)
        self.n_flagged += int(np.sum(flagged)) if flagged is not None else 0
        items = [(float(s), i) for i, s in zip(indices, scores) if not math.isnan(s)]
        self.low = heapq.nsmallest(self.top, self.low + items)
        self.high = heapq.nlargest(self.top, self.high + items)

    def add_error(self, name, reason):
        self.n_errors += 1
        if len(self.errors) < 1000:  # the page lists the first ones; scores.csv has every one
            self.errors.append((name, reason))

    @property
    def scores(self) -> np.ndarray:
        return np.concatenate(self.parts) if self.parts else np.zeros(0)


def _score_batches(det, files, key, batch_size, writer, state, progress):
    """Score ``files`` a batch at a time, writing the rows of scores.csv in file order and filling ``state``."""
    from hvae_detect.scoring import statistics

    header, pending, offset = None, [], det.offset_

    def error_row(name, reason):
        return [name, *[""] * (len(header) - 2), reason]

    for batch in files.batches(batch_size):
        rows = {}
        if batch.indices:
            ood = det.ood_scores(batch.images)
            # score_samples is the statistic's own column of ood_scores, oriented (higher = more normal)
            score = statistics.normality(key, ood[key]) if key in ood else det.score_samples(batch.images)
            flagged = None if offset is None else (score - offset < 0)
            state.add(batch.indices, score, flagged)
            if header is None:  # the columns are known once a batch is scored
                header = ["path", "score", "flagged", *ood, "error"]
                writer.writerow(header)
                writer.writerows(error_row(*p) for p in pending)
            for j, i in enumerate(batch.indices):
                rows[i] = [
                    files.name(i),
                    _text(score[j]),
                    "" if flagged is None else int(flagged[j]),
                    *(_text(ood[name][j]) for name in header[3:-1]),
                    "",
                ]
        for i, reason in batch.failed:
            state.add_error(files.name(i), reason)
            if header is None:
                pending.append((files.name(i), reason))
            else:
                rows[i] = error_row(files.name(i), reason)
        writer.writerows(rows[i] for i in sorted(rows))
        progress(len(batch.indices) + len(batch.failed))
    if header is None:  # nothing could be read: the columns that do not depend on the statistics
        header = ["path", "score", "flagged", "error"]
        writer.writerow(header)
        writer.writerows(error_row(*p) for p in pending)


def _thumbnails(files, items, flagged_below):
    from hvae_detect.data.image_files import ImageReadError
    from hvae_detect.reporting.html_report import Thumbnail

    out = []
    for score, i in items:
        flagged = None if flagged_below is None else score < flagged_below
        try:
            out.append(Thumbnail(files.name(i), score, flagged, files.thumbnail_png(i, THUMBNAIL_SIDE)))
        except ImageReadError as e:  # changed since it was scored
            out.append(Thumbnail(files.name(i), score, flagged, None, str(e)))
    return out


def _summary(det, detector_dir, images, files, state, key) -> list[str]:
    c, h, w = det.image_shape_
    lines = [
        f"detector: {detector_dir} ({'grey' if c == 1 else 'colour'} {w}x{h} images; score: the "
        f"{det.statistic!r} statistic ({key}), higher = more normal)",
        f"images: {images}: {files.description}",
        f"scored {len(state.scores)} of {len(files)} files",
    ]
    if det.offset_ is None:
        lines.append("no threshold: this detector has none (a training run's folder); nothing is flagged")
    else:
        lines.append(
            f"flagged: {state.n_flagged} of {len(state.scores)} (score below the detector's threshold "
            f"{det.offset_:.6g})"
        )
    if state.n_errors:
        lines.append(f"{state.n_errors} files could not be read (listed below and in scores.csv)")
    return lines


def detect(
    detector_dir,
    images,
    out,
    *,
    top=TOP,
    image_size=None,
    crop=False,
    batch_size=256,
    device="auto",
    overwrite=False,
    quiet=False,
) -> int:
    """Score ``images`` with the detector in ``detector_dir`` and write ``out``/scores.csv and report.html;
    returns the exit status (1 when a file could not be read)."""
    from tqdm.auto import tqdm

    from hvae_detect.data.image_files import ImageFiles
    from hvae_detect.estimator import HVAEOutlierDetector
    from hvae_detect.persistence.atomic import write_folder
    from hvae_detect.reporting.html_report import render_report
    from hvae_detect.scoring import statistics

    if top < 0:
        raise ValueError(f"--top must be non-negative, got {top}")
    check_report_dir(out, overwrite)
    det = HVAEOutlierDetector.load(detector_dir, device=device)
    files = ImageFiles(images, image_size=image_size, crop=crop, shape=det.image_shape_)
    log(f"images: {images}: {files.description}", quiet)
    key = statistics.output_key(det.statistic, det.k)
    state = _Scores(top)

    def write_csv(path):
        with (
            open(path, "w", newline="") as f,
            tqdm(total=len(files), desc="scoring", unit="img", disable=quiet, leave=False) as bar,
        ):
            _score_batches(det, files, key, batch_size, csv.writer(f), state, bar.update)

    def write_html(path):
        page = render_report(
            title=f"hvae-detect: {images}",
            summary=_summary(det, detector_dir, images, files, state, key),
            scores=state.scores,
            threshold=det.offset_,
            outliers=_thumbnails(files, state.low, det.offset_),
            normals=_thumbnails(files, state.high, det.offset_),
            errors=state.errors,
            n_errors=state.n_errors,
        )
        Path(path).write_text(page, encoding="utf-8")

    write_folder(out, {"scores.csv": write_csv, "report.html": write_html})
    for line in _summary(det, detector_dir, images, files, state, key)[2:]:
        log(line, quiet)
    log(f"wrote {Path(out) / 'scores.csv'} and {Path(out) / 'report.html'}", quiet)
    return 1 if state.n_errors else 0
