"""``hvae-detect fit IMAGES --out DETECTOR_DIR``: learn what normal looks like from your own images.

IMAGES is a folder (read recursively; hidden files left out), a glob or a .npy / .npz file
(``hvae_detect.data.image_files``). The images are surveyed first: grey or colour is decided from them
(``--channels`` overrides it) and, when they differ in size, ``--image-size`` must say what size to bring
them to (resized, or centre-cropped with ``--crop``); without it the error names two files of different
sizes. They are then decoded into memory and given to ``HVAEOutlierDetector`` with its defaults (the
recommended model and statistic); ``--epochs`` sets the epochs, ``--minutes`` a wall-clock budget. The
detector folder is written atomically by ``HVAEOutlierDetector.save`` and opens with
``HVAEOutlierDetector.load``. Files that cannot be read are skipped and listed; the exit status is then 1
(the detector is still saved), else 0.
"""

from __future__ import annotations

import time
from pathlib import Path

from hvae_detect.commands.common import log


def _architecture(value):
    """A preset name as it is; JSON text or the path of a .json file parsed."""
    if value is None or not (value.lstrip().startswith("{") or value.endswith(".json")):
        return value
    from hvae_detect.models.architectures import json_text_or_file

    return json_text_or_file(value, "--architecture")


def _budget_parameter(estimator_class) -> str | None:
    """The estimator's own wall-clock budget parameter, where it has one."""
    return "max_minutes" if "max_minutes" in estimator_class._get_param_names() else None


def fit_within(make, X, minutes: float, epochs: int | None, quiet: bool):
    """A detector fitted on X in about ``minutes`` of wall time: one epoch is fitted and timed (training and
    the scoring after it), then, when at least two more fit, a fresh fit of as many epochs as the rest of the
    budget holds (at most ``epochs``). ``make(epochs)`` builds an unfitted estimator."""
    started = time.perf_counter()
    det = make(1).fit(X)
    first = time.perf_counter() - started
    fits = int((minutes * 60 - first) // first)  # a fit of E epochs takes under E times a fit of one
    if epochs is not None:
        fits = min(fits, epochs)
    if fits < 2:
        if epochs != 1:
            log(
                f"one epoch took {first:.1f} s: keeping that one-epoch fit (--minutes {minutes:g} holds no longer one)",
                quiet,
            )
        return det
    log(
        f"one epoch took {first:.1f} s (training and scoring): fitting {fits} epochs within --minutes {minutes:g}",
        quiet,
    )
    return make(fits).fit(X)


def fit_images(
    images,
    out,
    *,
    image_size=None,
    crop=False,
    channels="auto",
    epochs=None,
    minutes=None,
    architecture=None,
    batch_size=None,
    device="auto",
    seed=0,
    overwrite=False,
    quiet=False,
) -> int:
    """Fit a detector on the images of ``images`` and save it to ``out``; returns the exit status."""
    from tqdm.auto import tqdm

    from hvae_detect.data.image_files import ImageFiles
    from hvae_detect.estimator import HVAEOutlierDetector
    from hvae_detect.persistence.checkpoints import check_writable_model_dir

    if minutes is not None and not minutes > 0:
        raise ValueError(f"--minutes must be positive, got {minutes}")
    check_writable_model_dir(out, overwrite)  # before the work, not after it
    files = ImageFiles(images, image_size=image_size, crop=crop, channels=channels)
    log(f"images: {images}: {files.description}", quiet)
    with tqdm(total=len(files), desc="reading images", unit="img", disable=quiet, leave=False) as bar:
        X = files.to_array(progress=bar.update)
    for name, reason in files.errors.items():
        log(f"skipped {name}: {reason}", quiet)
    if len(X) < 2:
        raise ValueError(f"{images}: {len(X)} readable image(s); at least 2 are needed to fit a detector")
    params = {"random_state": seed, "device": device, "verbose": not quiet}
    if architecture is not None:
        params["architecture"] = _architecture(architecture)
    if batch_size is not None:
        params["batch_size"] = batch_size
    budget = _budget_parameter(HVAEOutlierDetector)
    started = time.perf_counter()
    if minutes is not None and budget is None:
        det = fit_within(lambda e: HVAEOutlierDetector(**params, epochs=e), X, minutes, epochs, quiet)
    else:
        if minutes is not None:
            params[budget] = minutes
        det = HVAEOutlierDetector(**params, **({} if epochs is None else {"epochs": epochs})).fit(X)
    det.save(out, overwrite=overwrite)
    trained = len(det.history_)
    log(
        f"fitted on {len(X)} images ({files.image_shape[0]} channel(s), {files.size[0]}x{files.size[1]}) in "
        f"{time.perf_counter() - started:.0f} s, {trained} epoch(s); statistic {det.statistic!r}, threshold "
        f"{det.offset_:.6g} (set on held-out training images)",
        quiet,
    )
    size = f" --image-size {files.size[0]}x{files.size[1]}" + (" --crop" if crop else "") if files.resize else ""
    log(
        f"saved the detector to {Path(out)}; score new images with:\n"
        f"    hvae-detect detect {out} IMAGES --out REPORT_DIR{size}",
        quiet,
    )
    if files.errors:
        log(f"{len(files.errors)} file(s) could not be read (listed above): exit status 1", quiet)
    return 1 if files.errors else 0
