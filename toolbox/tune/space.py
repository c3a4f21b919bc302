"""The search space: a matrix (preset `tune` or a user TOML) turned into candidate configurations.

A tune space is an ordinary matrix file (docs/matrices.md) plus an optional `[tune.backend.NAME]`
table of dimensions that only mean something on one backend (`params` such as n_threads on cpu,
`env` such as ROCBLAS_USE_HIPBLASLT on rocm); `invoke bench` ignores that table. The test shape
(n_prompt, n_gen, n_depth) comes from the goal, not from the file. Each backend's space is expanded
by run.matrix.expand, so a combination the pinned llama.cpp rejects is removed by the same rule
bench uses, before anything runs. A candidate is one configuration (backend, environment, every
llama-bench parameter but the test shape) with its screening cases and its confirmation cases.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace

from toolbox.errors import ToolboxError
from toolbox.llamacpp import TEST_PARAMS
from toolbox.run.matrix import Case, Plan, expand, group_cases, load_matrix, validate_spec
from toolbox.tune.goals import Goal, screen_gen

DEFAULT_SPACE = "tune"


@dataclass
class Candidate:
    """One configuration: backend, environment and llama-bench parameters; its cases per stage."""

    key: str
    backend: str
    model: str
    env: dict
    params: dict  # without the test shape
    screen: list[Case] = field(default_factory=list)
    confirm: list[Case] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"key": self.key, "backend": self.backend, "model": self.model, "env": self.env, "params": self.params}


@dataclass
class Space:
    name: str
    source: str
    text: str
    repetitions: int  # the confirmation's repetitions
    candidates: list[Candidate]
    removed: list[tuple[Case, str]]
    screen: Plan
    confirm: Plan

    def get(self, key: str) -> Candidate:
        return next(c for c in self.candidates if c.key == key)


def config_key(backend: str, model: str, env, params: dict) -> str:
    """A candidate's id: its backend, model and every parameter but the test shape."""
    p = {k: v for k, v in sorted(dict(params).items()) if k not in TEST_PARAMS}
    text = json.dumps([backend, model, sorted(dict(env).items()), p], default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _backend_spec(spec: dict, backend: str, where: str) -> dict:
    """The matrix one backend searches: the common dimensions plus its own [tune.backend.NAME] ones."""
    extra = ((spec.get("tune") or {}).get("backend") or {}).get(backend) or {}
    unknown = set(extra) - {"params", "env"}
    if unknown:
        raise ToolboxError(f"{where}: [tune.backend.{backend}] has unknown keys {sorted(unknown)}", "give it params and env tables only")
    out = {k: v for k, v in spec.items() if k not in ("tune", "backends")}
    out["params"] = dict(spec.get("params") or {}) | dict(extra.get("params") or {})
    out["env"] = dict(spec.get("env") or {}) | dict(extra.get("env") or {})
    validate_spec(out, f"{where} [tune.backend.{backend}]")
    return out


def _shape(spec: dict, goal: Goal, n_gen: int) -> dict:
    params = {k: v for k, v in spec["params"].items() if k not in (*TEST_PARAMS, "n_pg")}
    params |= {"n_prompt": [goal.n_prompt], "n_gen": [n_gen], "n_depth": [goal.depth]}
    return spec | {"params": params}


def check_spec(spec: dict, where: str) -> None:
    """The [tune] table: only `backend`, each a known backend with params / env tables."""
    tune = spec.get("tune") or {}
    if not isinstance(tune, dict) or set(tune) - {"backend"}:
        raise ToolboxError(f"{where}: [tune] takes only backend tables", "write [tune.backend.cpu.params] or [tune.backend.rocm.env]")
    for b in tune.get("backend") or {}:
        validate_spec({"backends": [b]}, where)


def build_space(space: str, goal: Goal, backends: list[str], model: str) -> Space:
    """Expand the space for the goal on each backend; a space left empty by llama.cpp's rules is an error."""
    spec, source, text = load_matrix(space)
    check_spec(spec, source)
    screen_cases, confirm_cases, removed, first = [], [], [], None
    for b in backends:
        bspec = _backend_spec(spec, b, source)
        screen = expand(_shape(bspec, goal, screen_gen(goal)), source, text, [b], [model])
        confirm = expand(_shape(bspec, goal, goal.n_gen), source, text, [b], [model])
        first = first or confirm
        screen_cases += screen.cases
        confirm_cases += confirm.cases
        removed += confirm.removed
    candidates: dict[str, Candidate] = {}
    for stage, cases in (("screen", screen_cases), ("confirm", confirm_cases)):
        for case in cases:
            p = {k: v for k, v in case.params if k not in TEST_PARAMS}
            key = config_key(case.backend, case.model, case.env, p)
            cand = candidates.setdefault(key, Candidate(key, case.backend, case.model, dict(case.env), p))
            getattr(cand, stage).append(case)
    if not candidates:
        reasons = sorted({why for _, why in removed})
        raise ToolboxError(
            f"the space {first.name if first else space} is empty: all {len(removed)} combinations are ones the pinned llama.cpp rejects"
            + (f" ({reasons[0]})" if reasons else ""),
            'add values that can run (e.g. flash_attn = ["on"] for a quantized V cache) to the space',
        )
    screen_plan = replace(first, cases=screen_cases, groups=group_cases(screen_cases), removed=removed)
    confirm_plan = replace(first, cases=confirm_cases, groups=group_cases(confirm_cases), removed=removed)
    return Space(first.name, source, text, first.repetitions, list(candidates.values()), removed, screen_plan, confirm_plan)


def label(cand: Candidate, shown: list[str] | None = None) -> str:
    """A short name for a candidate: the values of the dimensions that vary (all when not given)."""
    keys = shown if shown is not None else sorted(cand.params)
    parts = [cand.backend] if shown is None or "backend" in shown else []
    parts += [f"{k}={cand.params.get(k)}" for k in keys if k in cand.params]
    parts += [f"{k}={v}" if v else f"{k} unset" for k, v in sorted(cand.env.items()) if shown is None or k in shown]
    return " ".join(parts) or cand.backend


def varying(candidates: list[Candidate]) -> list[str]:
    """The dimensions (parameters, env variables, backend) whose value differs between candidates."""
    out = ["backend"] if len({c.backend for c in candidates}) > 1 else []
    params = sorted({k for c in candidates for k in c.params})
    out += [k for k in params if len({json.dumps(c.params.get(k), default=str) for c in candidates}) > 1]
    env = sorted({k for c in candidates for k in c.env})
    out += [k for k in env if len({c.env.get(k) for c in candidates}) > 1]
    return out
