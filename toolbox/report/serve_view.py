"""Serving runs on screen and in report.md / report.html: one table per configuration (a line per load
level), the knee where latency explodes, and the latency-vs-throughput plot.

Levels that do not count (quality.gate.not_counted: failed, off-device, fa-on-cpu, cross-talk) are greyed with
their reason and drawn as grey crosses; they are never a knee or a best point.
"""

from __future__ import annotations

import html

from toolbox.analysis.serve import LATENCY_KEY, Curve, compare_serve, curves, tokens_per_joule
from toolbox.quality.gate import NOT_COUNTED, row_not_counted
from toolbox.report.plots import GREY, Plot, _fit, _plot
from toolbox.report.tables import NOT_COUNTED_NOTE, html_table, md_table, rich_table

HEADER = [
    "level",
    "req/s",
    "out tok/s",
    "TTFT p50/p90/p99 ms",
    "ITL p50/p90/p99 ms",
    "e2e p50/p90 ms",
    "goodput req/s",
    "tok/J",
    "errors",
    "cross-talk",
    "notes",
]


def _n(v, digits: int = 1) -> str:
    return "—" if v is None else f"{v:.{digits}f}"


def _three(r: dict, key: str, qs=(50, 90, 99)) -> str:
    return " / ".join(_n(r.get(f"{key}_ms_p{q}"), 1) for q in qs)


def level_cells(r: dict) -> list[str]:
    ct = r.get("crosstalk") or {}
    verdict = ct.get("verdict") or "—"
    if verdict == "differs":
        verdict = f"differs (request {ct.get('request')}, char {ct.get('at_char')})"
    why = row_not_counted(r)
    notes = [f"{NOT_COUNTED_NOTE}: {why}"] if why else []
    if r.get("server_check") and not r["server_check"].get("agree"):
        notes.append("client and server token counts differ")
    goodput = "—" if r.get("goodput_rps") is None else f"{r['goodput_rps']:.2f} ({r.get('goodput_share', 0) * 100:.0f}%)"
    return [
        str(r.get("level")),
        _n(r.get("req_per_s"), 2),
        _n(r.get("output_tps"), 1),
        _three(r, "ttft"),
        _three(r, "itl"),
        _three(r, "e2e", (50, 90)),
        goodput,
        _n(tokens_per_joule(r), 2),
        f"{r.get('n_errors', 0)}/{r.get('n_requests', 0)}" + (f": {r['first_error'][:60]}" if r.get("first_error") else ""),
        verdict,
        "; ".join(notes),
    ]


def knee_text(c: Curve) -> str:
    k = c.knee()
    if k is None:
        return "no knee: latency grows no faster than throughput over these levels"
    return (
        f"knee at {k['level']}: from {k['level']} to {k['next']} p90 end-to-end latency x{k['latency_x']} "
        f"for x{k['throughput_x']} throughput (more load past it buys queueing, not tokens)"
    )


def _title(c: Curve) -> str:
    return f"{c.label} on {c.model}"


def _slo_note(rows: list[dict]) -> str | None:
    slos = {str(r.get("slo")) for r in rows if r.get("slo")}
    return f"goodput SLO: {', '.join(sorted(slos))} (milliseconds)" if slos else None


def print_serve(console, rows: list[dict]) -> None:
    """Each configuration's levels as a rich table, its knee, the cross-talk failures spelled out."""
    for c in curves(rows):
        console.print(rich_table(HEADER, [level_cells(r) for r in c.levels], _title(c)))
        console.print(knee_text(c), markup=False)
        for r in c.levels:
            ct = r.get("crosstalk") or {}
            if ct.get("verdict") == "differs":
                console.print(
                    f"cross-talk at {r['level']}: request {ct['request']} alone gave {ct['alone']!r}, "
                    f"together {ct['concurrent']!r}: {NOT_COUNTED['cross-talk']}",
                    style="red",
                    markup=False,
                    soft_wrap=True,
                )
    note = _slo_note(rows)
    if note:
        console.print(note, markup=False)


def serve_markdown(rows: list[dict]) -> list[str]:
    out = ["## Serving", ""]
    for c in curves(rows):
        out += [f"### {_title(c)}", "", md_table(HEADER, [level_cells(r) for r in c.levels]), "", knee_text(c), ""]
    note = _slo_note(rows)
    return out + ([note, ""] if note else [])


