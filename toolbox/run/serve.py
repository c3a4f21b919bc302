"""serve-bench: serving matrix -> one llama-server per configuration -> load levels -> rows of kind "serve".

Everything that can be wrong is checked before the first container (matrix, SLO, port, images,
devices, llama-server flags the pinned build does not know). Per configuration the server starts
through the one launcher (engine.server: port on 127.0.0.1, /health, log file), then every load level
runs and is written as one row the moment it ends, with the cross-talk verdict and the server's own
counts beside it. If the server dies mid-sweep the finished levels stay, run.json says where it
stopped (`stopped_at`) and `--resume RUN` runs what is missing.

Telemetry: the same sampler as bench (toolbox.run.telemetry, on unless --no-telemetry) samples the
host's sensors into telemetry.jsonl, with an idle baseline before each server, marks when a server
starts and ends, and `level_start` / `row` marks (with the level's case_id) around each measured
load, so energy per level is the samples between them. Tokens per joule per level come from that
window (telemetry stage); a row's `telemetry` field carries them where they were computed.
"""

from __future__ import annotations

import re
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from toolbox.build.images import find_images
from toolbox.build.listing import image_info
from toolbox.build.pins import LABEL_PREFIX, image_versions
from toolbox.engine import devicelock
from toolbox.engine.client import docker_client
from toolbox.engine.container import RUN_ID_LABEL, ContainerSpec, in_container, model_mount, remove_leftovers, tool_help
from toolbox.engine.devices import device_setup, devices_in_log, log_device_ok
from toolbox.engine.server import Server, check_port_free, free_port, start_server
from toolbox.errors import ToolboxError
from toolbox.files import now_iso
from toolbox.llamacpp import SERVE_FLAGS, SERVER_PORT, parse_build_info, row_fa_on_cpu, server_args
from toolbox.run import loadgen
from toolbox.run import serve_stats as st
from toolbox.run.serve_matrix import Level, ServeConfig, ServePlan, expand, load_serve_matrix
from toolbox.settings import Settings
from toolbox.store.rows import make_serve_row
from toolbox.store.runs import RunWriter, load_run


@dataclass
class ServeResult:
    run_id: str | None
    run_dir: Path | None
    plan: ServePlan
    status: str = "planned"
    rows: list[dict] = field(default_factory=list)
    skipped_done: int = 0
    stopped_at: dict | None = None


class ServerDied(Exception):
    """The server exited while it was being measured."""


def server_argv(config: ServeConfig) -> list[str]:
    """The exact llama-server command line of a configuration (inside the container)."""
    return [
        "llama-server",
        "-m",
        in_container(config.model),
        "--host",
        "0.0.0.0",
        "--port",
        str(SERVER_PORT),
        "--metrics",
        "--no-webui",
        *server_args(config.params),
    ]


def check_server_flags(plan: ServePlan, backend: str, help_text: str) -> None:
    """Every flag the plan gives llama-server must be one the image's llama-server documents in --help."""
    used = {"-m", "--host", "--port", "--metrics", "--no-webui"}
    for c in plan.configs:
        if c.backend == backend:
            used |= {w for w in server_args(c.params) if w.startswith("-")}
    for flag in sorted(used):
        if not re.search(rf"(^|[\s,]){re.escape(flag)}([\s,=]|$)", help_text, re.M):
            raise ToolboxError(
                f"the pinned llama-server in the {backend} image does not know {flag}",
                f"remove that parameter from the serving matrix (known: {', '.join(SERVE_FLAGS)})",
            )


