"""Packaging: kernels/ installs as hvae_detect.kernels (never a top-level `kernels`), and importing the
package pulls in neither triton (imported on first kernel use) nor the demo-only dependencies."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_import_is_light_and_namespaced():
    code = (
        "import sys, importlib.util, hvae_detect, hvae_detect.cli; "
        "assert 'triton' not in sys.modules, 'triton imported'; "
        "assert 'mlxtend' not in sys.modules, 'mlxtend imported'; "
        "assert importlib.util.find_spec('kernels') is None or "
        "'hvae_detect' not in (importlib.util.find_spec('kernels').origin or ''), 'top-level kernels'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path.home())


@pytest.mark.slow
def test_built_wheel_maps_kernels_under_the_package(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(ROOT),
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
        ],
        check=True,
    )
    (wheel,) = tmp_path.glob("hvae_detect-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "hvae_detect/kernels/dispatch.py" in names and "hvae_detect/kernels/dlogmix.py" in names
    assert not any(n.startswith("kernels/") for n in names)
    # Import the kernels subpackage from the unpacked wheel alone.
    zipfile.ZipFile(wheel).extractall(tmp_path / "site")
    code = "import hvae_detect.kernels.dispatch as d; print(d.__file__)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        check=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PYTHONPATH": str(tmp_path / "site"), "PATH": os.environ.get("PATH", "")},
    )
    assert str(tmp_path / "site") in out.stdout
