"""The results page: tables and plot from the records, clear errors for bad records, the repository's page
current, every recorded AUROC found where its record says benchmarks/results/ logs it, and statistics_table's
records readable by the page."""

from __future__ import annotations

import datetime as dt
import json
import re

import pytest
from conftest import REPO, load_benchmark

page = load_benchmark("results_page")


def made_up(**changes) -> dict:
    """A valid record with made-up numbers (test data)."""
    record = {
        "in_dist": "cifar10",
        "auroc": {"svhn": {"L": 0.25, "LLR>1": 0.5}},
        "train_minutes": 10,
        "minutes_cover": "fit",
        "machine": "2 test cores",
        "model": "HVAE, tiny",
        "date": "2026-01-02",
        "command": "python made-up",
        "results_section": None,
    }
    return {**record, **changes}


def write(folder, name, record):
    folder.mkdir(exist_ok=True)
    (folder / name).write_text(json.dumps(record))


def table_rows(text: str, title: str) -> dict[str, list[str]]:
    """{statistic: cells} of the table under the heading ``title``."""
    section = text.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]
    rows = [line.strip("|").split("|") for line in section.splitlines() if line.startswith("| ")]
    return {cells[0].strip(): [c.strip() for c in cells[1:]] for cells in rows}


def test_page_and_plot_from_records(tmp_path):
    records, out = tmp_path / "records", tmp_path / "docs"
    write(records, "a.json", made_up(train_minutes=30, auroc={"svhn": {"L": 0.3, "LLR>2": 0.7, "IC": 0.9}}))
    write(records, "b.json", made_up(train_minutes=5, machine="a GPU"))
    write(
        records,
        "c.json",
        made_up(in_dist="fashion_mnist", model="BIVA, tiny", auroc={"mnist": {"LLR>1": 0.96}, "omniglot": {"L": 0.1}}),
    )
    assert page.main(["--records", str(records), "--out", str(out)]) == 0
    text = (out / page.PAGE).read_text()
    assert page.COMMAND in text and f"]({page.PLOT})" in text
    assert [line for line in text.splitlines() if line.startswith("## ")] == [
        "## Fashion-MNIST -> MNIST",
        "## Fashion-MNIST -> Omniglot",
        "## CIFAR10 -> SVHN",
        "## Runs",
    ]
    svhn = table_rows(text, "CIFAR10 -> SVHN")
    head = svhn.pop("statistic")
    assert head[0].startswith("[2] HVAE<br>5.0 min<br>a GPU") and "30.0 min" in head[1]  # fewest minutes first
    assert head[-1] == "the paper"
    assert list(svhn)[:2] == ["L", "IC"] and list(svhn).index("LLR>1") < list(svhn).index("LLR>2")
    assert svhn["L"] == ["0.250", "0.300", "0.083 (HVAE, S=1000)"]
    assert svhn["LLR>1"][:2] == ["**0.500**", ""] and svhn["IC"][1] == "**0.900**"
    assert svhn["LLR>2"][2] == "0.811 (HVAE, S=1000); 0.891 (BIVA)"
    assert table_rows(text, "Fashion-MNIST -> MNIST")["LLR>1"][0] == "**0.960**"
    assert "lossy" in text and "not logged in benchmarks/results/ yet" in text
    png = (out / page.PLOT).read_bytes()
    assert png.startswith(b"\x89PNG") and 1000 < len(png) < 200_000
    assert page.main(["--records", str(records), "--out", str(out), "--check"]) == 0
    write(records, "d.json", made_up(train_minutes=50))
    assert page.main(["--records", str(records), "--out", str(out), "--check"]) == 1


@pytest.mark.parametrize(
    "change, field, expected",
    [
        ({"train_minutes": None}, "train_minutes", "a positive number"),
        ({"train_minutes": -3}, "train_minutes", "a positive number"),
        ({"date": "6 Dec 2026"}, "date", "YYYY-MM-DD"),
        ({"machine": ""}, "machine", "the machine"),
        ({"auroc": {"svhn": {"LLR>1": 1.7}}}, "auroc.svhn.LLR>1", r"a number in \[0, 1\]"),
        ({"auroc": {"svhn": {"LLR": 0.5}}}, "auroc.svhn.LLR", "a statistic key"),
        ({"auroc": {}}, "auroc", "at least one OOD set"),
        ({"default": "LLR"}, "default", "a statistic key"),
    ],
)
def test_a_bad_record_names_its_file_field_and_what_was_expected(tmp_path, change, field, expected):
    write(tmp_path, "good.json", made_up())
    write(tmp_path, "bad.json", made_up(**change))
    with pytest.raises(page.RecordError, match=rf"bad\.json: field '{re.escape(field)}' must be .*{expected}"):
        page.load_records(tmp_path)


