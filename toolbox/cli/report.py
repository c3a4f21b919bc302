"""Tasks: report, compare, log (toolbox.report, toolbox.analysis.compare)."""

from __future__ import annotations

from invoke import Exit, task

from toolbox.cli.common import HELP, comma_list, console, one_line_errors, settings


@task(
    help={
        "run_id": HELP["run_ids"],
        "out": "directory for report.md, report.html and the PNGs; default: beside the run",
        "active_params": "MoE only: active parameters per token (e.g. 3.3e9), for the bandwidth / TFLOP figures",
        "no_files": "only print the table, write nothing",
    },
    iterable=["run_id"],
)
@one_line_errors
def report(c, run_id=None, out=None, active_params=None, no_files=False):
    """Tables in the terminal, report.md / report.html / PNG plots beside the run, distance to the physical limit."""
    from toolbox.report.render import render_console
    from toolbox.report.render import report as make_report

    screen = console()
    rep = make_report(
        settings(), run_id or None, out_dir=out, active_params=float(active_params) if active_params else None, write=not no_files
    )
    render_console(rep, screen)
    if rep.files:
        screen.print("written: " + ", ".join(str(f) for f in rep.files))


@task(
    help={
        "base": "BASE: a run id, or a llama-bench output file (imported first)",
        "new": "NEW: a run id, or a llama-bench output file (imported first)",
        "threshold": "smallest change that counts as faster / slower, as a fraction (default 0.05 = 5%)",
        "alpha": "significance level of the test (default 0.05)",
        "test": "welch (Welch's t-test, default) or mannwhitney (Mann-Whitney U) on the raw samples",
        "ignore": HELP["ignore"],
        "markdown": "also write the comparison as Markdown to this file",
    },
)
@one_line_errors
def compare(c, base, new, threshold=0.05, alpha=0.05, test="welch", ignore="", markdown=None):
    """Join two runs on identity keys: ratio ± uncertainty and a significance mark per test. Exit 1 on any regression."""
    from pathlib import Path

    from toolbox.analysis.compare import compare as compare_runs
    from toolbox.report.compare_view import render_console, render_markdown

    cr = compare_runs(settings(), base, new, threshold=float(threshold), alpha=float(alpha), test=test, ignore=comma_list(ignore))
    render_console(cr, console())
    if markdown:
        Path(markdown).write_text(render_markdown(cr), encoding="utf-8")
        print(f"written: {markdown}")
    if cr.regressions:
        raise Exit(f"{len(cr.regressions)} regression(s) beyond {float(threshold):.0%} (or broken / failed)", code=1)


@task(
    help={
        "title": "what was tried, one line",
        "before": "run id before the change",
        "after": "run id after the change",
        "note": "why / how, free text",
        "ignore": "identity keys left out of the match, comma list",
    },
)
@one_line_errors
def log(c, title, before, after, note=None, ignore=""):
    """Append a dated entry (what changed, key figures before/after, ratio, run ids) to docs/optimization-log.md."""
    from toolbox.report import oplog

    path, text, _ = oplog.log(settings(), title, before, after, note, ignore=comma_list(ignore))
    print(text)
    print(f"appended to {path}")
