"""Tables of results: cells for rich, Markdown and HTML, the flags and warnings each result carries."""

from __future__ import annotations

import html

from toolbox.analysis import roofline as rf
from toolbox.analysis import stats
from toolbox.analysis.identity import IDENTITY_FIELDS, Collected, Result, fmt_value  # noqa: F401 (fmt_value re-exported)
from toolbox.quality import gate

KIND_TITLES = {"pp": "Prompt processing", "tg": "Generation", "pp+tg": "Prompt + generation", None: "Other"}


def fmt_ts(s: stats.Summary | None) -> str:
    if s is None:
        return "—"
    digits = 2 if s.median < 100 else 1
    spread = f" ± {s.spread:.1%}" if s.spread is not None else ""
    return f"{s.median:.{digits}f}{spread}"


def fmt_share(share: float) -> str:
    """A share of the peak in percent, with enough digits for tiny models on a CPU (0.0339%)."""
    pct = share * 100
    return f"{pct:.1f}%" if pct >= 10 else f"{pct:.2g}%" if pct >= 0.01 else f"{pct:.1e}%"


# A result that does not count (quality.gate) says so first in its notes; tables grey such rows.
NOT_COUNTED_NOTE = "not counted"


def flags(r: Result) -> list[str]:
    out = [f"{NOT_COUNTED_NOTE}: {r.not_counted}"] if r.not_counted else []
    if r.summary and r.summary.unstable:
        out.append("unstable")
    elif r.summary and r.summary.n is not None and r.summary.n < 3:
        out.append(f"n={r.summary.n}")
    if r.summary and r.summary.n is None:
        out.append("no samples")
    if r.roofline and r.roofline.estimated:
        out.append("MoE share estimated")
    out += (r.energy or {}).get("flags") or []
    return out


def table_rows(col: Collected, kind: str | None) -> tuple[list[str], list[list[str]]]:
    """Header and cells of one kind's table (pp / tg / pp+tg)."""
    results = [r for r in col.results if r.kind == kind]
    has_quality = any(r.quality for r in col.results)
    multi_run = len({r.run_id for r in col.results}) > 1
    header = (["run"] if multi_run else []) + [IDENTITY_FIELDS[f] for f in col.shown] + ["test", "t/s (median ± spread)", "n"]
    if has_quality:
        header.append("quality")
    if kind == "tg":
        header += ["GB/s", "% of peak BW"]
    elif kind == "pp":
        header += ["TFLOP/s", "% of peak FLOPs"]
    has_energy = any(r.energy for r in results)
    has_dram = kind == "tg" and any((r.energy or {}).get("dram_gbs") for r in results)
    if has_energy:
        header += ["W (idle)", "tokens/J", "gfx clock"]
    if has_dram:
        header.append("DRAM GB/s (measured)")
    header.append("notes")
    cells = []
    for r in results:
        c = ([r.run_id] if multi_run else []) + [fmt_value(r.ident.get(f)) for f in col.shown]
        c += [r.test, fmt_ts(r.summary), fmt_value(r.summary.n if r.summary else None)]
        if has_quality:
            c.append(r.verdict or "—")
        if kind in ("tg", "pp"):
            if r.roofline:
                c += [f"{r.roofline.value:.3g}", fmt_share(r.roofline.share) + ("~" if r.roofline.estimated else "")]
            else:
                c += ["—", "—"]
        if has_energy:
            c += energy_cells(r.energy)
        if has_dram:
            c.append(f"{r.energy['dram_gbs']:.3g}" if (r.energy or {}).get("dram_gbs") else "—")
        c.append(", ".join(flags(r)))
        cells.append(c)
    return header, cells


def energy_cells(e: dict | None) -> list[str]:
    """'118.2 (12.1)' watts with idle, tokens per joule, mean gfx clock and its share of the maximum; dashes without telemetry."""
    if not e:
        return ["—", "—", "—"]
    watts = f"{e['mean_w']:.1f}" + (f" ({e['idle_w']:.1f})" if e.get("idle_w") is not None else "") if e.get("mean_w") else "—"
    tpj = f"{e['tokens_per_j']:.3g}" if e.get("tokens_per_j") else "—"
    clock = f"{e['gfx_mhz']:.0f} MHz" + (f" ({e['gfx_share']:.0%})" if e.get("gfx_share") else "") if e.get("gfx_mhz") else "—"
    return [watts, tpj, clock]