def test_missing_unknown_and_undecodable_records(tmp_path, capsys):
    write(tmp_path, "bad.json", {key: v for key, v in made_up().items() if key != "command"})
    with pytest.raises(page.RecordError, match=r"bad\.json: field 'command' must be .*missing"):
        page.load_records(tmp_path)
    write(tmp_path, "bad.json", made_up(minutes=3))
    with pytest.raises(page.RecordError, match=r"bad\.json: unknown field 'minutes'"):
        page.load_records(tmp_path)
    (tmp_path / "bad.json").write_text("{")
    assert page.main(["--records", str(tmp_path), "--out", str(tmp_path)]) == 2
    assert "bad.json: not JSON" in capsys.readouterr().err


def test_colour_choosing_pairs_get_a_table_each(tmp_path):
    """CIFAR10 -> GTSRB and CIFAR10 -> Tiny ImageNet (sets by file name) after the reported pairs, with caveats."""
    records, out = tmp_path / "records", tmp_path / "docs"
    write(
        records,
        "a.json",
        made_up(
            auroc={
                "tinyimagenet_resize": {"L": 0.55, "Fused": 0.6},
                "gtsrb": {"L": 0.7, "Fused": 0.8},
                "svhn": {"L": 0.2},
            }
        ),
    )
    write(records, "b.json", made_up(train_minutes=3, auroc={"gtsrb": {"Fused": 0.75}}, default="Fused"))
    assert page.main(["--records", str(records), "--out", str(out)]) == 0
    text = (out / page.PAGE).read_text()
    assert [line for line in text.splitlines() if line.startswith("## ")] == [
        "## CIFAR10 -> SVHN",
        "## CIFAR10 -> GTSRB",
        "## CIFAR10 -> Tiny ImageNet (resize)",
        "## Runs",
    ]
    gtsrb = table_rows(text, "CIFAR10 -> GTSRB")
    assert gtsrb.pop("statistic")[:2] == ["[2] HVAE<br>3.0 min<br>2 test cores", "[1] HVAE<br>10.0 min<br>2 test cores"]
    assert gtsrb == {"L": ["", "0.700", ""], "Fused": ["**0.750**", "**0.800**", ""]}
    tiny = table_rows(text, "CIFAR10 -> Tiny ImageNet (resize)")
    assert tiny["Fused"] == ["**0.600**", ""] and tiny["L"] == ["0.550", ""]
    for caveat in (
        "first 10,000 of the 12,630 test images",
        "OpenCV bilinear",
        "JPEG (lossy)",
        "PIL bicubic",
        "not ODIN's file byte for byte",
    ):
        assert caveat in text


