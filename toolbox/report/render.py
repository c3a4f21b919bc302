"""Reports: a rich table in the terminal and, beside the run, report.md, report.html and PNG plots.

Everything is derived from rows.jsonl and run.json (toolbox.store); the analysis (pooling, roofline,
provenance) lives in toolbox.analysis, the tables and plots in tables.py and plots.py. Columns
whose value never varies are hidden from the tables and stated once in the header.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path

from toolbox.analysis.answer import Answer, GoalAnswer, answers, goal_answers
from toolbox.analysis.identity import IDENTITY_FIELDS, Collected, collect, identity, model_name, test_name
from toolbox.analysis.provenance import provenance
from toolbox.errors import ToolboxError
from toolbox.files import make_dir
from toolbox.report import answer_view, scaling_view
from toolbox.report.plots import Plot, make_plots
from toolbox.report.serve_view import plot_serve, print_serve, serve_html, serve_markdown
from toolbox.report.tables import (
    KIND_TITLES,
    explanations,
    fmt_value,
    html_table,
    kinds_present,
    md_table,
    rich_table,
    table_rows,
    warnings_for,
)
from toolbox.store.runs import load_runs


@dataclass
class Report:
    run_ids: list[str]
    out_dir: Path | None
    collected: Collected
    provenance: list[tuple[str, list[tuple[str, str]]]]  # per run
    warnings: list[str]
    plots: list[Plot]
    files: list[Path] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # plots or files that could not be written
    settings: dict = field(default_factory=dict)
    answers: list[Answer] = field(default_factory=list)  # what the report leads with
    goals: list[GoalAnswer] = field(default_factory=list)  # tune runs: the answer per goal
    serve_rows: list[dict] = field(default_factory=list)  # rows of kind "serve": report.serve_view
    sections: list[tuple[str, list[str], list[list[str]]]] = field(default_factory=list)  # (title, header, cells): scaling

    @property
    def empty(self) -> bool:
        return not self.collected.results and not self.serve_rows


def same_for_all(col: Collected) -> list[tuple[str, str, str]]:
    """(column, value, ' (where recorded)' or '') of each column stated once above the tables instead of shown."""
    idents = [r.ident for r in col.results] or [identity(r) for r in col.failures]
    return [
        (IDENTITY_FIELDS[f], fmt_value(v), " (where recorded)" if any(i.get(f) is None for i in idents) else "")
        for f, v in col.hidden.items()
    ]


def render_markdown(rep: Report) -> str:
    col, s = rep.collected, rep.settings
    out = [f"# llama.cpp benchmark report: {', '.join(rep.run_ids)}", ""]
    out += answer_view.render_markdown(rep.answers, rep.goals)
    out += ["## What ran", ""] if rep.answers or rep.goals else []
    for run_id, prov in rep.provenance:
        if len(rep.provenance) > 1:
            out += [f"**{run_id}**", ""]
        out += [f"- **{k}**: {v}" for k, v in prov] + [""]
    if col.hidden:
        out += ["Same for every result: " + ", ".join(f"{name} = `{v}`{where}" for name, v, where in same_for_all(col)), ""]
    if rep.empty:
        out += [f"**No successful results**: {len(col.failures)} failed, see Failures below.", ""]
    if rep.serve_rows:
        out += serve_markdown(rep.serve_rows)
    for kind in kinds_present(col):
        header, cells = table_rows(col, kind)
        out += [f"## {KIND_TITLES[kind]}", "", md_table(header, cells), ""]
    for title, header, cells in rep.sections:
        out += [f"## {title}", "", md_table(header, cells), "", scaling_view.NOTE, ""]
    if rep.warnings:
        out += ["## Warnings", ""] + [f"- {w}" for w in rep.warnings] + [""]
    if col.failures:
        out += [
            "## Failures",
            "",
            md_table(
                ["test", "status", *[IDENTITY_FIELDS[f] for f in col.shown], "error"],
                [
                    [
                        test_name(r),
                        r.get("status") or "?",
                        *[fmt_value(identity(r).get(f)) for f in col.shown],
                        (r.get("error") or "")[:200],
                    ]
                    for r in col.failures
                ],
            ),
            "",
        ]
    if rep.plots:
        out += ["## Plots", ""] + [f"![{p.title}]({p.name})" for p in rep.plots] + [""]
    out += (
        ["## How the figures are computed", ""]
        + [f"- {e}" for e in explanations(s.get("peak_bandwidth_gbs", 256.0), s.get("peak_tflops", 59.4), s.get("unstable_spread", 0.05))]
        + [""]
    )
    return "\n".join(out)


HTML_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em;color:#222;max-width:1400px}
table{border-collapse:collapse;margin:1em 0;font-size:13px;max-width:100%}
th,td{border:1px solid #ccc;padding:3px 6px;text-align:left;overflow-wrap:anywhere}div.table{overflow-x:auto}
th{background:#f0f0f0}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.excluded td{color:#8a8a8a;background:#f4f4f4}tr.warn td{background:#fff3d6}
dl.prov{display:grid;grid-template-columns:max-content auto;gap:2px 12px;font-size:13px}dt{font-weight:600}
dd{margin:0;overflow-wrap:anywhere}
section.answer{background:#f1f7f1;border:1px solid #b9d8b9;padding:0 1em;margin:1em 0}
img{max-width:100%;border:1px solid #ddd;margin:0.5em 0}.warn{color:#a00}code{background:#f4f4f4;padding:0 3px}
"""


