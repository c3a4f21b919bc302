"""bench: matrix -> plan -> checks -> containers -> rows on disk -> summary.

Everything that can be wrong is checked before the first container starts (models, matrix, images,
devices, flags the pinned llama-bench does not know, a results directory that is not writable).
Rows are written the moment llama-bench prints them; a failing group is recorded and the run goes
on; Ctrl-C keeps every finished row and `--resume RUN_ID` runs only what is missing.
"""

from __future__ import annotations

import re
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from toolbox.errors import ToolboxError
from toolbox.matrix import PARAM_FLAGS, Case, Group, Plan, expand, group_cases, load_matrix
from toolbox.runner import MODELS_MOUNT, device_ok, device_setup, llama_bench_help, remove_leftovers, run_group
from toolbox.settings import Settings

FA_NAMES = {"1": "on", "true": "on", "on": "on", "enabled": "on", "0": "off", "false": "off", "off": "off", "disabled": "off", "-1": "auto", "auto": "auto"}


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


def resolve_backends(requested: str | None, spec: dict, settings: Settings, client) -> list[str]:
    """--backend rocm|vulkan|cpu|auto, or a comma list; auto picks the best one this host can run."""
    from toolbox.images import find_image

    if requested and requested != "auto":
        names = [b.strip() for b in requested.split(",") if b.strip()]
        for b in names:
            if b not in ("rocm", "vulkan", "cpu"):
                raise ToolboxError(f"unknown backend {b!r}", "choose rocm, vulkan, cpu or auto")
        return names
    if spec.get("backends"):
        return list(spec["backends"])
    root = settings.host_root
    if (root / "dev" / "kfd").exists() and find_image(settings, "rocm", client):
        return ["rocm"]
    if list((root / "dev" / "dri").glob("renderD*")) if (root / "dev" / "dri").is_dir() else []:
        return ["vulkan"]
    return ["cpu"]


def make_plan(settings: Settings, matrix: str, backends: list[str], models: list[Path], overrides: dict) -> Plan:
    spec, source, text = load_matrix(matrix)
    spec = spec | {k: v for k, v in overrides.items() if v is not None}
    return expand(spec, source, text, backends, [str(m) for m in models])


