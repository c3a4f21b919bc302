"""`invoke tune`: checks before anything runs, one stored run of kind "tune", the race, the answer.

Everything that can be wrong is said before the first container (model, goal, weights, budget,
space, images, devices, flags the pinned llama-bench does not know, a budget that cannot even screen
the space). Rows go to results/<run_id>/rows.jsonl as bench writes them; the quality check's results
to quality.jsonl; the race's state and answer to run.json under `tune`. Ctrl-C keeps every row and
verdict; `--resume RUN` re-reads them and measures only what is still missing.
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from toolbox.engine.client import docker_client
from toolbox.engine.container import remove_leftovers
from toolbox.engine.devices import device_setup
from toolbox.errors import ToolboxError
from toolbox.files import now_iso
from toolbox.run import plan as plan_view
from toolbox.run.bench import BenchResult, _check_writable, make_context, prepare_images, resolve_backends
from toolbox.run.context import Stopped, stop_on_signals
from toolbox.run.matrix import load_matrix
from toolbox.run.rpc import check_plan_workers
from toolbox.settings import Settings
from toolbox.store import quality as quality_store
from toolbox.store.runs import RunWriter, load_run
from toolbox.tune.answer import build_answer
from toolbox.tune.goals import make_goal
from toolbox.tune.measure import GROUP_OVERHEAD_S, Clock, Measurer, fmt_duration, parse_budget
from toolbox.tune.search import SEARCHES, BudgetSpent, Race
from toolbox.tune.space import DEFAULT_SPACE, build_space


@dataclass
class TuneResult:
    run_id: str
    run_dir: Path
    status: str  # complete, interrupted
    race: Race
    answer: dict
    spent_s: float = 0.0  # machine time of the run, resumed sessions included


def tune(
    settings: Settings,
    *,
    model: str | None = None,
    goal: str = "chat",
    depth: int | None = None,
    weights: str | None = None,
    budget: str | None = None,
    backend: str | None = "auto",
    space: str = DEFAULT_SPACE,
    allow_cpu_vulkan: bool = False,
    allow_degraded: bool = False,
    resume: str | None = None,
    search: str = "halving",
    build_missing: bool = False,
    argv: list[str] | None = None,
    on_update=None,
) -> TuneResult:
    """Search the space for the goal's fastest correct configuration within the budget; store and return the answer."""
    from toolbox.model import model_identity, resolve_models

    client = docker_client()
    old_rows, before, meta = [], 0.0, None
    if resume:
        meta, old_rows = load_run(settings.results_dir, resume)
        if meta.get("kind") != "tune":
            raise ToolboxError(
                f"run {meta.get('run_id')} is a {meta.get('kind')} run, not a tune run", "resume it with invoke bench --resume"
            )
        req = meta["tune"]["request"]
        model, goal, depth, weights = req["model"], req["goal"], req["depth"], req["weights"]
        backends, space, search = req["backends"], req["space"], req["search"]
        allow_cpu_vulkan, allow_degraded = req["allow_cpu_vulkan"], req["allow_degraded"]
        budget = budget or req["budget"]
        before = float(meta["tune"].get("spent_s") or 0.0)
    if search not in SEARCHES:
        raise ToolboxError(f"unknown search {search!r}", f"choose {', '.join(SEARCHES)}")
    the_goal = make_goal(goal, depth, weights)
    budget = budget or "30m"
    budget_s = parse_budget(budget)
    models = resolve_models([Path(model)] if model else None, settings)
    model_path = str(models[0])
    if not resume:
        spec, _, _ = load_matrix(space)
        backends = resolve_backends(backend, spec, settings, client)
    sp = build_space(space, the_goal, backends, model_path)
    if meta is not None and meta["tune"]["space"]["toml"] != sp.text:
        raise ToolboxError(f"the space {sp.source} changed since run {meta['run_id']} started", "restore it, or start a new tune run")

    # --- checks before any container starts ---
    from toolbox.build.pins import load_pins

    pins = load_pins(settings.pins_file)
    setups = {b: device_setup(pins.runs_on(b), settings.host_root, allow_cpu_vulkan) for b in backends}
    images = prepare_images(settings, client, sp.confirm, backends, build_missing)
    from toolbox.build.images import find_image

    cpu_image = images.get("cpu") or find_image(settings, "cpu", client)
    if cpu_image is None:
        raise ToolboxError(
            "no cpu image for the quality check's reference logits",
            "run `invoke build cpu` (offline by itself without a registry)",
        )
    _check_budget(settings, sp, budget_s - before, budget)
    # a space with an rpc key (docs/clusters.md) races worker lists too: every worker is checked first, as in bench
    rpc_record = check_plan_workers(client, sp.screen.cases + sp.confirm.cases, images)

    if resume:
        writer = RunWriter.open(settings.results_dir, resume)
        writer.update(status="running", resumed_at=now_iso())
    else:
        _check_writable(settings.results_dir)
        from toolbox.build.listing import image_info
        from toolbox.host.facts import snapshot

        all_cases = list({c.case_id: c for c in sp.screen.cases + sp.confirm.cases}.values())
        writer = RunWriter.create(
            settings.results_dir,
            {
                "kind": "tune",
                "argv": argv or sys.argv,
                "settings": settings.model_dump(mode="json"),
                "matrix": replace(sp.confirm, cases=all_cases, groups=[]).to_json() | {"backends": backends, "overrides": {}},
                "allow_cpu_vulkan": allow_cpu_vulkan,
                "images": {b: image_info(client, t) for b, t in images.items()},
                "models": [model_identity(Path(model_path), settings)],
                "host": snapshot(settings.host_root),
                **({"rpc": rpc_record} if rpc_record else {}),
                "tune": {
                    "request": {
                        "model": model_path,
                        "goal": goal,
                        "depth": depth,
                        "weights": weights,
                        "budget": budget,
                        "backends": backends,
                        "space": space,
                        "search": search,
                        "allow_cpu_vulkan": allow_cpu_vulkan,
                        "allow_degraded": allow_degraded,
                    },
                    "goal": the_goal.to_json(),
                    "space": {
                        "name": sp.name,
                        "source": sp.source,
                        "toml": sp.text,
                        "candidates": len(sp.candidates),
                        "removed": len(sp.removed),
                        "repetitions": sp.repetitions,
                    },
                    "budget_s": budget_s,
                    "spent_s": 0.0,
                },
            },  # fmt: skip
        )
    ctx = make_context(settings, client, writer, sp.confirm, images, setups, rpc_record)
    result = BenchResult(writer.run_id, writer.path, sp.confirm)
    clock = Clock(budget_s, before)
    race = Race(
        sp,
        the_goal,
        Measurer(ctx, result, list(old_rows)),
        clock,
        _quality_checker(settings, client, writer, images, cpu_image, model_path, allow_cpu_vulkan),
        allow_degraded=allow_degraded,
        search=search,
        unstable_spread=settings.unstable_spread,
        on_update=on_update,
    )
    status, error, signals = "complete", None, []
    from toolbox.engine import devicelock
    from toolbox.run.telemetry import start_for_run

    def say(line: str) -> None:
        print(line, file=sys.stderr)

    try:
        # one run at a time on a device (as bench), telemetry sampled as bench samples it
        with devicelock.hold(settings.lock_dir, setups.values(), what=f"invoke tune --goal {goal}", say=say, stop=ctx.stop):
            ctx.telemetry = start_for_run(settings, writer, settings.telemetry)
            with stop_on_signals(ctx.stop, signals):
                race.run()
    except (Stopped, KeyboardInterrupt):
        ctx.stop.set()
        status = "interrupted"
        writer.update(interrupted_by=signals[0] if signals else "SIGINT")
    except BudgetSpent as exc:
        status, error = "interrupted", exc
    finally:
        remove_leftovers(client, writer.run_id)
        if ctx.telemetry is not None:
            with contextlib.suppress(OSError):
                ctx.telemetry.close()
    if ctx.telemetry is not None:  # tokens per joule beside each row (energy.json), for the answer's evidence
        from toolbox.analysis.energy import attach_energy

        attach_energy(settings.results_dir, writer.run_id)
        race.m.rows = load_run(settings.results_dir, writer.run_id)[1]
    answer = build_answer(race, images, setups, model_path)
    spent = clock.spent
    tune_meta = dict(writer.meta["tune"], spent_s=round(spent, 3), budget_s=budget_s, answer=answer)
    tune_meta["request"] = dict(tune_meta["request"], budget=budget)
    writer.update(tune=tune_meta, wall_seconds=round(spent, 3))
    writer.finish(status)
    plan_view.remember(settings, writer.meta, result.rows)
    if error is not None:
        raise ToolboxError(error.what, error.fix.replace("RUN", writer.run_id))
    return TuneResult(writer.run_id, writer.path, status, race, answer, spent)


