"""Tasks: bench (toolbox.run.bench), check (toolbox.quality.check)."""

from __future__ import annotations

import sys

from toolbox.cli import flags as f
from toolbox.cli.common import FLAGS, console, exit_with, settings


def _matrix(name: str) -> None:
    from toolbox.run.matrix import load_matrix

    load_matrix(name)


def _workers(text: str) -> None:
    from toolbox.engine.rpc import parse_workers

    parse_workers(text)


def _engine(text: str) -> None:
    from toolbox.engine.client import engine_url

    engine_url(text)


def _fleet(out, s, hosts, matrix, backend, model, allow_cpu_vulkan, dry_run, build, repetitions, cooldown, shuffle, seed, rpc):
    """--host: the plan on every host in parallel; one line per host as it ends, the campaign id, exit 1 if any failed."""
    from toolbox.run.fleet import fleet_exit, run_fleet

    def done(o):
        what = f"error: {o.error}" if o.error else f"run {o.run_id}: {o.status}, {o.ok} rows ok, {o.failed} failed"
        out.print(f"host {o.host}: {what}", markup=False, style="red" if o.error else None)

    campaign, outcomes = run_fleet(
        s,
        hosts,
        on_done=done,
        matrix=matrix,
        backend=backend,
        models=model,
        allow_cpu_vulkan=allow_cpu_vulkan,
        dry_run=dry_run,
        build_missing=build,
        repetitions=repetitions,
        cooldown_s=cooldown,
        shuffle=shuffle or None,
        seed=seed,
        rpc=rpc or None,
        argv=sys.argv,
    )
    out.print(f"campaign {campaign}: invoke report --campaign {campaign}", markup=False)
    exit_with(fleet_exit(outcomes))


def _kv(text: str) -> None:
    from toolbox.quality.check import parse_kv

    parse_kv(text)


@f.command(
    matrix=f.Text("preset name (invoke bench --list) or a TOML file; default: default", placeholder="MATRIX", check=_matrix),
    backend=FLAGS["backend"],
    model=FLAGS["model"],
    allow_cpu_vulkan=FLAGS["allow_cpu_vulkan"],
    dry_run=f.Switch("print the plan and the exact llama-bench command lines, run nothing"),
    resume=f.Text("run only the cases missing from that run (an id as in invoke report)", placeholder="RUN", check=FLAGS["run_ids"].check),
    build=f.Switch("build missing images first (offline by itself when no registry answers)"),
    offline=f.Switch(
        "build missing images offline: the base from Debian's archive, llama.cpp from PyPI's sdist (as invoke build --offline)"
    ),
    list=f.Switch("list the matrix presets"),
    repetitions=f.Int("override the matrix's repetitions (llama-bench -r)", low=1),
    cooldown=f.Number("seconds to wait between groups (thermals)", low=0, placeholder="SECONDS"),
    shuffle=f.Switch("shuffle the group order (seeded, recorded) to spread thermal drift"),
    seed=f.Int("seed for --shuffle", low=0),
    no_telemetry=f.Switch(
        "do not sample power, clocks and temperatures during the run (default: sampled into telemetry.jsonl where any sensor exists)"
    ),
    rpc=f.Text(
        "RPC workers HOST:PORT[,HOST:PORT...] (HOST:PORT@DOCKER_CONTEXT for a worker on another machine's engine); "
        "repeat to measure several worker lists, 'none' for this machine alone; replaces the matrix's rpc",
        placeholder="WORKERS",
        repeatable=True,
        check=_workers,
    ),
    host=f.Text(
        "run the same plan on this machine's Docker engine: a Docker context name or an engine URL (ssh://user@host); "
        "repeat for a fleet: the hosts run in parallel, one run per host, grouped under a campaign id",
        placeholder="CONTEXT",
        repeatable=True,
        check=_engine,
    ),
    check=f.Switch(
        "after the run, check each configuration's logits against the cpu image's f16 KV (invoke check); "
        "the verdicts are stored beside the rows"
    ),
    no_wait=FLAGS["no_wait"],
)
def bench(
    c,
    matrix="default",
    backend="auto",
    model=None,
    allow_cpu_vulkan=False,
    dry_run=False,
    resume=None,
    build=False,
    offline=False,
    list=False,
    repetitions=None,
    cooldown=None,
    shuffle=False,
    seed=None,
    no_telemetry=False,
    rpc=None,
    host=None,
    check=False,
    no_wait=False,
):
    """Run a llama-bench matrix in the pinned containers; results go to results/<run_id>/."""
    out = console()
    if list:
        from toolbox.run.matrix import preset_descriptions

        for name, desc in preset_descriptions().items():
            out.print(f"[bold]{name:10}[/bold] {desc}")
        return
    from toolbox.llamacpp import build_text
    from toolbox.quality import gate
    from toolbox.run import bench as run_bench

    s = settings(offline=True if offline else None)
    if host:
        return _fleet(out, s, host, matrix, backend, model, allow_cpu_vulkan, dry_run, build, repetitions, cooldown, shuffle, seed, rpc)
    r = run_bench.bench(
        s,
        matrix=matrix,
        backend=backend,
        models=model,
        allow_cpu_vulkan=allow_cpu_vulkan,
        dry_run=dry_run,
        resume=resume,
        build_missing=build,
        repetitions=repetitions,
        cooldown_s=cooldown,
        shuffle=shuffle or None,
        seed=seed,
        telemetry=False if no_telemetry else None,
        rpc=rpc or None,
        argv=sys.argv,
        console=out,
        wait=not no_wait,
    )
    if dry_run:
        return
    from toolbox.report.summary import summary_notes, summary_tables, telemetry_line

    line = telemetry_line(s.results_dir, r.run_id)
    rows = r.rows
    checked = None
    if check and r.status != "interrupted" and not r.error:
        from toolbox.quality.check import attach_quality
        from toolbox.report.quality_view import error_lines, render_table
        from toolbox.store.runs import load_run

        checked = attach_quality(s, r.run_id, wait=not no_wait)
        out.print(render_table(checked, title="correctness check (KL divergence to the cpu image's f16-KV logits)"))
        for line in error_lines(checked):
            out.print(line, markup=False)
        rows = load_run(s.results_dir, r.run_id)[1]  # with the verdicts: broken configurations are greyed below
    for table in summary_tables(rows, s.unstable_spread):
        out.print(table)
    for note in summary_notes(rows, s.unstable_spread):
        out.print(f"warning: {note}", style="yellow", markup=False, soft_wrap=True)
    for b, row in {row["backend"]: row for row in r.rows if row.get("build_commit")}.items():
        llama = build_text(row["build_commit"], row["build_number"])
        out.print(
            f"{b}: llama.cpp {llama}, image {row['image']} ({(row['image_digest'] or '')[:19]})",
            markup=False,
        )
    out.print(
        f"run {r.run_id}: {r.status}, {r.ok} rows ok, {r.failed} failed" + (f", {r.skipped_done} already done" if r.skipped_done else "")
    )
    out.print(f"results: {r.run_dir}/rows.jsonl (run.json: provenance; logs/: llama-bench stderr)")
    if line:
        out.print(line, markup=False, soft_wrap=True)
    exit_with(gate.bench_exit(r.status, r.run_id, r.run_dir, r.failed, checked, r.error))