def bench(settings: Settings, *, matrix: str = "default", backend: str | None = "auto", models: list[str] | None = None,
          allow_cpu_vulkan: bool = False, dry_run: bool = False, resume: str | None = None, build_missing: bool = False,
          repetitions: int | None = None, cooldown_s: float | None = None, shuffle: bool | None = None, seed: int | None = None,
          argv: list[str] | None = None, console=None) -> BenchResult:
    from rich.console import Console

    from toolbox import model as model_mod
    from toolbox import results
    from toolbox.images import build as build_image
    from toolbox.images import docker_client, find_image, image_info

    console = console or Console()
    client = docker_client()
    writer = None
    done: set[str] = set()
    if resume:
        meta, old_rows = results.load_run(settings.results_dir, resume)
        m = meta.get("matrix", {})
        matrix, backends = m.get("source") or matrix, m.get("backends") or [backend]
        model_paths = [Path(p["path"]) for p in meta.get("models", [])]
        overrides = m.get("overrides", {})
        allow_cpu_vulkan = meta.get("allow_cpu_vulkan", allow_cpu_vulkan)
        done = {r["case_id"] for r in old_rows if r.get("status") == "ok" and r.get("case_id")}
    else:
        spec, _, _ = load_matrix(matrix)
        backends = resolve_backends(backend, spec, settings, client)
        model_paths = model_mod.resolve_models([Path(m) for m in models] if models else None, settings)
        overrides = {"repetitions": repetitions, "cooldown_s": cooldown_s, "shuffle": shuffle, "seed": seed}
    plan = make_plan(settings, matrix, backends, model_paths, overrides)

    # --- checks before any container starts ---
    setups = {b: device_setup(b, settings.host_root, allow_cpu_vulkan) for b in backends}
    images = {}
    for b in backends:
        tag = find_image(settings, b, client)
        if tag is None:
            if not build_missing:
                hint = f"invoke build {b}" + (" (add --offline without a registry)" if b != "rocm" else "")
                raise ToolboxError(f"no {b} image built from the current pins", f"run `{hint}`, or add --build")
            tag = build_image(settings, b).tag
        images[b] = tag
    for b, tag in images.items():
        check_flags(plan, b, llama_bench_help(client, tag))
    commands = [(g, g.args(_in_container(g.model), plan.repetitions, plan.warmup)) for g in plan.groups]
    result = BenchResult(None, None, plan, commands)
    print_plan(console, plan, images, commands, settings)
    if dry_run:
        return result

    if resume:
        writer = results.RunWriter.open(settings.results_dir, resume)
        writer.update(status="running", resumed_at=_now())
    else:
        _check_writable(settings.results_dir)
        from toolbox.host import snapshot

        meta = {
            "kind": "bench", "argv": argv or sys.argv, "settings": settings.model_dump(mode="json"),
            "matrix": plan.to_json() | {"backends": backends, "overrides": overrides},
            "allow_cpu_vulkan": allow_cpu_vulkan,
            "images": {b: image_info(client, t) for b, t in images.items()},
            "models": [model_mod.model_identity(p, settings) for p in model_paths],
            "host": snapshot(settings.host_root),
        }
        writer = results.RunWriter.create(settings.results_dir, meta)
    result.run_id, result.run_dir = writer.run_id, writer.path
    model_sha = {m["path"]: m["sha256"] for m in writer.meta.get("models", [])}
    image_ids = {b: writer.meta.get("images", {}).get(b, {}).get("id") for b in backends}

    todo = [c for c in plan.cases if c.case_id not in done]
    result.skipped_done = len(plan.cases) - len(todo)
    groups = [g for g in plan.groups if all(c.case_id not in done for c in g.cases)]
    partial = [c for g in plan.groups if any(c.case_id in done for c in g.cases) for c in g.cases if c.case_id not in done]
    groups += group_cases(partial)

    stop = threading.Event()
    status = "complete"
    t_start = time.monotonic()
    try:
        with _progress(console) as progress:
            task = progress.add_task("cases", total=len(todo))
            for i, group in enumerate(groups):
                progress.update(task, description=f"group {i + 1}/{len(groups)} ({group.backend}, {len(group.cases)} cases)")
                _run_with_fallback(client, writer, result, group, images[group.backend], setups[group.backend], plan,
                                   settings, model_sha, image_ids, stop, lambda n: progress.advance(task, n))
                if plan.cooldown_s and i + 1 < len(groups):
                    time.sleep(plan.cooldown_s)
    except KeyboardInterrupt:
        stop.set()
        status = "interrupted"
    finally:
        # Ctrl-C can land while a container is being created: remove whatever this run left.
        remove_leftovers(client, writer.run_id)
    if status == "complete" and result.ok == 0 and result.failed:
        status = "failed"
    writer.update(wall_seconds=round(time.monotonic() - t_start, 3))
    writer.finish(status)
    result.status = status
    return result


def _run_with_fallback(client, writer, result, group: Group, image: str, setup, plan: Plan, settings, model_sha, image_ids, stop, advance) -> None:
    """Run a group; if it dies, run its missing cases one per process so one bad case can't take the rest down."""
    outcome = _run_one(client, writer, result, group, image, setup, plan, settings, model_sha, image_ids, stop, advance)
    missing = [c for c in group.cases if c.case_id not in outcome[0]]
    if not missing or stop.is_set():
        return
    err = outcome[1]
    if len(group.cases) > 1 and not (err or "").startswith("timeout"):
        for case in missing:
            single = Group(group.group_id + "-" + case.case_id[:6], group.backend, group.model, group.env,
                           {k: [v] for k, v in case.params if k not in ("n_prompt", "n_gen", "n_depth")}, [case])
            got, e = _run_one(client, writer, result, single, image, setup, plan, settings, model_sha, image_ids, stop, advance)
            if case.case_id not in got:
                _record_failure(writer, result, single, case, image, image_ids, model_sha, e or "no result row", advance)
            if stop.is_set():
                return
    else:
        for case in missing:
            _record_failure(writer, result, group, case, image, image_ids, model_sha, err or "no result row", advance)


