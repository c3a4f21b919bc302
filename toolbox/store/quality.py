"""The quality store: results/<run_id>/quality.jsonl, the correctness check's results beside the speed rows.

One line per checked configuration, appended and never rewritten: a later line for the same key
supersedes an earlier one. A configuration is (backend, model sha256, type_k, type_v, flash
attention, environment), the identity a check shares with the bench rows it belongs to. Readers get
the verdicts merged into each row's `quality` field (docs/results-schema.md). How a verdict is
reached lives in toolbox.quality; this module only stores and joins.
"""

from __future__ import annotations

import json
from pathlib import Path

from toolbox.files import append_jsonl, read_jsonl
from toolbox.llamacpp import fa_value

QUALITY_FILE = "quality.jsonl"
# The fields of a check result that a row's `quality` carries.
ROW_QUALITY_KEYS = (
    "verdict",
    "ppl",
    "ppl_base",
    "kld_mean",
    "kld_p99",
    "top1_agree",
    "error",
    "image",
    "ctx",
    "chunks",
    "checked_at",
)


def quality_key(backend, model_sha256, type_k, type_v, flash_attn, env) -> str:
    """The identity a quality result shares with the bench rows it belongs to."""
    fa = fa_value(flash_attn, strict=False)
    return json.dumps([backend, model_sha256, type_k, type_v, fa, {k: v for k, v in sorted((env or {}).items()) if v != ""}])


def row_key(row: dict) -> str:
    """quality_key of a results row."""
    return quality_key(
        row.get("backend"), row.get("model_sha256"), row.get("type_k"), row.get("type_v"), row.get("flash_attn"), row.get("env")
    )


def append(run_dir: Path, result: dict) -> None:
    """Append one check result (durably) to the run's quality.jsonl."""
    append_jsonl(Path(run_dir) / QUALITY_FILE, result)


def load(run_dir: Path) -> dict[str, dict]:
    """key -> the latest check result in results/<run_id>/quality.jsonl (lines that are not JSON objects are skipped)."""
    records, _ = read_jsonl(Path(run_dir) / QUALITY_FILE)
    out: dict[str, dict] = {}
    for rec in records:
        key = rec.get("key") or quality_key(
            rec.get("backend"),
            rec.get("model_sha256"),
            rec.get("type_k"),
            rec.get("type_v"),
            rec.get("flash_attn"),
            rec.get("env"),
        )
        out[key] = rec
    return out


def quality_of(result: dict) -> dict:
    """The `quality` field of a results row, from a check result (docs/results-schema.md)."""
    q = {k: result.get(k) for k in ROW_QUALITY_KEYS}
    q["base_model_sha256"] = (result.get("base") or {}).get("model_sha256")
    return q


def merge(rows: list[dict], run_dir: Path) -> list[dict]:
    """Rows with `quality` filled from quality.jsonl where the row has none (same backend, model, K, V, FA, env)."""
    found = load(run_dir)
    if not found:
        return rows
    out = []
    for r in rows:
        if r.get("quality") is None and r.get("status", "ok") == "ok":
            q = found.get(row_key(r))
            if q is not None:
                r = dict(r, quality=quality_of(q))
        out.append(r)
    return out
