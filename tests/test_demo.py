"""The README's main job on a reduced budget: prints its tables, writes plots and JSON; --paper without data."""

import json

import pytest

from hvae_detect.cli import main
from hvae_detect.commands import demo_report as report

STATISTICS = {
    "L",
    "L>1",
    "LLR>1",
    "L>2",
    "LLR>2",
    "IC",
    "T",
    "Fused",
    "Path",
    "PathCOPOD",
    "FusedECOD",
}  # of the 3-latent "small" preset
BASELINES = {"IsolationForest", "LocalOutlierFactor"}


def _is_number(text):
    try:
        float(text)
    except ValueError:
        return False
    return True


@pytest.mark.slow
def test_demo_prints_its_tables_and_writes_plots_and_json(tmp_path, capsys):
    out = tmp_path / "demo"
    argv = [
        "demo",
        "--epochs",
        "1",
        "--n-train",
        "200",
        "--n-test",
        "60",
        "--quiet",
        "--output",
        str(out),
        "--json",
        str(out / "table.json"),
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out

    # every set is named and described, and gets a table with the same rows
    for name, description in report.SET_DESCRIPTIONS.items():
        assert f"{name:<18} 60 images: {description}" in printed
        assert f"vs {name}: {description}" in printed
    assert printed.count("statistic                AUROC   AUPRC   FPR80") == len(report.SET_DESCRIPTIONS)
    rows = [line.split() for line in printed.splitlines()]
    rows = [r for r in rows if len(r) in (4, 5) and all(_is_number(v) for v in r[-3:])]  # name [*] AUROC AUPRC FPR80
    for name in STATISTICS | BASELINES:
        assert sum(r[0] == name for r in rows) == len(report.SET_DESCRIPTIONS), name
    assert sum(r[:2] == [report.RECOMMENDED, "*"] for r in rows) == len(report.SET_DESCRIPTIONS)
    assert "recommended statistic" in printed
    assert "the recommended model, architecture='auto', picks preset 'small'" in " ".join(printed.split())

    # {set: {statistic: {"auroc", "auprc", "fpr80"}}}
    table = json.loads((out / "table.json").read_text())
    assert set(table) == set(report.SET_DESCRIPTIONS)
    for per_set in table.values():
        assert set(per_set) == STATISTICS | BASELINES
        for metrics in per_set.values():
            assert set(metrics) == {"auroc", "auprc", "fpr80"}
            assert all(0 <= v <= 1 for v in metrics.values())
    for name in ("roc_curves.png", "score_histograms.png", "examples.png"):
        assert (out / name).stat().st_size > 1000


def test_verdict_says_what_the_numbers_show():
    row = lambda a: {"auroc": a, "auprc": a, "fpr80": 1 - a}  # noqa: E731
    far = {
        "L": row(0.27),
        "L>1": row(0.4),
        "LLR>1": row(0.7),
        "L>2": row(0.5),
        "LLR>2": row(0.85),
        "IsolationForest": row(0.3),
        "LocalOutlierFactor": row(0.95),
    }
    assert report.verdict(report.FAR_SETS[0], far).startswith("the paper's effect: L ranks")
    assert "LLR>2 recovers it to 0.850" in report.verdict(report.FAR_SETS[0], far)
    far["LLR>2"] = row(0.78)
    assert "not reached" in report.verdict(report.FAR_SETS[0], far)
    near = dict(far, L=row(0.64))
    assert "LocalOutlierFactor on raw pixels beats it (0.950)" in report.verdict(report.NEAR_SET, near)


def test_verdict_claims_no_recovery_or_separation_the_numbers_do_not_show():
    row = lambda a: {"auroc": a, "auprc": a, "fpr80": 1 - a}  # noqa: E731
    far = {"L": row(0.30), "LLR>1": row(0.25), "LLR>2": row(0.28), "LocalOutlierFactor": row(0.9)}
    said = report.verdict(report.FAR_SETS[0], far)  # LLR>k below L's AUROC: nothing is recovered
    assert "recovers" not in said and "LLR>k does not recover it (best: LLR>2 0.280" in said
    assert not said.startswith("the paper's effect")
    far["LLR>2"] = row(0.55)  # above L's and 0.5, but not clearly above chance
    assert "does not recover it (best: LLR>2 0.550" in report.verdict(report.FAR_SETS[0], far)
    far["LLR>2"] = row(0.62)
    assert "LLR>2 recovers it to 0.620" in report.verdict(report.FAR_SETS[0], far)
    at_chance = dict(far, L=row(0.51), **{"LLR>2": row(0.52)})  # neither is clearly above chance
    said = report.verdict(report.FAR_SETS[0], at_chance)
    assert "already separates" not in said and said.startswith("neither L (AUROC 0.510) nor LLR>k (best: LLR>2 0.520)")
    said = report.verdict(report.FAR_SETS[0], dict(at_chance, **{"LLR>1": row(0.7)}))
    assert said.startswith("L does not separate this set (AUROC 0.510, near chance); LLR>1 does (0.700)")
    assert report.verdict(report.FAR_SETS[0], dict(at_chance, L=row(report.SEPARATES))).startswith(
        "L already separates"
    )


def test_demo_paper_without_data_names_the_missing_file(tmp_path, capsys):
    (tmp_path / "mnist.npz").write_bytes(b"")  # one of the two present
    assert main(["demo", "--paper", "--data-root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "hvae-detect demo: error:" in err
    assert str(tmp_path / "fashion_mnist.npz") in err and "--data-root" in err
    assert str(tmp_path / "mnist.npz") not in err.split("missing:")[1]


def test_demo_rejects_bad_flags(capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--epochs", "0"])
    assert "positive integer" in capsys.readouterr().err


def test_recommendation_says_whether_the_recommended_statistic_beats_the_baselines():
    table = {
        report.RECOMMENDED: {"auroc": 0.9},
        "L": {"auroc": 0.3},
        "LocalOutlierFactor": {"auroc": 0.95},
        "IsolationForest": {"auroc": 0.5},
    }
    assert "LocalOutlierFactor on raw pixels does better here (0.950)" in report.recommendation(table)
    table["LocalOutlierFactor"]["auroc"] = 0.8
    assert "beats every pixel-space baseline (best: LocalOutlierFactor 0.800)" in report.recommendation(table)
