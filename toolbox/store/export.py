"""export RUN --format csv|parquet|sqlite|jsonl: the rows of one or more runs in another format.

- jsonl: the rows exactly as stored (the source of truth), one run after another.
- csv / parquet: one row per measurement, our fields + llama-bench's fields + derived statistics;
  nested values (env, quality, raw, source) as JSON text; parquet keeps samples as lists, csv as JSON.
- sqlite: llama-bench's own `llama_bench` table (the columns and types `llama-bench -o sql` writes at
  the pinned commit), so llama.cpp's scripts/compare-llama-bench.py reads it; plus `toolbox_rows`
  (our fields and the raw samples, linked by `llama_bench_rowid`) and `toolbox_runs` (each run.json).
  Only successful rows go into `llama_bench`, as llama-bench writes only finished tests.
  compare-llama-bench.py joins rows with SQL `=`, which never matches NULL, so a field the source did
  not record is written as llama-bench's default (LLAMA_BENCH_DEFAULTS), or '' / 0.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

from toolbox.errors import ToolboxError
from toolbox.llamacpp import CURRENT_FIELDS, SQL_BOOL_FIELDS, fa_value, sql_type

FORMATS = ("csv", "parquet", "sqlite", "jsonl")

# The columns of llama-bench's `-o sql` at the pinned commit (types: toolbox.llamacpp.sql_type);
# tests/test_export.py checks both against the pinned source.
LLAMA_BENCH_FIELDS: tuple[str, ...] = CURRENT_FIELDS


# llama-bench's defaults (cmd_params_defaults at the pinned commit), for fields an old log did not record.
LLAMA_BENCH_DEFAULTS = {
    "build_commit": None,
    "build_number": 0,
    "cpu_info": "",
    "gpu_info": "",
    "backends": "",
    "model_filename": "",
    "model_type": "",
    "model_size": 0,
    "model_n_params": 0,
    "n_batch": 2048,
    "n_ubatch": 512,
    "n_threads": 0,
    "cpu_mask": "0x0",
    "cpu_strict": 0,
    "poll": 50,
    "type_k": "f16",
    "type_v": "f16",
    "n_gpu_layers": 99,
    "n_cpu_moe": 0,
    "split_mode": "layer",
    "main_gpu": 0,
    "no_kv_offload": 0,
    "flash_attn": -1,
    "devices": "auto",
    "tensor_split": "0.00",
    "tensor_buft_overrides": "none",
    "load_mode": "auto",
    "lazy_mode": "auto",
    "embeddings": 0,
    "no_op_offload": 0,
    "no_host": 0,
    "repack": 1,
    "fit_target": 0,
    "fit_min_ctx": 0,
    "n_prompt": 0,
    "n_gen": 0,
    "n_depth": 0,
    "test_time": "",
    "avg_ns": 0,
    "stddev_ns": 0,
    "avg_ts": 0.0,
    "stddev_ts": 0.0,
}
NESTED = ("env", "quality", "raw", "source")
SAMPLES = ("samples_ns", "samples_ts")


def _sql_value(field: str, v):
    if v is None or v == "":
        return LLAMA_BENCH_DEFAULTS.get(field, "")
    kind = sql_type(field)
    if field == "flash_attn":
        fa = fa_value(v, strict=False)
        return v if fa is None else fa
    if field in SQL_BOOL_FIELDS:
        return 1 if str(v).strip().lower() in ("1", "true", "yes", "on") else 0
    if kind == "INTEGER":
        try:
            return int(float(v))
        except (TypeError, ValueError):
            return LLAMA_BENCH_DEFAULTS.get(field, 0)
    if kind == "REAL":
        try:
            return float(v)
        except (TypeError, ValueError):
            return 0.0
    return str(v)


def llama_bench_record(row: dict) -> dict:
    """One row as llama-bench's SQL printer would insert it (every field set)."""
    rec = {f: _sql_value(f, row.get(f)) for f in LLAMA_BENCH_FIELDS}
    # llama-bench derives avg_ns / stddev_ns from the samples; recompute when a source gave only t/s
    if not row.get("avg_ns") and row.get("samples_ns"):
        import statistics

        ns = [float(x) for x in row["samples_ns"]]
        rec["avg_ns"] = int(statistics.mean(ns))
        rec["stddev_ns"] = int(statistics.stdev(ns)) if len(ns) > 1 else 0
    return rec