def test_the_plot_marks_each_runs_default_statistic(tmp_path):
    """The default's points are large, filled, black-edged and on top, with their own legend entry; a record
    names its default in "default", or (older records) in its notes, or was made while it was Fused."""
    runs = [
        ("a.json", made_up(train_minutes=5, auroc={"svhn": {"L": 0.2, "Fused": 0.7, "LLR>1": 0.6}})),
        ("b.json", made_up(train_minutes=9, auroc={"svhn": {"L": 0.3, "Fused": 0.8, "LLR>1": 0.85}}, default="LLR>1")),
        (
            "c.json",
            made_up(
                train_minutes=7,
                auroc={"gtsrb": {"L": 0.4, "LLR>2": 0.9}},
                notes="Default statistic: LLR>2, chosen on the choosing pairs.",
            ),
        ),
        ("d.json", made_up(model="BIVA, tiny", auroc={"svhn": {"L": 0.1, "Fused": 0.5}})),
    ]
    for file, record in runs:
        page.validate(record, file)
    assert [page.default_of(r) for _, r in runs] == ["Fused", "LLR>1", "LLR>2", "Fused"]
    keys = page.ordered_keys({"L", "Fused", "LLR>1", "LLR>2"})
    series = page.panel_series(("cifar10", "svhn"), runs, keys)
    assert [(key, hvae, points) for key, hvae, default, points in series if default] == [
        ("Fused", True, [(5, 0.7)]),
        ("Fused", False, [(10, 0.5)]),
        ("LLR>1", True, [(9, 0.85)]),
    ]
    assert ("Fused", True, False, [(9, 0.8)]) in series and ("LLR>1", True, False, [(5, 0.6)]) in series

    fig = page.draw_plot(runs, tmp_path / page.PLOT)
    assert (tmp_path / page.PLOT).read_bytes().startswith(b"\x89PNG")
    svhn, gtsrb = fig.axes[:2]
    assert (svhn.get_title(), gtsrb.get_title()) == ("CIFAR10 -> SVHN", "CIFAR10 -> GTSRB")

    def points(ax, marked):
        lines = [
            line
            for line in ax.lines
            if line.get_linestyle() == "None" and (line.get_markeredgecolor() == "black") == marked
        ]
        return lines, sorted((x, y) for line in lines for x, y in zip(line.get_xdata(), line.get_ydata()))

    marked, at = points(svhn, True)
    assert at == [(5, 0.7), (9, 0.85), (10, 0.5)]
    others, rest = points(svhn, False)
    assert (5, 0.2) in rest and (9, 0.8) in rest and not set(at) & set(rest)
    assert min(line.get_markersize() for line in marked) > 2 * max(line.get_markersize() for line in others)
    assert all(line.get_alpha() is None for line in marked) and all(line.get_alpha() < 1 for line in others)
    assert min(line.get_zorder() for line in marked) > max(line.get_zorder() for line in others)
    assert points(gtsrb, True)[1] == [(7, 0.9)]
    legend = [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]
    assert legend[0] == "default (Fused, LLR>1, LLR>2)"

    # the repository's records without the field: their notes, or the default of their time, name Fused
    assert {page.default_of(r) for _, r in page.load_records(page.RECORDS) if "default" not in r} <= {"Fused"}


def test_the_repository_page_is_current():
    """docs/results.md is what benchmarks/records give: after changing a record, run the page's command."""
    assert page.main(["--check"]) == 0, f"run {page.COMMAND}"


def test_every_recorded_auroc_is_in_the_results_section_its_record_names():
    """Records are transcriptions of the dated logs: each number must appear in the section that logs it."""
    for file, record in page.load_records(page.RECORDS):
        log, title = page.logged_in(record)
        results = (REPO / page.RESULTS / log).read_text()
        headings = list(re.finditer(r"^(#+) (.+)$", results, re.M))
        matches = [i for i, h in enumerate(headings) if h[2] == title]
        assert len(matches) == 1, f"{file}: no single heading {title!r} in {page.RESULTS}/{log}"
        here = headings[matches[0]]
        end = next((h.start() for h in headings[matches[0] + 1 :] if len(h[1]) <= len(here[1])), len(results))
        section = results[here.start() : end]
        for ood, row in record["auroc"].items():
            for key, value in row.items():
                assert f"{value:.3f}" in section, f"{file}: {ood} {key} {value:.3f} is not in its section"
        assert f"{record['train_minutes']:.1f}" in section, f"{file}: its minutes are not in its section"


def test_statistics_table_records_round_trip(tmp_path):
    table_script = load_benchmark("statistics_table")
    started = dt.datetime(2026, 12, 6, 5, 2, tzinfo=dt.timezone.utc)
    table = {"mnist": {"L": 0.123456, "Fused": 0.9, "LLR>1": 0.96}, "kmnist": {"L": 0.4, "Fused": 0.94, "LLR>1": 0.98}}
    path = table_script.record_path(tmp_path, "fashion_mnist", started)
    assert path.name == "2026-12-06T0502Z_fashion_mnist_to_mnist_kmnist_notmnist_omniglot.json"
    details = dict(
        default="Fused",
        in_dist="fashion_mnist",
        table=table,
        fit_minutes=12.84,
        machine="2 test cores",
        model="HVAE, preset small",
        scoring="S = 1",
        started=started,
        command="python made-up",
    )
    assert table_script.write_record(path, **details) == path
    [(file, record)] = page.load_records(tmp_path)
    assert file == path.name and record["auroc"]["mnist"] == {"L": 0.123, "Fused": 0.9, "LLR>1": 0.96}  # as printed
    assert (record["train_minutes"], record["date"], record["results_section"]) == (12.84, "2026-12-06", None)
    assert "Fashion-MNIST -> KMNIST" in page.render_page([(file, record)])
    with pytest.raises(FileExistsError, match="never overwritten"):
        table_script.write_record(path, **{**details, "fit_minutes": 1.0})
    assert page.load_records(tmp_path)[0][1]["train_minutes"] == 12.84