def serve_bench(
    settings: Settings,
    *,
    matrix: str = "default",
    backend: str | None = "auto",
    models: list[str] | None = None,
    allow_cpu_vulkan: bool = False,
    dry_run: bool = False,
    resume: str | None = None,
    build_missing: bool = False,
    overrides: dict | None = None,
    slo: str | None = None,
    port: int | None = None,
    argv: list[str] | None = None,
    console=None,
    telemetry: bool | None = None,
) -> ServeResult:
    """`invoke serve-bench`: plan, check, start each configuration's server, run its levels; rows are on disk as they end."""
    import tomllib

    from rich.console import Console

    from toolbox.model import resolve_models
    from toolbox.run.bench import resolve_backends
    from toolbox.run.serve_matrix import validate

    console = console or Console(width=160)
    client = docker_client()
    done: set[str] = set()
    if resume:
        meta, old_rows = load_run(settings.results_dir, resume)
        if meta.get("kind") != "serve":
            raise ToolboxError(
                f"run {meta.get('run_id')} is a {meta.get('kind')} run, not a serving run", "resume it with invoke bench --resume"
            )
        m = meta["matrix"]
        spec, source, text = tomllib.loads(m["toml"]), m["source"], m["toml"]
        validate(spec, source)
        backends, overrides, slo = m["backends"], m.get("overrides", {}), meta.get("slo_text")
        model_paths = [Path(p["path"]) for p in meta.get("models", [])]
        allow_cpu_vulkan = meta.get("allow_cpu_vulkan", allow_cpu_vulkan)
        done = {r["case_id"] for r in old_rows if r.get("status") == "ok" and r.get("case_id")}
    else:
        spec, source, text = load_serve_matrix(matrix)
        backends = resolve_backends(backend, spec, settings, client)
        model_paths = resolve_models([Path(m) for m in models] if models else None, settings)
        overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    slo_bounds = st.parse_slo(slo)
    plan = expand(spec, source, text, backends, [str(p) for p in model_paths], overrides)
    if not plan.configs:
        raise ToolboxError("every server configuration of the matrix is refused by llama.cpp", plan.removed[0][1] if plan.removed else "")
    if port is not None:
        check_port_free(port)

    from toolbox.build.pins import load_pins

    pins = load_pins(settings.pins_file)
    setups = {b: device_setup(pins.runs_on(b), settings.host_root, allow_cpu_vulkan) for b in backends}
    images = find_images(settings, client, backends, build_missing)
    for b, tag in images.items():
        check_server_flags(plan, b, tool_help(client, tag, "llama-server", settings.cache_dir))
    result = ServeResult(None, None, plan)
    print_plan(console, plan, images, slo_bounds)
    if dry_run:
        return result

    what = f"invoke serve-bench --matrix {matrix}" + (f" --resume {resume}" if resume else "")
    say = lambda line: console.print(line, markup=False, soft_wrap=True)  # noqa: E731
    with devicelock.hold(settings.lock_dir, setups.values(), what=what, say=say) as waited:  # one benchmark per device
        run_facts = {"argv": argv or sys.argv, "slo": slo_bounds, "slo_text": slo, "allow_cpu_vulkan": allow_cpu_vulkan}
        writer = _open_run(settings, client, resume, plan, backends, overrides, run_facts, images, model_paths)
        writer.update(
            busy_at_start=devicelock.busy_at_start(settings.lock_dir, settings.host_root, waited)
            | {"waited_s": round(sum(waited.values()), 3)}
        )
        from toolbox.run.telemetry import start_for_run

        sampler = start_for_run(settings, writer, settings.telemetry if telemetry is None else telemetry)
        try:
            return _sweep(settings, client, writer, plan, images, setups, slo_bounds, done, port, result, console, sampler)
        finally:
            if sampler is not None:
                sampler.close()


def _open_run(settings, client, resume, plan, backends, overrides, run_facts: dict, images, model_paths) -> RunWriter:
    """Reopen the run to resume, or create a new one with everything its numbers depend on."""
    if resume:
        writer = RunWriter.open(settings.results_dir, resume)
        writer.update(status="running", resumed_at=now_iso(), stopped_at=None)
        return writer
    from toolbox.files import check_writable
    from toolbox.host.facts import snapshot
    from toolbox.model import model_identity

    check_writable(settings.results_dir, directory=True)
    return RunWriter.create(
        settings.results_dir,
        {
            "kind": "serve",
            **run_facts,
            "settings": settings.model_dump(mode="json"),
            "matrix": plan.to_json() | {"backends": backends, "overrides": overrides},
            "images": {b: image_info(client, t) for b, t in images.items()},
            "models": [model_identity(p, settings) for p in model_paths],
            "host": snapshot(settings.host_root),
            "servers": {},
        },
    )


def _sweep(
    settings, client, writer: RunWriter, plan: ServePlan, images, setups, slo, done, port, result, console, telemetry
) -> ServeResult:
    result.run_id, result.run_dir = writer.run_id, writer.path
    status = "complete"
    t0 = time.monotonic()
    try:
        for config in plan.configs:
            todo = [lv for lv in plan.levels if config.case_id(lv, plan.load) not in done]
            result.skipped_done += len(plan.levels) - len(todo)
            if todo:
                _run_config(settings, client, writer, plan, config, todo, images, setups, slo, port, result, console, telemetry)
    except ServerDied as exc:
        status = "failed"
        result.stopped_at = exc.args[0]
        writer.update(stopped_at=exc.args[0])
    except KeyboardInterrupt:
        status = "interrupted"
        writer.update(interrupted_by="SIGINT")
    except ToolboxError as exc:  # a server that does not start: recorded in the run, then one line to the user
        writer.update(error=str(exc), wall_seconds=round(time.monotonic() - t0, 3))
        writer.finish("failed")
        raise
    finally:
        remove_leftovers(client, writer.run_id)
    writer.update(wall_seconds=round(time.monotonic() - t0, 3))
    writer.finish(status)
    result.status = status
    return result


