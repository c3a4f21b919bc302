"""bench: matrix -> plan -> checks -> containers -> rows on disk.

Everything that can be wrong is checked before the first container starts (models, matrix, images,
devices, flags the pinned llama-bench does not know, a results directory that is not writable).
Rows are written the moment llama-bench prints them; a failing group is recorded and the run goes
on; Ctrl-C keeps every finished row and `--resume RUN_ID` runs only what is missing. What the run
means (summaries, exit codes) is decided above this layer: toolbox.report.summary, toolbox.quality.gate.
"""

from __future__ import annotations

import contextlib
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from toolbox.build.choose import pick_backends
from toolbox.build.images import find_image, find_images
from toolbox.build.pins import LABEL_PREFIX, image_versions, load_pins
from toolbox.engine import devicelock
from toolbox.engine.client import docker_client
from toolbox.engine.container import (
    ContainerSpec,
    in_container,
    model_mount,
    read_log,
    remove_leftovers,
    run_streaming,
    tool_help,
)
from toolbox.engine.devices import row_device_ok
from toolbox.errors import ToolboxError
from toolbox.files import now_iso
from toolbox.llamacpp import BACKENDS, row_fa_fallback, row_fa_on_cpu
from toolbox.parse import parse_jsonl_line
from toolbox.run import hosts
from toolbox.run import plan as plan_view
from toolbox.run.context import RunContext, Stopped, make_context, stop_on_signals
from toolbox.run.matrix import Case, Group, Plan, expand, group_cases, load_matrix, match_case
from toolbox.run.plan import check_flags
from toolbox.run.rpc import check_plan_workers, worker_down
from toolbox.run.telemetry import start_for_run
from toolbox.settings import Settings
from toolbox.store.rows import make_row
from toolbox.store.runs import ResultsWriteError, RunWriter, load_run


@dataclass
class BenchResult:
    run_id: str | None
    run_dir: Path | None
    plan: Plan
    commands: list[tuple[Group, list[str]]] = field(default_factory=list)
    ok: int = 0
    failed: int = 0
    skipped_done: int = 0
    status: str = "planned"
    rows: list[dict] = field(default_factory=list)
    error: str | None = None  # why a run failed as a whole (a full disk)


def resolve_backends(requested: str | None, spec: dict, settings: Settings, client, say=None) -> list[str]:
    """--backend rocm|rocm-debian|vulkan|cpu|auto, or a comma list; auto picks the best one this host can run.

    `rocm` runs on whichever ROCm image is built (rocm, else rocm-debian), and says which (`say`)."""
    say = say or (lambda line: print(line, file=sys.stderr))

    def built(b: str) -> str | None:
        return find_image(settings, b, client)

    def rocm_image(names: list[str]) -> list[str]:
        names, notes = pick_backends(names, built) if "rocm" in names else (names, [])
        for note in notes:
            say(note)
        return names

    if requested and requested != "auto":
        names = [b.strip() for b in requested.split(",") if b.strip()]
        load_pins(settings.pins_file).check_image_names(names, BACKENDS)
        return rocm_image(names)
    if spec.get("images"):  # image variants as a dimension: each its own image, rows say which
        load_pins(settings.pins_file).check_image_names(spec["images"])
        return list(spec["images"])
    if spec.get("backends"):
        return rocm_image(list(spec["backends"]))
    root = settings.host_root
    if (root / "dev" / "kfd").exists() and (built("rocm") or built("rocm-debian")):
        return rocm_image(["rocm"])
    if list((root / "dev" / "dri").glob("renderD*")) if (root / "dev" / "dri").is_dir() else []:
        return ["vulkan"]
    return ["cpu"]


def make_plan(settings: Settings, matrix: str, backends: list[str], models: list[Path], overrides: dict) -> Plan:
    spec, source, text = load_matrix(matrix)
    spec = spec | {k: v for k, v in overrides.items() if v is not None}
    return expand(spec, source, text, backends, [str(m) for m in models])


