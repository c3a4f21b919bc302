"""A run's page: its report (the answer first, then what ran and every result), with depth curves drawn inline."""

from __future__ import annotations

import html
from collections import defaultdict

from toolbox.analysis.identity import SHAPE_FIELDS, Collected, Result, visible_fields
from toolbox.report.render import Report, render_html
from toolbox.report.tables import KIND_TITLES
from toolbox.site import svg
from toolbox.site.pages import SECTIONS

MAX_SERIES = 5  # lines per panel that count: the fastest ones; those that do not count are added greyed (at most 2)


def _label(r: Result, fields: list[str]) -> str:
    from toolbox.analysis.answer import config_label

    return config_label(r, fields, multi_run=False)


def depth_charts(col: Collected) -> str:
    """t/s against context depth on a log-2 axis: a panel per model and test kind, every backend and configuration on
    shared axes, one colour per configuration on every panel of the page, the fastest MAX_SERIES lines, greyed
    what does not count. Empty when the run has fewer than two depths."""
    res = [r for r in col.results if r.kind in ("pp", "tg") and r.summary and isinstance(r.ident.get("n_depth"), int)]
    if len({r.ident["n_depth"] for r in res}) < 2:
        return ""
    fields = [f for f in visible_fields([r.ident for r in res])[0] if f not in ("model", "model_file", *SHAPE_FIELDS)]
    lines: dict[tuple, dict[str, list[Result]]] = defaultdict(lambda: defaultdict(list))
    for r in res:
        shape = r.test.split("@")[0]  # pp512, tg128: one line per test shape and configuration
        lines[(r.ident.get("model_file") or r.ident.get("model"), r.kind)][f"{shape} {_label(r, fields)}"].append(r)
    colour = svg.colours(label.split(" ", 1)[1] for panel in lines.values() for label in panel)
    parts = []
    for (model, kind), panel in sorted(lines.items(), key=lambda kv: (str(kv[0][0]), kv[0][1])):
        panel = {k: v for k, v in panel.items() if len({r.ident["n_depth"] for r in v}) >= 2}
        counted = sorted(
            (k for k, v in panel.items() if not any(r.not_counted for r in v)),
            key=lambda k: -sum(r.summary.median for r in panel[k]) / len(panel[k]),
        )
        grey = [k for k in panel if k not in counted][:2]
        shown = counted[:MAX_SERIES] + grey
        if not shown:
            continue
        series = []
        for k in shown:
            rs = panel[k]
            s = svg.Series(k, colour[k.split(" ", 1)[1]], grey=k in grey)
            for r in rs:
                note = f" (not counted: {r.not_counted})" if r.not_counted else ""
                s.points.append(
                    svg.Point(r.ident["n_depth"], r.summary.median, r.summary.stdev, f"{r.test} {k}: {r.summary.median:.4g} t/s{note}")
                )
            series.append(s)
        left = len(panel) - len(shown)
        more = f"; {left} slower line(s) left out (all are in the tables)" if left > 0 else ""
        chart = svg.line_chart(series, x_axis="log2", x_label="context depth (tokens, log-2 scale)", chart_id=f"depth-{kind}")
        parts.append(
            f"<figure class='chart'>{chart}<figcaption>{svg.legend(series)}{html.escape(KIND_TITLES[kind])} against context depth, "
            f"{html.escape(str(model))}: {_fastest(min(len(counted), MAX_SERIES))}{more}</figcaption></figure>"
        )
    return "<h2>t/s against context depth</h2>" + "".join(parts) if parts else ""


def _fastest(n: int) -> str:
    return "the configuration that counts" if n == 1 else f"the {n} fastest configurations that count"


def run_page(rep: Report) -> str:
    """The report's self-contained HTML with the site's top bar and the depth curves (file:// safe, relative links)."""
    page = render_html(rep)
    nav = "".join(f"<a href='../{href}'>{html.escape(name)}</a>" for href, name in SECTIONS)
    page = page.replace("<style>", "<link rel='stylesheet' href='../assets/site.css'><style>", 1)
    page = page.replace("<body>", f"<body><nav class='top' style='margin:-2em -2em 1em'>{nav}</nav>", 1)
    charts = depth_charts(rep.collected)
    if charts:
        page = page.replace("<h2>How the figures are computed</h2>", charts + "<h2>How the figures are computed</h2>", 1)
    return page
