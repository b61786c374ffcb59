"""The results page: one table per reported pair and a plot of AUROC against training minutes.

    python benchmarks/results_page.py            # writes docs/results.md and docs/auroc_vs_minutes.png
    python benchmarks/results_page.py --check    # exits 1 when docs/results.md is not what the records give

A reader should see at a glance what each statistic scores after how much training, beside the paper's
figure; the dated logs in benchmarks/results/ (indexed by benchmarks/RESULTS.md) stay the history, and each
run's line links the log that records it. The numbers come only from the measured records in
benchmarks/records/ (one JSON file per run; benchmarks/records/README.md lists the fields), the paper's
from ``PAPER_AUROC``. The plot marks each run's default statistic (the record's optional ``default``,
``default_of``), since that is what a user of the detector gets. ``--records DIR`` / ``--out DIR`` point
elsewhere (tests).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import re
import sys
from pathlib import Path

from hvae_detect.scoring import statistics

REPO = Path(__file__).resolve().parents[1]
RECORDS = REPO / "benchmarks" / "records"
RESULTS = "benchmarks/results"  # the dated logs a record's results_section names, from the repository's root
DOCS = REPO / "docs"
PAGE, PLOT = "results.md", "auroc_vs_minutes.png"
COMMAND = "python benchmarks/results_page.py"

# The paper's AUROCs (Havtorn et al. 2021), from ../shared/DESIGN.md ("The paper's own figures", read
# from the LaTeX of the paper's tables). Per pair and statistic key: (AUROC, what produced it); the plot
# draws the first of each.
PAPER_AUROC = {
    ("fashion_mnist", "mnist"): {
        "L": ((0.268, "HVAE"),),
        "L>1": ((0.593, "HVAE"),),
        "L>2": ((0.712, "HVAE"),),
        "LLR>1": ((0.964, "HVAE, S=1"), (0.984, "HVAE, S=250"), (0.986, "HVAE, S=1000")),
    },
    ("fashion_mnist", "kmnist"): {"LLR>1": ((0.974, "HVAE, appendix"),)},
    ("cifar10", "svhn"): {
        "L": ((0.083, "HVAE, S=1000"),),
        "L>1": ((0.097, "HVAE, S=1000"),),
        "L>2": ((0.693, "HVAE, S=1000"),),
        "IC": ((0.833, "input complexity with the same HVAE"),),
        "LLR>2": ((0.811, "HVAE, S=1000"), (0.891, "BIVA")),
    },
}
PAPER_OTHERS = {("fashion_mnist", "mnist"): "likelihood regret 0.988", ("cifar10", "svhn"): "likelihood regret 0.875"}
PAPER_TRAINING = "HVAE about 2 days, BIVA about a week, on one GTX 1080 Ti"

# The pairs, in page order (the reported ones, then the colour pairs kept for choosing defaults);
# a record of another pair gets a table after them. Sets by their file name in ../shared/data.
PAIRS = (
    ("fashion_mnist", "mnist"),
    ("fashion_mnist", "kmnist"),
    ("fashion_mnist", "notmnist"),
    ("fashion_mnist", "omniglot"),
    ("cifar10", "svhn"),
    ("cifar10", "gtsrb"),
    ("cifar10", "tinyimagenet_resize"),
)
NAMES = {
    "fashion_mnist": "Fashion-MNIST",
    "mnist": "MNIST",
    "kmnist": "KMNIST",
    "notmnist": "notMNIST",
    "omniglot": "Omniglot",
    "cifar10": "CIFAR10",
    "svhn": "SVHN",
    "gtsrb": "GTSRB",
    "tinyimagenet_resize": "Tiny ImageNet (resize)",
}
# What the local copies in ../shared/data are (their SOURCES.md): they are not always the paper's data.
DATA_CAVEATS = {
    "cifar10": "decoded from JPEG (quality 75), so lossy; 20,000 of the 50,000 training images",
    "svhn": "10,000 of the 26,032 test images (its test split), recovered from matplotlib renderings",
    "notmnist": "a 10,000-image sample of notMNIST_small",
    "omniglot": (
        "the evaluation set resized to 28x28 with interpolation by a third party (the paper: nearest "
        "neighbour), white strokes on black as stored (the paper's Omniglot28x28Inverted)"
    ),
    "gtsrb": (
        "the first 10,000 of the 12,630 test images, lossless, resized to 32x32 by a third party "
        "(OpenCV bilinear on the whole image, aspect ratio not kept)"
    ),
    "tinyimagenet_resize": (
        "the 10,000 Tiny ImageNet test images, decoded from 64x64 JPEG (lossy) and resized to "
        "32x32 with PIL bicubic: ODIN's images, not ODIN's file byte for byte"
    ),
}
# The statistic a record's detector recommends: its "default" field; older records name it only in
# their notes ("Default statistic: Fused ...") or not at all, and were made while the default was Fused.
DEFAULT_BEFORE_FIELD = "Fused"

# Field: (type, what a valid value is). Every record has these; "scoring" and "notes" are optional text.
FIELDS = {
    "in_dist": (str, "the in-distribution set's name, e.g. \"fashion_mnist\""),
    "auroc": (dict, "{OOD set: {statistic key: AUROC}}"),
    "train_minutes": ((int, float), "a positive number of minutes"),
    "minutes_cover": (str, "what the minutes count, e.g. \"fit\""),
    "machine": (str, "the machine in words"),
    "model": (str, "the model in words, its family first"),
    "date": (str, "a date YYYY-MM-DD"),
    "command": (str, "the command that produced the run"),
    "results_section": ((str, type(None)), f"where {RESULTS}/ logs it, \"FILE.md: section title\", or null"),
}
OPTIONAL = {
    "scoring": (str, "text"),
    "notes": (str, "text"),
    "default": (str, "the statistic key the run's detector recommends, e.g. \"Fused\""),
}


class RecordError(ValueError):
    """A record that is not what the page needs: names the file, the field and what was expected."""


def validate(record, source: str) -> dict:
    """``record`` (decoded JSON) if it is a valid record; a RecordError that says where it is not."""

    def fail(field, expected, got):
        raise RecordError(f"{source}: field {field!r} must be {expected}, got {got!r}")

    if not isinstance(record, dict):
        raise RecordError(f"{source}: a record must be a JSON object, got {type(record).__name__}")
    for field in FIELDS.keys() - record.keys():
        fail(field, FIELDS[field][1] + " (it is missing)", None)
    for field in record.keys() - FIELDS.keys() - OPTIONAL.keys():
        raise RecordError(f"{source}: unknown field {field!r} (known: {', '.join([*FIELDS, *OPTIONAL])})")
    for field, value in record.items():
        kind, expected = {**FIELDS, **OPTIONAL}[field]
        if not isinstance(value, kind) or isinstance(value, bool) or value == "":
            fail(field, expected, value)
    if record["results_section"] is not None and not re.fullmatch(r"[^/:]+\.md: .+", record["results_section"]):
        fail("results_section", FIELDS["results_section"][1], record["results_section"])
    if not (math.isfinite(record["train_minutes"]) and record["train_minutes"] > 0):
        fail("train_minutes", FIELDS["train_minutes"][1], record["train_minutes"])
    try:
        if dt.date.fromisoformat(record["date"]).isoformat() != record["date"]:
            raise ValueError
    except ValueError:
        fail("date", FIELDS["date"][1], record["date"])
    if not record["auroc"]:
        fail("auroc", FIELDS["auroc"][1] + " with at least one OOD set", record["auroc"])
    if "default" in record:
        try:
            statistics.read_key(record["default"])
        except ValueError as error:
            fail("default", f"a statistic key ({error})", record["default"])
    for ood, row in record["auroc"].items():
        if not isinstance(row, dict) or not row:
            fail(f"auroc.{ood}", "{statistic key: AUROC} with at least one key", row)
        for key, value in row.items():
            try:
                statistics.read_key(key)
            except ValueError as error:
                fail(f"auroc.{ood}.{key}", f"a statistic key ({error})", key)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value <= 1:
                fail(f"auroc.{ood}.{key}", "an AUROC, a number in [0, 1]", value)
    return record


def load_records(directory: Path) -> list[tuple[str, dict]]:
    """(file name, record) of every *.json in ``directory``, validated, in file-name order."""
    paths = sorted(Path(directory).glob("*.json"))
    if not paths:
        raise RecordError(f"{directory}: no *.json records")
    runs = []
    for path in paths:
        try:
            record = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise RecordError(f"{path}: not JSON ({error})") from None
        runs.append((path.name, validate(record, str(path))))
    return runs


def pairs_of(runs) -> list[tuple[str, str]]:
    found = {(record["in_dist"], ood) for _, record in runs for ood in record["auroc"]}
    return [p for p in PAIRS if p in found] + sorted(found - set(PAIRS))


def ordered_keys(present) -> list[str]:
    """The statistic keys in ``present`` in the order of ``hvae_detect.scoring.statistics.keys``."""
    ks = range(1, 1 + max([statistics.read_key(key)[1] for key in present] + [1]))
    order = statistics.keys(ks)
    return sorted(present, key=order.index)


def name(dataset: str) -> str:
    return NAMES.get(dataset, dataset)


def family(record) -> str:
    """The model family, the first word group of ``model`` ("HVAE", "BIVA")."""
    return record["model"].split(",")[0]


def default_of(record) -> str:
    """The key of the record's default statistic (``DEFAULT_BEFORE_FIELD`` for records without one)."""
    if "default" in record:
        return record["default"]
    named = re.search(r"Default statistic: (\S+?)[\s,;.]*(?:\s|$)", record.get("notes", ""))
    return named[1] if named else DEFAULT_BEFORE_FIELD