def bench(
    settings: Settings,
    *,
    matrix: str = "default",
    backend: str | None = "auto",
    models: list[str] | None = None,
    allow_cpu_vulkan: bool = False,
    dry_run: bool = False,
    resume: str | None = None,
    build_missing: bool = False,
    repetitions: int | None = None,
    cooldown_s: float | None = None,
    shuffle: bool | None = None,
    seed: int | None = None,
    telemetry: bool | None = None,
    rpc: list[str] | None = None,
    host: str | None = None,
    campaign: str | None = None,
    argv: list[str] | None = None,
    console=None,
    wait: bool = True,
) -> BenchResult:
    """`invoke bench`: plan, check, run every group, return what was measured (rows are on disk already)."""
    from rich.console import Console

    from toolbox.build.listing import image_info
    from toolbox.model import model_identity, resolve_models

    console = console or Console()
    local = docker_client()
    client = docker_client(host) if host else local  # a fleet's host: its engine runs the containers (toolbox.run.fleet)
    done: set[str] = set()
    if resume:
        meta, old_rows = load_run(settings.results_dir, resume)
        m = meta.get("matrix", {})
        matrix, backends = m.get("source") or matrix, m.get("backends") or [backend]
        model_paths = [Path(p["path"]) for p in meta.get("models", [])]
        overrides = m.get("overrides", {})
        allow_cpu_vulkan = meta.get("allow_cpu_vulkan", allow_cpu_vulkan)
        done = {r["case_id"] for r in old_rows if r.get("status") == "ok" and r.get("case_id")}
    else:
        spec, _, _ = load_matrix(matrix)
        backends = resolve_backends(backend, spec, settings, client, say=lambda line: console.print(line, markup=False))
        model_paths = resolve_models([Path(m) for m in models] if models else None, settings)
        overrides = {"repetitions": repetitions, "cooldown_s": cooldown_s, "shuffle": shuffle, "seed": seed, "rpc": rpc}
    plan = make_plan(settings, matrix, backends, model_paths, overrides)

    # --- checks before any container starts ---
    pins = load_pins(settings.pins_file)
    remote, where = (client, None) if host else (None, dict.fromkeys(backends))  # here: a missing device is said before an image
    transfer, setups = hosts.place(local, None, where, allow_cpu_vulkan, pins.runs_on, settings.host_root) if where else ({}, {})
    images = prepare_images(settings, local, plan, backends, build_missing)
    if remote is not None:
        transfer, setups = hosts.place(local, remote, images, allow_cpu_vulkan, pins.runs_on, settings.host_root)
    commands = [(g, g.args(in_container(g.model), plan.repetitions, plan.warmup)) for g in plan.groups]
    result = BenchResult(None, None, plan, commands)
    plan_view.print_plan(console, plan, images, commands, settings)
    if dry_run:
        return result
    rpc_record = check_plan_workers(client, plan.cases, images)  # reached, same build, link timed: before anything runs
    models_meta = hosts.check_models(client, images, [model_identity(p, settings) for p in model_paths], host) if not resume else None

    what = f"invoke bench --matrix {matrix}" + (f" --resume {resume}" if resume else "")
    say = lambda line: console.print(line, markup=False, soft_wrap=True)  # noqa: E731
    # a fleet's host: its devices are that machine's, not locked here
    with devicelock.hold(settings.lock_dir, [] if host else setups.values(), what=what, wait=wait, say=say) as waited:
        if resume:
            writer = RunWriter.open(settings.results_dir, resume)
            writer.update(status="running", resumed_at=now_iso())
        else:
            _check_writable(settings.results_dir)
            from toolbox.host.facts import snapshot

            writer = RunWriter.create(
                settings.results_dir,
                {
                    "kind": "bench",
                    "argv": argv or sys.argv,
                    "settings": settings.model_dump(mode="json"),
                    "matrix": plan.to_json() | {"backends": backends, "overrides": overrides},
                    "allow_cpu_vulkan": allow_cpu_vulkan,
                    "images": {b: image_info(client, t) for b, t in images.items()},
                    "models": models_meta,
                    **({"rpc": rpc_record} if rpc_record else {}),
                    **({"campaign": campaign} if campaign else {}),
                    **({"engine": host, "image_transfer": transfer} if host else {}),
                    "host": hosts.engine_snapshot(client, host) if host else snapshot(settings.host_root),
                },
            )
        writer.update(
            busy_at_start=devicelock.busy_at_start(settings.lock_dir, settings.host_root, waited)
            | {"waited_s": round(sum(waited.values()), 3)}
        )
        result.run_id, result.run_dir = writer.run_id, writer.path
        if resume and rpc_record:
            writer.update(rpc=rpc_record, rpc_before=writer.meta.get("rpc"))
        ctx = make_context(settings, client, writer, plan, images, setups, rpc_record)
        ctx.telemetry = start_for_run(settings, writer, False if host else settings.telemetry if telemetry is None else telemetry)
        _execute(ctx, result, done, console)
    return result


