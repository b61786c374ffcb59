"""benchmarks/paper/seed_equivalence.py without the paper's code: a clear skip, never a failure or an import of it."""

from __future__ import annotations

import sys

import pytest
from conftest import load_benchmark


def test_skips_cleanly_without_the_papers_code(monkeypatch, capsys):
    script = load_benchmark("seed_equivalence")
    monkeypatch.delenv(script.PAPER_ENV, raising=False)
    assert script.main([]) == 0
    out = capsys.readouterr().out
    assert "skipped" in out and "--paper_code" in out and script.PAPER_ENV in out
    assert "oodd" not in sys.modules  # nothing of the paper's was imported


def test_a_folder_without_the_papers_code_is_an_error_naming_it(tmp_path, monkeypatch):
    script = load_benchmark("seed_equivalence")
    monkeypatch.setenv(script.PAPER_ENV, str(tmp_path))
    with pytest.raises(SystemExit) as e:
        script.main([])
    assert str(tmp_path) in str(e.value) and "oodd/models/dvae.py" in str(e.value)
