"""report.html of ``hvae-detect detect``: one self-contained page a person reads at a glance.

The page holds everything inline (no file beside it, nothing fetched): the summary, the histogram of the
scores with the threshold marked (an inline SVG), the most outlying images and the most normal ones as
thumbnails (PNG data URIs) with their scores, and the files that could not be read with the reason. A
small inline script counts the thumbnails the browser decoded into ``<body data-images-rendered>`` (what
the headless-browser check reads).
"""

from __future__ import annotations

import base64
import dataclasses
import html

import numpy as np

MAX_ERROR_ROWS = 200  # rows of the unreadable-files table (scores.csv lists every one)

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#222;max-width:1100px}
h1{font-size:20px;margin:0 0 4px} h2{font-size:16px;margin:28px 0 8px}
.summary{color:#444;margin:0;padding-left:18px} .note{color:#666;font-size:12px}
.grid{display:flex;flex-wrap:wrap;gap:10px}
figure{margin:0;width:132px;border:1px solid #ddd;border-radius:4px;padding:6px;background:#fafafa}
figure.flagged{border-color:#c0392b;background:#fdf0ee}
figure img{width:120px;height:120px;object-fit:contain;image-rendering:pixelated;background:#fff;display:block}
figcaption{font-size:11px;word-break:break-all;margin-top:4px}
.score{font-weight:600} .flag{color:#c0392b;font-weight:600}
table{border-collapse:collapse;font-size:12px} td,th{border:1px solid #ddd;padding:3px 6px;text-align:left}
"""

_SCRIPT = """
window.addEventListener('load',function(){var n=0;document.querySelectorAll('figure img').forEach(function(i){
if(i.complete&&i.naturalWidth>0)n++;});document.body.setAttribute('data-images-rendered',String(n));});
"""


@dataclasses.dataclass
class Thumbnail:
    """One image shown on the page: its name, score, whether it is flagged, and a PNG (or None with a reason)."""

    name: str
    score: float
    flagged: bool | None
    png: bytes | None
    problem: str = ""


def _number(v: float) -> str:
    return f"{v:.4g}" if np.isfinite(v) else str(v)


def histogram_svg(scores, threshold: float | None, bins: int = 40, width: int = 680, height: int = 230) -> str:
    """An inline SVG histogram of ``scores`` (higher = more normal) with the threshold as a red line; bars below
    the threshold (flagged) are red. A long tail of very low scores is pooled into the first bar (said below)."""
    s = np.asarray(scores, dtype=np.float64)
    s = s[np.isfinite(s)]
    if len(s) == 0:
        return '<p class="note">no finite score to draw</p>'
    lo, hi = float(np.percentile(s, 1.0)) if len(s) >= 200 else float(s.min()), float(s.max())
    if threshold is not None and np.isfinite(threshold):
        lo, hi = min(lo, threshold), max(hi, threshold)
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    pooled = int(np.sum(s < lo))
    counts, edges = np.histogram(np.clip(s, lo, hi), bins=bins, range=(lo, hi))
    left, right, top, bottom = 52, 12, 12, 38
    pw, ph = width - left - right, height - top - bottom
    x = lambda v: left + (v - lo) / (hi - lo) * pw  # noqa: E731
    peak = max(int(counts.max()), 1)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
        f'aria-label="histogram of the scores">',
        f'<line x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}" stroke="#444"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + ph}" stroke="#444"/>',
    ]
    for count, a, b in zip(counts, edges[:-1], edges[1:]):
        if count == 0:
            continue
        h = count / peak * ph
        below = threshold is not None and (a + b) / 2 < threshold
        parts.append(
            f'<rect x="{x(a):.1f}" y="{top + ph - h:.1f}" width="{max(x(b) - x(a) - 1, 1):.1f}" '
            f'height="{h:.1f}" fill="{"#e07b6f" if below else "#6f9fd8"}"><title>{_number(a)} to '
            f'{_number(b)}: {count}</title></rect>'
        )
    for v in np.linspace(lo, hi, 5):
        parts.append(
            f'<text x="{x(v):.1f}" y="{top + ph + 16}" font-size="11" text-anchor="middle">{_number(v)}</text>'
        )
    parts.append(
        f'<text x="{left - 6}" y="{top + 10}" font-size="11" text-anchor="end">{peak}</text>'
        f'<text x="{left - 6}" y="{top + ph}" font-size="11" text-anchor="end">0</text>'
        f'<text x="{left + pw / 2:.1f}" y="{height - 4}" font-size="12" text-anchor="middle">score '
        f'(higher = more normal)</text>'
    )
    if threshold is not None and np.isfinite(threshold):
        parts.append(
            f'<line x1="{x(threshold):.1f}" y1="{top}" x2="{x(threshold):.1f}" y2="{top + ph}" '
            f'stroke="#c0392b" stroke-width="2" stroke-dasharray="5,3"/><text x="{x(threshold) + 4:.1f}" '
            f'y="{top + 12}" font-size="11" fill="#c0392b">threshold {_number(threshold)}</text>'
        )
    parts.append("</svg>")
    note = f'<p class="note">{pooled} scores below {_number(lo)} are counted in the first bar.</p>' if pooled else ""
    return "".join(parts) + note


def _figures(thumbs: list[Thumbnail]) -> str:
    if not thumbs:
        return '<p class="note">none</p>'
    out = []
    for t in thumbs:
        name = html.escape(t.name)
        if t.png is not None:
            image = (
                f'<img alt="{name}" title="{name}" '
                f'src="data:image/png;base64,{base64.b64encode(t.png).decode("ascii")}">'
            )
        else:
            image = f'<p class="note">{html.escape(t.problem or "no picture")}</p>'
        flag = ' <span class="flag">flagged</span>' if t.flagged else ""
        out.append(
            f'<figure class="{"flagged" if t.flagged else ""}">{image}<figcaption>'
            f'<span class="score">{_number(t.score)}</span>{flag}<br>{name}</figcaption></figure>'
        )
    return f'<div class="grid">{"".join(out)}</div>'


def render_report(
    *,
    title: str,
    summary: list[str],
    scores,
    threshold: float | None,
    outliers: list[Thumbnail],
    normals: list[Thumbnail],
    errors: list[tuple[str, str]],
    n_errors: int | None = None,
) -> str:
    """The page as text. ``summary``: lines (plain text) under the title; ``outliers`` lowest scores first,
    ``normals`` highest first; ``errors`` [(name, reason)] (at most ``MAX_ERROR_ROWS`` are listed, of
    ``n_errors`` in all)."""
    n_errors = len(errors) if n_errors is None else n_errors
    items = "".join(f"<li>{html.escape(line)}</li>" for line in summary)
    body = [
        f"<h1>{html.escape(title)}</h1><ul class=\"summary\">{items}</ul>",
        "<h2>Scores</h2>",
        histogram_svg(scores, threshold),
        f"<h2>The {len(outliers)} most outlying images (lowest scores)</h2>",
        _figures(outliers),
        f"<h2>The {len(normals)} most normal images (highest scores)</h2>",
        _figures(normals),
    ]
    if n_errors:
        rows = "".join(
            f"<tr><td>{html.escape(name)}</td><td>{html.escape(reason)}</td></tr>"
            for name, reason in errors[:MAX_ERROR_ROWS]
        )
        more = (
            f'<p class="note">{n_errors - MAX_ERROR_ROWS} more in scores.csv.</p>' if n_errors > MAX_ERROR_ROWS else ""
        )
        body.append(
            f"<h2>{n_errors} files could not be read</h2><table><tr><th>file</th><th>reason</th></tr>"
            f"{rows}</table>{more}"
        )
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>\n<body>\n"
        + "\n".join(body)
        + f"\n<script>{_SCRIPT}</script>\n</body></html>\n"
    )
