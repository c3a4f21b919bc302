"""Tasks: report, compare, log (toolbox.report, toolbox.analysis.compare)."""

from __future__ import annotations

from invoke import Exit

from toolbox.cli import flags as f
from toolbox.cli.common import FLAGS, comma_list, console, settings


def _writable_file(path: str) -> None:
    from toolbox.files import check_writable

    check_writable(path)


def _writable_dir(path: str) -> None:
    from toolbox.files import check_writable

    check_writable(path, directory=True)


def _run_or_file(ref: str) -> None:
    from pathlib import Path

    if not Path(ref).expanduser().is_file():
        FLAGS["run_ids"].check(ref)


def _campaign(text: str) -> None:
    from toolbox.report.campaign import campaign_run_ids

    campaign_run_ids(settings().results_dir, text)


def _identity_keys(text: str) -> None:
    from toolbox.analysis.compare import check_ignore

    check_ignore(comma_list(text))


IGNORE = f.Text(FLAGS["ignore"].help, placeholder="KEY[,KEY]", check=_identity_keys)
THRESHOLD = f.Number(
    "smallest change that counts as faster / slower, as a fraction (default 0.05 = 5%)", low=0, high=1, placeholder="FRACTION"
)


@f.command(
    positional=("run_ids",),
    run_ids=FLAGS["run_ids"],
    out=f.Path("directory for report.md, report.html and the PNGs; default: beside the run", placeholder="DIR", check=_writable_dir),
    active_params=f.Number(
        "MoE only: active parameters per token (e.g. 3.3e9), for the bandwidth / TFLOP figures",
        above=0,
        placeholder="PARAMS",
        example="3.3e9",
    ),
    no_files=f.Switch("only print the table, write nothing"),
    campaign=f.Text(
        "the runs of a fleet campaign (invoke bench --host ...): hosts side by side, each against the first with the significance test",
        placeholder="ID",
        check=_campaign,
    ),
)
def report(c, run_ids=None, out=None, active_params=None, no_files=False, campaign=None):
    """invoke report [RUN ...]: tables in the terminal; report.md, report.html and PNG plots beside the run.

    Default: the latest run. Each figure's distance to the physical limit is shown beside it.
    """
    from toolbox.report.render import render_console
    from toolbox.report.render import report as make_report

    screen = console()
    if campaign:
        return _campaign_report(screen, campaign, not no_files)
    rep = make_report(settings(), run_ids or None, out_dir=out, active_params=active_params, write=not no_files)
    render_console(rep, screen)
    for meta in rep.collected.metas:
        if meta.get("kind") == "tune":  # the race's answer, as invoke tune printed it
            from toolbox.report.tune_view import print_answer

            screen.print(f"tune run {meta.get('run_id')}:", markup=False)
            print_answer(screen, meta)
    if rep.files:
        screen.print("written: " + ", ".join(str(f) for f in rep.files))


def _campaign_report(screen, campaign: str, write: bool) -> None:
    from toolbox.report import compare_view
    from toolbox.report.campaign import HOST_HEADER, campaign_report
    from toolbox.report.render import render_console
    from toolbox.report.tables import rich_table

    rep, hosts, comparisons = campaign_report(settings(), campaign, write=write)
    screen.print(rich_table(HOST_HEADER, hosts, f"campaign {campaign}: one run per host"))
    render_console(rep, screen)
    for title, cr in comparisons:
        screen.print(f"[bold]{title}[/bold]")
        if isinstance(cr, str):
            screen.print(f"not comparable: {cr}", markup=False)
        else:
            compare_view.render_console(cr, screen)
    if rep.files:
        screen.print("written: " + ", ".join(str(f) for f in rep.files))


@f.command(
    positional=("base", "new"),
    base=f.Text(
        "BASE: a run (as in invoke report), or a llama-bench output file (read, not imported)", placeholder="BASE", check=_run_or_file
    ),
    new=f.Text(
        "NEW: a run (as in invoke report), or a llama-bench output file (read, not imported)", placeholder="NEW", check=_run_or_file
    ),
    threshold=THRESHOLD,
    alpha=f.Number("significance level of the test (default 0.05)", above=0, high=1, placeholder="P"),
    test=f.Text(
        "welch (Welch's t-test, default) or mannwhitney (Mann-Whitney U) on the raw samples",
        placeholder="TEST",
        choices=("welch", "mannwhitney"),
    ),
    ignore=IGNORE,
    markdown=f.Path("also write the comparison as Markdown to this file", placeholder="FILE", check=_writable_file),
)
def compare(c, base, new, threshold=0.05, alpha=0.05, test="welch", ignore="", markdown=None):
    """invoke compare BASE NEW: ratio ± uncertainty and a significance mark per test, regressions first. Exit 1 on any regression."""
    from pathlib import Path

    from toolbox.analysis.compare import compare as compare_runs
    from toolbox.report.compare_view import render_console, render_markdown

    out = console()
    from toolbox.report.serve_view import compare_serving_runs

    slower = compare_serving_runs(settings(), base, new, threshold, out)  # None: not two serving runs
    if slower is not None:
        if slower:
            raise Exit(code=1)
        return
    cr = compare_runs(settings(), base, new, threshold=threshold, alpha=alpha, test=test, ignore=comma_list(ignore))
    render_console(cr, out)
    if markdown:
        from toolbox.files import write_text

        write_text(Path(markdown), render_markdown(cr))
        print(f"written: {markdown}")
    if cr.regressions:
        raise Exit(code=1)  # the summary above said how many


@f.command(
    positional=("before", "after"),
    before=f.Text("the run before the change (as in invoke report)", placeholder="BEFORE", check=FLAGS["run_ids"].check),
    after=f.Text("the run after the change", placeholder="AFTER", check=FLAGS["run_ids"].check),
    title=f.Text("what was tried, one line (required)", placeholder="TITLE"),
    note=f.Text("why / how, free text", placeholder="TEXT"),
    ignore=IGNORE,
    file=f.Path(
        "the log to append to; default: the setting oplog_file (results/optimization-log.md)", placeholder="FILE", check=_writable_file
    ),
)
def log(c, before, after, title=None, note=None, ignore="", file=None):
    """invoke log BEFORE AFTER --title "...": append a dated entry (what changed, key figures, ratio, run ids) to your optimization log."""
    from toolbox.report import oplog

    path, text, _ = oplog.log(settings(), title, before, after, note, path=file, ignore=comma_list(ignore))
    print(text)
    print(f"appended to {path}")