def _run_config(
    settings, client, writer, plan, config: ServeConfig, levels: list[Level], images, setups, slo, port, result, console, telemetry
):
    """Start this configuration's server, run its missing levels (a row each), stop it."""
    spec = ContainerSpec(
        images[config.backend],
        server_argv(config),
        setups[config.backend],
        {},
        model_mount(config.model),
        {RUN_ID_LABEL: writer.run_id, "org.strix-toolbox.serve-config": config.config_id},
    )
    log = writer.logs_dir / f"server-{config.config_id}.log"
    console.print(f"server {config.backend} {config.label()}: starting", markup=False)
    if telemetry is not None:
        telemetry.idle(threading.Event(), group=config.config_id)  # the idle baseline: no server, no model loaded
        telemetry.mark("container_start", group=config.config_id)
    server = start_server(
        client, spec, port=port or free_port(), container_port=SERVER_PORT, log_path=log, ready_timeout_s=plan.ready_timeout_s
    )
    try:
        facts = _server_facts(server, config, setups[config.backend])
        writer.update(servers=writer.meta.get("servers", {}) | {config.config_id: facts | {"argv": spec.argv, "log": log.name}})
        alone = _crosstalk_references(server, plan, levels)
        for level in levels:
            row = _run_level(server, writer, plan, config, level, images, facts, slo, alone, telemetry)
            result.rows.append(row)
            console.print(_progress_line(row), markup=False)
    except ServerDied as exc:
        raise ServerDied(exc.args[0] | {"config_id": config.config_id, "server": config.label()}) from None
    finally:
        server.stop()
        if telemetry is not None:
            telemetry.mark("container_end", group=config.config_id)


def _alive_or_raise(server: Server, level: Level | None) -> None:
    running, code = server.status()
    if not running:
        raise ServerDied(
            {"level": level.name if level else None, "reason": f"llama-server exited (code {code})", "log_tail": server.log_tail()}
        )


def _server_facts(server: Server, config: ServeConfig, setup) -> dict:
    """What the server says about itself: build, slots, context; and whether it runs on the intended device."""
    import httpx

    try:
        props = httpx.get(f"{server.url}/props", timeout=10).json()
    except (httpx.HTTPError, ValueError):
        props = {}
    number, commit = parse_build_info(props.get("build_info"))
    devices = devices_in_log(server.log_path.read_text(errors="replace")) if server.log_path.exists() else []
    return {
        "build_number": number,
        "build_commit": commit,
        "total_slots": props.get("total_slots"),
        "n_ctx": (props.get("default_generation_settings") or {}).get("n_ctx"),
        "devices": devices,
        "device_ok": log_device_ok(setup.backend, setup.target, devices),  # the backend the image runs as (rocm-debian: rocm)
    }


def _crosstalk_bodies(plan: ServePlan, n: int) -> tuple[list[str], list[dict]]:
    """n distinct prompts for the cross-talk check and their greedy requests (no prompt cache: every answer computed anew)."""
    prompts = st.make_prompts(n, 32, seed=plan.seed, salt="crosstalk")
    return prompts, [loadgen.payload(p, plan.crosstalk_tokens, seed=plan.seed, cache_prompt=False) for p in prompts]


def _crosstalk_references(server: Server, plan: ServePlan, levels: list[Level]) -> list:
    """Each cross-talk prompt's answer alone (one request at a time), once per server."""
    n = max((int(lv.value) for lv in levels if lv.mode == "concurrency"), default=0)
    if not plan.crosstalk_tokens or not n:
        return []
    records, _ = loadgen.run_level(
        f"{server.url}/v1/completions", _crosstalk_bodies(plan, n)[1], concurrency=1, timeout_s=plan.request_timeout_s
    )
    _alive_or_raise(server, None)
    return records


def _crosstalk(server: Server, plan: ServePlan, level: Level, alone: list) -> dict:
    """The level's concurrency of distinct prompts sent together, each answer against the same prompt's answer alone."""
    k = int(level.value)
    prompts, bodies = _crosstalk_bodies(plan, k)
    together, _ = loadgen.run_level(f"{server.url}/v1/completions", bodies, concurrency=k, timeout_s=plan.request_timeout_s)
    if any(r.error for r in together):
        _alive_or_raise(server, level)
    return st.crosstalk_verdict(prompts, alone[:k], together)