def runs_of(pair, runs) -> list[tuple[str, dict]]:
    """The (file, record) that scored ``pair``, fewest training minutes first."""
    chosen = [(file, record) for file, record in runs if record["in_dist"] == pair[0] and pair[1] in record["auroc"]]
    return sorted(chosen, key=lambda fr: (fr[1]["train_minutes"], fr[0]))


def pair_table(pair, runs, numbers) -> list[str]:
    columns = [(numbers[file], record) for file, record in runs_of(pair, runs)]
    paper = PAPER_AUROC.get(pair, {})
    keys = ordered_keys({key for _, record in columns for key in record["auroc"][pair[1]]} | set(paper))
    heads = [f"[{n}] {family(r)}<br>{r['train_minutes']:.1f} min<br>{r['machine']}" for n, r in columns]
    lines = [
        f"## {name(pair[0])} -> {name(pair[1])}",
        "",
        "| statistic | " + " | ".join(heads) + " | the paper |",
        "|---|" + "---:|" * len(columns) + "---|",
    ]
    best = [max(r["auroc"][pair[1]].values()) for _, r in columns]
    for key in keys:
        cells = []
        for (_, record), top in zip(columns, best):
            value = record["auroc"][pair[1]].get(key)
            cells.append("" if value is None else f"**{value:.3f}**" if value == top else f"{value:.3f}")
        figures = "; ".join(f"{value:.3f} ({source})" for value, source in paper.get(key, ()))
        lines.append(f"| {key} | " + " | ".join(cells) + f" | {figures} |")
    notes = [f"{name(d)}: {DATA_CAVEATS[d]}" for d in pair if d in DATA_CAVEATS]
    if pair in PAPER_OTHERS:
        notes.append(f"The paper also lists {PAPER_OTHERS[pair]} for this pair")
    return lines + ([""] + ["- " + note + "." for note in notes] if notes else []) + [""]


