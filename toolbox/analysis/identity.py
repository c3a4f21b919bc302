"""Which rows are the same test, and the results they pool into.

Rows are the same test when every identity field (IDENTITY_FIELDS: model, test shape, backend, K/V
types, flash attention, batch sizes, threads, ...) is equal, the idea of llama.cpp's
compare-llama-bench.py. Rows with the same identity in one run (a resumed case, a repeated group)
are pooled by their raw samples, never averaged as averages. Old imported logs lack most fields:
every field is optional. Everything here is derived from rows.jsonl and run.json; nothing measures.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from toolbox.analysis import energy, stats
from toolbox.analysis import roofline as rf
from toolbox.llamacpp import BOOL_FIELDS, INT_FIELDS, as_int, fa_name, kv_order
from toolbox.llamacpp import test_name as _test_name
from toolbox.quality import gate
from toolbox.store.quality import row_key as quality_key

# Fields that make two results the same test, with the short header used in tables. `model` (llama.cpp's
# model type, present in every llama-bench format), `model_file` (the file's base name) and `env` are
# derived; see identity().
IDENTITY_FIELDS: dict[str, str] = {
    "backend": "backend",
    "backends": "ggml backends",
    "model": "model",
    "model_file": "model file",
    "env": "env",
    "n_threads": "threads",
    "n_gpu_layers": "ngl",
    "n_cpu_moe": "cpu moe",
    "n_batch": "batch",
    "n_ubatch": "ubatch",
    "type_k": "K",
    "type_v": "V",
    "flash_attn": "fa",
    "load_mode": "load",
    "split_mode": "split",
    "main_gpu": "main gpu",
    "no_kv_offload": "nkvo",
    "tensor_split": "ts",
    "tensor_buft_overrides": "ot",
    "embeddings": "embd",
    "no_op_offload": "nopo",
    "cpu_mask": "cpu mask",
    "cpu_strict": "cpu strict",
    "poll": "poll",
    "no_host": "no host",
    "repack": "repack",
    "rpc": "rpc workers",
    "n_prompt": "n_prompt",
    "n_gen": "n_gen",
    "n_depth": "depth",
}
SHAPE_FIELDS = ("n_prompt", "n_gen", "n_depth")  # shown through the test name (pp512@d4096)


def _norm(field_name: str, v):
    """One spelling per value, so that old and new llama-bench outputs (bool vs int fa, "1" vs 1) join."""
    if v is None or (isinstance(v, float) and v != v) or v == "":
        return None
    if field_name == "flash_attn":
        return fa_name(v) or str(v)
    if field_name in BOOL_FIELDS:
        s = str(v).strip().lower()
        return 1 if s in ("1", "true", "yes", "on") else 0 if s in ("0", "false", "no", "off") else s
    if field_name in INT_FIELDS:
        n = as_int(v)
        return n if n is not None else str(v)
    if field_name in ("type_k", "type_v"):
        return str(v).strip().lower()
    return v if isinstance(v, (int, float)) else str(v)


def fmt_value(v) -> str:
    """An identity value as tables show it ("—" when unknown)."""
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def model_name(row: dict) -> str | None:
    """The model as a person names it: the file name, else llama.cpp's model type (for messages and MoE hints)."""
    fname = row.get("model_filename")
    if fname:
        return PurePosixPath(str(fname)).name
    return row.get("model_type") or None


def identity(row: dict) -> dict:
    """The normalised identity of a row: IDENTITY_FIELDS, None where the row does not say."""
    out = {}
    for f in IDENTITY_FIELDS:
        if f == "model":
            out[f] = row.get("model_type") or None
        elif f == "model_file":
            fname = row.get("model_filename")
            out[f] = PurePosixPath(str(fname)).name if fname else None
        elif f == "rpc":  # the RPC workers the row was computed with; none: this machine alone
            out[f] = ",".join(str(w).split("@", 1)[0] for w in row.get("rpc") or []) or None
        elif f == "env":
            env = row.get("env") or {}
            out[f] = " ".join(f"{k}={v}" for k, v in sorted(env.items())) or None if isinstance(env, dict) else str(env)
        else:
            out[f] = _norm(f, row.get(f))
    return out


def test_name(row: dict) -> str:
    """llama-bench's test name of a row: pp512, tg128, pp512+tg128, with @d<depth> when the depth is not 0."""
    return _test_name(row.get("n_prompt"), row.get("n_gen"), row.get("n_depth"))


test_name.__test__ = False  # not a pytest test


@dataclass
class Result:
    run_id: str
    ident: dict
    test: str
    kind: str | None
    row: dict  # the first row of the pool (for model size, build, ...)
    summary: stats.Summary | None
    roofline: rf.Roofline | None = None
    quality: dict | None = None
    device_ok: bool | None = None
    fa_fallback: bool | None = None
    fa_on_cpu: bool | None = None
    n_rows: int = 1
    energy: dict | None = None  # toolbox.analysis.energy.pool of the rows' `energy` (telemetry), None without

    @property
    def tokens_per_j(self) -> float | None:
        return (self.energy or {}).get("tokens_per_j")

    @property
    def verdict(self) -> str | None:
        return (self.quality or {}).get("verdict") if isinstance(self.quality, dict) else None

    @property
    def not_counted(self) -> str | None:
        """Why this result is not a result (quality.gate.not_counted's reason), None when it counts."""
        return gate.not_counted("ok", self.device_ok, self.verdict, self.fa_fallback, fa_on_cpu=self.fa_on_cpu)


