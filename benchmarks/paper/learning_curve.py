"""The learning curve of a training run: validation AUROC against training minutes.

Reads a run folder's log.jsonl (one line per epoch; the test epochs carry the
validation AUROC of L, every L>k and every LLR>k of the in-distribution
validation set against each other validation set, one importance sample each)
and returns, per test epoch, the training minutes so far, AUROC(L) and the best
AUROC(LLR>k) with its k.
"""

from __future__ import annotations

import json
from pathlib import Path

from hvae_detect.commands.run_config import read_auroc_key
from hvae_detect.persistence.atomic import atomic_write_text
from hvae_detect.reporting.plots import plt, save_figure
from hvae_detect.scoring import statistics


def learning_curve(run_dir, ood_label: str) -> list[dict]:
    """[{"epoch", "minutes", "auroc_L", "best_llr_k", "auroc_best_llr"}] for the test epochs that scored ``ood_label``."""
    rows, seconds = [], 0.0
    for line in (Path(run_dir) / "log.jsonl").read_text().splitlines():
        entry = json.loads(line)
        seconds += entry.get("seconds", 0.0)
        val = entry.get("val", {}).get(ood_label)
        if not val or "auroc_L" not in val:
            continue
        stats = [(statistics.read_key(read_auroc_key(key)), v) for key, v in val.items() if read_auroc_key(key)]
        llr = {k: v for (row, k), v in stats if row.name == "llr"}
        k = max(llr, key=llr.get) if llr else None
        rows.append(
            {
                "epoch": entry["epoch"],
                "minutes": round(seconds / 60, 2),
                "auroc_L": val["auroc_L"],
                "best_llr_k": k,
                "auroc_best_llr": llr.get(k),
            }
        )
    return rows


def markdown(rows: list[dict], ood_label: str, n_val: int) -> str:
    lines = [
        f"Learning curve (validation: up to {n_val:,} images per set, one importance sample, against {ood_label}):",
        "",
        "| epoch | training min | AUROC L | best LLR>k | AUROC |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['epoch']} | {r['minutes']:.1f} | {r['auroc_L']:.3f} | "
        f"{'-' if r['best_llr_k'] is None else r['best_llr_k']} | "
        f"{'-' if r['auroc_best_llr'] is None else format(r['auroc_best_llr'], '.3f')} |"
        for r in rows
    ]
    return "\n".join(lines)


def plot(rows: list[dict], path, title: str) -> None:
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    minutes = [r["minutes"] for r in rows]
    ax.plot(minutes, [r["auroc_L"] for r in rows], "o-", label="L")
    ax.plot(minutes, [r["auroc_best_llr"] for r in rows], "s-", label="best LLR>k")
    ax.axhline(0.5, ls=":", color="grey", lw=1)
    ax.set(xlabel="training minutes", ylabel="validation AUROC", ylim=(0, 1), title=title)
    ax.legend(fontsize=8)
    save_figure(fig, path)


def write(rows: list[dict], out_dir, ood_label: str) -> None:
    out_dir = Path(out_dir)
    atomic_write_text(out_dir / "learning_curve.json", json.dumps(rows, indent=1))
    if rows:
        plot(rows, out_dir / "learning_curve.png", f"validation AUROC against {ood_label}")
