"""Plots (PNG, matplotlib): t/s against context depth, K x V cache types, the best configuration per backend.

matplotlib is imported only when a plot is drawn. A plot that cannot be drawn is reported, never fatal.
Results that do not count (quality.gate: broken output, off-device) are drawn grey with their reason
and are never the best cell or bar, nor part of a colour scale.
"""

from __future__ import annotations

import io
import textwrap
from dataclasses import dataclass

from toolbox.analysis.identity import IDENTITY_FIELDS, Collected, Result, visible_fields
from toolbox.llamacpp import kv_order
from toolbox.report.tables import KIND_TITLES, fmt_value

GREY = "#9a9a9a"
# Figures stay readable on a screen and in a browser (at most MAX_INCHES at 110 dpi: 1760 x 2200 px);
# what does not fit is left out and the figure says so.
MAX_INCHES = (16.0, 20.0)
MAX_ROWS = 4  # panel rows of depth.png
MAX_SERIES = 5  # lines per depth panel that count (the fastest); what does not count is added greyed, at most MAX_GREY
MAX_GREY = 2
LEGEND_CHARS = 64
# One colour and line style per configuration on every plot of a report: 10 colours x 3 styles before one repeats.
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f")
STYLES = tuple((c, ls) for ls in ("-", "--", ":") for c in COLOURS)


def config_styles(keys) -> dict[str, tuple[str, str]]:
    """(colour, line style) per configuration key, the same key getting the same look on every plot of a report."""
    return {k: STYLES[i % len(STYLES)] for i, k in enumerate(sorted(set(keys)))}


def depth_ticks(ax, depths) -> None:
    """Context depth on a log-2 axis that still shows depth 0 (symlog: linear below the smallest depth), a tick per depth."""
    ds = sorted(set(depths))
    positive = [d for d in ds if d > 0]
    ax.set_xscale("symlog", base=2, linthresh=positive[0] if positive else 1, linscale=0.6)
    ax.set_xticks(ds, [f"{d // 1024}k" if d >= 1024 and d % 1024 == 0 else str(d) for d in ds], fontsize=7)
    ax.minorticks_off()


MAX_KV_ROWS, MAX_KV_TESTS = 6, 4
MAX_BAR_TESTS = 8


def _fit(width: float, height: float) -> tuple[float, float]:
    return min(width, MAX_INCHES[0]), min(height, MAX_INCHES[1])


@dataclass
class Plot:
    name: str  # file name, e.g. depth.png
    title: str
    png: bytes
    texts: tuple[str, ...] = ()  # every label drawn on it (titles, cell and bar labels, legend): what a reader sees


def _series_label(ident: dict, fields: list[str]) -> str:
    """'K=q8_0, V=f16': the given fields this result records (unknown ones say nothing)."""
    return ", ".join(f"{IDENTITY_FIELDS[f]}={fmt_value(ident.get(f))}" for f in fields if ident.get(f) is not None) or "all"


def _plot(name: str, title: str, fig) -> Plot:
    """The figure as a PNG, with the labels drawn on it."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    try:
        texts = [t.get_text() for t in fig.findobj(match=lambda a: hasattr(a, "get_text")) if t.get_text()]
        fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    finally:
        plt.close(fig)
    return Plot(name, title, buf.getvalue(), tuple(texts))


def _not_counted_note(results: list[Result]) -> str | None:
    """'not counted (grey): 2 broken, 1 off-device' for the results of a plot, None when all count."""
    reasons: dict[str, int] = {}
    for r in results:
        if r.not_counted:
            reasons[r.not_counted] = reasons.get(r.not_counted, 0) + 1
    return "not counted (grey): " + ", ".join(f"{n} {why}" for why, n in sorted(reasons.items())) if reasons else None


def _label(r: Result, series_fields: list[str], multi_run: bool) -> str:
    """A depth line's label: the test shape without depth (pp512), the run (6-digit tail), what varies; why it does not count."""
    fields = ", ".join(f"{IDENTITY_FIELDS[f]}={fmt_value(r.ident.get(f))}" for f in series_fields if r.ident.get(f) is not None)
    words = [r.test.split("@")[0], *([r.run_id[-6:]] if multi_run else []), *([fields] if fields else [])]
    return " ".join(words) + (f" (not counted: {r.not_counted})" if r.not_counted else "")