@f.command(
    backend=FLAGS["backend"],
    model=FLAGS["model"],
    kv=f.Text(
        "KV cache configurations, comma list of TYPE_K/TYPE_V[/FA] (FA: on, off or auto, the default); default f16/f16",
        placeholder="K/V[/FA],...",
        check=_kv,
    ),
    allow_cpu_vulkan=FLAGS["allow_cpu_vulkan"],
    reference=f.Path(
        "a model whose logits (cpu image, f16 KV) are the base for every --model, e.g. the F16 original of a quant",
        placeholder="GGUF",
        check=FLAGS["model"].check,
    ),
    ctx=f.Int("tokens per window (the last half of each is scored); default 128", low=16),
    chunks=f.Int("windows of the check text; default 8 (504 scored tokens at ctx 128)", low=1),
    json=f.Switch("print the results as JSON"),
    no_wait=FLAGS["no_wait"],
)
def check(
    c, backend="auto", model=None, kv="f16/f16", allow_cpu_vulkan=False, reference=None, ctx=128, chunks=8, json=False, no_wait=False
):
    """Are the logits right? KL divergence of each backend / KV configuration to the cpu image's f16-KV logits.

    Exit 1 when a configuration is broken or could not be checked.
    """
    import json as json_module
    from pathlib import Path

    from toolbox.engine.client import docker_client
    from toolbox.model import resolve_models
    from toolbox.quality import gate
    from toolbox.quality.check import parse_kv, run_check
    from toolbox.report.quality_view import describe_base, error_lines, render_table
    from toolbox.run.bench import resolve_backends

    s = settings()
    out = console()
    backends = resolve_backends(backend, {}, s, docker_client(), say=lambda line: out.print(line, markup=False))
    models = resolve_models([Path(m) for m in model] if model else None, s)
    ref = resolve_models([Path(reference)], s)[0] if reference else None

    def progress(r):
        if not json:
            out.print(
                f"checked {r['backend']} {r['type_k']}/{r['type_v']} on {Path(r['model']).name}: "
                f"{r['verdict'] or 'error'} in {r['seconds']:.1f} s",
                markup=False,
            )

    results = run_check(
        s,
        backends=backends,
        models=models,
        kv=parse_kv(kv),
        allow_cpu_vulkan=allow_cpu_vulkan,
        reference=ref,
        ctx=ctx,
        chunks=chunks,
        on_result=progress,
        wait=not no_wait,
    )
    if json:
        print(json_module.dumps(results, indent=2, default=str))
    else:
        for path, base in {r["base"]["path"]: r["base"] for r in results}.items():
            ppl_base = next((r["ppl_base"] for r in results if r["base"]["path"] == path and r.get("ppl_base") is not None), None)
            out.print(describe_base(base, ppl_base), markup=False)
        out.print(render_table(results))
        for line in error_lines(results):
            out.print(line, style="red", markup=False, soft_wrap=True)
    exit_with(gate.check_exit(results))
