"""Matrices: a preset or user TOML file -> cases -> groups (one container and one model load each).

A matrix file has llama-bench parameters as lists (cross product), environment variables as
dimensions (each value its own group), zipped parameter sets (paired values, not crossed), and
run options. Parameter names are llama-bench's JSON field names; see docs/matrices.md.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
import tomllib
from dataclasses import dataclass, field
from difflib import get_close_matches
from importlib import resources
from pathlib import Path

from toolbox.engine.rpc import parse_workers
from toolbox.errors import ToolboxError
from toolbox.llamacpp import BACKENDS, KV_TYPES, PARAM_FLAGS, fa_value, kv_reject_reason, test_name

OPTIONS = {
    "name",
    "description",
    "backends",
    "images",
    "repetitions",
    "warmup",
    "params",
    "env",
    "zip",
    "cooldown_s",
    "shuffle",
    "seed",
    "timeout_s",
    "tune",  # invoke tune only: dimensions per backend (docs/tune.md); bench ignores it
    "rpc",
}


@dataclass(frozen=True)
class Case:
    """One row to be measured: a backend, a model, an environment, and scalar llama-bench parameters."""

    backend: str
    model: str
    env: tuple[tuple[str, str], ...]
    params: tuple[tuple[str, object], ...]  # includes n_prompt, n_gen, n_depth
    rpc: tuple[str, ...] = ()  # RPC workers (host:port[@engine]); () = this machine alone

    @property
    def case_id(self) -> str:
        key = [self.backend, self.model, self.env, self.params] + ([list(self.rpc)] if self.rpc else [])
        key = json.dumps(key, default=str)
        return hashlib.sha256(key.encode()).hexdigest()[:16]

    @property
    def p(self) -> dict:
        return dict(self.params)

    @property
    def test(self) -> str:
        p = self.p
        return test_name(p.get("n_prompt", 0), p.get("n_gen", 0), p.get("n_depth", 0))


@dataclass
class Group:
    """Cases one llama-bench process runs: same backend, model, environment and zipped values."""

    group_id: str
    backend: str
    model: str
    env: dict[str, str]
    lists: dict[str, list]  # llama-bench parameter -> values (comma list on the command line)
    cases: list[Case] = field(default_factory=list)
    rpc: tuple[str, ...] = ()  # the workers of every case of the group (llama-bench -rpc registers them per process)

    def args(self, model_path_in_container: str, repetitions: int, warmup: bool) -> list[str]:
        """The exact llama-bench command line for this group."""
        tests = [dict(c.params) for c in self.cases]
        pp = sorted({t["n_prompt"] for t in tests if t.get("n_prompt") and not t.get("n_gen")})
        tg = sorted({t["n_gen"] for t in tests if t.get("n_gen") and not t.get("n_prompt")})
        pg = sorted({(t["n_prompt"], t["n_gen"]) for t in tests if t.get("n_prompt") and t.get("n_gen")})
        depth = sorted({t.get("n_depth", 0) for t in tests})
        argv = [
            "llama-bench",
            "-m",
            model_path_in_container,
            "-o",
            "jsonl",
            "-r",
            str(repetitions),
            "-p",
            _csv(pp or [0]),
            "-n",
            _csv(tg or [0]),
            "-d",
            _csv(depth),
        ]
        for a, b in pg:
            argv += ["-pg", f"{a},{b}"]
        for name, values in self.lists.items():
            if name != "n_pg":
                argv += [PARAM_FLAGS[name], _csv(values)]
        if not warmup:
            argv.append("--no-warmup")
        if self.rpc:
            argv += ["-rpc", ",".join(rpc_address(w) for w in self.rpc)]
        return argv


@dataclass
class Plan:
    name: str
    description: str
    source: str
    text: str
    repetitions: int
    warmup: bool
    cooldown_s: float
    shuffle: bool
    seed: int | None
    timeout_s: float | None
    cases: list[Case]
    groups: list[Group]
    removed: list[tuple[Case, str]]

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "description": self.description,
            "source": self.source,
            "toml": self.text,
            "repetitions": self.repetitions,
            "warmup": self.warmup,
            "cooldown_s": self.cooldown_s,
            "shuffle": self.shuffle,
            "seed": self.seed,
            "cases": [
                {"case_id": c.case_id, "backend": c.backend, "model": c.model, "env": dict(c.env), "params": c.p, "test": c.test}
                | ({"rpc": list(c.rpc)} if c.rpc else {})
                for c in self.cases
            ],
            "groups": [
                {
                    "group_id": g.group_id,
                    "backend": g.backend,
                    "model": g.model,
                    "env": g.env,
                    "lists": g.lists,
                    "cases": [c.case_id for c in g.cases],
                }
                | ({"rpc": list(g.rpc)} if g.rpc else {})
                for g in self.groups
            ],
            "removed": [{"case": dict(c.params), "backend": c.backend, "reason": why} for c, why in self.removed],
        }


def rpc_address(worker: str) -> str:
    """What llama.cpp's -rpc takes from a worker 'host:port[@engine]'."""
    return worker.split("@", 1)[0]