def _execute(ctx: RunContext, result: BenchResult, done: set[str], console) -> None:
    """Run every group not done yet; Ctrl-C, SIGTERM and SIGHUP end the run as interrupted, rows kept."""
    plan, writer = ctx.plan, ctx.writer
    todo = [c for c in plan.cases if c.case_id not in done]
    result.skipped_done = len(plan.cases) - len(todo)
    groups = [g for g in plan.groups if all(c.case_id not in done for c in g.cases)]
    partial = [c for g in plan.groups if any(c.case_id in done for c in g.cases) for c in g.cases if c.case_id not in done]
    groups += group_cases(partial)

    status = "complete"
    t_start = time.monotonic()
    signals: list[str] = []
    try:
        with stop_on_signals(ctx.stop, signals), plan_view.progress(console) as progress:
            task = progress.add_task("cases", total=len(todo))
            ctx.advance = lambda n: progress.advance(task, n)
            for i, group in enumerate(groups):
                if ctx.stop.is_set():
                    raise Stopped
                progress.update(task, description=f"group {i + 1}/{len(groups)} ({group.backend}, {len(group.cases)} cases)")
                if ctx.telemetry is not None:
                    ctx.telemetry.idle(ctx.stop, group.group_id)
                run_group(ctx, result, group)
                if plan.cooldown_s and i + 1 < len(groups):
                    ctx.stop.wait(plan.cooldown_s)
    except (Stopped, KeyboardInterrupt):
        ctx.stop.set()
        status = "interrupted"
        writer.update(interrupted_by=signals[0] if signals else "SIGINT")
    except ResultsWriteError as exc:  # disk full or an I/O error: the run ends here, every row on disk is kept
        ctx.stop.set()
        status = "failed"
        result.error = str(writer.write_error(exc.os_error, exc.path, len(todo) - result.ok - result.failed))
    finally:
        # a second Ctrl-C can land while a container is being created: remove whatever this run left
        remove_leftovers(ctx.client, writer.run_id)
        if ctx.telemetry is not None:
            with contextlib.suppress(OSError):
                ctx.telemetry.close()
    if status == "complete" and result.ok == 0 and result.failed:
        status = "failed"
    result.status = status
    try:
        writer.update(wall_seconds=round(time.monotonic() - t_start, 3), **({"error": result.error} if result.error else {}))
        writer.finish(status)
        plan_view.remember(ctx.settings, writer.meta, result.rows)
    except (ResultsWriteError, OSError) as exc:
        result.error = result.error or str(exc)  # run.json could not be written: the next command closes the run


def prepare_images(settings: Settings, client, plan: Plan, backends: list[str], build_missing: bool = False) -> dict[str, str]:
    """backend -> the image built from the current pins (built first when asked), each checked to know every flag the plan uses."""
    images = find_images(settings, client, backends, build_missing)
    for b, tag in images.items():
        check_flags(plan, b, tool_help(client, tag, "llama-bench", settings.cache_dir))
    return images


def run_group(ctx: RunContext, result: BenchResult, group: Group) -> None:
    """Run a group (its cases fail by name when its RPC worker stopped answering); if it dies, run its missing cases one per
    process so one bad case can't take the rest down."""
    if group.rpc and (down := worker_down(group.rpc, ctx.rpc)):
        for case in group.cases:
            _record_failure(ctx, result, group, case, down)
        return
    got, err = _run_one(ctx, result, group)
    missing = [c for c in group.cases if c.case_id not in got]
    if not missing or ctx.stop.is_set():
        return
    down = worker_down(group.rpc, ctx.rpc) if group.rpc and err else None
    err = f"{down} during the group; {err}" if down else err
    if len(group.cases) > 1 and not down and not (err or "").startswith("timeout"):
        for case in missing:
            single = Group(
                group.group_id + "-" + case.case_id[:6],
                group.backend,
                group.model,
                group.env,
                {k: [v] for k, v in case.params if k not in ("n_prompt", "n_gen", "n_depth")},
                [case],
                group.rpc,
            )
            got_one, e = _run_one(ctx, result, single)
            if case.case_id not in got_one:
                _record_failure(ctx, result, single, case, e or "no result row")
            if ctx.stop.is_set():
                return
    else:
        for case in missing:
            _record_failure(ctx, result, group, case, err or "no result row")