def _run_one(client, writer, result, group: Group, image: str, setup, plan: Plan, settings, model_sha, image_ids, stop, advance):
    from toolbox import results

    got: set[str] = set()
    unmatched = list(group.cases)
    argv = group.args(_in_container(group.model), plan.repetitions, plan.warmup)

    def on_row(lb_row: dict) -> None:
        case = match_case(lb_row, unmatched)
        if case is not None:
            unmatched.remove(case)
            got.add(case.case_id)
        row = results.make_row(
            lb_row, case_id=case.case_id if case else None, group_id=group.group_id, backend=group.backend, image=image,
            image_digest=image_ids.get(group.backend), env=group.env, model_sha256=model_sha.get(group.model),
            device_ok=device_ok(lb_row, setup.target), status="ok",
        )
        writer.append(row)
        result.rows.append(row)
        result.ok += 1
        advance(1)

    outcome = run_group(
        client, image, argv, model_dir=Path(group.model).parent, setup=setup, env=group.env,
        labels={"org.strix-toolbox.run-id": writer.run_id, "org.strix-toolbox.group": group.group_id},
        timeout_s=plan.timeout_s or settings.group_timeout_s, stderr_path=writer.logs_dir / f"{group.group_id}.stderr.log",
        on_row=on_row, stop=stop,
    )
    if stop.is_set():
        raise KeyboardInterrupt
    return got, outcome.error


def _record_failure(writer, result, group, case: Case, image, image_ids, model_sha, error: str, advance) -> None:
    from toolbox import results

    row = results.make_row(
        {k: v for k, v in case.params}, case_id=case.case_id, group_id=group.group_id, backend=group.backend, image=image,
        image_digest=image_ids.get(group.backend), env=group.env, model_sha256=model_sha.get(group.model),
        status="timeout" if error.startswith("timeout") else "failed", error=error,
    )
    writer.append(row)
    result.rows.append(row)
    result.failed += 1
    advance(1)


def match_case(row: dict, cases: list[Case]) -> Case | None:
    """The case a llama-bench row belongs to: same test shape, then the most agreeing parameters."""
    best, best_score = None, -1
    for case in cases:
        p = case.p
        if any(_norm(k, row.get(k)) != _norm(k, p.get(k, 0)) for k in ("n_prompt", "n_gen", "n_depth")):
            continue
        score = sum(1 for k, v in p.items() if row.get(k) is not None and _norm(k, row.get(k)) == _norm(k, v))
        if score > best_score:
            best, best_score = case, score
    return best


def _norm(key: str, value) -> str:
    s = str(value).strip().lower()
    if key == "flash_attn":
        return FA_NAMES.get(s, s)
    return s


def check_flags(plan: Plan, backend: str, help_text: str) -> None:
    """Every flag the plan uses must be one the image's llama-bench documents in --help."""
    used = {"-m", "-o", "-r", "-p", "-n", "-d"}
    for g in plan.groups:
        if g.backend == backend:
            used |= {PARAM_FLAGS[k] for k in g.lists}
            used |= {"-pg"} if any(dict(c.params).get("n_prompt") and dict(c.params).get("n_gen") for c in g.cases) else set()
    if not plan.warmup:
        used.add("--no-warmup")
    for flag in sorted(used):
        if not re.search(rf"(^|[\s,]){re.escape(flag)}([\s,]|$)", help_text, re.M):
            raise ToolboxError(f"the pinned llama-bench in the {backend} image does not know {flag}", "remove that parameter from the matrix (llama-bench --help lists the valid ones)")


def _in_container(model: str) -> str:
    return f"{MODELS_MOUNT}/{Path(model).name}"


def _check_writable(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise ToolboxError(f"results directory {path} is not writable ({exc.strerror})", "fix its permissions or set TOOLBOX_RESULTS_DIR") from None


def _now() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _progress(console):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("eta"), TimeRemainingColumn(), console=console, transient=False)