NotCounted = Callable[[dict], "str | None"]

# toolbox_rows: our fields beside llama-bench's table, linked by llama_bench_rowid. not_counted is the
# quality gate's reason (quality/gate.py: failed, broken, cross-talk, off-device, fa-on-cpu, fallback).
ROWS_TABLE_COLUMNS = (
    ("llama_bench_rowid", "INTEGER"),
    ("run_id", "TEXT"),
    ("case_id", "TEXT"),
    ("group_id", "TEXT"),
    ("status", "TEXT"),
    ("error", "TEXT"),
    ("backend", "TEXT"),
    ("image", "TEXT"),
    ("image_digest", "TEXT"),
    ("env", "JSON"),
    ("model_sha256", "TEXT"),
    ("device_ok", "INTEGER"),
    ("quality", "JSON"),
    ("samples_ns", "JSON"),
    ("samples_ts", "JSON"),
    ("fa_fallback", "INTEGER"),
    ("fa_on_cpu", "INTEGER"),
    ("not_counted", "TEXT"),
)


def _sql_kind(kind: str) -> str:
    return "TEXT" if kind == "JSON" else kind  # JSON as text: SQLite would give a "JSON" column numeric affinity


def _toolbox_value(kind: str, v):
    """A toolbox_rows value: JSON as text, INTEGER flags as 0/1, NULL stays NULL."""
    if v is None:
        return None
    if kind == "JSON":
        return json.dumps(v)
    return int(bool(v)) if kind == "INTEGER" else v


def write_sqlite(runs: list[tuple[dict, list[dict]]], path: Path, append: bool = False, *, not_counted: NotCounted) -> int:
    """Write the llama_bench, toolbox_rows and toolbox_runs tables; returns the number of llama_bench rows.

    not_counted: the quality gate's reason for a row (quality.gate.row_not_counted, a layer above the store)."""
    path = Path(path)
    if path.exists() and not append:
        path.unlink()
    con = sqlite3.connect(path)
    try:
        cols = ", ".join(f"{f} {sql_type(f)}" for f in LLAMA_BENCH_FIELDS)
        con.execute(f"CREATE TABLE IF NOT EXISTS llama_bench ({cols})")
        cols = ", ".join(f"{name} {_sql_kind(kind)}" for name, kind in ROWS_TABLE_COLUMNS)
        con.execute(f"CREATE TABLE IF NOT EXISTS toolbox_rows ({cols})")
        have = {r[1] for r in con.execute("PRAGMA table_info(toolbox_rows)")}
        for name, kind in ROWS_TABLE_COLUMNS:  # a file an earlier toolbox wrote (--append) gains the newer columns
            if name not in have:
                con.execute(f"ALTER TABLE toolbox_rows ADD COLUMN {name} {_sql_kind(kind)}")
        names = [name for name, _ in ROWS_TABLE_COLUMNS]
        insert_ours = f"INSERT INTO toolbox_rows ({', '.join(names)}) VALUES ({', '.join('?' for _ in names)})"
        con.execute("CREATE TABLE IF NOT EXISTS toolbox_runs (run_id TEXT PRIMARY KEY, run_json TEXT)")
        placeholders = ", ".join("?" for _ in LLAMA_BENCH_FIELDS)
        insert = f"INSERT INTO llama_bench ({', '.join(LLAMA_BENCH_FIELDS)}) VALUES ({placeholders})"
        n = 0
        for meta, rows in runs:
            run_id = (meta or {}).get("run_id")
            con.execute("INSERT OR REPLACE INTO toolbox_runs VALUES (?, ?)", (run_id, json.dumps(meta, default=str)))
            for row in rows:
                rowid = None
                if (row.get("status") or "ok") == "ok" and row.get("avg_ts") is not None:
                    rec = llama_bench_record(row)
                    rowid = con.execute(insert, [rec[f] for f in LLAMA_BENCH_FIELDS]).lastrowid
                    n += 1
                ours = {
                    "llama_bench_rowid": rowid,
                    "run_id": row.get("run_id") or run_id,
                    "status": row.get("status") or "ok",
                    "not_counted": not_counted(row),
                }
                con.execute(
                    insert_ours, [ours[col] if col in ours else _toolbox_value(kind, row.get(col)) for col, kind in ROWS_TABLE_COLUMNS]
                )
        con.commit()
    finally:
        con.close()
    return n