def _csv(values) -> str:
    return ",".join(str(v) for v in values)


# --- loading -----------------------------------------------------------------


def presets() -> dict[str, Path]:
    """Named presets shipped with the toolbox (toolbox/matrices/*.toml)."""
    root = resources.files("toolbox") / "matrices"
    return {Path(p.name).stem: Path(str(p)) for p in root.iterdir() if p.name.endswith(".toml")}


def preset_descriptions() -> dict[str, str]:
    return {name: tomllib.loads(path.read_text()).get("description", "") for name, path in sorted(presets().items())}


def load_matrix(name_or_path: str) -> tuple[dict, str, str]:
    """A preset name or a TOML file -> (spec, source, text). Unknown names list the presets."""
    spec, source, text = read_preset(name_or_path, presets(), "matrix", "invoke bench --list")
    validate_spec(spec, source)
    return spec, source, text


def read_preset(name_or_path: str, known: dict[str, Path], what: str, listed_by: str) -> tuple[dict, str, str]:
    """A preset of `known` or a TOML file -> (spec, source, text); an unknown name or bad TOML is one line."""
    path = known.get(name_or_path)
    if path is None:
        path = Path(name_or_path).expanduser()
        if not path.is_file():
            close = get_close_matches(name_or_path, known, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ToolboxError(
                f"unknown {what} {name_or_path!r}",
                f"{hint}presets: {', '.join(sorted(known))}; or pass a TOML file ({listed_by})",
            )
    text = path.read_text()
    try:
        spec = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ToolboxError(f"{what} {path} is not valid TOML ({exc})", "fix the syntax") from None
    return spec, str(path), text


def validate_spec(spec: dict, where: str) -> None:
    """Misspelt keys and parameters are errors that name the valid ones."""
    for key in spec:
        if key not in OPTIONS:
            raise ToolboxError(f"{where}: unknown key {key!r}", f"valid keys: {', '.join(sorted(OPTIONS))}")
    names = list(spec.get("params", {}))
    for z in spec.get("zip", []):
        names += list(z)
        lengths = {len(_as_list(v)) for v in z.values()}
        if len(lengths) > 1:
            raise ToolboxError(
                f"{where}: zipped parameters {', '.join(z)} have lists of different lengths",
                "give each the same number of values",
            )
    for name in names:
        if name not in PARAM_FLAGS:
            close = get_close_matches(name, PARAM_FLAGS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ToolboxError(f"{where}: unknown llama-bench parameter {name!r}{hint}", f"valid: {', '.join(PARAM_FLAGS)}")
    for t in ("type_k", "type_v"):
        for v in _as_list(spec.get("params", {}).get(t, [])):
            if v not in KV_TYPES:
                raise ToolboxError(f"{where}: {t} {v!r} is not a KV cache type llama-bench knows", f"valid: {', '.join(KV_TYPES)}")
    rpc = spec.get("rpc", [])
    if not isinstance(rpc, list) or not all(isinstance(w, (list, str)) for w in rpc):
        raise ToolboxError(
            f"{where}: rpc must be a list of worker lists", 'e.g. rpc = [[], ["10.0.0.2:50052"], ["10.0.0.2:50052", "10.0.0.3:50052"]]'
        )
    for workers in rpc:
        rpc_workers(workers)
    for b in spec.get("backends", []):
        if b not in BACKENDS:
            raise ToolboxError(f"{where}: unknown backend {b!r}", f"valid: {', '.join(BACKENDS)}")


def rpc_workers(workers) -> tuple[str, ...]:
    """One entry of the rpc dimension (a list of workers, or a comma list; [] or 'none' = no workers) -> the case's rpc."""
    text = ",".join(workers) if isinstance(workers, list) else str(workers)
    return tuple(str(e) for e in parse_workers(text))


def _as_list(v) -> list:
    return list(v) if isinstance(v, list) else [v]


# --- expansion ---------------------------------------------------------------


def reject_reason(backend: str, params: dict) -> str | None:
    """Why the pinned llama.cpp would reject this case (None when it runs)."""
    return kv_reject_reason(params.get("type_v", "f16"), params.get("flash_attn", "auto"))


def expand(spec: dict, source: str, text: str, backends: list[str], models: list[str]) -> Plan:
    """Cross product of params x env x zip x backends x models -> cases; invalid ones removed; grouped."""
    params = {k: _as_list(v) for k, v in spec.get("params", {}).items()}
    pairs = [tuple(pg) for pg in params.pop("n_pg", [])]
    for t in ("n_prompt", "n_gen"):
        params.setdefault(t, [0])
    params.setdefault("n_depth", [0])
    env = {k: [str(x) for x in _as_list(v)] for k, v in spec.get("env", {}).items()}
    zips = [list(zip(*[_as_list(v) for v in z.values()])) for z in spec.get("zip", [])]
    zip_names = [list(z) for z in spec.get("zip", [])]
    rpc_lists = list(dict.fromkeys(rpc_workers(w) for w in spec.get("rpc", []))) or [()]

    cases, removed = [], []
    env_combos = [dict(zip(env, combo)) for combo in itertools.product(*env.values())] or [{}]
    zip_combos = list(itertools.product(*zips)) or [()]
    names = list(params)
    for backend, model, env_c, zip_c, rpc in itertools.product(backends, models, env_combos, zip_combos, rpc_lists):
        zipped = {n: v for names_z, values in zip(zip_names, zip_c) for n, v in zip(names_z, values)}
        for combo in itertools.product(*params.values()):
            p = dict(zip(names, combo)) | zipped
            # llama-bench runs each n_prompt as a pp test and each n_gen as a tg test (not crossed);
            # n_pg pairs are combined pp+tg tests.
            tests = []
            if p["n_prompt"]:
                tests.append(p | {"n_gen": 0})
            if p["n_gen"]:
                tests.append(p | {"n_prompt": 0})
            tests += [p | {"n_prompt": a, "n_gen": b} for a, b in pairs]
            for test in tests:
                case = Case(backend, model, tuple(sorted(env_c.items())), tuple(sorted(test.items())), rpc)
                why = reject_reason(backend, test)
                (removed if why else cases).append((case, why) if why else case)
    cases = _dedupe(cases)
    groups = group_cases(cases)
    if spec.get("shuffle"):
        random.Random(spec.get("seed", 0)).shuffle(groups)
    return Plan(
        name=spec.get("name", Path(source).stem),
        description=spec.get("description", ""),
        source=source,
        text=text,
        repetitions=int(spec.get("repetitions", 3)),
        warmup=bool(spec.get("warmup", True)),
        cooldown_s=float(spec.get("cooldown_s", 0)),
        shuffle=bool(spec.get("shuffle", False)),
        seed=spec.get("seed", 0) if spec.get("shuffle") else None,
        timeout_s=spec.get("timeout_s"),
        cases=cases,
        groups=groups,
        removed=[(c, w) for c, w in removed],
    )


def _dedupe(cases: list[Case]) -> list[Case]:
    seen, out = set(), []
    for c in cases:
        if c.case_id not in seen:
            seen.add(c.case_id)
            out.append(c)
    return out


def group_cases(cases: list[Case]) -> list[Group]:
    """Partition cases into exact cross products, each run by one llama-bench process.

    Cases of a group share backend, model and environment; the llama-bench parameters that vary
    are merged one dimension at a time, only where the other dimensions are equal, so every group
    is exactly the cross product of its lists and never runs a case that was removed.
    """
    by_key: dict[tuple, list[Case]] = {}
    for c in cases:
        by_key.setdefault((c.backend, c.model, c.env, c.rpc), []).append(c)
    groups: list[Group] = []
    for (backend, model, env, rpc), members in by_key.items():
        # Each block: {param: tuple(values)}; tests (n_prompt, n_gen) travel as one dimension.
        blocks = [_block(c) for c in members]
        dims = sorted({k for b in blocks for k in b})
        for dim in dims:
            merged: dict[tuple, set] = {}
            order: list[tuple] = []
            for b in blocks:
                rest = tuple(sorted((k, v) for k, v in b.items() if k != dim))
                if rest not in merged:
                    merged[rest] = set()
                    order.append(rest)
                merged[rest] |= set(b.get(dim, ()))
            blocks = [dict(rest) | ({dim: tuple(sorted(merged[rest], key=str))} if merged[rest] else {}) for rest in order]
        for b in blocks:
            block_cases = [c for c in members if _in_block(c, b)]
            lists = {k: list(v) for k, v in b.items() if k not in ("test", "n_depth")}
            key = [backend, model, env, sorted(b.items())] + ([list(rpc)] if rpc else [])
            gid = hashlib.sha256(json.dumps(key, default=str).encode()).hexdigest()[:12]
            groups.append(Group(gid, backend, model, dict(env), lists, block_cases, rpc))
    return groups


def _block(c: Case) -> dict[str, tuple]:
    p = c.p
    b = {k: (v,) for k, v in p.items() if k not in ("n_prompt", "n_gen")}
    b["test"] = ((p.get("n_prompt", 0), p.get("n_gen", 0)),)
    return b


def _in_block(c: Case, block: dict[str, tuple]) -> bool:
    b = _block(c)
    return all(b[k][0] in block.get(k, ()) for k in b)


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
    if key == "flash_attn":
        fa = fa_value(value, strict=False)
        if fa is not None:
            return str(fa)
    return str(value).strip().lower()
