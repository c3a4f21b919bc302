"""Serving matrices: a preset (toolbox/matrices/serve/*.toml) or a TOML file -> server configurations x load levels.

    [server]            # lists, crossed: one llama-server start per combination (toolbox.llamacpp.SERVE_FLAGS)
    n_parallel = [4]
    kv_unified = [false, true]
    [load]
    concurrency = [1, 2, 4, 8]   # closed-loop levels
    rate = [2.0, 4.0]            # open-loop levels, requests/s, Poisson arrivals
    requests = 16                # requests per level (at least 2 x the concurrency)
    prompt_tokens = 64           # or { low = 32, high = 128 } (uniform, seeded)
    output_tokens = 32
    shared_prefix = 0            # words every prompt starts with (the prompt cache)
    [crosstalk]
    output_tokens = 24           # 0 turns the check off

Serving presets live apart from llama-bench's (toolbox/matrices/*.toml) because their rows, their
dimensions and their lifetime differ: a server started once per configuration and loaded at several
levels, not one llama-bench process per group of tests.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass, field
from difflib import get_close_matches
from importlib import resources
from pathlib import Path

from toolbox.errors import ToolboxError
from toolbox.llamacpp import KV_TYPES, SERVE_FLAGS, fa_value, kv_reject_reason
from toolbox.run.matrix import read_preset

KEYS = {"name", "description", "backends", "server", "load", "crosstalk", "seed", "request_timeout_s", "ready_timeout_s"}
LOAD_KEYS = {"concurrency", "rate", "requests", "prompt_tokens", "output_tokens", "shared_prefix"}
CROSSTALK_KEYS = {"output_tokens"}


def _id(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, default=str, sort_keys=True).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Level:
    """One load level: closed loop at a concurrency, or open loop at a rate (requests/s)."""

    mode: str  # "concurrency" or "rate"
    value: float

    @property
    def name(self) -> str:
        return f"c{int(self.value)}" if self.mode == "concurrency" else f"r{self.value:g}"


@dataclass
class ServeConfig:
    """One server configuration: backend, model and llama-server parameters; one server start."""

    backend: str
    model: str
    params: dict
    config_id: str = ""

    def __post_init__(self):
        self.config_id = self.config_id or _id(self.backend, Path(self.model).name, self.params)

    def case_id(self, level: Level, load: dict) -> str:
        return _id(self.config_id, level.mode, level.value, load)

    def label(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.params.items()) or "defaults"


@dataclass
class ServePlan:
    name: str
    description: str
    source: str
    text: str
    configs: list[ServeConfig]
    levels: list[Level]
    load: dict
    crosstalk_tokens: int
    seed: int
    request_timeout_s: float
    ready_timeout_s: float
    removed: list[tuple[dict, str]] = field(default_factory=list)

    def requests_at(self, level: Level) -> int:
        n = int(self.load.get("requests", 16))
        return max(n, 2 * int(level.value)) if level.mode == "concurrency" else n

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "description": self.description,
            "source": self.source,
            "toml": self.text,
            "configs": [{"config_id": c.config_id, "backend": c.backend, "model": c.model, "params": c.params} for c in self.configs],
            "levels": [{"mode": lv.mode, "value": lv.value, "name": lv.name} for lv in self.levels],
            "load": self.load,
            "crosstalk_tokens": self.crosstalk_tokens,
            "seed": self.seed,
            "request_timeout_s": self.request_timeout_s,
            "removed": [{"params": p, "reason": why} for p, why in self.removed],
        }


def serve_presets() -> dict[str, Path]:
    root = resources.files("toolbox") / "matrices" / "serve"
    return {Path(p.name).stem: Path(str(p)) for p in root.iterdir() if p.name.endswith(".toml")}


def load_serve_matrix(name_or_path: str) -> tuple[dict, str, str]:
    """A serving preset name or a TOML file -> (spec, source, text); unknown names list the presets."""
    spec, source, text = read_preset(name_or_path, serve_presets(), "serving matrix", "invoke serve-bench --list")
    validate(spec, source)
    return spec, source, text


def validate(spec: dict, where: str) -> None:
    """Unknown keys and server parameters are one-line errors naming the valid ones."""
    for key, valid in ((None, KEYS), ("load", LOAD_KEYS), ("crosstalk", CROSSTALK_KEYS), ("server", set(SERVE_FLAGS))):
        section = spec if key is None else spec.get(key, {})
        for k in section:
            if k not in valid:
                close = get_close_matches(k, valid, n=1)
                raise ToolboxError(
                    f"{where}: unknown {'key' if key is None else key + ' key'} {k!r}",
                    f"{'did you mean ' + repr(close[0]) + '? ' if close else ''}valid: {', '.join(sorted(valid))}",
                )
    for t in ("type_k", "type_v"):
        for v in _as_list(spec.get("server", {}).get(t, [])):
            if v not in KV_TYPES:
                raise ToolboxError(f"{where}: {t} {v!r} is not a KV cache type", f"use one of {', '.join(KV_TYPES)}")
    for v in _as_list(spec.get("server", {}).get("flash_attn", [])):
        fa_value(v)
    load = spec.get("load", {})
    levels = [*_as_list(load.get("concurrency", [])), *_as_list(load.get("rate", []))]
    if not levels:
        raise ToolboxError(f"{where}: no load levels", "give [load] concurrency = [1, 2, 4, 8] and/or rate = [1.0, 2.0]")
    if any(not isinstance(v, (int, float)) or v <= 0 for v in levels):
        raise ToolboxError(f"{where}: load levels must be positive numbers", "e.g. concurrency = [1, 2, 4, 8]")


def _as_list(v) -> list:
    return v if isinstance(v, list) else [v]


def expand(spec: dict, source: str, text: str, backends: list[str], models: list[str], overrides: dict) -> ServePlan:
    """Cross the server lists into configurations (removing what llama.cpp refuses) and list the levels."""
    server = {k: _as_list(v) for k, v in spec.get("server", {}).items()}
    load = dict(spec.get("load", {}))
    if overrides.get("concurrency") or overrides.get("rate"):  # levels given on the command line replace the matrix's
        load["concurrency"], load["rate"] = overrides.get("concurrency") or [], overrides.get("rate") or []
    for k in ("requests", "prompt_tokens", "output_tokens"):
        if overrides.get(k) is not None:
            load[k] = overrides[k]
    load.setdefault("requests", 16)
    load.setdefault("prompt_tokens", 64)
    load.setdefault("output_tokens", 32)
    load.setdefault("shared_prefix", 0)
    configs, removed = [], []
    names = list(server)
    for b in backends:
        for m in models:
            for combo in itertools.product(*(server[n] for n in names)) if names else [()]:
                params = dict(zip(names, combo, strict=True))
                why = kv_reject_reason(params.get("type_v"), params.get("flash_attn"))
                if why:
                    removed.append((params, why))
                    continue
                configs.append(ServeConfig(b, m, params))
    levels = [Level("concurrency", int(v)) for v in _as_list(load.get("concurrency", []))]
    levels += [Level("rate", float(v)) for v in _as_list(load.get("rate", []))]
    ct = spec.get("crosstalk", {}).get("output_tokens", 24)
    return ServePlan(
        spec.get("name", Path(source).stem),
        spec.get("description", ""),
        source,
        text,
        configs,
        levels,
        load,
        int(overrides["crosstalk_tokens"]) if overrides.get("crosstalk_tokens") is not None else int(ct),
        int(spec.get("seed", 0)),
        float(overrides.get("request_timeout_s") or spec.get("request_timeout_s", 120.0)),
        float(spec.get("ready_timeout_s", 300.0)),
        removed,
    )