def serve_html(rows: list[dict]) -> list[str]:
    e = html.escape
    out = ["<h2>Serving</h2>"]
    for c in curves(rows):
        out.append(f"<h3>{e(_title(c))}</h3><div class='table'>{html_table(HEADER, [level_cells(r) for r in c.levels])}</div>")
        out.append(f"<p>{e(knee_text(c))}</p>")
    note = _slo_note(rows)
    return out + ([f"<p>{e(note)}</p>"] if note else [])


def plot_serve(rows: list[dict]) -> Plot | None:
    """Latency against throughput: p90 end-to-end and p90 TTFT against output tok/s, one line per configuration,
    each point named by its level; the knee ringed; levels that do not count as grey crosses."""
    cs = [c for c in curves(rows) if any(r.get("output_tps") for r in c.levels)]
    if not cs:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=_fit(13, 4.8), squeeze=False, layout="constrained")
    for ax, key, name in (
        (axes[0][0], LATENCY_KEY, "p90 end-to-end latency (ms)"),
        (axes[0][1], "ttft_ms_p90", "p90 time to first token (ms)"),
    ):
        for c in cs:
            pts = [r for r in c.counted() if r.get(key) is not None and r.get("output_tps")]
            if pts:
                (line,) = ax.plot([r["output_tps"] for r in pts], [r[key] for r in pts], marker="o", label=c.label)
                for r in pts:
                    ax.annotate(r["level"], (r["output_tps"], r[key]), textcoords="offset points", xytext=(4, 4), fontsize=8)
                k = c.knee()
                knee = next((r for r in pts if k and r["level"] == k["level"]), None)
                if knee:
                    ax.scatter([knee["output_tps"]], [knee[key]], s=160, facecolors="none", edgecolors=line.get_color(), linewidths=2)
            bad = [r for r in c.levels if row_not_counted(r) and r.get(key) is not None and r.get("output_tps")]
            for r in bad:
                ax.scatter([r["output_tps"]], [r[key]], marker="x", color=GREY)
                ax.annotate(f"{r['level']} (not counted: {row_not_counted(r)})", (r["output_tps"], r[key]), fontsize=7, color=GREY)
        ax.set_xlabel("output tokens/s (all requests of the level)")
        ax.set_ylabel(name)
        ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
    axes[0][0].set_title("latency against throughput (ringed: the knee)", fontsize=10)
    axes[0][1].set_title("time to first token against throughput", fontsize=10)
    axes[0][0].legend(fontsize=8)
    return _plot("serve-latency-throughput.png", "Serving: latency against throughput", fig)


def compare_serving_runs(settings, base: str, new: str, threshold: float, console) -> int | None:
    """`invoke compare` on two serving runs: one line per level of the same configuration and load. Returns the
    number of slower levels (regressions), or None when the runs are not both serving runs (compare as usual)."""
    from toolbox.store.runs import load_run

    (bm, brows), (nm, nrows) = load_run(settings.results_dir, base), load_run(settings.results_dir, new)
    if bm.get("kind") != "serve" or nm.get("kind") != "serve":
        return None
    items = compare_serve(brows, nrows, threshold)
    header = ["configuration", "level", "BASE tok/s", "NEW tok/s", "ratio", "BASE p90 e2e ms", "NEW p90 e2e ms", "ratio", "mark"]
    cells = [
        [
            i["config"],
            str(i["level"]),
            _n(i["base_tps"]),
            _n(i["new_tps"]),
            _n(i["tps_ratio"], 3),
            _n(i["base_latency"]),
            _n(i["new_latency"]),
            _n(i["latency_ratio"], 3),
            i["mark"] if not i["not_counted"] else f"{NOT_COUNTED_NOTE}: {i['not_counted']}",
        ]
        for i in items
    ]
    console.print(rich_table(header, cells, f"compare serving BASE = {bm.get('run_id')} -> NEW = {nm.get('run_id')}"))
    slower = sum(i["mark"] == "slower" for i in items)
    console.print(
        f"{len(items)} levels compared: {sum(i['mark'] == 'faster' for i in items)} faster, {slower} slower, "
        f"{sum(i['mark'] == 'same' for i in items)} same (output tok/s changed by less than {threshold:.0%}), "
        f"{sum(bool(i['not_counted']) for i in items)} not counted",
        markup=False,
    )
    return slower