def plot_depth(col: Collected) -> Plot | None:
    """t/s against context depth (log-2 axis): a panel per model and test kind with every backend and configuration
    on shared axes, one colour and style per configuration on every panel, the MAX_SERIES fastest lines that count
    and, greyed and dashed, at most MAX_GREY that do not.

    A line needs two depths and a panel a line: single points are left out, and so are panels beyond
    MAX_ROWS (the ones with the most points stay; the title says how many were left out).
    """
    res = [r for r in col.results if r.kind in ("pp", "tg") and r.summary and isinstance(r.ident.get("n_depth"), int)]
    panel_fields = [f for f in ("model",) if f in col.shown]
    multi_run = len({r.run_id for r in res}) > 1
    in_panel: dict[tuple, list[Result]] = {}
    for r in res:
        in_panel.setdefault((tuple(fmt_value(r.ident.get(f)) for f in panel_fields), r.kind), []).append(r)
    panels: dict[tuple, dict[str, list[Result]]] = {}
    for key, rs in in_panel.items():
        # lines are told apart by what varies in this panel (not by every column of the report)
        varying = [f for f in visible_fields([r.ident for r in rs])[0] if f not in panel_fields]
        for r in rs:
            panels.setdefault(key, {}).setdefault(_label(r, varying, multi_run), []).append(r)
    for key in list(panels):
        panels[key] = {k: v for k, v in panels[key].items() if len({r.ident["n_depth"] for r in v}) >= 2}
        if not panels[key]:
            del panels[key]
    if not panels:
        return None
    points = {}
    for (pk, _), series in panels.items():
        points[pk] = points.get(pk, 0) + sum(len(v) for v in series.values())
    rows_keys = sorted(sorted(points, key=lambda pk: -points[pk])[:MAX_ROWS])
    left_out = len(points) - len(rows_keys)
    kinds = [k for k in ("pp", "tg") if any(key[1] == k and key[0] in rows_keys for key in panels)]
    # the configuration of a line is its label without the test shape (pp512 / tg128): same look in pp and tg panels
    looks = config_styles(label.split(" ", 1)[-1].split(" (not counted")[0] for series in panels.values() for label in series)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        len(rows_keys), len(kinds), figsize=_fit(6.5 * len(kinds), 4.2 * len(rows_keys)), squeeze=False, layout="constrained"
    )
    for i, pk in enumerate(rows_keys):
        for j, kind in enumerate(kinds):
            ax = axes[i][j]
            series = panels.get((pk, kind), {})
            if not series:
                ax.axis("off")
                continue
            counted = sorted(
                (k for k, rs in series.items() if not any(r.not_counted for r in rs)),
                key=lambda k: -sum(r.summary.median for r in series[k]) / len(series[k]),
            )
            grey = [k for k in sorted(series) if k not in counted][:MAX_GREY]
            drawn = counted[:MAX_SERIES] + grey
            # the legend names what varies among the lines drawn (the key names what varies in the panel)
            shown_fields = [f for f in visible_fields([series[k][0].ident for k in drawn])[0] if f not in panel_fields]
            for label in drawn:
                rs = sorted(series[label], key=lambda r: r.ident["n_depth"])
                xs = [r.ident["n_depth"] for r in rs]
                ys = [r.summary.median for r in rs]
                err = [r.summary.stdev or 0 for r in rs]
                name = _label(rs[0], shown_fields, multi_run)
                if label in grey:
                    ax.errorbar(xs, ys, yerr=err, marker="x", ms=4, capsize=3, color=GREY, linestyle="--", label=name)
                else:
                    colour, style = looks[label.split(" ", 1)[-1]]
                    ax.errorbar(xs, ys, yerr=err, marker="o", ms=4, capsize=3, color=colour, linestyle=style, label=name)
            depth_ticks(ax, [r.ident["n_depth"] for rs in series.values() for r in rs])
            where = ", ".join(f"{IDENTITY_FIELDS[f]}={v}" for f, v in zip(panel_fields, pk))
            left = len(series) - len(drawn)
            more = f" ({left} more lines left out: slower, or not counted)" if left > 0 else ""
            ax.set_title(f"{KIND_TITLES[kind]}{' — ' + where if where else ''}{more}", fontsize=10)
            ax.set_xlabel("context depth (tokens, log-2 scale)")
            ax.set_ylabel("t/s")
            ax.grid(alpha=0.3)
            ax.set_ylim(bottom=0)
            # long labels (runs of other machines vary in many settings) are cut, so that the legend never squeezes the axes
            handles, names = ax.get_legend_handles_labels()
            ax.legend(handles, [n if len(n) <= LEGEND_CHARS else n[: LEGEND_CHARS - 1] + "…" for n in names], fontsize=6)
    title = "t/s against context depth (error bars: standard deviation)"
    if left_out:
        title += f"; {left_out} more panel(s) left out: report fewer runs or models for them"
    fig.suptitle(title, fontsize=11)
    return _plot("depth.png", "t/s against context depth", fig)


