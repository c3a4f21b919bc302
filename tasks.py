"""invoke tasks: read flags, call one function of the toolbox package, print the result.

`invoke --list` shows the tasks; `invoke --help <task>` explains every flag.
"""

from __future__ import annotations

import functools
import sys

from invoke import Collection, Exit, task

from toolbox.errors import ToolboxError


def _one_line_errors(fn):
    """Turn a ToolboxError into `invoke.Exit(message, 2)`: one line, no traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ToolboxError as exc:
            raise Exit(f"error: {exc}", code=2) from None
        except KeyboardInterrupt:
            raise Exit("interrupted", code=130) from None

    return wrapper


def _console():
    """rich console; when output is not a terminal (a pipe, a log file, CI) use a wide page instead of 80 columns."""
    from rich.console import Console

    console = Console()
    return console if console.is_terminal else Console(width=160)


def _settings(**overrides):
    from toolbox.settings import load_settings

    return load_settings(**overrides)


# --- images (toolbox.images) -------------------------------------------------


@task(
    help={
        "backend": "rocm, vulkan, cpu (or rocm-debian: ROCm from Debian's packages, offline-capable)",
        "offline": "no registry, no git: base bootstrapped from Debian's archive, llama.cpp from --source or PyPI's llama-cpp-python sdist",
        "source": "llama.cpp source: a directory or tarball (verified against the pinned tree hash)",
        "force": "rebuild even if an image with the same inputs exists",
        "check": "only configure with the pinned flags and compile a few units (the HIP check CI runs without a GPU)",
    },
)
@_one_line_errors
def build(c, backend, offline=False, source=None, force=False, check=False):
    """Build the pinned llama.cpp image for one backend (answers 'up to date' if nothing changed)."""
    from toolbox.images import build as build_image

    r = build_image(_settings(), backend, offline=offline or None, source=source, force=force, check=check)
    if check:
        print(f"{backend}: check passed in {r.seconds:.0f} s (configure with the pinned flags + representative units); log: {r.log}")
        return
    state = "up to date" if r.up_to_date else f"built in {r.seconds:.0f} s"
    print(f"{r.tag}: {state}, {r.size_bytes / 1e6:.0f} MB, llama.cpp {r.labels.get('org.strix-toolbox.llama-commit', '?')[:12]} (b{r.labels.get('org.strix-toolbox.llama-build-number', '?')})")


@task
@_one_line_errors
def images(c):
    """List the built toolbox images with their pins, installed versions, sizes and age."""
    from rich.console import Console
    from rich.table import Table

    from toolbox.images import list_images

    rows = list_images(_settings())
    if not rows:
        print("no toolbox images yet: invoke build cpu (add --offline without a registry)")
        return
    table = Table(caption="*: built from the current pins (what invoke bench uses)")
    table.add_column("tag", no_wrap=True)
    for name in ("backend", "llama.cpp", "mesa", "rocm", "MB", "created"):
        table.add_column(name, overflow="fold")
    for r in rows:
        table.add_row(r["tag"] + (" *" if r["current"] else ""), r["backend"], f"{r['llama_commit'][:8]} b{r['build_number']}", r["mesa"] or "", r["rocm"] or "", str(r["size_mb"]), r["created"][:16].replace("T", " "))
    _console().print(table)


# --- bench (toolbox.bench) ---------------------------------------------------


@task(
    help={
        "matrix": "preset name (invoke bench --list) or a TOML file; default: default",
        "backend": "rocm, vulkan, cpu, a comma list, or auto (rocm if /dev/kfd and its image exist, else vulkan with a GPU render node, else cpu)",
        "model": "GGUF file or directory of GGUF files (repeatable); default: the embedded tiny model",
        "allow_cpu_vulkan": "run the vulkan image on Mesa's software driver (lavapipe) when there is no GPU",
        "dry_run": "print the plan and the exact llama-bench command lines, run nothing",
        "resume": "RUN_ID: run only the cases missing from that run",
        "build": "build missing images first",
        "list": "list the matrix presets",
        "repetitions": "override the matrix's repetitions (-r)",
        "cooldown": "seconds to wait between groups (thermals)",
        "shuffle": "shuffle the group order (seeded, recorded) to spread thermal drift",
        "seed": "seed for --shuffle",
        "check": "after the run, check each configuration's logits against the cpu image's f16 KV (invoke check) and store the verdicts beside the rows",
    },
    iterable=["model"],
    auto_shortflags=False,
)
@_one_line_errors
def bench(c, matrix="default", backend="auto", model=None, allow_cpu_vulkan=False, dry_run=False, resume=None,
          build=False, list=False, repetitions=None, cooldown=None, shuffle=False, seed=None, check=False):
    """Run a llama-bench matrix in the pinned containers; results go to results/<run_id>/."""
    from rich.console import Console

    from toolbox import bench as bench_mod
    from toolbox.matrix import preset_descriptions

    console = _console()
    if list:
        for name, desc in preset_descriptions().items():
            console.print(f"[bold]{name:10}[/bold] {desc}")
        return
    r = bench_mod.bench(
        _settings(), matrix=matrix, backend=backend, models=model, allow_cpu_vulkan=allow_cpu_vulkan, dry_run=dry_run,
        resume=resume, build_missing=build, repetitions=int(repetitions) if repetitions else None,
        cooldown_s=float(cooldown) if cooldown else None, shuffle=shuffle or None, seed=int(seed) if seed else None,
        argv=sys.argv, console=console,
    )
    if dry_run:
        return
    for table in bench_mod.summary_tables(r.rows):
        console.print(table)
    bad_quality = []
    if check and r.status != "interrupted":
        from toolbox import check as chk

        checked = chk.attach_quality(_settings(), r.run_id)
        console.print(chk.render_table(checked, title="correctness check (KL divergence to the cpu image's f16-KV logits)"))
        for line in chk.error_lines(checked):
            console.print(line, markup=False)
        bad_quality = [q for q in checked if q.get("verdict") in (None, "broken")]
    for b, row in {row["backend"]: row for row in r.rows if row.get("build_commit")}.items():
        console.print(f"{b}: llama.cpp {row['build_commit']} (b{row['build_number']}), image {row['image']} ({(row['image_digest'] or '')[:19]})", markup=False)
    console.print(f"run {r.run_id}: {r.status}, {r.ok} rows ok, {r.failed} failed" + (f", {r.skipped_done} already done" if r.skipped_done else ""))
    console.print(f"results: {r.run_dir}/rows.jsonl (run.json: provenance; logs/: llama-bench stderr)")
    if r.status == "interrupted":
        raise Exit(f"interrupted: finished rows are kept; continue with: invoke bench --resume {r.run_id}", code=130)
    if r.failed:
        raise Exit(f"{r.failed} cases failed: see {r.run_dir}/logs/", code=1)
    if bad_quality:
        raise Exit(f"{len(bad_quality)} configurations computed wrong logits or could not be checked: their speed is not a result", code=1)


# --- results (toolbox.results) -----------------------------------------------


@task(
    name="import",
    help={"path": "llama-bench output to import: a md/csv/json/jsonl/sql file, a log holding it, or a directory (walked)",
          "also": "another file or directory to add to the same run (repeatable)"},
    iterable=["also"],
    positional=["path"],
)
@_one_line_errors
def import_(c, path=None, also=None):
    """Turn existing llama-bench output (old logs, any format) into one run beside the new results.

    invoke import old-logs/            one run from every file under old-logs/
    invoke import a.md --also b.jsonl  one run from both
    """
    files = ([path] if path else []) + list(also or [])
    from pathlib import Path

    from rich.console import Console

    from toolbox.results import import_files, load_run

    settings = _settings()
    run_id = import_files([Path(f) for f in files or []], settings.results_dir, argv=sys.argv)
    meta, rows = load_run(settings.results_dir, run_id)
    console = _console()
    for s in meta["sources"]:
        note = f"  [yellow]{s['errors'][0]}[/yellow]" if s["errors"] else ""
        console.print(f"{s['rows']:4} rows  {s['format']:6} {s['path']}{note}", soft_wrap=True)
    console.print(f"run {run_id}: {len(rows)} rows imported into {settings.results_dir / run_id}")


@task(help={"json": "print the list as JSON"})
@_one_line_errors
def results(c, json=False):
    """List the runs: when, what kind, backends, models, rows ok / failed, status."""
    import json as json_module

    from rich.console import Console
    from rich.table import Table

    from toolbox.results import list_runs

    settings = _settings()
    runs = list_runs(settings.results_dir)
    if json:
        print(json_module.dumps(runs, indent=2))
        return
    if not runs:
        print(f"no runs in {settings.results_dir}: invoke bench, or invoke import FILE...")
        return
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
        table.add_row(r["run_id"], (r["started_at"] or "")[:16].replace("T", " "), r["kind"] or "", status,
                      "; ".join(r["backends"]), models, str(r["rows_ok"]), str(r["rows_failed"]))
    _console().print(table)
    for r in runs:
        if r["error"]:
            _console().print(f"{r['run_id']}: {r['error']}", style="yellow", markup=False)


# --- report / compare / export / log (toolbox.report, toolbox.compare, ...) ---


@task(
    help={
        "run_id": "run id (repeatable); default: the latest run",
        "out": "directory for report.md, report.html and the PNGs; default: beside the run",
        "active_params": "MoE only: active parameters per token (e.g. 3.3e9), for the bandwidth / TFLOP figures",
        "no_files": "only print the table, write nothing",
    },
    iterable=["run_id"],
)
@_one_line_errors
def report(c, run_id=None, out=None, active_params=None, no_files=False):
    """Tables in the terminal, report.md / report.html / PNG plots beside the run, distance to the physical limit."""
    from rich.console import Console

    from toolbox import report as rp

    console = _console()
    rep = rp.report(_settings(), run_id or None, out_dir=out, active_params=float(active_params) if active_params else None,
                    write=not no_files)
    rp.render_console(rep, console)
    if rep.files:
        console.print("written: " + ", ".join(str(f) for f in rep.files))


@task(
    help={
        "base": "BASE: a run id, or a llama-bench output file (imported first)",
        "new": "NEW: a run id, or a llama-bench output file (imported first)",
        "threshold": "smallest change that counts as faster / slower, as a fraction (default 0.05 = 5%)",
        "alpha": "significance level of the test (default 0.05)",
        "test": "welch (Welch's t-test, default) or mannwhitney (Mann-Whitney U) on the raw samples",
        "ignore": "identity keys left out of the match, comma list (e.g. backend to compare two images)",
        "markdown": "also write the comparison as Markdown to this file",
    },
)
@_one_line_errors
def compare(c, base, new, threshold=0.05, alpha=0.05, test="welch", ignore="", markdown=None):
    """Join two runs on identity keys: ratio ± uncertainty and a significance mark per test. Exit 1 on any regression."""
    from pathlib import Path

    from rich.console import Console

    from toolbox import compare as cmp

    cr = cmp.compare(_settings(), base, new, threshold=float(threshold), alpha=float(alpha), test=test,
                     ignore=[k.strip() for k in ignore.split(",") if k.strip()])
    cmp.render_console(cr, _console())
    if markdown:
        Path(markdown).write_text(cmp.render_markdown(cr), encoding="utf-8")
        print(f"written: {markdown}")
    if cr.regressions:
        raise Exit(f"{len(cr.regressions)} regression(s) beyond {float(threshold):.0%} (or broken / failed)", code=1)


@task(
    help={
        "run_id": "run id (repeatable); default: the latest run",
        "format": "csv, parquet, sqlite (llama-bench's llama_bench table, for compare-llama-bench.py) or jsonl",
        "out": "output file; default: results/<run_id>/<run_id>.<format>",
        "append": "add to an existing file (sqlite / jsonl) instead of replacing it",
    },
    iterable=["run_id"],
)
@_one_line_errors
def export(c, run_id=None, format="sqlite", out=None, append=False):
    """Export runs as CSV, Parquet, SQLite (readable by llama.cpp's compare-llama-bench.py) or JSONL."""
    from toolbox import export as ex

    path, n = ex.export(_settings(), run_id or None, format, out=out, append=append)
    print(f"{path}: {n} rows")


@task(
    help={
        "title": "what was tried, one line",
        "before": "run id before the change",
        "after": "run id after the change",
        "note": "why / how, free text",
        "ignore": "identity keys left out of the match, comma list",
    },
)
@_one_line_errors
def log(c, title, before, after, note=None, ignore=""):
    """Append a dated entry (what changed, key figures before/after, ratio, run ids) to docs/optimization-log.md."""
    from toolbox import oplog

    path, text, _ = oplog.log(_settings(), title, before, after, note, ignore=[k.strip() for k in ignore.split(",") if k.strip()])
    print(text)
    print(f"appended to {path}")


# --- doctor / compose (toolbox.doctor, toolbox.compose) ----------------------


@task(help={"root": "read sysfs/procfs under this directory instead of / (e.g. a recorded tree in tests/data/hosts/)",
            "json": "print the checks and the host snapshot as JSON instead of a table"})
@_one_line_errors
def doctor(c, root=None, json=False):
    """Is this host ready for llama.cpp on Strix Halo? OK / WARN / FAIL per check, with the fix. Exit 1 on any FAIL."""
    import json as json_module

    import docker
    from rich.console import Console

    from toolbox import doctor as dr
    from toolbox.host import snapshot

    settings = _settings(host_root=root)
    try:
        client = docker.from_env()
        labels = dr.newest_image_labels(client, "rocm")
    except docker.errors.DockerException:
        client, labels = None, None  # docker_checks reports the daemon problem itself
    checks = dr.run_checks(settings, docker_client=client, image_labels=labels)
    snap = snapshot(settings.host_root)
    if json:
        print(json_module.dumps({"host": snap, "checks": [ch.to_dict() for ch in checks]}, indent=2))
    else:
        _console().print(dr.render(checks, snap["machine"]))
    if any(ch.status == "FAIL" for ch in checks):
        raise Exit(code=1)


@task(help={"write_matrices": "regenerate containers/compose/matrices/*.args from the matrix presets"})
@_one_line_errors
def compose_env(c, write_matrices=False):
    """Print the .env compose.yaml needs (numeric device GIDs, machine identity): invoke compose-env > .env"""
    from toolbox import compose

    if write_matrices:
        for path in compose.write_matrices():
            print(f"wrote {path}", file=sys.stderr)
    print(compose.compose_env(_settings()), end="")


# --- check (toolbox.check) ---------------------------------------------------


@task(
    help={
        "backend": "rocm, vulkan, cpu, a comma list, or auto (as bench: the best backend this host can run)",
        "model": "GGUF file or directory of GGUF files (repeatable); default: the embedded tiny model",
        "kv": "KV cache configurations, comma list of TYPE_K/TYPE_V[/FA] (FA: on, off or auto, the default); default f16/f16",
        "allow_cpu_vulkan": "run the vulkan image on Mesa's software driver (lavapipe) when there is no GPU",
        "reference": "a model whose logits (cpu image, f16 KV) are the base for every --model, e.g. the F16 original of a quant",
        "ctx": "tokens per window (the last half of each is scored); default 128",
        "chunks": "windows of the check text; default 8 (504 scored tokens at ctx 128)",
        "json": "print the results as JSON",
    },
    iterable=["model"],
    auto_shortflags=False,
)
@_one_line_errors
def check(c, backend="auto", model=None, kv="f16/f16", allow_cpu_vulkan=False, reference=None, ctx=128, chunks=8, json=False):
    """Are the logits right? KL divergence of each backend / KV configuration to the cpu image's f16-KV logits. Exit 1 on broken or failed."""
    import json as json_module
    from pathlib import Path

    from rich.console import Console

    from toolbox import check as chk
    from toolbox import model as model_mod
    from toolbox.bench import resolve_backends
    from toolbox.images import docker_client

    settings = _settings()
    console = _console()
    backends = resolve_backends(backend, {}, settings, docker_client())
    models = model_mod.resolve_models([Path(m) for m in model] if model else None, settings)
    ref = model_mod.resolve_models([Path(reference)], settings)[0] if reference else None
    done = []

    def progress(r):
        done.append(r)
        if not json:
            console.print(f"checked {r['backend']} {r['type_k']}/{r['type_v']} on {Path(r['model']).name}: "
                          f"{r['verdict'] or 'error'} in {r['seconds']:.1f} s", markup=False)

    out = chk.run_check(settings, backends=backends, models=models, kv=chk.parse_kv(kv), allow_cpu_vulkan=allow_cpu_vulkan,
                        reference=ref, ctx=int(ctx), chunks=int(chunks), on_result=progress)
    if json:
        print(json_module.dumps(out, indent=2, default=str))
    else:
        for path, base in {r["base"]["path"]: r["base"] for r in out}.items():
            ppl_base = next((r["ppl_base"] for r in out if r["base"]["path"] == path and r.get("ppl_base") is not None), None)
            console.print(chk.describe_base(base, ppl_base), markup=False)
        console.print(chk.render_table(out))
        for line in chk.error_lines(out):
            console.print(line, style="red", markup=False, soft_wrap=True)
    bad = [r for r in out if r["verdict"] != "same" and r["verdict"] != "degraded"]
    if bad:
        raise Exit(f"{len(bad)} configuration(s) broken or not checked", code=1)


ns = Collection.from_module(sys.modules[__name__])
