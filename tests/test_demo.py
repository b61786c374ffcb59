"""The README's main job, shortened to one epoch: prints its table, writes plots and JSON."""

import json

import pytest

from hvae_detect.cli import main


@pytest.mark.slow
def test_demo_prints_its_table_and_writes_plots(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--epochs", "1", "--quiet", "--output", str(out), "--json", str(out / "table.json")]) == 0
    printed = capsys.readouterr().out
    for row in ("HVAE L ", "HVAE LLR>1", "HVAE LLR>2", "IsolationForest", "LocalOutlierFactor"):
        assert row in printed
    table = json.loads((out / "table.json").read_text())["table"]
    assert set(table["HVAE LLR>1"]) == {"auroc", "auprc", "fpr80", "fpr95"}
    assert all(0 <= m["auroc"] <= 1 for m in table.values())
    for name in ("roc_curves.png", "score_histograms.png", "reconstructions_in.png", "reconstructions_out.png"):
        assert (out / name).stat().st_size > 1000


def test_demo_rejects_bad_flags(capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--epochs", "0"])
    assert "positive integer" in capsys.readouterr().err