def plot_kv(col: Collected) -> Plot | None:
    """A K x V heatmap of t/s per test (columns) and per combination of the other varying settings (rows).

    A panel needs two cells: rows and tests without one are left out, and so are rows beyond
    MAX_KV_ROWS and tests beyond MAX_KV_TESTS (the title says how many).
    """
    res = [r for r in col.results if r.summary and r.ident.get("type_k") and r.ident.get("type_v")]
    multi_run = len({r.run_id for r in res}) > 1
    row_fields = [f for f in col.shown if f not in ("type_k", "type_v")]

    def row_key(r):
        return ((r.run_id,) if multi_run else ()) + tuple(fmt_value(r.ident.get(f)) for f in row_fields)

    cells: dict[tuple, int] = {}
    for r in res:
        cells[(row_key(r), r.test)] = cells.get((row_key(r), r.test), 0) + 1
    panels = {k for k, n in cells.items() if n >= 2}
    if not panels:
        return None
    by_row = {rk: sum(cells[k] for k in panels if k[0] == rk) for rk, _ in panels}
    row_keys = sorted(sorted(by_row, key=lambda rk: -by_row[rk])[:MAX_KV_ROWS])
    tests = sorted({t for rk, t in panels if rk in row_keys}, key=lambda t: ({"p": 0, "t": 1}.get(t[0], 2), t))
    left_out = (len(by_row) - len(row_keys), max(0, len(tests) - MAX_KV_TESTS))
    tests = tests[:MAX_KV_TESTS]
    res = [r for r in res if (row_key(r), r.test) in panels and row_key(r) in row_keys and r.test in tests]
    ks = sorted({r.ident["type_k"] for r in res}, key=kv_order)
    vs = sorted({r.ident["type_v"] for r in res}, key=kv_order)
    # a row is named by what varies among the rows drawn (a run by its 6-digit tail), a few words per line
    label_fields = [f for f in visible_fields([r.ident for r in res])[0] if f in row_fields]

    def row_label(rk) -> str:
        values = dict(zip(row_fields, rk[1:] if multi_run else rk))
        words = ([rk[0][-6:]] if multi_run else []) + [
            f"{IDENTITY_FIELDS[f]}={values[f]}" for f in label_fields if values[f] != fmt_value(None)
        ]
        return "".join(f"{line}\n" for line in textwrap.wrap(", ".join(words), 28))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.patches import Rectangle

    fig, axes = plt.subplots(
        len(row_keys),
        len(tests),
        figsize=_fit(1.1 * len(vs) * len(tests) + 1.5, 1.0 * len(ks) * len(row_keys) + 1.2),
        squeeze=False,
        layout="constrained",
    )
    for i, rk in enumerate(row_keys):
        for j, t in enumerate(tests):
            ax = axes[i][j]
            grid = np.full((len(ks), len(vs)), np.nan)  # results that count: the colours and the best cell
            excluded: dict[tuple[int, int], Result] = {}  # results that do not: grey, with their reason
            for r in res:
                if r.test == t and row_key(r) == rk:
                    at = (ks.index(r.ident["type_k"]), vs.index(r.ident["type_v"]))
                    if r.not_counted:
                        excluded[at] = r
                    else:
                        grid[at] = r.summary.median
            if np.all(np.isnan(grid)) and not excluded:
                ax.axis("off")
                continue
            # colours span this panel's range (K/V effects are a few percent); labels: t/s and % below the panel's best
            counted = not np.all(np.isnan(grid))
            best, worst = (np.nanmax(grid), np.nanmin(grid)) if counted else (np.nan, np.nan)
            low = min(worst, best * 0.9)
            if counted:
                ax.imshow(np.ma.masked_invalid(grid), cmap="viridis", vmin=low, vmax=best, aspect="auto")
            ax.set_xlim(-0.5, len(vs) - 0.5)
            ax.set_ylim(len(ks) - 0.5, -0.5)
            for a in range(len(ks)):
                for b in range(len(vs)):
                    if not np.isnan(grid[a, b]):
                        v = grid[a, b]
                        light = v < (low + best) / 2
                        rel = f"\n{(v / best - 1) * 100:+.1f}%" if v < best else "\nbest"
                        ax.text(b, a, f"{v:.4g}{rel}", ha="center", va="center", fontsize=7, color="white" if light else "black")
                    elif (a, b) in excluded:
                        r = excluded[(a, b)]
                        ax.add_patch(Rectangle((b - 0.5, a - 0.5), 1, 1, facecolor="#e6e6e6", edgecolor="white"))
                        ax.text(b, a, f"{r.summary.median:.4g}\n{r.not_counted}", ha="center", va="center", fontsize=7, color=GREY)
                    else:
                        ax.text(b, a, "–", ha="center", va="center", fontsize=8, color="grey")
            ax.set_xticks(range(len(vs)), vs, fontsize=7)
            ax.set_yticks(range(len(ks)), ks, fontsize=7)
            if i == len(row_keys) - 1:
                ax.set_xlabel("V type", fontsize=8)
            if j == 0:
                ax.set_ylabel(row_label(rk) + "K type", fontsize=8)
            if i == 0:
                ax.set_title(t, fontsize=9)
    notes = [n for n in [_not_counted_note(res)] if n]
    if any(left_out):
        notes.append(f"left out: {left_out[0]} row(s), {left_out[1]} test(s); report fewer runs for them")
    fig.suptitle(
        "t/s by K (rows) x V (columns) cache type, % against the best cell of each panel; '–' = not run" + "".join(f"\n{n}" for n in notes),
        fontsize=10,
    )
    return _plot("kv.png", "K x V cache types", fig)