def render_html(rep: Report) -> str:
    """One self-contained page: inline CSS, plots as data: URIs, no scripts, no external resources."""
    e = html.escape
    col, s = rep.collected, rep.settings
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>report {e(', '.join(rep.run_ids))}</title>"
        f"<style>{HTML_STYLE}</style></head><body>",
        f"<h1>llama.cpp benchmark report: {e(', '.join(rep.run_ids))}</h1>",
        answer_view.render_html(rep.answers, rep.goals),
        "<h2>What ran</h2>" if rep.answers or rep.goals else "",
    ]
    for run_id, prov in rep.provenance:
        if len(rep.provenance) > 1:
            parts.append(f"<h3>{e(run_id)}</h3>")
        parts.append("<dl class='prov'>" + "".join(f"<dt>{e(k)}</dt><dd>{e(v)}</dd>" for k, v in prov) + "</dl>")
    if col.hidden:
        parts.append(
            "<p>Same for every result: "
            + ", ".join(f"{e(name)} = <code>{e(v)}</code>{e(where)}" for name, v, where in same_for_all(col))
            + "</p>"
        )
    if rep.empty:
        parts.append(f"<p class='warn'><b>No successful results</b>: {len(col.failures)} failed, see Failures below.</p>")
    if rep.serve_rows:
        parts += serve_html(rep.serve_rows)
    for kind in kinds_present(col):
        header, cells = table_rows(col, kind)
        parts.append(f"<h2>{e(KIND_TITLES[kind])}</h2><div class='table'>" + html_table(header, cells) + "</div>")
    for title, header, cells in rep.sections:
        parts.append(f"<h2>{e(title)}</h2><div class='table'>" + html_table(header, cells) + f"</div><p>{e(scaling_view.NOTE)}</p>")
    if rep.warnings:
        parts.append("<h2>Warnings</h2><ul class='warn'>" + "".join(f"<li>{e(w)}</li>" for w in rep.warnings) + "</ul>")
    if col.failures:
        parts.append(
            "<h2>Failures</h2>"
            + html_table(
                ["test", "status", "error"],
                [[test_name(r), r.get("status") or "?", (r.get("error") or "")[:300]] for r in col.failures],
                row_class="excluded",
            )
        )
    for p in rep.plots:
        parts.append(f"<h2>{e(p.title)}</h2><img alt='{e(p.title)}' src='data:image/png;base64,{base64.b64encode(p.png).decode()}'>")
    parts.append(
        "<h2>How the figures are computed</h2><ul>"
        + "".join(
            f"<li>{e(x)}</li>"
            for x in explanations(s.get("peak_bandwidth_gbs", 256.0), s.get("peak_tflops", 59.4), s.get("unstable_spread", 0.05))
        )
        + "</ul>"
    )
    parts.append("</body></html>")
    return "\n".join(parts)


def render_console(rep: Report, console) -> None:
    """The report in the terminal: provenance, one rich table per test kind, warnings, files written."""
    from rich.text import Text

    col = rep.collected
    answer_view.render_console(rep.answers, console, rep.goals)
    for _, prov in rep.provenance:
        for k, v in prov:
            console.print(Text.assemble((f"{k}: ", "bold"), v))
    if col.hidden:
        console.print(Text("same everywhere: " + ", ".join(f"{name}={v}{where}" for name, v, where in same_for_all(col)), style="dim"))
    for kind in kinds_present(col):
        header, cells = table_rows(col, kind)
        console.print(rich_table(header, cells, KIND_TITLES[kind]))
    if rep.serve_rows:
        print_serve(console, rep.serve_rows)
    for title, header, cells in rep.sections:
        console.print(rich_table(header, cells, title))
    if rep.empty:
        console.print(f"[bold red]no successful results[/]: {len(col.failures)} failed")
    for f in col.failures[:20]:
        console.print(f"{f.get('status') or 'failed'} {test_name(f)}: {(f.get('error') or '')[:160]}", style="dim", markup=False)
    if len(col.failures) > 20:
        console.print(f"... and {len(col.failures) - 20} more failures (see report.md)")
    for w in rep.warnings:
        console.print(f"[yellow]warning[/]: {w}")
    for p in rep.problems:
        console.print(f"[red]problem[/]: {p}")


