"""Charts as inline SVG, drawn on the server: dates on the x axis, units on the y axis, a
legend, and a table of the same numbers beside each (the table is the accessible view)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

from markupsafe import Markup, escape

from evals.trends import Series

COLOURS = ("#0b5cad", "#b35c00", "#a4161a", "#1d6b35", "#6b3fa0")
W, H = 560, 220
LEFT, RIGHT, TOP, BOTTOM = 52, 12, 12, 36


@dataclass(frozen=True)
class Chart:
    id: str
    title: str
    unit: str  # "%", "hours", "calls", "flags"
    svg: Markup
    columns: list[str]
    rows: list[list[str]]
    legend: list[str]


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    if unit == "%":
        return f"{100 * value:.0f}%"
    if unit == "hours":
        return f"{value:.1f} h"
    if unit == "share":
        return f"{value:.2f}"
    return f"{value:.0f}"


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    for step in (1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 5000, 10000,
                 20000, 50000, 100000, 250000, 500000, 1000000):
        if value <= step:
            return float(step)
    return value


def line_chart(chart_id: str, title: str, series: Sequence[Series], *, unit: str) -> Chart:
    """Lines over dates (gaps where a value is missing)."""
    dates = sorted({d for s in series for d, _ in s.points})
    values = [v for s in series for _, v in s.points if v is not None]
    top = 1.0 if unit in ("%", "share") else _nice_max(max(values, default=0.0))
    plot_w, plot_h = W - LEFT - RIGHT, H - TOP - BOTTOM

    def x(d: date) -> float:
        if len(dates) < 2:
            return LEFT + plot_w / 2
        return LEFT + plot_w * (d - dates[0]).days / max((dates[-1] - dates[0]).days, 1)

    def y(v: float) -> float:
        return TOP + plot_h * (1 - v / top)

    parts = [f'<svg viewBox="0 0 {W} {H}" role="img" aria-labelledby="{chart_id}-t" '
             f'xmlns="http://www.w3.org/2000/svg" font-size="11" '
             f'font-family="system-ui, sans-serif">',
             f'<title id="{chart_id}-t">{escape(title)} ({escape(unit)}); the table below '
             'has the numbers</title>']
    for i in range(5):
        grid = top * i / 4
        parts.append(f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{y(grid):.1f}" '
                     f'y2="{y(grid):.1f}" stroke="#d5dae1" stroke-width="1"/>')
        parts.append(f'<text x="{LEFT - 6}" y="{y(grid) + 4:.1f}" text-anchor="end" '
                     f'fill="#4a5360">{escape(_fmt(grid, unit))}</text>')
    if dates:
        ticks = dates if len(dates) <= 6 else [dates[round(i * (len(dates) - 1) / 5)]
                                               for i in range(6)]
        for d in dict.fromkeys(ticks):
            parts.append(f'<text x="{x(d):.1f}" y="{H - BOTTOM + 16}" text-anchor="middle" '
                         f'fill="#4a5360">{d:%d %b}</text>')
        parts.append(f'<text x="{W - RIGHT}" y="{H - 4}" text-anchor="end" fill="#4a5360">'
                     f'{dates[0]:%Y-%m-%d} to {dates[-1]:%Y-%m-%d} (UTC)</text>')
    parts.append(f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{TOP + plot_h}" y2="{TOP + plot_h}" '
                 f'stroke="#7b8594"/>')
    for n, s in enumerate(series):
        colour = COLOURS[n % len(COLOURS)]
        run: list[str] = []
        for d, v in sorted(s.points):
            if v is None:
                if len(run) > 1:
                    parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" '
                                 f'points="{" ".join(run)}"/>')
                run = []
                continue
            run.append(f"{x(d):.1f},{y(v):.1f}")
            parts.append(f'<circle cx="{x(d):.1f}" cy="{y(v):.1f}" r="2.5" fill="{colour}">'
                         f'<title>{escape(s.name)} {d:%Y-%m-%d}: {escape(_fmt(v, unit))}'
                         f'</title></circle>')
        if len(run) > 1:
            parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" '
                         f'points="{" ".join(run)}"/>')
    if not values:
        parts.append(f'<text x="{W / 2}" y="{H / 2}" text-anchor="middle" fill="#4a5360">'
                     'no data in this period</text>')
    parts.append("</svg>")
    lookup = [dict(s.points) for s in series]
    rows = [[f"{d:%Y-%m-%d}", *[_fmt(m.get(d), unit) for m in lookup]] for d in dates]
    return Chart(chart_id, title, unit, Markup("".join(parts)),
                 ["Date", *[f"{s.name} ({unit})" for s in series]], rows,
                 [s.name for s in series])


def bar_chart(chart_id: str, title: str, bars: Sequence[tuple[str, float]], *,
              unit: str, label: str) -> Chart:
    """Horizontal bars, largest first."""
    bars = list(bars)
    row_h = 22
    height = max(len(bars), 1) * row_h + 30
    top = _nice_max(max((v for _, v in bars), default=0.0))
    left = 210
    plot_w = W - left - 60
    parts = [f'<svg viewBox="0 0 {W} {height}" role="img" aria-labelledby="{chart_id}-t" '
             f'xmlns="http://www.w3.org/2000/svg" font-size="11" '
             f'font-family="system-ui, sans-serif">',
             f'<title id="{chart_id}-t">{escape(title)} ({escape(unit)}); the table below '
             'has the numbers</title>']
    for i, (name, value) in enumerate(bars):
        y0 = 6 + i * row_h
        w = plot_w * value / top if top else 0
        short = name if len(name) <= 34 else name[:33] + "…"
        parts.append(f'<text x="{left - 6}" y="{y0 + 14}" text-anchor="end" fill="#1b1f24">'
                     f'{escape(short)}</text>')
        parts.append(f'<rect x="{left}" y="{y0 + 3}" width="{w:.1f}" height="{row_h - 8}" '
                     f'fill="{COLOURS[0]}"><title>{escape(name)}: '
                     f'{escape(_fmt(value, unit))} {escape(unit)}</title></rect>')
        parts.append(f'<text x="{left + w + 4:.1f}" y="{y0 + 14}" fill="#1b1f24">'
                     f'{escape(_fmt(value, unit))}</text>')
    if not bars:
        parts.append(f'<text x="{W / 2}" y="20" text-anchor="middle" fill="#4a5360">'
                     'nothing to show</text>')
    parts.append(f'<text x="{W - 4}" y="{height - 4}" text-anchor="end" fill="#4a5360">'
                 f'{escape(unit)}</text></svg>')
    return Chart(chart_id, title, unit, Markup("".join(parts)), [label, unit],
                 [[name, _fmt(value, unit)] for name, value in bars], [])
