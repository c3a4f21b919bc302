"""Plots (PNG, matplotlib): t/s against context depth, K x V cache types, the best configuration per backend.

matplotlib is imported only when a plot is drawn. A plot that cannot be drawn is reported, never fatal.
Results that do not count (quality.gate: broken output, off-device) are drawn grey with their reason
and are never the best cell or bar, nor part of a colour scale.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from toolbox.analysis.identity import IDENTITY_FIELDS, Collected, Result
from toolbox.llamacpp import kv_order
from toolbox.report.tables import KIND_TITLES, fmt_value

GREY = "#9a9a9a"


@dataclass
class Plot:
    name: str  # file name, e.g. depth.png
    title: str
    png: bytes
    texts: tuple[str, ...] = ()  # every label drawn on it (titles, cell and bar labels, legend): what a reader sees


def _series_label(ident: dict, fields: list[str]) -> str:
    return ", ".join(f"{IDENTITY_FIELDS[f]}={fmt_value(ident.get(f))}" for f in fields) or "all"


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


def plot_depth(col: Collected) -> Plot | None:
    """t/s against context depth: one panel per backend and test kind, one line per KV type (and other varying settings)."""
    res = [r for r in col.results if r.kind in ("pp", "tg") and r.summary and isinstance(r.ident.get("n_depth"), int)]
    if len({r.ident["n_depth"] for r in res}) < 2:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panel_fields = [f for f in ("backend", "model") if f in col.shown] or []
    series_fields = [f for f in col.shown if f not in panel_fields]
    multi_run = len({r.run_id for r in res}) > 1
    panels = sorted({(tuple(fmt_value(r.ident.get(f)) for f in panel_fields), r.kind) for r in res}, key=lambda p: (p[0], p[1]))
    rows_keys = sorted({p[0] for p in panels})
    kinds = [k for k in ("pp", "tg") if any(p[1] == k for p in panels)]
    fig, axes = plt.subplots(
        len(rows_keys), len(kinds), figsize=(6.5 * len(kinds), 4.2 * len(rows_keys)), squeeze=False, layout="constrained"
    )
    for i, pk in enumerate(rows_keys):
        for j, kind in enumerate(kinds):
            ax = axes[i][j]
            sel = [r for r in res if r.kind == kind and tuple(fmt_value(r.ident.get(f)) for f in panel_fields) == pk]
            series: dict[str, list[Result]] = {}
            for r in sel:
                label = _series_label(r.ident, series_fields)
                if multi_run:
                    label = f"{r.run_id}: {label}"
                # the test shape without depth (pp512, tg128) also separates lines
                label = r.test.split("@")[0] + (f" {label}" if series_fields or multi_run else "")
                if r.not_counted:
                    label += f" (not counted: {r.not_counted})"
                series.setdefault(label, []).append(r)
            for label, rs in sorted(series.items()):
                rs.sort(key=lambda r: r.ident["n_depth"])
                xs = [r.ident["n_depth"] for r in rs]
                ys = [r.summary.median for r in rs]
                err = [r.summary.stdev or 0 for r in rs]
                if rs[0].not_counted:
                    ax.errorbar(xs, ys, yerr=err, marker="x", ms=4, capsize=3, color=GREY, linestyle="--", label=label)
                else:
                    ax.errorbar(xs, ys, yerr=err, marker="o", ms=4, capsize=3, label=label)
            where = ", ".join(f"{IDENTITY_FIELDS[f]}={v}" for f, v in zip(panel_fields, pk))
            ax.set_title(f"{KIND_TITLES[kind]}{' — ' + where if where else ''}", fontsize=10)
            ax.set_xlabel("context depth (tokens)")
            ax.set_ylabel("t/s")
            ax.grid(alpha=0.3)
            ax.set_ylim(bottom=0)
            if sel:
                ax.legend(fontsize=7, ncol=2 if len(series) > 6 else 1)
    fig.suptitle("t/s against context depth (error bars: standard deviation)", fontsize=11)
    return _plot("depth.png", "t/s against context depth", fig)


def plot_kv(col: Collected) -> Plot | None:
    """A K x V heatmap of t/s per test (columns) and per combination of the other varying settings (rows)."""
    res = [r for r in col.results if r.summary and r.ident.get("type_k") and r.ident.get("type_v")]
    ks = sorted({r.ident["type_k"] for r in res}, key=kv_order)
    vs = sorted({r.ident["type_v"] for r in res}, key=kv_order)
    if len(ks) < 2 and len(vs) < 2:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.patches import Rectangle

    multi_run = len({r.run_id for r in res}) > 1
    row_fields = [f for f in col.shown if f not in ("type_k", "type_v")]

    def row_key(r):
        return ((r.run_id,) if multi_run else ()) + tuple(fmt_value(r.ident.get(f)) for f in row_fields)

    row_keys = sorted({row_key(r) for r in res})
    tests = sorted({r.test for r in res}, key=lambda t: ({"p": 0, "t": 1}.get(t[0], 2), t))
    fig, axes = plt.subplots(
        len(row_keys),
        len(tests),
        figsize=(1.1 * len(vs) * len(tests) + 1.5, 1.0 * len(ks) * len(row_keys) + 1.2),
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
                label = ", ".join(
                    x
                    for x in ((rk[0],) if multi_run else ())
                    + tuple(f"{IDENTITY_FIELDS[f]}={v}" for f, v in zip(row_fields, rk[1:] if multi_run else rk))
                )
                ax.set_ylabel(f"{label}\nK type" if label else "K type", fontsize=8)
            if i == 0:
                ax.set_title(t, fontsize=9)
    fig.suptitle(
        "t/s by K (rows) x V (columns) cache type, % against the best cell of each panel; '–' = not run"
        + (f"\n{note}" if (note := _not_counted_note(res)) else ""),
        fontsize=10,
    )
    return _plot("kv.png", "K x V cache types", fig)


def plot_backends(col: Collected) -> Plot | None:
    """Bars per backend: the best t/s of each backend per test (the configuration is in the bar's label)."""
    res = [r for r in col.results if r.kind in ("pp", "tg") and r.summary]
    if not res:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    backends = sorted({fmt_value(r.ident.get("backend") or r.ident.get("backends")) for r in res})
    kinds = [k for k in ("pp", "tg") if any(r.kind == k for r in res)]
    fig, axes = plt.subplots(
        1, len(kinds), figsize=(max(6.0, 1.2 * len(backends) * 3) * len(kinds) / 1.4, 4.6), squeeze=False, layout="constrained"
    )
    other = [f for f in col.shown if f not in ("backend", "backends")]
    for j, kind in enumerate(kinds):
        ax = axes[0][j]
        sel = [r for r in res if r.kind == kind]
        tests = sorted({r.test for r in sel}, key=lambda t: (len(t), t))
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
                lab = _series_label(best.ident, other) if len(cand) > 1 and other else ""
                labels.append(f"{lab}\nnot counted: {best.not_counted}".strip() if not counted else lab)
                grey.append(not counted)
            bars = ax.bar(xs, ys, width * 0.95, yerr=errs, capsize=3, label=b)
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
