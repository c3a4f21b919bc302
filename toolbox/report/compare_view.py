"""compare on screen and in Markdown: BASE / NEW columns, ratio ± uncertainty, p-value, mark, notes."""

from __future__ import annotations

from toolbox.analysis.compare import MARKS, CompareResult, Line
from toolbox.analysis.identity import IDENTITY_FIELDS
from toolbox.report.tables import NOT_COUNTED_NOTE, fmt_ts, fmt_value, md_table


def dropped_text(cr: CompareResult) -> str:
    """The keys left out of the join, grouped by reason: 'absent from BASE x: n_batch, n_ubatch; ignored: backend'."""
    by: dict[str, list[str]] = {}
    for k, why in cr.dropped.items():
        by.setdefault(why, []).append(k)
    return "; ".join(f"{why}: {', '.join(keys)}" for why, keys in by.items())


def fmt_ratio(ln: Line) -> str:
    if ln.ratio is None:
        return "—"
    return f"{ln.ratio:.3f} ± {ln.ratio_err:.3f}" if ln.ratio_err is not None else f"{ln.ratio:.3f}"


def fmt_p(p: float | None) -> str:
    return "—" if p is None else f"{p:.2g}" if p >= 0.001 else "<0.001"


def side(r) -> str:
    """One side's t/s, with its quality verdict, or why it does not count (quality.gate)."""
    if r is None:
        return "failed"
    if r.not_counted:
        return f"{fmt_ts(r.summary)} [{NOT_COUNTED_NOTE}: {r.not_counted}]"
    return fmt_ts(r.summary) + (f" [{r.verdict}]" if r.verdict else "")


def has_energy(cr: CompareResult) -> bool:
    return any(ln.tpj_ratio is not None for ln in cr.lines)


def fmt_tpj(ln: Line) -> str:
    """'1.12 ± 0.03 (p 0.004, more efficient)': NEW/BASE tokens per joule, judged like t/s."""
    if ln.tpj_ratio is None:
        return "—"
    err = f" ± {ln.tpj_err:.2f}" if ln.tpj_err is not None else ""
    return f"{ln.tpj_ratio:.2f}{err} (p {fmt_p(ln.tpj_p)}, {ln.tpj_mark})"


def table(cr: CompareResult) -> tuple[list[str], list[list[str]]]:
    energy = has_energy(cr)
    header = [IDENTITY_FIELDS[f] for f in cr.shown] + ["test", "BASE t/s", "NEW t/s", "ratio NEW/BASE", "p", ""]
    header += (["tokens/J NEW/BASE"] if energy else []) + ["note"]
    cells = []
    for ln in cr.lines:
        bt, nt = side(ln.base), side(ln.new)
        c = [fmt_value(ln.ident.get(f)) for f in cr.shown] + [ln.test, bt, nt, fmt_ratio(ln), fmt_p(ln.p_value), MARKS[ln.mark]]
        cells.append(c + ([fmt_tpj(ln)] if energy else []) + [ln.note])
    return header, cells


def summary_lines(cr: CompareResult) -> list[str]:
    c = cr.counts()
    out = [f"{len(cr.lines)} tests compared: " + ", ".join(f"{v} {MARKS[k]} ({k})" for k, v in sorted(c.items(), key=lambda kv: -kv[1]))]
    for kind in ("pp", "tg"):
        g = cr.geomean(kind)
        if g:
            out.append(f"{kind}: geometric mean ratio {g[0]:.3f} over {g[1]} tests")
    if cr.regressions:
        out.append(f"{len(cr.regressions)} regression(s) beyond {cr.threshold:.0%} (or broken / failed)")
    return out


def explanation(cr: CompareResult) -> str:
    name = "Welch's t-test" if cr.test == "welch" else "the Mann-Whitney U test"
    return (
        f"ratio = mean t/s NEW / mean t/s BASE ± its 1-sigma uncertainty (standard errors of the means, propagated); "
        f"p from {name} on the raw samples (samples_ts, two-sided); faster / SLOWER need p < {cr.alpha:g} and a change "
        f"of at least {cr.threshold:.0%}; ? = no raw samples on one side; x = not comparable; "
        "BROKEN = NEW's output is wrong (quality check), never counted as faster."
        + (
            " tokens/J NEW/BASE: tokens per joule from telemetry (docs/energy.md), the same test on the per-repetition "
            "values; more / less efficient need the same p and change."
            if has_energy(cr)
            else ""
        )
    )


def render_markdown(cr: CompareResult) -> str:
    out = [f"# compare {cr.base_id} (BASE) → {cr.new_id} (NEW)", ""]
    out += [f"**warning**: {w}" for w in cr.warnings] + ([""] if cr.warnings else [])
    if cr.differences:
        out += ["What differs:", "", md_table(["", "BASE", "NEW"], [list(d) for d in cr.differences]), ""]
    out += [f"- {s}" for s in summary_lines(cr)] + [""]
    header, cells = table(cr)
    out += [md_table(header, cells), ""]
    if cr.dropped:
        out += ["Not used to match rows: " + dropped_text(cr), ""]
    if cr.only_base:
        out += [
            f"Only in BASE ({len(cr.only_base)}): " + "; ".join(cr.only_base[:20]) + (" ..." if len(cr.only_base) > 20 else ""),
            "",
        ]
    if cr.only_new:
        out += [
            f"Only in NEW ({len(cr.only_new)}): " + "; ".join(cr.only_new[:20]) + (" ..." if len(cr.only_new) > 20 else ""),
            "",
        ]
    out += [explanation(cr), ""]
    return "\n".join(out)


def render_console(cr: CompareResult, console) -> None:
    from rich.table import Table
    from rich.text import Text

    console.print(f"[bold]compare[/] BASE = {cr.base_id} → NEW = {cr.new_id} (lines: regressions first, then by change)")
    for w in cr.warnings:
        console.print(f"warning: {w}", style="yellow", markup=False)
    if cr.differences:
        t = Table("", "BASE", "NEW", title="what differs", title_justify="left")
        for d in cr.differences:
            t.add_row(*d)
        console.print(t)
    header, cells = table(cr)
    t = Table(*header)
    styles = {
        "slower": "red",
        "broken": "bold red",
        "failed": "red",
        "faster": "green",
        "not comparable": "dim",
        "untested": "yellow",
    }
    first_ts = len(cr.shown) + 1  # the BASE and NEW t/s columns
    for ln, row in zip(cr.lines, cells):
        # a side that does not count is greyed; the row keeps the colour of its mark
        shown = [Text(c, style="dim") if i in (first_ts, first_ts + 1) and NOT_COUNTED_NOTE in c else c for i, c in enumerate(row)]
        t.add_row(*shown, style=styles.get(ln.mark))
    console.print(t)
    for s in summary_lines(cr):
        console.print(s)
    if cr.dropped:
        console.print("[dim]not used to match rows: " + dropped_text(cr) + "[/]")
    for label, items in (("only in BASE", cr.only_base), ("only in NEW", cr.only_new)):
        if items:
            console.print(f"[dim]{label} ({len(items)}): " + "; ".join(items[:10]) + (" ..." if len(items) > 10 else "") + "[/]")
    console.print(f"[dim]{explanation(cr)}[/]")
