"""Inline SVG line charts for the site: t/s over time (trends) or over context depth (log-2 axis).

Why not matplotlib here: a site over a thousand runs draws thousands of small charts, and matplotlib
takes a good part of a second per figure; these are strings, drawn in microseconds, that scale
with the page, need no file beside the HTML and keep each point an element a test (and a reader's
tooltip) can find: `circle.pt` per point, `circle.regression` around a regression, `g.ref` per public
reference figure. The PNG plots of `invoke report` stay matplotlib (toolbox/report/plots.py).
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime

# Colour-blind-safe categorical palette (Okabe and Ito, "Color Universal Design", 2008), then a few more.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000", "#8c564b", "#7f7f7f")
GREY = "#9a9a9a"


def colours(labels) -> dict[str, str]:
    """One colour per label, the same for the same set of labels on every chart of a page."""
    return {label: PALETTE[i % len(PALETTE)] for i, label in enumerate(sorted(set(labels)))}


@dataclass
class Point:
    x: float
    y: float
    err: float | None = None
    title: str = ""
    regression: bool = False


@dataclass
class Series:
    label: str
    colour: str
    points: list[Point] = field(default_factory=list)
    grey: bool = False  # a result that does not count (quality.gate): dashed grey, never the best


@dataclass
class Reference:
    y: float
    label: str
    url: str


def _nice_top(v: float) -> float:
    if v <= 0:
        return 1.0
    mag = 10 ** math.floor(math.log10(v))
    for m in (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10):
        if m * mag >= v:
            return m * mag
    return 10 * mag


def depth_text(d: float) -> str:
    d = int(d)
    return f"{d // 1024}k" if d >= 1024 and d % 1024 == 0 else str(d)


def _x_transform(kind: str, xs: list[float]):
    """(function mapping a value to an axis position, tick values, tick label function)."""
    if kind == "log2":
        pos = sorted({x for x in xs if x > 0})
        zero_at = (math.log2(pos[0]) - 1) if pos else 0.0

        def f(x):
            return math.log2(x) if x > 0 else zero_at

        return f, sorted(set(xs)), depth_text
    if kind == "time":
        ticks = sorted(set(xs))
        if len(ticks) > 8:
            step = (len(ticks) - 1) / 7
            ticks = [ticks[round(i * step)] for i in range(8)]
        return float, ticks, lambda x: datetime.fromtimestamp(x, UTC).strftime("%Y-%m-%d")
    return float, sorted(set(xs)), lambda x: f"{x:g}"


def line_chart(
    series: list[Series],
    *,
    x_axis: str = "time",
    x_label: str = "",
    y_label: str = "t/s",
    refs: list[Reference] = (),
    changes: list[tuple[float, str]] = (),
    width: int = 760,
    height: int = 340,
    chart_id: str = "",
) -> str:
    """One chart: a line per series (points joined in x order), error bars, regression rings, reference lines, and
    `changes`: (x, label) where something changed between runs (a llama.cpp build, an image), a dashed vertical line each."""
    e = html.escape
    left, right, top, bottom = 64, 20, 16, 46
    xs = [p.x for s in series for p in s.points]
    if not xs:
        return ""
    fx, ticks, tick_text = _x_transform(x_axis, xs)
    lo, hi = min(fx(x) for x in xs), max(fx(x) for x in xs)
    if hi == lo:
        lo, hi = lo - 1, hi + 1
    pad = (hi - lo) * 0.04
    lo, hi = lo - pad, hi + pad
    ymax = _nice_top(max([p.y + (p.err or 0) for s in series for p in s.points] + [r.y for r in refs]) * 1.05)
    plot_w, plot_h = width - left - right, height - top - bottom

    def X(x):
        return left + (fx(x) - lo) / (hi - lo) * plot_w

    def Y(y):
        return top + plot_h - y / ymax * plot_h

    out = [
        f"<svg class='chart' id='{e(chart_id)}' xmlns='http://www.w3.org/2000/svg' viewBox='0 0 {width} {height}' "
        f"width='{width}' height='{height}' role='img' aria-label='{e(y_label)} over {e(x_label)}'>"
    ]
    for i in range(6):
        y = ymax * i / 5
        out.append(f"<line x1='{left}' x2='{width - right}' y1='{Y(y):.1f}' y2='{Y(y):.1f}' stroke='#eee'/>")
        out.append(f"<text x='{left - 6}' y='{Y(y) + 4:.1f}' text-anchor='end'>{y:g}</text>")
    for t in ticks:
        out.append(f"<line x1='{X(t):.1f}' x2='{X(t):.1f}' y1='{top}' y2='{top + plot_h}' stroke='#f3f3f3'/>")
        out.append(f"<text x='{X(t):.1f}' y='{top + plot_h + 16}' text-anchor='middle'>{e(tick_text(t))}</text>")
    out.append(f"<line x1='{left}' x2='{width - right}' y1='{top + plot_h}' y2='{top + plot_h}' stroke='#888'/>")
    out.append(f"<text x='{left + plot_w / 2:.0f}' y='{height - 6}' text-anchor='middle'>{e(x_label)}</text>")
    out.append(f"<text transform='rotate(-90)' x='{-(top + plot_h / 2):.0f}' y='14' text-anchor='middle'>{e(y_label)}</text>")
    for x, label in changes:
        out.append(
            f"<g class='change'><line x1='{X(x):.1f}' x2='{X(x):.1f}' y1='{top}' y2='{top + plot_h}' "
            "stroke='#b0b0b0' stroke-dasharray='3 3'/>"
            f"<text x='{X(x) + 3:.1f}' y='{top + 10}' fill='#777'>{e(label)}</text></g>"
        )
    for r in refs:
        y = Y(r.y)
        out.append(
            f"<a href='{e(r.url)}'><g class='ref'><title>{e(r.label)}: {r.y:g} t/s ({e(r.url)})</title>"
            f"<line x1='{left}' x2='{width - right}' y1='{y:.1f}' y2='{y:.1f}' stroke='#6a3d9a' stroke-dasharray='2 4'/>"
            f"<path class='ref-marker' d='M{left + 8},{y - 6:.1f} l6,6 l-6,6 l-6,-6 z' fill='#6a3d9a'/>"
            f"<text x='{width - right - 4}' y='{y - 4:.1f}' text-anchor='end' fill='#6a3d9a'>{e(r.label)}: {r.y:g}</text></g></a>"
        )
    # greyed series first, so what counts is drawn on top
    for s in sorted(series, key=lambda s: not s.grey):
        colour = GREY if s.grey else s.colour
        pts = sorted(s.points, key=lambda p: fx(p.x))
        dash = " stroke-dasharray='5 4'" if s.grey else ""
        cls = "series excluded" if s.grey else "series"
        out.append(f"<g class='{cls}' data-label='{e(s.label)}'>")
        if len(pts) > 1:
            path = " ".join(f"{X(p.x):.1f},{Y(p.y):.1f}" for p in pts)
            out.append(f"<polyline points='{path}' fill='none' stroke='{colour}' stroke-width='1.6'{dash}/>")
        for p in pts:
            if p.err:
                out.append(
                    f"<line x1='{X(p.x):.1f}' x2='{X(p.x):.1f}' y1='{Y(p.y - p.err):.1f}' y2='{Y(p.y + p.err):.1f}' stroke='{colour}'/>"
                )
            out.append(
                f"<circle class='pt{' excluded' if s.grey else ''}' cx='{X(p.x):.1f}' cy='{Y(p.y):.1f}' r='3.5' fill='{colour}'>"
                f"<title>{e(p.title or s.label)}</title></circle>"
            )
            if p.regression:
                out.append(
                    f"<circle class='regression' cx='{X(p.x):.1f}' cy='{Y(p.y):.1f}' r='8' fill='none' stroke='#c00' stroke-width='2'>"
                    f"<title>regression: {e(p.title)}</title></circle>"
                )
        out.append("</g>")
    out.append("</svg>")
    return "".join(out)


def legend(series: list[Series]) -> str:
    e = html.escape
    items = "".join(
        f"<span><i style='background:{GREY if s.grey else s.colour}'></i>{e(s.label)}</span>" for s in sorted(series, key=lambda s: s.grey)
    )
    return f"<div class='legend'>{items}</div>"