def _run_level(server: Server, writer, plan: ServePlan, config: ServeConfig, level: Level, images, facts, slo, alone, telemetry) -> dict:
    n = plan.requests_at(level)
    salt = f"{level.name}"
    lengths = st.draw_lengths(plan.load["prompt_tokens"], n, plan.seed, salt)
    prompts = st.make_prompts(n, lengths, seed=plan.seed, salt=salt, shared_prefix=int(plan.load.get("shared_prefix", 0)))
    bodies = [loadgen.payload(p, int(plan.load["output_tokens"]), seed=plan.seed) for p in prompts]
    url = f"{server.url}/v1/completions"
    before = loadgen.fetch_metrics(server.url)
    case_id = config.case_id(level, plan.load)
    if telemetry is not None:
        telemetry.mark("level_start", group=config.config_id, case_id=case_id, level=level.name)
    kwargs = {"concurrency": int(level.value)} if level.mode == "concurrency" else {"rate": level.value, "seed": plan.seed}
    records, wall = loadgen.run_level(url, bodies, timeout_s=plan.request_timeout_s, **kwargs)
    if telemetry is not None:
        telemetry.mark("row", group=config.config_id, case_id=case_id)  # the level's window ends here
    if any(r.error for r in records):
        _alive_or_raise(server, level)
    after = loadgen.fetch_metrics(server.url)
    metrics = st.summarize_level(records, wall, slo)
    crosstalk = _crosstalk(server, plan, level, alone) if alone and level.mode == "concurrency" else None
    ok = metrics["n_ok"] > 0
    labels = writer.meta.get("images", {}).get(config.backend, {}).get("labels") or {}
    row = make_serve_row(
        metrics,
        [r.to_json() for r in records],
        case_id=case_id,
        group_id=config.config_id,
        config_id=config.config_id,
        status="ok" if ok else "failed",
        error=None if ok else metrics["first_error"],
        backend=config.backend,
        image=images[config.backend],
        image_digest=writer.meta.get("images", {}).get(config.backend, {}).get("id"),
        versions=image_versions(labels),  # Mesa, ROCm, the tree
        model_sha256={m["path"]: m["sha256"] for m in writer.meta.get("models", [])}.get(config.model),
        model_filename=Path(config.model).name,
        device_ok=facts.get("device_ok"),
        fa_on_cpu=row_fa_on_cpu(config.params, labels.get(f"{LABEL_PREFIX}.cmake-flags")),  # flash attention without a GPU kernel
        level=level.name,
        mode=level.mode,
        concurrency=int(level.value) if level.mode == "concurrency" else None,
        rate=level.value if level.mode == "rate" else None,
        server=config.params,
        load={k: v for k, v in plan.load.items() if k not in ("concurrency", "rate")} | {"requests": len(bodies)},
        crosstalk=crosstalk,
        server_check=st.server_check(records, before, after),
        slo=slo or None,
        build_commit=facts.get("build_commit"),
        build_number=facts.get("build_number"),
    )
    return writer.append(row)


def _progress_line(row: dict) -> str:
    ct = (row.get("crosstalk") or {}).get("verdict", "-")
    return (
        f"  {row['level']:>6}: {row['n_ok']}/{row['n_requests']} ok, {row['output_tps']:.1f} tok/s, {row['req_per_s']:.2f} req/s, "
        f"ttft p90 {row['ttft_ms_p90'] or 0:.0f} ms, itl p90 {row['itl_ms_p90'] or 0:.1f} ms, cross-talk {ct}"
    )


def print_plan(console, plan: ServePlan, images: dict, slo: dict) -> None:
    """What will run: each configuration's llama-server command line, the levels, the load, the SLO."""
    console.print(f"serving matrix {plan.name}: {len(plan.configs)} server configuration(s) x {len(plan.levels)} level(s)", markup=False)
    for c in plan.configs:
        console.print(f"  {c.backend} ({images.get(c.backend)}): {' '.join(server_argv(c))}", markup=False, soft_wrap=True)
    for params, why in plan.removed:
        console.print(f"  removed {params}: {why}", markup=False)
    levels = ", ".join(f"{lv.name} ({plan.requests_at(lv)} requests)" for lv in plan.levels)
    load = plan.load
    console.print(
        f"  levels: {levels}; prompts {load['prompt_tokens']} words (shared prefix {load.get('shared_prefix', 0)}), "
        f"{load['output_tokens']} tokens out; cross-talk check {plan.crosstalk_tokens or 'off'} tokens; "
        f"SLO {st.slo_text(slo) if slo else 'none'}",
        markup=False,
    )