@dataclass
class Collected:
    results: list[Result]
    failures: list[dict]  # failed / timeout / skipped rows with no ok row of the same identity
    metas: list[dict]
    hidden: dict = field(default_factory=dict)  # identity field -> the one value it has everywhere
    shown: list[str] = field(default_factory=list)


def _hkey(v):
    """A hashable, type-exact key of an identity value (1, 1.0, True and "1" stay apart); JSON only for lists and dicts."""
    if v is None or isinstance(v, (str, int, float)):
        return (type(v).__name__, v)
    return ("json", json.dumps(v, sort_keys=True, default=str))


def _key(run_id: str, ident: dict) -> tuple:
    return (run_id, *(_hkey(ident[f]) for f in IDENTITY_FIELDS))


def collect(
    runs: list[tuple[dict, list[dict]]],
    *,
    unstable_spread: float = 0.05,
    peak_bandwidth_gbs: float = 256.0,
    peak_tflops: float = 59.4,
    active_hint: dict | None = None,
) -> Collected:
    """Pool the rows of each run by identity, summarise samples, compute roofline figures."""
    pools: dict[tuple, list[dict]] = {}
    failed: dict[tuple, dict] = {}
    metas = []
    for meta, rows in runs:
        meta = meta or {}
        metas.append(meta)
        run_id = meta.get("run_id") or "?"
        for row in rows:
            rid = row.get("run_id") or run_id
            k = _key(rid, identity(row))
            if (row.get("status") or "ok") == "ok":
                pools.setdefault(k, []).append(row)
            else:
                failed.setdefault(k, row)
    results = []
    model_entries = {m.get("run_id"): m.get("models") for m in metas}
    # a verdict belongs to a configuration (backend, model, K, V, fa, env), so to every test of it in the run
    order = {"broken": 0, "degraded": 1, "same": 2}
    config_quality: dict[tuple, dict] = {}
    for k, rows in pools.items():
        for r in rows:
            q = r.get("quality")
            ck = (k[0], quality_key(r))
            if isinstance(q, dict) and order.get(q.get("verdict"), 3) < order.get((config_quality.get(ck) or {}).get("verdict"), 4):
                config_quality[ck] = q
    for k, rows in pools.items():
        first = rows[0]
        samples = [s for r in rows for s in (r.get("samples_ts") or [])]
        if samples:
            summ = stats.summarize(samples, unstable_spread=unstable_spread)
        elif len(rows) == 1:
            summ = stats.summarize_row(first, unstable_spread)
        else:  # several rows without samples: the only fair pool is of their means
            summ = stats.summarize([r.get("avg_ts") for r in rows], unstable_spread=unstable_spread)
        hint = active_hint if active_hint else rf.model_hint(first, model_entries.get(k[0]))
        res = Result(k[0], identity(first), test_name(first), rf.test_kind(first), first, summ, n_rows=len(rows))
        res.roofline = rf.roofline(
            first, summ.median if summ else None, peak_bandwidth_gbs=peak_bandwidth_gbs, peak_tflops=peak_tflops, hint=hint
        )
        # the worst verdict of the configuration counts: one broken output makes the configuration broken
        res.quality = config_quality.get((k[0], quality_key(first)))
        oks = [r.get("device_ok") for r in rows]
        res.device_ok = False if False in oks else True if oks and all(o is True for o in oks) else None
        res.fa_fallback = True if any(r.get("fa_fallback") for r in rows) else None
        res.fa_on_cpu = True if any(r.get("fa_on_cpu") for r in rows) else None
        res.energy = energy.pool(rows)
        results.append(res)
    failures = [row for k, row in failed.items() if k not in pools]
    results.sort(key=sort_key)
    col = Collected(results, failures, metas)
    # decide on the successful results (failed rows lack most fields); a run of failures only uses those
    col.shown, col.hidden = visible_fields([r.ident for r in results] or [identity(r) for r in failures])
    return col


def sort_key(r: Result):
    def s(v):
        return (0, v, "") if isinstance(v, (int, float)) else (1, 0, str(v))

    i = r.ident
    return (
        r.run_id,
        s(i["backend"]),
        s(i["model"]),
        {"pp": 0, "tg": 1}.get(r.kind, 2),
        s(i["n_prompt"]),
        s(i["n_gen"]),
        s(i["n_depth"]),
        kv_order(i["type_k"] or ""),
        kv_order(i["type_v"] or ""),
        *(s(i[f]) for f in IDENTITY_FIELDS if f not in ("backend", "model", "type_k", "type_v", *SHAPE_FIELDS)),
    )


def visible_fields(idents: list[dict]) -> tuple[list[str], dict]:
    """(fields with two or more known values, {field: value} of those with one known value).

    A field that results do not record (old imported logs) is not a difference: a column of one value
    and "—" is stated once above the table ("where recorded"), never a column of its own.
    """
    shown, hidden = [], {}
    for f in IDENTITY_FIELDS:
        if f in SHAPE_FIELDS:
            continue
        known = {_hkey(i.get(f)): i.get(f) for i in idents if i.get(f) is not None}
        if len(known) > 1:
            shown.append(f)
        elif known:
            hidden[f] = next(iter(known.values()))
    # the llama.cpp backend string follows from the toolbox backend (cpu -> CPU): don't show it twice
    if "backend" in shown and "backends" in shown:
        pairs = {
            (json.dumps(i.get("backend"), default=str), json.dumps(i.get("backends"), default=str)) for i in idents if i.get("backend")
        }
        if len(pairs) == len({p[0] for p in pairs}):
            shown.remove("backends")
    return shown, hidden