def _row(ctx: RunContext, group: Group, lb_row: dict, **ours) -> dict:
    return make_row(
        lb_row,
        group_id=group.group_id,
        backend=group.backend,
        image=ctx.images[group.backend],
        image_digest=ctx.image_ids.get(group.backend),
        env=group.env,
        model_sha256=ctx.model_sha.get(group.model),
        versions=image_versions(ctx.labels(group.backend)),
        **({"rpc": list(group.rpc)} if group.rpc else {}),
        **ours,
    )


def _run_one(ctx: RunContext, result: BenchResult, group: Group) -> tuple[set[str], str | None]:
    """Run one llama-bench process; store each row as it arrives. Returns the case ids measured and the error."""
    if ctx.stop.is_set():
        raise Stopped
    got: set[str] = set()
    unmatched = list(group.cases)
    target = ctx.setups[group.backend].target
    stderr_path = ctx.writer.logs_dir / f"{group.group_id}.stderr.log"
    cmake_flags = ctx.labels(group.backend).get(f"{LABEL_PREFIX}.cmake-flags")
    t0 = time.monotonic()

    def on_line(line: str) -> None:
        lb_row = parse_jsonl_line(line)
        if lb_row is None:
            return
        case = match_case(lb_row, unmatched)
        if case is not None:
            unmatched.remove(case)
            got.add(case.case_id)
        ctx.mark("row", group=group.group_id, case_id=case.case_id if case else None)  # the row's window ends here
        first = not got - {case.case_id if case else None}  # the group's first row: its wait includes the model load
        extra = {"load_s": plan_view.load_estimate(time.monotonic() - t0, lb_row, ctx.plan)} if first else {}
        # llama.cpp logs the f16 detour on stderr while the test runs, before the row reaches stdout
        row = _row(
            ctx,
            group,
            lb_row,
            case_id=case.case_id if case else None,
            device_ok=row_device_ok(lb_row, target),
            fa_fallback=row_fa_fallback(lb_row, read_log(stderr_path), cmake_flags),
            fa_on_cpu=row_fa_on_cpu(lb_row, cmake_flags),
            status="ok",
            **extra,
        )
        ctx.writer.append(row)
        result.rows.append(row)
        result.ok += 1
        ctx.advance(1)

    spec = ContainerSpec(
        ctx.images[group.backend],
        group.args(in_container(group.model), ctx.plan.repetitions, ctx.plan.warmup),
        ctx.setups[group.backend],
        group.env,
        model_mount(group.model),
        {"org.strix-toolbox.run-id": ctx.run_id, "org.strix-toolbox.group": group.group_id},
        network=(ctx.rpc.get("network") or "bridge") if group.rpc else "none",  # workers: their network, else the host's bridge
    )
    ctx.mark("container_start", group=group.group_id, cases=[c.case_id for c in group.cases])
    outcome = run_streaming(
        ctx.client,
        spec,
        timeout_s=ctx.plan.timeout_s or ctx.settings.group_timeout_s,
        stderr_path=stderr_path,
        on_line=on_line,
        stop=ctx.stop,
    )
    ctx.mark("container_end", group=group.group_id)
    if ctx.stop.is_set():
        raise Stopped
    return got, _group_error(outcome, ctx.plan.timeout_s or ctx.settings.group_timeout_s)


def _group_error(outcome, timeout_s: float) -> str | None:
    if outcome.timed_out:
        return f"timeout after {timeout_s:.0f} s"
    if outcome.stopped:
        return "interrupted"
    if outcome.exit_code != 0:
        tail = outcome.stderr_tail
        return (
            f"llama-bench exited {outcome.exit_code}"
            + (" (killed: out of memory?)" if outcome.exit_code == 137 else "")
            + (f": {tail.splitlines()[-1]}" if tail else "")
        )
    return None


def _record_failure(ctx: RunContext, result: BenchResult, group: Group, case: Case, error: str) -> None:
    row = _row(
        ctx,
        group,
        dict(case.params),
        case_id=case.case_id,
        status="timeout" if error.startswith("timeout") else "failed",
        error=error,
    )
    ctx.writer.append(row)
    result.rows.append(row)
    result.failed += 1
    ctx.advance(1)


def _check_writable(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise ToolboxError(
            f"results directory {path} is not writable ({exc.strerror})", "fix its permissions or set TOOLBOX_RESULTS_DIR"
        ) from None
