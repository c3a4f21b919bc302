"""Tasks: import, results, export (toolbox.store)."""

from __future__ import annotations

import sys

from invoke import task

from toolbox.cli.common import HELP, console, one_line_errors, settings


@task(
    name="import",
    help={
        "path": "llama-bench output to import: a md/csv/json/jsonl/sql file, a log holding it, or a directory (walked)",
        "also": "another file or directory to add to the same run (repeatable)",
    },
    iterable=["also"],
    positional=["path"],
)
@one_line_errors
def import_(c, path=None, also=None):
    """Turn existing llama-bench output (old logs, any format) into one run beside the new results.

    invoke import old-logs/            one run from every file under old-logs/
    invoke import a.md --also b.jsonl  one run from both
    """
    from pathlib import Path

    from toolbox.store.importer import import_files
    from toolbox.store.runs import load_run

    files = ([path] if path else []) + list(also or [])
    s = settings()
    run_id = import_files([Path(f) for f in files], s.results_dir, argv=sys.argv)
    meta, rows = load_run(s.results_dir, run_id)
    out = console()
    for src in meta["sources"]:
        note = f"  [yellow]{src['errors'][0]}[/yellow]" if src["errors"] else ""
        out.print(f"{src['rows']:4} rows  {src['format']:6} {src['path']}{note}", soft_wrap=True)
    out.print(f"run {run_id}: {len(rows)} rows imported into {s.results_dir / run_id}")


@task(help={"json": "print the list as JSON"})
@one_line_errors
def results(c, json=False):
    """List the runs: when, what kind, backends, models, rows ok / failed, status."""
    from toolbox.store.runs import list_runs

    s = settings()
    runs = list_runs(s.results_dir)
    if json:
        import json as json_module

        print(json_module.dumps(runs, indent=2))
        return
    if not runs:
        print(f"no runs in {s.results_dir}: invoke bench, or invoke import FILE...")
        return
    from rich.table import Table

    table = Table()
    for name in ("run", "started", "kind", "status"):
        table.add_column(name, no_wrap=True)
    for name in ("backends", "models"):
        table.add_column(name, overflow="fold")
    for name in ("ok", "failed"):
        table.add_column(name, justify="right", no_wrap=True)
    for r in runs:
        status = f"[red]{r['status']}[/red]" if r["status"] in ("corrupt", "failed") else str(r["status"])
        models = "; ".join(r["models"][:2]) + (f" +{len(r['models']) - 2} more" if len(r["models"]) > 2 else "")
        table.add_row(
            r["run_id"],
            (r["started_at"] or "")[:16].replace("T", " "),
            r["kind"] or "",
            status,
            "; ".join(r["backends"]),
            models,
            str(r["rows_ok"]),
            str(r["rows_failed"]),
        )
    out = console()
    out.print(table)
    for r in runs:
        if r["error"]:
            out.print(f"{r['run_id']}: {r['error']}", style="yellow", markup=False)


@task(
    help={
        "run_id": HELP["run_ids"],
        "format": "csv, parquet, sqlite (llama-bench's llama_bench table, for compare-llama-bench.py) or jsonl",
        "out": "output file; default: results/<run_id>/<run_id>.<format>",
        "append": "add to an existing file (sqlite / jsonl) instead of replacing it",
    },
    iterable=["run_id"],
)
@one_line_errors
def export(c, run_id=None, format="sqlite", out=None, append=False):
    """Export runs as CSV, Parquet, SQLite (readable by llama.cpp's compare-llama-bench.py) or JSONL."""
    from toolbox.store.export import export as export_runs

    path, n = export_runs(settings(), run_id or None, format, out=out, append=append)
    print(f"{path}: {n} rows")