def kinds_present(col: Collected) -> list:
    seen = []
    for k in ("pp", "tg", "pp+tg", None):
        if any(r.kind == k for r in col.results):
            seen.append(k)
    return seen


def md_table(header: list[str], cells: list[list[str]]) -> str:
    def esc(s):
        return str(s).replace("|", "\\|").replace("\n", " ")

    lines = [
        "| " + " | ".join(esc(h) for h in header) + " |",
        "|" + "|".join("---:" if numeric_col(cells, i) else "---" for i in range(len(header))) + "|",
    ]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in cells]
    return "\n".join(lines)


def numeric_col(cells, i) -> bool:
    vals = [row[i] for row in cells if row[i] not in ("—", "")]

    def isnum(s):
        try:
            float(str(s).split(" ")[0].rstrip("%~"))
            return True
        except ValueError:
            return False

    return bool(vals) and all(isnum(v) for v in vals)


def row_style(notes: str) -> str | None:
    """'excluded' for a result that does not count (greyed), 'warn' for one that counts with a warning."""
    if str(notes).startswith(NOT_COUNTED_NOTE):
        return "excluded"
    return "warn" if "unstable" in str(notes) else None


RICH_STYLES = {"excluded": "dim", "warn": "yellow"}


def rich_table(header: list[str], cells: list[list[str]], title: str | None = None):
    from rich.table import Table

    t = Table(*header, title=title, title_justify="left")
    for row in cells:
        t.add_row(*row, style=RICH_STYLES.get(row_style(row[-1])))
    return t


def warnings_for(col: Collected) -> list[str]:
    """Per-result warnings (unstable, wrong device, broken output); 'few samples' is said once for all."""
    out, few = [], {}
    for r in col.results:
        ctx = ", ".join(f"{IDENTITY_FIELDS[f]}={fmt_value(r.ident.get(f))}" for f in col.shown)
        where = f"{r.test} ({ctx})" if ctx else r.test
        if r.run_id and len({x.run_id for x in col.results}) > 1:
            where = f"{r.run_id}: {where}"
        if r.summary and r.summary.unstable:
            out.append(f"{where}: {r.summary.warning}")
        elif r.summary and r.summary.n is not None and r.summary.n < 3:
            few[r.summary.n] = few.get(r.summary.n, 0) + 1
        if r.not_counted:
            out.append(f"{where}: {gate.NOT_COUNTED[r.not_counted]}; not counted")
    for n, count in sorted(few.items()):
        out.append(
            f"{count} result{'s' if count > 1 else ''} with only {n} sample{'s' if n > 1 else ''}: "
            "the spread is not meaningful; use more repetitions (-r 3 or more)"
        )
    return out


def explanations(peak_bandwidth_gbs: float, peak_tflops: float, unstable_spread: float) -> list[str]:
    return [
        "t/s is the median of llama-bench's per-repetition samples (samples_ts); ± is the spread, the sample "
        "standard deviation divided by the mean. Rows of the same test in one run are pooled by their samples.",
        f"A result is flagged unstable when its spread exceeds {unstable_spread:.0%} of the mean "
        "(setting unstable_spread): use more repetitions, check thermals.",
        f"tg: {rf.FORMULAS['tg']}. Peak bandwidth: {peak_bandwidth_gbs:g} GB/s (setting peak_bandwidth_gbs; "
        "256 GB/s is Strix Halo's theoretical LPDDR5X-8000 figure, record your measured peak to compare against it).",
        f"pp: {rf.FORMULAS['pp']}. Peak: {peak_tflops:g} TFLOP/s (setting peak_tflops).",
        f"Both are {rf.FORMULAS['bounds']}; MoE models count only the active experts (a ~ marks an estimate from the model type).",
    ]


def html_table(header, cells, row_class: str | None = None) -> str:
    """An HTML table; rows that do not count get class 'excluded' (greyed), unstable ones 'warn' (row_class: every row)."""
    e = html.escape
    num = [numeric_col(cells, i) for i in range(len(header))]
    rows = []
    for row in cells:
        style = row_class or row_style(row[-1])
        tds = "".join(f'<td class="num">{e(str(c))}</td>' if num[i] else f"<td>{e(str(c))}</td>" for i, c in enumerate(row))
        rows.append(f"<tr{f' class={style}' if style else ''}>{tds}</tr>")
    return "<table><thead><tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