def logged_in(record) -> tuple[str, str] | None:
    """(the dated log's file name, the section's title) of a record's ``results_section``, or None."""
    section = record["results_section"]
    return None if section is None else tuple(section.split(": ", 1))


def run_line(number, file, record) -> str:
    log = logged_in(record)
    where = f'[{log[0]}](../{RESULTS}/{log[0]}): "{log[1]}"' if log else f"not logged in {RESULTS}/ yet"
    parts = [
        f"{record['date']}",
        record["model"],
        f"{record['train_minutes']:.1f} min ({record['minutes_cover']}) on {record['machine']}",
        record.get("scoring"),
        f"`{record['command']}`",
        where,
        record.get("notes"),
    ]
    text = " · ".join(part for part in parts if part)
    return f"- **[{number}]** {text} ([record](../benchmarks/records/{file}))"


def render_page(runs) -> str:
    """The page's markdown: the same records always give the same text (``--check`` compares it)."""
    ordered = sorted(runs, key=lambda fr: (fr[1]["date"], fr[0]))
    numbers = {file: n for n, (file, _) in enumerate(ordered, 1)}
    lines = [
        "# Results at a glance",
        "",
        f"<!-- Written by `{COMMAND}` from benchmarks/records/; edit the records, not this page. -->",
        "",
        "AUROC (OOD positive) of each statistic of one trained model, per pair, by the training that",
        "produced it: each column is one measured run (minutes, machine; [n] is the run, listed at the end),",
        "the last column the paper's figure. The highest AUROC of each run is bold. The paper's models",
        f"trained for days on a GPU ({PAPER_TRAINING});",
        "the runs here for minutes on 2 CPU cores. Only runs whose log states their training minutes are",
        f"here; the dated logs, with every run, are in {RESULTS}/ ([their index](../benchmarks/RESULTS.md)).",
        "",
        f"Regenerate this page and its plot: `{COMMAND}` (`--check` exits 1 when this page is stale).",
        "",
        f"![AUROC against training minutes, one panel per pair]({PLOT})",
        "",
        "Statistics (`hvae_detect/scoring/statistics.py`): L the ELBO; L>k the bound with the k lowest",
        "latents from the prior; LLR>k = L - L>k (the paper's); IC input complexity (PNG bits); T",
        "typicality of L; Fused / FusedECOD a Gaussian / ECOD of the statistic vector (the default is Fused);",
        "the others as that table says.",
        "Data: the local copies in ../shared/data (caveats under each table, from its SOURCES.md).",
        "",
    ]
    for pair in pairs_of(runs):
        lines += pair_table(pair, runs, numbers)
    lines += ["## Runs", ""] + [run_line(numbers[file], file, record) for file, record in ordered]
    return "\n".join(lines) + "\n"