def _check_budget(settings: Settings, sp, budget_left: float, budget: str) -> None:
    """A budget that cannot screen every candidate once (and start a quality check and a confirmation) is
    refused before anything runs, saying what it could afford."""
    plan = replace(sp.screen, repetitions=1)
    known_s, known = plan_view.estimate_seconds(settings, plan)
    floor = (len(plan.groups) + 2) * GROUP_OVERHEAD_S + (known_s or 0.0)
    if floor > budget_left:
        n = len(sp.candidates)
        afford = int(n * max(budget_left, 0) / floor)
        how = "from earlier runs of these cases" if known == len(plan.cases) else f"{GROUP_OVERHEAD_S:.0f} s per container at least"
        raise ToolboxError(
            f"budget {budget} is too small: screening the {n} candidates once takes at least {fmt_duration(floor)} ({how}); "
            f"it could afford about {afford} of them",
            f"give --budget {fmt_duration(floor * 3).replace(' ', '')} or more, or a smaller space (--space FILE)",
        )


def _quality_checker(settings, client, writer, images, cpu_image, model_path, allow_cpu_vulkan):
    """quality_of(candidate): the check's result for its configuration, from quality.jsonl or run now (and stored there)."""
    from toolbox.quality.base import ensure_base
    from toolbox.quality.check import CheckConfig, check_one

    sha = writer.meta["models"][0]["sha256"]
    done = quality_store.load(writer.path)
    base: dict = {}

    def quality_of(cand) -> dict:
        p = cand.params
        key = quality_store.quality_key(
            cand.backend, sha, p.get("type_k", "f16"), p.get("type_v", "f16"), p.get("flash_attn", "auto"), cand.env
        )
        if key not in done:
            if not base:
                base.update(ensure_base(settings, client, Path(model_path), cpu_image=cpu_image, model_sha=sha))
            config = CheckConfig(
                cand.backend, images[cand.backend], Path(model_path), p.get("type_k", "f16"), p.get("type_v", "f16"),
                p.get("flash_attn", "auto"), dict(cand.env), sha,
            )  # fmt: skip
            res = check_one(settings, client, config, base, allow_cpu_vulkan=allow_cpu_vulkan, log_dir=writer.logs_dir)
            res.update(run_id=writer.run_id, key=key)
            quality_store.append(writer.path, res)
            done[key] = res
        return done[key]

    return quality_of


def tune_exit(r: TuneResult) -> tuple[int, str] | None:
    """(exit code, message) for a finished `invoke tune`, None when a configuration is recommended."""
    if r.status == "interrupted":
        return 130, f"interrupted: what was measured is kept; continue with: invoke tune --resume {r.run_id}"
    outcome = r.race.outcome
    if outcome == "all-broken":
        return 1, "every configuration checked computes wrong output (quality check: broken): nothing is recommended"
    if outcome == "none-acceptable":
        return 1, "no configuration passed the quality check (degraded ones count only with --allow-degraded): nothing is recommended"
    if outcome != "recommended":
        return 1, f"no finalist could be confirmed (see {r.run_dir}/logs/): nothing is recommended"
    return None