def estimate_seconds(settings: Settings, plan: Plan) -> tuple[float | None, int]:
    """(seconds, cases): the measuring time of the plan's cases that ran before (same model file name,
    backend and every parameter the case sets), from their earlier ok rows; (None, 0) when none did."""
    import warnings

    from toolbox import results
    from toolbox.llama_bench import normalize

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            df = results.load_rows(settings.results_dir)
    except Exception:
        return None, 0
    if df.empty:
        return None, 0
    df = df[(df["status"] == "ok") & df["avg_ns"].notna()].copy()
    df["model_name"] = [Path(str(f or "")).name for f in df["model_filename"]]
    total, known = 0.0, 0
    for c in plan.cases:
        p = {k: v for k, v in normalize(dict(c.params)).items() if k != "raw"}
        mask = (df["backend"] == c.backend) & (df["model_name"] == Path(c.model).name)
        for k, v in p.items():
            if k in df:
                mask &= df[k].astype(str) == str(v)
        hits = df.loc[mask, "avg_ns"]
        if len(hits):
            known += 1
            total += float(hits.iloc[-1]) / 1e9 * (plan.repetitions + (1 if plan.warmup else 0))
    if known == 0:
        return None, 0
    return total, known


def print_plan(console, plan: Plan, images: dict, commands, settings: Settings) -> None:
    est, known = estimate_seconds(settings, plan)
    head = f"matrix {plan.name}: {len(plan.cases)} cases in {len(plan.groups)} groups (one container and one model load each)"
    if est is not None:
        n = len(plan.cases)
        head += (f", about {est / 60:.1f} min from earlier runs" if known == n else
                 f"; {known} of the {n} cases ran before and take about {est / 60:.1f} min, the rest have no history")
    console.print(head)
    for b, tag in images.items():
        console.print(f"  {b}: {tag}")
    for g, argv in commands:
        env = " ".join(f"{k}={v}" for k, v in g.env.items() if v) or ""
        console.print(f"  [{g.group_id}] {len(g.cases)} cases: {env + ' ' if env else ''}{' '.join(argv)}", soft_wrap=True, markup=False)
    if plan.removed:
        console.print(f"removed {len(plan.removed)} cases that the pinned llama.cpp rejects:")
        reasons: dict[str, int] = {}
        for _, why in plan.removed:
            reasons[why] = reasons.get(why, 0) + 1
        for why, n in reasons.items():
            console.print(f"  {n} x {why}", markup=False)


def summary_tables(rows: list[dict]) -> list:
    """rich tables of a run's results: a K x V pivot per test when the KV types vary, else one row per case."""
    import pandas as pd
    from rich.table import Table

    ok = [r for r in rows if r.get("status") == "ok" and r.get("avg_ts") is not None]
    if not ok:
        return []
    df = pd.DataFrame(ok)
    df["t/s"] = [f"{a:.2f} ± {s or 0:.2f}" for a, s in zip(df["avg_ts"], df.get("stddev_ts", [0] * len(df)))]
    keys = [k for k in ("backend", "type_k", "type_v", "flash_attn", "n_batch", "n_ubatch", "n_threads", "load_mode", "n_gpu_layers") if k in df and df[k].astype(str).nunique() > 1]
    tables = []
    if {"type_k", "type_v"} <= set(keys):
        rest = [k for k in keys if k not in ("type_k", "type_v")]
        for name, sub in df.groupby(["test", *rest], sort=False):
            name = name if isinstance(name, tuple) else (name,)
            title = ", ".join(f"{k}={v}" for k, v in zip(["test", *rest], name))
            pivot = sub.pivot_table(index="type_k", columns="type_v", values="t/s", aggfunc="first")
            t = Table(title=f"t/s  {title}  (rows: type_k, columns: type_v)")
            t.add_column("K \\ V")
            for col in pivot.columns:
                t.add_column(str(col), justify="right")
            for k, line in pivot.iterrows():
                t.add_row(str(k), *["" if pd.isna(v) else v for v in line])
            tables.append(t)
        return tables
    t = Table(title="results (t/s: mean ± stddev over repetitions)")
    cols = ["test", *keys, "t/s"]
    for c in cols:
        t.add_column(c, justify="right" if c == "t/s" else "left")
    if "device_ok" in df and (df["device_ok"] == False).any():  # noqa: E712
        t.add_column("device")
        cols.append("device_ok")
    for _, r in df.iterrows():
        t.add_row(*[("ran elsewhere!" if r[c] is False else "ok") if c == "device_ok" else str(r[c]) for c in cols])
    tables.append(t)
    return tables