def panel_series(pair, runs, keys) -> list[tuple[str, bool, bool, list[tuple[float, float]]]]:
    """(key, HVAE family?, the run's default?, [(minutes, AUROC)]) of each point series in ``pair``'s panel,
    the defaults' last so that they are drawn on top."""
    series = []
    for default in (False, True):
        for key in keys:
            for hvae in (True, False):
                points = [
                    (r["train_minutes"], r["auroc"][pair[1]][key])
                    for _, r in runs_of(pair, runs)
                    if key in r["auroc"][pair[1]]
                    and (family(r) == "HVAE") == hvae
                    and (default_of(r) == key) == default
                ]
                if points:
                    series.append((key, hvae, default, points))
    return series


def draw_plot(runs, path: Path):
    """One panel per pair: each run's AUROC per statistic against its training minutes; the paper dashed.

    The statistic the run's detector recommends (``default_of``) is what a user gets, so its points are
    large, filled and black-edged, drawn on top; the other statistics are small and light. Returns the figure.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    pairs = pairs_of(runs)
    keys = ordered_keys(
        {key for _, r in runs for row in r["auroc"].values() for key in row}
        | {key for pair in pairs for key in PAPER_AUROC.get(pair, {})}
    )
    style = {key: (f"C{i % 10}", "os^Dv"[i // 10 % 5]) for i, key in enumerate(keys)}
    ncols = 3
    nrows = -(-(len(pairs) + 1) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(10, 2.9 * nrows), sharey=True, squeeze=False)
    panels = axes.ravel()
    drawn_defaults = set()
    for ax, pair in zip(panels, pairs):
        for key, hvae, default, points in panel_series(pair, runs, keys):
            colour, marker = style[key]
            face = colour if hvae else "white"
            if default:
                drawn_defaults.add(key)
                ax.plot(
                    *zip(*points),
                    linestyle="none",
                    marker=marker,
                    color=colour,
                    ms=11,
                    markerfacecolor=face,
                    markeredgecolor="black",
                    markeredgewidth=1.5,
                    zorder=4,
                )
            else:
                ax.plot(
                    *zip(*points),
                    linestyle="none",
                    marker=marker,
                    color=colour,
                    ms=4,
                    alpha=0.45,
                    markerfacecolor=None if hvae else "none",
                    zorder=2,
                )
        for key in keys:
            for value, _ in PAPER_AUROC.get(pair, {}).get(key, ())[:1]:
                ax.axhline(value, color=style[key][0], linestyle="--", linewidth=1, alpha=0.7)
        ax.set_title(f"{name(pair[0])} -> {name(pair[1])}", fontsize=10)
        ax.set_xlabel("training minutes", fontsize=9)
        ax.set_ylim(0, 1.02)
        ax.set_xlim(0, 1.1 * runs_of(pair, runs)[-1][1]["train_minutes"])
        ax.grid(alpha=0.3)
    for ax in panels[::ncols]:
        ax.set_ylabel("AUROC", fontsize=9)
    for ax in panels[len(pairs) :]:
        ax.axis("off")
    handles = []
    defaults = [k for k in keys if k in drawn_defaults]
    if defaults:
        colour, marker = style[defaults[0]] if len(defaults) == 1 else ("grey", "o")
        handles.append(
            Line2D(
                [],
                [],
                linestyle="none",
                marker=marker,
                color=colour,
                ms=11,
                markeredgecolor="black",
                markeredgewidth=1.5,
                label=f"default ({', '.join(defaults)})",
            )
        )
    handles += [
        Line2D([], [], linestyle="none", marker=style[k][1], color=style[k][0], alpha=0.6, label=k) for k in keys
    ]
    others = sorted({family(r) for _, r in runs} - {"HVAE"})
    if others:
        handles.append(
            Line2D(
                [],
                [],
                linestyle="none",
                marker="o",
                color="grey",
                markerfacecolor="none",
                label="hollow: " + ", ".join(others),
            )
        )
    handles.append(Line2D([], [], linestyle="--", color="grey", label="the paper (GPU days)"))
    panels[len(pairs)].legend(handles=handles, loc="center", ncol=2, fontsize=9, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=80, metadata={"Software": None})
    plt.close(fig)
    return fig


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=Path, default=RECORDS, help="folder of the records (*.json)")
    parser.add_argument("--out", type=Path, default=DOCS, help=f"folder for {PAGE} and {PLOT}")
    parser.add_argument("--check", action="store_true", help=f"exit 1 if OUT/{PAGE} differs from the records'")
    args = parser.parse_args(argv)
    try:
        runs = load_records(args.records)
    except RecordError as error:
        print(f"results_page: {error}", file=sys.stderr)
        return 2
    page, target = render_page(runs), args.out / PAGE
    if args.check:
        stale = [p for p in (target, args.out / PLOT) if not p.exists()]
        if stale or target.read_text() != page:
            print(
                f"results_page: {stale[0] if stale else target} is not what {args.records} give; run {COMMAND}",
                file=sys.stderr,
            )
            return 1
        print(f"{target} is current ({len(runs)} records)")
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    target.write_text(page)
    draw_plot(runs, args.out / PLOT)
    print(f"wrote {target} and {args.out / PLOT} from {len(runs)} records")
    return 0


if __name__ == "__main__":
    sys.exit(main())