def frame(runs: list[tuple[dict, list[dict]]], samples_as_json: bool, *, not_counted: NotCounted):
    """All rows of the runs as one DataFrame: nested values as JSON text, samples as lists or JSON text,
    and a column of the quality gate's reason (None where the row counts)."""
    import pandas as pd

    from toolbox.llamacpp import FIELDS
    from toolbox.store.rows import OUR_FIELDS

    recs = []
    for meta, rows in runs:
        for row in rows:
            r = dict(row)
            r["run_id"] = r.get("run_id") or (meta or {}).get("run_id")
            r["kind"] = (meta or {}).get("kind")
            r["not_counted"] = not_counted(row)
            for k in NESTED:
                if k in r:
                    r[k] = None if r[k] is None else json.dumps(r[k], sort_keys=True, default=str)
            for k in SAMPLES:
                v = r.get(k)
                if samples_as_json:
                    r[k] = None if v is None else json.dumps(v)
                else:
                    r[k] = None if v is None else [float(x) for x in v]
            recs.append(r)
    cols = ["run_id", "kind", "not_counted", *OUR_FIELDS, *FIELDS]
    df = pd.DataFrame(recs)
    for c in cols:
        if c not in df.columns:
            df[c] = None
    extra = [c for c in df.columns if c not in cols]
    df = df[cols + extra]
    for c in df.columns:  # parquet wants one type per column: text for mixed object columns
        if df[c].dtype == object and c not in SAMPLES:
            kinds = {type(v) for v in df[c] if v is not None}
            if len(kinds) > 1:
                df[c] = df[c].map(lambda v: None if v is None else str(v))
    return df


def export_runs(
    runs: list[tuple[dict, list[dict]]], fmt: str, out: Path, append: bool = False, *, not_counted: NotCounted
) -> tuple[Path, int]:
    """Write the runs in one format to `out`; returns (path, rows written)."""
    if fmt not in FORMATS:
        raise ToolboxError(f"unknown export format {fmt!r}", f"choose one of {', '.join(FORMATS)}")
    if append and fmt not in ("sqlite", "jsonl"):
        raise ToolboxError(f"--append: a {fmt} file cannot be appended to", "use --format sqlite or jsonl, or leave out --append")
    out = Path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        if fmt == "sqlite":
            try:
                return out, write_sqlite(runs, out, append=append, not_counted=not_counted)
            except sqlite3.DatabaseError as exc:
                raise ToolboxError(
                    f"--append: {out} is not a SQLite database this export can add to ({exc})",
                    "give a file written by invoke export --format sqlite, or a new file name",
                ) from None
        if fmt == "jsonl":
            n = 0
            with open(out, "a" if append else "w", encoding="utf-8") as f:
                for _, rows in runs:
                    for row in rows:
                        f.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
                        n += 1
            return out, n
        df = frame(runs, samples_as_json=(fmt == "csv"), not_counted=not_counted)
        if fmt == "csv":
            df.to_csv(out, index=False)
        else:
            try:
                df.to_parquet(out, index=False)
            except ImportError:
                raise ToolboxError("writing parquet needs pyarrow", "pip install pyarrow, or export --format csv") from None
        return out, len(df)
    except OSError as exc:
        raise ToolboxError(f"cannot write {out}: {exc.strerror or exc}", "pass a writable path with --out") from None


def export(
    settings, run_ids: list[str] | None, fmt: str, out: Path | None = None, append: bool = False, *, not_counted: NotCounted
) -> tuple[Path, int]:
    """`invoke export RUN [RUN ...] --format ...`: default file beside the (last) run: <run_id>.<ext>."""
    from toolbox.store.runs import load_runs

    if fmt not in FORMATS:
        raise ToolboxError(f"unknown export format {fmt!r}", f"choose one of {', '.join(FORMATS)}")
    runs = load_runs(settings.results_dir, run_ids)
    ids = [m.get("run_id") for m, _ in runs]
    if out is None:
        ext = {"sqlite": "sqlite"}.get(fmt, fmt)
        out = Path(settings.results_dir) / ids[-1] / f"{'+'.join(ids)}.{ext}"
    return export_runs(runs, fmt, Path(out), append=append, not_counted=not_counted)