def plot_backends(col: Collected) -> Plot | None:
    """Bars per backend: the best t/s of each backend per test (the configuration is in the bar's label)."""
    res = [r for r in col.results if r.kind in ("pp", "tg") and r.summary]

    def backend_of(r):
        return fmt_value(r.ident.get("backend") or r.ident.get("backends"))

    backends = sorted({backend_of(r) for r in res})
    # a panel of one bar compares nothing; each panel shows at most MAX_BAR_TESTS tests (those most backends ran)
    tests_of = {}
    for k in ("pp", "tg"):
        ran: dict[str, set] = {}
        for r in res:
            if r.kind == k:
                ran.setdefault(r.test, set()).add(backend_of(r))
        tests_of[k] = sorted(sorted(ran, key=lambda t: (-len(ran[t]), len(t), t))[:MAX_BAR_TESTS], key=lambda t: (len(t), t))
    kinds = [k for k in ("pp", "tg") if len({(backend_of(r), r.test) for r in res if r.kind == k and r.test in tests_of[k]}) >= 2]
    if not kinds:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    looks = config_styles(f"backend={b}" for b in backends)  # the colour a backend's line has in depth.png
    fig, axes = plt.subplots(
        1,
        len(kinds),
        figsize=_fit(max(6.0, 0.45 * len(backends) * max(len(tests_of[k]) for k in kinds) + 2) * len(kinds), 4.6),
        squeeze=False,
        layout="constrained",
    )
    for j, kind in enumerate(kinds):
        ax = axes[0][j]
        tests = tests_of[kind]
        sel = [r for r in res if r.kind == kind and r.test in tests]
        width = 0.8 / len(backends)
        for b_i, b in enumerate(backends):
            xs, ys, errs, labels, grey = [], [], [], [], []
            for t_i, t in enumerate(tests):
                cand = [r for r in sel if r.test == t and fmt_value(r.ident.get("backend") or r.ident.get("backends")) == b]
                counted = [r for r in cand if not r.not_counted]
                if not cand:
                    continue
                # the best of what counts; a backend with nothing that counts gets a grey bar saying why
                best = max(counted or cand, key=lambda r: r.summary.median)
                xs.append(t_i + (b_i - (len(backends) - 1) / 2) * width)
                ys.append(best.summary.median)
                errs.append(best.summary.stdev or 0)
                # the bar's configuration: what varies among this backend's results of this test, shortened
                other = [f for f in visible_fields([r.ident for r in cand])[0] if f not in ("backend", "backends")]
                lab = _series_label(best.ident, other) if len(cand) > 1 and other else ""
                lab = lab if len(lab) <= 40 else lab[:39] + "…"
                labels.append(f"{lab}\nnot counted: {best.not_counted}".strip() if not counted else lab)
                grey.append(not counted)
            bars = ax.bar(xs, ys, width * 0.95, yerr=errs, capsize=3, label=b, color=looks[f"backend={b}"][0])
            for bar, is_grey in zip(bars, grey):
                if is_grey:
                    bar.set(facecolor="#e6e6e6", edgecolor=GREY, hatch="//")
            for bar, y, lab, is_grey in zip(bars, ys, labels, grey):
                ax.annotate(
                    f"{y:.4g}" + (f"\n{lab}" if lab else ""),
                    (bar.get_x() + bar.get_width() / 2, y),
                    ha="center",
                    va="bottom",
                    fontsize=6,
                    color=GREY if is_grey else "black",
                    xytext=(0, 2),
                    textcoords="offset points",
                )
        ax.set_xticks(np.arange(len(tests)), tests, rotation=30 if len(tests) > 4 else 0, fontsize=8)
        ax.set_ylabel("t/s")
        ax.set_title(f"{KIND_TITLES[kind]}: best per backend", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        ax.margins(y=0.15)
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=8)
    note = _not_counted_note(res)
    if note:
        fig.suptitle(f"best per backend among the results that count; {note}", fontsize=9)
    return _plot("backends.png", "Best t/s per backend", fig)


def make_plots(col: Collected) -> tuple[list[Plot], list[str]]:
    """All plots that apply, and one message per plot that could not be drawn (a report never fails on a plot)."""
    plots, problems = [], []
    for fn in (plot_depth, plot_kv, plot_backends):
        try:
            p = fn(col)
        except Exception as exc:  # noqa: BLE001 - a plot bug must not cost the user the tables
            problems.append(f"{fn.__name__.replace('plot_', '')} plot could not be drawn: {type(exc).__name__}: {exc}")
            continue
        if p:
            plots.append(p)
    return plots, problems
