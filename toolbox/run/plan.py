"""What a plan will do and how long it will take: the plan as printed before a run, the flags it needs, and the timing history.

The history (results_dir/.history.json) maps a case's signature (backend, model file name and every
parameter the case sets) to the mean time of its last successful measurement; `remember()` adds a
finished run's rows, `estimate_seconds()` reads it without loading any run. Older results without a
history file are indexed when the history is first needed, and saved with the next finished run.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from toolbox.errors import ToolboxError
from toolbox.files import write_json_atomic
from toolbox.llamacpp import PARAM_FLAGS
from toolbox.parse import normalize
from toolbox.run.matrix import Plan
from toolbox.settings import Settings

HISTORY_FILE = ".history.json"


def signature(backend: str, model: str, params: dict) -> str:
    """The key of a case in the history: backend, model file name and its normalised llama-bench parameters."""
    p = {k: str(v) for k, v in sorted(normalize(dict(params)).items()) if k != "raw" and v is not None}
    return json.dumps([backend, Path(str(model)).name, p])


def _load(settings: Settings) -> dict[str, float]:
    path = Path(settings.results_dir) / HISTORY_FILE
    try:
        data = json.loads(path.read_text())
        if isinstance(data, dict) and isinstance(data.get("seconds"), dict):
            return data["seconds"]
    except (OSError, ValueError):
        pass
    return _rebuild(settings) if Path(settings.results_dir).is_dir() else {}


def _rebuild(settings: Settings) -> dict[str, float]:
    """Index every bench run once (results written before the history existed)."""
    import warnings

    from toolbox.store.runs import ResultsWarning, load_run, run_ids

    seconds: dict[str, float] = {}
    for rid in run_ids(settings.results_dir):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ResultsWarning)
                meta, rows = load_run(settings.results_dir, rid)
        except Exception:  # noqa: BLE001 - a damaged run has no history to give
            continue
        seconds.update(_timings(meta, rows))
    return seconds  # saved by the next remember(): reading a plan writes nothing


def _timings(meta: dict, rows: list[dict]) -> dict[str, float]:
    cases = {c.get("case_id"): c for c in (meta.get("matrix") or {}).get("cases", []) if isinstance(c, dict)}
    out = {}
    for r in rows:
        case = cases.get(r.get("case_id"))
        if case is None or r.get("status") != "ok" or not r.get("avg_ns"):
            continue
        out[signature(case.get("backend"), case.get("model"), case.get("params") or {})] = float(r["avg_ns"]) / 1e9
    return out


def _save(settings: Settings, seconds: dict[str, float]) -> None:
    try:
        write_json_atomic(Path(settings.results_dir) / HISTORY_FILE, {"version": 1, "seconds": seconds}, indent=None)
    except OSError:
        pass  # the history only makes the estimate possible; the run's own rows are what counts


def remember(settings: Settings, meta: dict, rows: list[dict]) -> None:
    """Add a finished run's timings to the history."""
    found = _timings(meta, rows)
    if found:
        seconds = _load(settings)
        seconds.update(found)
        _save(settings, seconds)


def estimate_seconds(settings: Settings, plan: Plan) -> tuple[float | None, int]:
    """(seconds, cases): the measuring time of the plan's cases that ran before (same model file name,
    backend and every parameter the case sets), from the history; (None, 0) when none did."""
    history = _load(settings)
    total, known = 0.0, 0
    for c in plan.cases:
        s = history.get(signature(c.backend, c.model, dict(c.params)))
        if s is not None:
            known += 1
            total += s * (plan.repetitions + (1 if plan.warmup else 0))
    return (total, known) if known else (None, 0)


def print_plan(console, plan: Plan, images: dict, commands, settings: Settings) -> None:
    est, known = estimate_seconds(settings, plan)
    head = f"matrix {plan.name}: {len(plan.cases)} cases in {len(plan.groups)} groups (one container and one model load each)"
    if est is not None:
        n = len(plan.cases)
        head += (
            f", about {est / 60:.1f} min from earlier runs"
            if known == n
            else f"; {known} of the {n} cases ran before and take about {est / 60:.1f} min, the rest have no history"
        )
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


def load_estimate(seconds_to_first_row: float, lb_row: dict, plan: Plan) -> float | None:
    """Seconds from the container's start to the model being ready, estimated from the group's first row:
    its wall time less the runs it measured (repetitions, and the warm-up run). llama-bench prints no load time."""
    ns = [float(v) for v in lb_row.get("samples_ns") or [] if v]
    if not ns:
        return None
    measured = sum(ns) + (ns[0] if plan.warmup else 0)
    return round(max(0.0, seconds_to_first_row - measured / 1e9), 3)


def progress(console):
    """The progress bar of a run: cases done, elapsed, eta."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


def check_flags(plan: Plan, backend: str, help_text: str) -> None:
    """Every flag the plan uses must be one the image's llama-bench documents in --help."""
    used = {"-m", "-o", "-r", "-p", "-n", "-d"}
    for g in plan.groups:
        if g.backend == backend:
            used |= {PARAM_FLAGS[k] for k in g.lists} | ({"-rpc"} if g.rpc else set())
            used |= {"-pg"} if any(dict(c.params).get("n_prompt") and dict(c.params).get("n_gen") for c in g.cases) else set()
    if not plan.warmup:
        used.add("--no-warmup")
    for flag in sorted(used):
        if not re.search(rf"(^|[\s,]){re.escape(flag)}([\s,]|$)", help_text, re.M):
            raise ToolboxError(
                f"the pinned llama-bench in the {backend} image does not know {flag}",
                "remove that parameter from the matrix (llama-bench --help lists the valid ones)",
            )
