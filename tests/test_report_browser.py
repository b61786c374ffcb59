"""The report page in a real headless browser (Chromium from Debian's packages): its thumbnails render.
Skipped where no browser is installed (the project does not install one; benchmarks/report_screenshot.py
also takes the screenshot in docs/)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from conftest import load_benchmark
from PIL import Image

from hvae_detect.reporting.html_report import Thumbnail, render_report

shots = load_benchmark("report_screenshot")
BROWSER = shots.find_browser()


def _png(seed):
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (28, 28), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.mark.skipif(BROWSER is None, reason="no headless Chromium (apt-get install chromium)")
def test_the_report_renders_its_thumbnails_in_a_headless_browser(tmp_path):
    thumbs = [Thumbnail(f"img{i}.png", float(-i), i > 2, _png(i)) for i in range(6)]
    page = tmp_path / "report.html"
    page.write_text(
        render_report(
            title="t",
            summary=["s"],
            scores=np.random.default_rng(0).normal(size=100),
            threshold=-1.5,
            outliers=thumbs[3:],
            normals=thumbs[:3],
            errors=[],
        )
    )
    assert shots.rendered_images(BROWSER, page) == 6
    shots.screenshot(BROWSER, page, tmp_path / "shot.png", width=400)
    assert Image.open(tmp_path / "shot.png").width == 400


def test_the_check_says_when_there_is_no_browser(monkeypatch, capsys):
    monkeypatch.setattr(shots, "find_browser", lambda: None)
    assert shots.main([]) == 2
    assert "no headless browser" in capsys.readouterr().out