def build_report(
    runs: list[tuple[dict, list[dict]]],
    *,
    peak_bandwidth_gbs: float = 256.0,
    peak_tflops: float = 59.4,
    unstable_spread: float = 0.05,
    active_params: float | None = None,
    with_plots: bool = True,
) -> Report:
    """Everything a report shows, in memory (no files written)."""
    hint = None
    if active_params:
        models = {model_name(r) for _, rows in runs for r in rows if (r.get("status") or "ok") == "ok"}
        if len(models) > 1:
            raise ToolboxError(
                f"--active-params applies to one model, these runs have {len(models)}",
                "record active_params per model in run.json's models, or report one model at a time",
            )
        hint = {"active_params": active_params}
    serve_rows = [r | {"run_id": r.get("run_id") or (m or {}).get("run_id")} for m, rows in runs for r in rows if r.get("kind") == "serve"]
    runs = [(m, [r for r in rows if r.get("kind") != "serve"]) for m, rows in runs]
    col = collect(runs, unstable_spread=unstable_spread, peak_bandwidth_gbs=peak_bandwidth_gbs, peak_tflops=peak_tflops, active_hint=hint)
    run_ids = [(m or {}).get("run_id") or "?" for m, _ in runs]
    prov = [(rid, provenance(m, rows)) for rid, (m, rows) in zip(run_ids, runs)]
    plots, problems = make_plots(col) if with_plots else ([], [])
    if with_plots and serve_rows:
        try:
            serve_plot = plot_serve(serve_rows)
            plots += [serve_plot] if serve_plot else []
        except Exception as exc:  # noqa: BLE001 - a plot that cannot be drawn is reported, never fatal
            problems.append(f"serving plot not drawn: {exc}")
    return Report(
        run_ids,
        None,
        col,
        prov,
        warnings_for(col),
        plots,
        problems=problems,
        settings={"peak_bandwidth_gbs": peak_bandwidth_gbs, "peak_tflops": peak_tflops, "unstable_spread": unstable_spread},
        answers=answers(col),
        goals=goal_answers([m for m, _ in runs]),
        serve_rows=serve_rows,
        sections=[x for x in [scaling_view.scaling_section(col)] if x],
    )


def write_report(rep: Report, out_dir: Path) -> Report:
    """Write report.md, report.html and the PNGs into out_dir. A PNG that can't be written is a problem
    noted in the report; report.md / report.html that can't be written is an error."""
    out_dir = make_dir(out_dir, "report")
    rep.out_dir = out_dir
    written = []
    for p in list(rep.plots):
        try:
            (out_dir / p.name).write_bytes(p.png)
            written.append(out_dir / p.name)
        except OSError as exc:
            rep.problems.append(
                f"plot {out_dir / p.name} could not be written: {exc.strerror or exc}; check permissions and free space, or pass --out"
            )
            rep.plots.remove(p)  # not linked from report.md; the HTML embeds none that failed, to stay consistent
    for name, text in (("report.md", render_markdown(rep)), ("report.html", render_html(rep))):
        try:
            (out_dir / name).write_text(text, encoding="utf-8")
        except OSError as exc:
            raise ToolboxError(f"cannot write {out_dir / name}: {exc.strerror or exc}", "pass a writable directory with --out") from None
        written.append(out_dir / name)
    rep.files = written
    return rep


def report(
    settings,
    run_ids: list[str] | None = None,
    *,
    out_dir: Path | None = None,
    active_params: float | None = None,
    write: bool = True,
) -> Report:
    """`invoke report`: load runs, build the report, write it beside the run (or into out_dir)."""
    runs = load_runs(settings.results_dir, run_ids)
    if _energy_missing(settings.results_dir, runs):  # telemetry without energy.json (an interrupted run): derive it
        runs = load_runs(settings.results_dir, [m.get("run_id") for m, _ in runs])
    rep = build_report(
        runs,
        peak_bandwidth_gbs=settings.peak_bandwidth_gbs,
        peak_tflops=settings.peak_tflops,
        unstable_spread=settings.unstable_spread,
        active_params=active_params,
        with_plots=write,
    )
    if write:
        from toolbox.report.telemetry_plot import plot_telemetry

        for rid in rep.run_ids:
            try:
                p = plot_telemetry(Path(settings.results_dir) / rid)
            except Exception as exc:  # noqa: BLE001 - a plot bug must not cost the user the tables
                rep.problems.append(f"telemetry plot could not be drawn: {type(exc).__name__}: {exc}")
                continue
            if p:
                rep.plots.append(p if len(rep.run_ids) == 1 else Plot(f"telemetry-{rid[-6:]}.png", f"{p.title} ({rid})", p.png, p.texts))
        if out_dir is None:
            # several runs: inside the last one's directory (results/ itself holds only run directories)
            run_dir = Path(settings.results_dir) / rep.run_ids[-1]
            out_dir = run_dir if len(rep.run_ids) == 1 else run_dir / "reports" / "+".join(rep.run_ids)
        write_report(rep, out_dir)
    return rep


def _energy_missing(results_dir, runs) -> bool:
    """Derive energy.json for runs that have telemetry but none yet; True when any was written."""
    from toolbox.analysis.energy import attach_energy
    from toolbox.store.telemetry import ENERGY_FILE, FILE

    wrote = False
    for meta, _ in runs:
        d = Path(results_dir) / (meta.get("run_id") or "")
        if meta.get("run_id") and (d / FILE).exists() and not (d / ENERGY_FILE).exists():
            try:
                wrote = bool(attach_energy(results_dir, meta["run_id"])) or wrote
            except OSError:  # a results directory we may not write to: the report goes on without energy
                continue
    return wrote
