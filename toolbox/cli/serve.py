"""Task: serve-bench (toolbox.run.serve): llama-server in the pinned image under a load generator.

A task of its own beside bench: its rows are serving levels (latency percentiles, goodput, cross-talk),
not llama-bench tests; its dimensions are load as well as settings; and it keeps one server alive
across the levels of a configuration instead of one llama-bench process per group.
"""

from __future__ import annotations

import sys

from toolbox.cli import flags as f
from toolbox.cli.common import FLAGS, comma_list, console, exit_with, settings
from toolbox.errors import ToolboxError


def _matrix(name: str) -> None:
    from toolbox.run.serve_matrix import load_serve_matrix

    load_serve_matrix(name)


def _slo(text: str) -> None:
    from toolbox.run.serve_stats import parse_slo

    parse_slo(text)


def _numbers(text: str, kind=float) -> list:
    """'1,2,4' -> [1, 2, 4]: positive numbers (whole ones for kind=int); anything else is a one-line error."""
    out = []
    for word in comma_list(text):
        try:
            value = kind(word)
        except ValueError:
            value = None
        if value is None or value <= 0 or value != value:
            what = "whole numbers" if kind is int else "numbers"
            raise ToolboxError(f"{word!r} is not one of a comma list of positive {what}", "e.g. 1,2,4,8" if kind is int else "e.g. 0.5,1,2")
        out.append(value)
    if not out:
        raise ToolboxError("no value given", "e.g. 1,2,4,8")
    return out


def _levels(text: str) -> None:
    _numbers(text, int)


def _rates(text: str) -> None:
    _numbers(text, float)


def _port(port: int) -> None:
    from toolbox.engine.server import check_port_free

    check_port_free(port)


@f.command(
    matrix=f.Text("serving preset (invoke serve-bench --list) or a TOML file; default: default", placeholder="MATRIX", check=_matrix),
    backend=FLAGS["backend"],
    model=FLAGS["model"],
    allow_cpu_vulkan=FLAGS["allow_cpu_vulkan"],
    concurrency=f.Text("closed-loop levels, comma list (replaces the matrix's levels), e.g. 1,2,4,8", placeholder="N,N,...", check=_levels),
    rate=f.Text("open-loop levels in requests/s, Poisson arrivals, comma list, e.g. 0.5,1,2", placeholder="R,R,...", check=_rates),
    requests=f.Int("requests per level (at least 2 x the concurrency)", low=1),
    prompt_tokens=f.Int("prompt length in words (about one token each)", low=1, placeholder="N"),
    output_tokens=f.Int("tokens generated per request (end of text ignored)", low=1, placeholder="N"),
    crosstalk_tokens=f.Int("tokens per answer in the cross-talk check; 0 turns it off", low=0, placeholder="N"),
    slo=f.Text('latency bounds for goodput, e.g. "ttft<2s,itl<100ms" (keys ttft, itl, e2e; units ms, s)', placeholder="BOUNDS", check=_slo),
    request_timeout=f.Number("seconds one request may take before it is cut off and counted as an error", above=0, placeholder="SECONDS"),
    port=f.Flag("port on 127.0.0.1 for the server; default: a free one", "int", "PORT", low=1, high=65535, check=_port),
    resume=f.Text(
        "run the levels missing from that serving run (an id as in invoke report)", placeholder="RUN", check=FLAGS["run_ids"].check
    ),
    build=f.Switch("build missing images first"),
    dry_run=f.Switch("print the plan and the exact llama-server command lines, run nothing"),
    list=f.Switch("list the serving presets"),
    no_telemetry=f.Switch("do not sample power, clocks and temperatures (default: sampled into telemetry.jsonl where any sensor exists)"),
)
def serve_bench(
    c,
    matrix="default",
    backend="auto",
    model=None,
    allow_cpu_vulkan=False,
    concurrency=None,
    rate=None,
    requests=None,
    prompt_tokens=None,
    output_tokens=None,
    crosstalk_tokens=None,
    slo=None,
    request_timeout=None,
    port=None,
    resume=None,
    build=False,
    dry_run=False,
    list=False,
    no_telemetry=False,
):
    """Serve the model with llama-server in the pinned image and sweep load levels; rows go to results/<run_id>/."""
    out = console()
    if list:
        import tomllib

        from toolbox.run.serve_matrix import serve_presets

        for name, path in sorted(serve_presets().items()):
            out.print(f"[bold]{name:10}[/bold] {tomllib.loads(path.read_text()).get('description', '')}")
        return
    from toolbox.quality import gate
    from toolbox.report.serve_view import print_serve
    from toolbox.run.serve import serve_bench as run_serve

    overrides = {
        "concurrency": _numbers(concurrency, int) if concurrency else None,
        "rate": _numbers(rate) if rate else None,
        "requests": requests,
        "prompt_tokens": prompt_tokens,
        "output_tokens": output_tokens,
        "crosstalk_tokens": crosstalk_tokens,
        "request_timeout_s": request_timeout,
    }
    r = run_serve(
        settings(),
        matrix=matrix,
        backend=backend,
        models=model,
        allow_cpu_vulkan=allow_cpu_vulkan,
        dry_run=dry_run,
        resume=resume,
        build_missing=build,
        overrides=overrides,
        slo=slo,
        port=port,
        argv=sys.argv,
        console=out,
        telemetry=False if no_telemetry else None,
    )
    if dry_run:
        return
    from toolbox.analysis.energy import attach_energy
    from toolbox.store.runs import load_run

    attach_energy(r.run_dir.parent, r.run_id)  # tokens per joule per level, where telemetry measured power
    rows = load_run(r.run_dir.parent, r.run_id)[1]
    print_serve(out, rows)
    out.print(f"run {r.run_id}: {r.status}, {len(r.rows)} levels measured" + (f", {r.skipped_done} already done" if r.skipped_done else ""))
    out.print(f"results: {r.run_dir}/rows.jsonl (run.json: provenance; logs/: llama-server logs)")
    exit_with(gate.serve_exit(r.status, r.run_id, r.stopped_at, r.rows))
