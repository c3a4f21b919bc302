"""One measurement as rows.jsonl stores it: our fields, llama-bench's fields, derived statistics, `raw`.

SCHEMA_VERSION is the version of rows and run.json; migrations upgrade older records in memory
(files are never rewritten). docs/results-schema.md describes every field.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path

from toolbox.errors import ToolboxError
from toolbox.llamacpp import FIELDS, test_name
from toolbox.parse import normalize

SCHEMA_VERSION = 1
STATUSES = ("ok", "failed", "timeout", "skipped")
OUR_FIELDS = (
    "case_id",
    "group_id",
    "status",
    "error",
    "backend",
    "image",
    "image_digest",
    "env",
    "model_sha256",
    "device_ok",
    "fa_fallback",
    "fa_on_cpu",
    "versions",
    "quality",
    "source",
    "rpc",
    "load_s",
)


def clean(value):
    """JSON-safe: NaN/NA -> null, numpy scalars -> Python, tuples -> lists, paths -> text."""
    if value is None:
        return None
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if type(value).__name__ == "NAType":  # pandas.NA, without importing pandas
        return None
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        return clean(value.item())
    return value


def make_row(llama_bench_row: dict, **ours) -> dict:
    """One rows.jsonl record: our fields, llama-bench's fields (normalized) at top level, derived stats, raw."""
    unknown = set(ours) - set(OUR_FIELDS)
    if unknown:
        raise TypeError(f"make_row: unknown fields {sorted(unknown)} (known: {OUR_FIELDS})")
    row: dict = {
        "case_id": None,
        "group_id": None,
        "status": "ok",
        "error": None,
        "backend": None,
        "image": None,
        "image_digest": None,
        "env": {},
        "model_sha256": None,
        "device_ok": None,
        "fa_fallback": None,
        "fa_on_cpu": None,
        "versions": {},
        "quality": None,
        "source": None,
    }
    row.update(ours)
    if row["status"] not in STATUSES:
        raise ValueError(f"row status {row['status']!r} is not one of {STATUSES}")
    norm = normalize(llama_bench_row)
    raw = norm.pop("raw")
    for f in FIELDS:
        row[f] = norm.get(f)
    row.update(derived_stats(row))
    row["raw"] = raw
    return clean(row)


def derived_stats(row: dict) -> dict:
    """The test name and statistics over the raw samples (median, min, max, count)."""
    out = {
        "test": test_name(row.get("n_prompt"), row.get("n_gen"), row.get("n_depth"))
        if row.get("n_prompt") is not None or row.get("n_gen") is not None
        else None
    }
    ts = [float(v) for v in (row.get("samples_ts") or []) if v is not None]
    out.update(
        n_samples=len(ts) or None,
        median_ts=statistics.median(ts) if ts else None,
        min_ts=min(ts) if ts else None,
        max_ts=max(ts) if ts else None,
    )
    return out


def _migrate_row_0_to_1(row: dict) -> dict:
    """Version 0: rows without schema_version. Either early toolbox rows (every field at top level,
    no raw) or llama-bench's own jsonl rows, as the compose runner writes them: both become full rows."""
    if "raw" not in row and "status" not in row:  # a bare llama-bench row
        return {"schema_version": 1, **make_row(row, status="ok")}
    row = dict(row)
    if "raw" not in row:
        row["raw"] = {k: v for k, v in row.items() if k in FIELDS}
    row.setdefault("status", "ok")
    row["schema_version"] = 1
    return row


ROW_MIGRATIONS = {0: _migrate_row_0_to_1}


def migrate(obj: dict, migrations: dict, what: str) -> dict:
    """Upgrade a record to SCHEMA_VERSION in memory with the given migrations (version -> function)."""
    v = obj.get("schema_version", 0)
    if not isinstance(v, int) or v > SCHEMA_VERSION:
        raise ToolboxError(f"{what} has schema_version {v!r}, this toolbox reads up to {SCHEMA_VERSION}", "update the toolbox (git pull)")
    while v < SCHEMA_VERSION:
        obj = migrations[v](obj)
        v = obj["schema_version"]
    return obj


def migrate_row(row: dict) -> dict:
    """Upgrade one row to SCHEMA_VERSION in memory."""
    return migrate(row, ROW_MIGRATIONS, "a row")


# Serving rows (kind "serve"): one per server configuration and load level. The level's figures
# (toolbox.run.serve_stats.summarize_level) sit at top level; every request's record under raw.requests.
SERVE_FIELDS = (
    "kind",
    "config_id",
    "level",
    "mode",
    "concurrency",
    "rate",
    "server",
    "load",
    "crosstalk",
    "server_check",
    "telemetry",
    "slo",
    "build_commit",
    "build_number",
    "model_filename",
)


def make_serve_row(metrics: dict, requests: list[dict], **fields) -> dict:
    """One serving level as rows.jsonl stores it: our fields, the serving fields, the level's figures, raw requests."""
    unknown = set(fields) - set(OUR_FIELDS) - set(SERVE_FIELDS)
    if unknown:
        raise TypeError(f"make_serve_row: unknown fields {sorted(unknown)}")
    row: dict = {k: None for k in OUR_FIELDS} | {k: None for k in SERVE_FIELDS} | {"status": "ok", "env": {}, "kind": "serve"}
    row.update(fields)
    if row["status"] not in STATUSES:
        raise ValueError(f"row status {row['status']!r} is not one of {STATUSES}")
    row.update(metrics)
    row["raw"] = {"requests": requests}
    return clean(row)
