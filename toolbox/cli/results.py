"""Tasks: import, results, export (toolbox.store)."""

from __future__ import annotations

import sys

from toolbox.cli import flags as f
from toolbox.cli.common import FLAGS, console, settings
from toolbox.store.export import FORMATS


def _exists(path: str) -> None:
    from pathlib import Path

    from toolbox.errors import ToolboxError

    if not Path(path).expanduser().exists():
        raise ToolboxError(f"{path} does not exist", "give llama-bench output files or directories that hold them")


def _writable(path: str) -> None:
    from toolbox.files import check_writable

    check_writable(path)


@f.command(
    name="import",
    positional=("paths",),
    paths=f.Path(
        "llama-bench output to import: md/csv/json/jsonl/sql files, logs holding it, or directories (walked); one run from all of them",
        variadic=True,
        check=_exists,
    ),
)
def import_(c, paths=None):
    """Turn existing llama-bench output (old logs, any format) into one run beside the new results.

    invoke import old-logs/          one run from every file under old-logs/
    invoke import a.md b.jsonl       one run from both (shell globs work: invoke import logs/*.md)
    Content already imported (the same sha256) is skipped and named; a file with no results says why.
    """
    from pathlib import Path

    from toolbox.store.importer import import_files

    s = settings()
    out = console()
    r = import_files([Path(p) for p in paths or []], s.results_dir, argv=sys.argv)
    for src in r.sources:
        note = f"  {src['errors'][0]}" if src["errors"] else ""
        out.print(f"{src['rows']:4} rows  {src['format']:6} {src['path']}{note}", soft_wrap=True, markup=False)
    for path, run_id in r.already:
        out.print(f"   -  already imported as {run_id}: {path}", soft_wrap=True, markup=False)
    out.print(f"run {r.run_id}: {r.rows} rows imported into {s.results_dir / r.run_id}")


@f.command(json=FLAGS["json"])
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


@f.command(
    positional=("run_ids",),
    run_ids=FLAGS["run_ids"],
    format=f.Text(
        "csv, parquet, sqlite (llama-bench's llama_bench table, for compare-llama-bench.py) or jsonl",
        placeholder="FORMAT",
        choices=FORMATS,
    ),
    out=f.Path("output file; default: results/<run_id>/<run_id>.<format>", placeholder="FILE", check=_writable),
    append=f.Switch("add to an existing file (sqlite / jsonl) instead of replacing it"),
)
def export(c, run_ids=None, format="sqlite", out=None, append=False):
    """Export runs (invoke export [RUN ...]) as CSV, Parquet, SQLite (readable by llama.cpp's compare-llama-bench.py) or JSONL."""
    from toolbox.quality.gate import row_not_counted
    from toolbox.store.export import export as export_runs

    path, n = export_runs(settings(), run_ids or None, format, out=out, append=append, not_counted=row_not_counted)
    print(f"{path}: {n} rows")
