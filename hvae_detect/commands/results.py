"""``hvae-detect results``: AUROC / AUPRC / FPR80 / FPR95 tables and ROC curves from score files.

Reads one or more folders of ``scores-*.npz`` (written by ``hvae-detect score``) and
reports, per in-distribution set and per OOD set, every statistic (``hvae_detect.scoring.statistics``)
and sample count found; writes results.csv, results.json and roc.png.
"""

from __future__ import annotations

import csv
import json
import math
import zipfile
from pathlib import Path

import numpy as np

from hvae_detect.persistence.atomic import atomic_write, atomic_write_text
from hvae_detect.reporting.metrics import detection_metrics
from hvae_detect.reporting.plots import draw_roc_curves, plt, save_figure
from hvae_detect.scoring import statistics


def read_scores(path) -> dict:
    """One score file as {"in_distribution", "k", "counts": {"iw_samples", "iw_samples_lk"},
    "sets": {label: {statistic key: values}}}; files of the earlier format (L_i, Lk_i, LLR_i) too."""
    try:
        with np.load(path, allow_pickle=False) as f:
            k, labels = int(f["k"]), [str(lab) for lab in f["datasets"]]
            if "iw_samples" in f.files:
                counts = {"iw_samples": int(f["iw_samples"]), "iw_samples_lk": int(f["iw_samples_lk"])}
                sets = {
                    lab: {name.split(":", 1)[1]: f[name] for name in f.files if name.startswith(f"set{i}:")}
                    for i, lab in enumerate(labels)
                }
            else:  # written before the statistics table
                counts = {"iw_samples": int(f["iw_elbo"]), "iw_samples_lk": int(f["iw_lk"])}
                sets = {
                    lab: {"L": f[f"L_{i}"], **({f"L>{k}": f[f"Lk_{i}"], f"LLR>{k}": f[f"LLR_{i}"]} if k else {})}
                    for i, lab in enumerate(labels)
                }
            return {"in_distribution": str(f["in_distribution"]), "k": k, "counts": counts, "sets": sets}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path} cannot be read as a score file ({type(e).__name__}: {e})") from None


def _order(key: str) -> tuple:
    """Rows in the statistics table's order, then by k."""
    statistic, k = statistics.read_key(key)
    return list(statistics.TABLE).index(statistic.name), k


def collect_results(score_dirs) -> tuple[list[dict], dict]:
    """Metric rows for every (in-dist, OOD set, statistic, sample counts) and the ROC inputs
    (normality scores: higher = more normal)."""
    files = []
    for d in [score_dirs] if isinstance(score_dirs, (str, Path)) else score_dirs:
        d = Path(d)
        files += sorted(d.glob("scores-*.npz")) if d.is_dir() else [d]
    if not files:
        raise FileNotFoundError(f"no scores-*.npz files in {score_dirs}")
    rows, curves = [], {}
    for path in files:
        s = read_scores(path)
        ind = s["in_distribution"]
        for ood, values in s["sets"].items():
            if ood == ind:
                continue
            for key in values:
                counts = statistics.sample_counts(key, s["counts"])
                samples = (counts.get("iw_samples", ""), counts.get("iw_samples_lk", ""))
                if (ind, ood, key, *samples) in curves:  # "L" is in the file of every k
                    continue
                s_in = statistics.normality(key, s["sets"][ind][key])
                s_out = statistics.normality(key, values[key])
                rows.append(
                    {
                        "in_distribution": ind,
                        "ood": ood,
                        "statistic": key,
                        "iw_samples": samples[0],
                        "iw_samples_lk": samples[1],
                        "n_in": int(s_in.size),
                        "n_out": int(s_out.size),
                        **detection_metrics(s_in, s_out),
                    }
                )
                curves[(ind, ood, key, *samples)] = (s_in, s_out)
    rows.sort(
        key=lambda r: (
            r["in_distribution"],
            r["ood"].endswith(" train"),
            r["ood"],
            _order(r["statistic"]),
            str(r["iw_samples"]),
            str(r["iw_samples_lk"]),
        )
    )
    return rows, curves


def _stat_label(r):
    parts = []
    if r["iw_samples"] != "":
        parts.append(f"S={r['iw_samples']}")
    if r["iw_samples_lk"] != "":
        parts.append(f"S'={r['iw_samples_lk']}")
    return f"{r['statistic']} ({', '.join(parts)})"


def format_table(rows) -> str:
    lines = []
    for ind in dict.fromkeys(r["in_distribution"] for r in rows):
        lines.append(f"\nIn-distribution: {ind}")
        for ood in dict.fromkeys(r["ood"] for r in rows if r["in_distribution"] == ind):
            lines.append(f"  OOD: {ood}")
            lines.append(f"    {'statistic':<24} {'AUROC':>7} {'AUPRC':>7} {'FPR80':>7} {'FPR95':>7}")
            for r in rows:
                if r["in_distribution"] == ind and r["ood"] == ood:
                    lines.append(
                        f"    {_stat_label(r):<24} {r['auroc']:7.3f} {r['auprc']:7.3f} "
                        f"{r['fpr80']:7.3f} {r['fpr95']:7.3f}"
                    )
    return "\n".join(lines)


def plot_roc(curves, path):
    """One panel per (in-distribution, OOD) pair, one curve per statistic and sample count."""
    pairs = list(dict.fromkeys((k[0], k[1]) for k in curves))
    n = len(pairs)
    cols = min(3, n)
    fig, axes = plt.subplots(math.ceil(n / cols), cols, figsize=(4.2 * cols, 4 * math.ceil(n / cols)), squeeze=False)
    for ax, (ind, ood) in zip(axes.flat, pairs):
        panel = {
            key[2] + (f" S={key[3]}" if key[3] else "") + (f" S'={key[4]}" if key[4] else ""): scores
            for key, scores in curves.items()
            if key[:2] == (ind, ood)
        }
        draw_roc_curves(ax, panel, f"{ind} vs {ood}")
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    save_figure(fig, path)


def write_results(rows, curves, output_dir, overwrite=False) -> dict:
    """results.csv, results.json and roc.png in ``output_dir``; existing ones only with ``overwrite``."""
    output_dir = Path(output_dir)
    out = {"csv": output_dir / "results.csv", "json": output_dir / "results.json", "roc": output_dir / "roc.png"}
    existing = [p for p in out.values() if p.exists()]
    if existing and not overwrite:
        raise ValueError(f"{existing[0]} exists; pass --overwrite to replace the results in {output_dir}")
    output_dir.mkdir(parents=True, exist_ok=True)
    fields = list(rows[0])

    def write_csv(tmp):
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields)
            w.writeheader()
            w.writerows(rows)

    atomic_write(out["csv"], write_csv)
    atomic_write_text(out["json"], json.dumps(rows, indent=1))
    plot_roc(curves, out["roc"])
    return out
