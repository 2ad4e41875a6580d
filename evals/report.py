"""A self-contained report (HTML with inline SVG charts, and Markdown): readable offline."""

from __future__ import annotations

import html
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from kb.models import EvalRun, HealthSnapshot

KEY_METRICS = ["hit@1", "hit@5", "mrr@10", "section_hit@1", "abstention_f1",
               "false_abstention", "wrong_answer_rate", "verbatim"]
CSS = """body{font-family:system-ui,sans-serif;max-width:960px;margin:2rem auto;color:#222}
table{border-collapse:collapse;margin:1rem 0}td,th{border:1px solid #ccc;padding:4px 8px;
text-align:right}th:first-child,td:first-child{text-align:left}h2{margin-top:2rem}
.chart{margin:.5rem 0 1.5rem}"""


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def svg_line(title: str, points: Sequence[tuple[datetime, float | None]],
             width: int = 420, height: int = 140) -> str:
    """A small line chart as inline SVG (values in [0, 1] or any range)."""
    pts = [(t, v) for t, v in points if v is not None]
    if not pts:
        return f"<p>{html.escape(title)}: no data yet</p>"
    lo = min(v for _, v in pts)
    hi = max(v for _, v in pts)
    lo, hi = (min(lo, 0.0), max(hi, 1.0)) if hi <= 1.0 else (lo, hi)
    span = (hi - lo) or 1.0
    n = len(pts)
    xy = [(30 + (i * (width - 40) / max(n - 1, 1)), 10 + (height - 30) * (1 - (v - lo) / span))
          for i, (_, v) in enumerate(pts)]
    line = " ".join(f"{x:.1f},{y:.1f}" for x, y in xy)
    dots = "".join(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3"><title>{t:%Y-%m-%d %H:%M} '
                   f"{v:.3f}</title></circle>" for (x, y), (t, v) in zip(xy, pts, strict=True))
    return (f'<div class="chart"><strong>{html.escape(title)}</strong><br>'
            f'<svg width="{width}" height="{height}" role="img" aria-label="{html.escape(title)}">'
            f'<line x1="30" y1="{height - 20}" x2="{width - 10}" y2="{height - 20}" '
            f'stroke="#999"/><text x="0" y="14" font-size="10">{hi:.2f}</text>'
            f'<text x="0" y="{height - 20}" font-size="10">{lo:.2f}</text>'
            f'<polyline fill="none" stroke="#2a6df4" stroke-width="2" points="{line}"/>'
            f"{dots}</svg></div>")


def render(runs: Sequence[EvalRun], snapshots: Sequence[HealthSnapshot],
           health: dict[str, Any]) -> tuple[str, str]:
    """(HTML, Markdown). ``runs`` and ``snapshots`` oldest first."""
    latest = runs[-1] if runs else None
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>Canon report</title>"
             f"<style>{CSS}</style></head><body><h1>Canon knowledge report</h1>"
             f"<p>Generated {html.escape(str(health.get('at', '')))}</p>"]
    md = ["# Canon knowledge report", "", f"Generated {health.get('at', '')}", ""]
    if latest:
        parts.append(f"<h2>Latest eval run {latest.id} ({html.escape(latest.suite)}, "
                     f"{latest.at:%Y-%m-%d %H:%M})</h2><table><tr><th>metric</th>"
                     "<th>value</th></tr>")
        md += [f"## Latest eval run {latest.id} ({latest.suite})", "", "| metric | value |",
               "|---|---|"]
        for k, v in latest.metrics.items():
            parts.append(f"<tr><td>{html.escape(k)}</td><td>{_fmt(v)}</td></tr>")
            md.append(f"| {k} | {_fmt(v)} |")
        parts.append("</table>")
        md.append("")
    else:
        parts.append("<p>No eval runs stored yet: run <code>kb eval run demo</code>.</p>")
    parts.append("<h2>Trends across eval runs</h2>")
    for key in KEY_METRICS:
        parts.append(svg_line(key, [(r.at, r.metrics.get(key)) for r in runs]))
    parts.append("<h2>Knowledge health trend</h2>")
    parts.append(svg_line("share of served articles within review cadence",
                          [(s.at, s.metrics.get("freshness", {}).get("within_cadence"))
                           for s in snapshots]))
    parts.append(svg_line("open flags", [(s.at, float(s.metrics.get("flags", {}).get("open", 0)))
                                         for s in snapshots]))
    fresh = health.get("freshness", {})
    parts.append("<h2>Overdue articles by owner</h2><table><tr><th>owner</th><th>overdue</th>"
                 "<th>articles</th></tr>")
    md += ["## Overdue articles by owner", "", "| owner | overdue | articles |", "|---|---|---|"]
    for owner, ids in fresh.get("overdue_by_owner", {}).items():
        parts.append(f"<tr><td>{html.escape(owner)}</td><td>{len(ids)}</td>"
                     f"<td>{html.escape(', '.join(ids))}</td></tr>")
        md.append(f"| {owner} | {len(ids)} | {', '.join(ids)} |")
    parts.append("</table>")
    within = fresh.get("within_cadence")
    summary = (f"{fresh.get('served', 0)} served articles, "
               f"{_fmt(within)} within cadence, {len(fresh.get('due_14d', []))} due in 14 days, "
               f"{health.get('flags', {}).get('open', 0)} open flags")
    parts.append(f"<p>{html.escape(summary)}</p></body></html>")
    md += ["", summary, ""]
    return "".join(parts), "\n".join(md)


def write_report(out: Path, runs: Sequence[EvalRun], snapshots: Sequence[HealthSnapshot],
                 health: dict[str, Any]) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    page, md = render(runs, snapshots, health)
    (out / "report.html").write_text(page, encoding="utf-8")
    (out / "report.md").write_text(md, encoding="utf-8")
    return [out / "report.html", out / "report.md"]
