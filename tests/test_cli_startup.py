"""The command line answers --help and usage errors without importing torch, scikit-learn or matplotlib,
and ``import hvae_detect`` imports the estimator only when it is asked for.

Each check runs a fresh interpreter with ``-X importtime``, which lists every module the command
imported; pinning the imports (not a time) keeps the test independent of the machine's load.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import REPO

from hvae_detect import cli
from hvae_detect.commands import defaults

HEAVY = ("torch", "sklearn", "matplotlib")


def _run(*args: str) -> tuple[int, str, set[str]]:
    """Exit code, stdout and the top-level names of the modules imported by ``python *args``."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", *args], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    imported = {
        line.rsplit("|", 1)[1].strip().split(".")[0]
        for line in proc.stderr.splitlines()
        if line.startswith("import time:") and line.count("|") == 2
    }
    assert imported, f"no -X importtime lines in stderr:\n{proc.stderr}"
    return proc.returncode, proc.stdout, imported


@pytest.mark.parametrize(
    "argv", [["--help"], ["demo", "--help"], ["train", "--help"], ["score", "--help"], ["results", "--help"]]
)
def test_help_imports_no_heavy_dependency(argv):
    code, out, imported = _run("-m", "hvae_detect", *argv)
    assert code == 0
    assert "usage: hvae-detect" in out
    assert not imported & set(HEAVY), f"hvae-detect {' '.join(argv)} imported {sorted(imported & set(HEAVY))}"


@pytest.mark.parametrize("argv", [[], ["train", "--epochs", "0"], ["score"], ["demo", "--no-such-flag"], ["results"]])
def test_usage_errors_import_no_heavy_dependency(argv):
    code, _, imported = _run("-m", "hvae_detect", *argv)
    assert code == 2
    assert not imported & set(HEAVY), f"hvae-detect {' '.join(argv)} imported {sorted(imported & set(HEAVY))}"


def test_import_hvae_detect_is_light_and_the_estimator_still_comes_from_it():
    code, _, imported = _run("-c", "import hvae_detect")
    assert code == 0 and not imported & set(HEAVY)
    code, out, imported = _run("-c", "from hvae_detect import HVAEOutlierDetector as H; print(H.__module__)")
    assert code == 0 and out.strip() == "hvae_detect.estimator" and {"torch", "sklearn"} <= imported


def test_the_package_namespace():
    import hvae_detect
    from hvae_detect.estimator import HVAEOutlierDetector

    assert hvae_detect.HVAEOutlierDetector is HVAEOutlierDetector
    assert "HVAEOutlierDetector" in dir(hvae_detect)
    with pytest.raises(AttributeError, match="no_such_name"):
        hvae_detect.no_such_name  # noqa: B018 (the attribute access is what is tested)


def _subparser(name):
    sub = next(a for a in cli.build_parser()._actions if a.dest == "command")
    return sub.choices[name]


def test_help_texts_show_what_the_commands_use():
    from hvae_detect.commands import demo, run_config

    assert _subparser("demo").description == demo.__doc__.strip()
    assert (demo.DEMO_EPOCHS, demo.PAPER_EPOCHS) == (defaults.DEMO_EPOCHS, defaults.PAPER_EPOCHS)
    assert (run_config.SEED_TRAIN, run_config.SEED_VAL) == (defaults.SEED_TRAIN, defaults.SEED_VAL)
    demo_help = _subparser("demo").format_help()
    assert f"default {defaults.DEMO_EPOCHS}; with --paper {defaults.PAPER_EPOCHS}" in demo_help
    assert _subparser("train").get_default("train_datasets") == run_config.SEED_TRAIN
