"""The results store: results/<run_id>/{run.json, rows.jsonl, logs/}. See docs/results-schema.md.

rows.jsonl is the source of truth: rows are appended, flushed and fsynced as they arrive, a
half-written last line (a power cut) is skipped with a warning on read and never breaks a later
append. Runs are never overwritten; run ids sort by time and cannot collide. Nothing is parsed back
from a file name: every parameter lives in the data.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import os
import re
import secrets
import shutil
import statistics
import subprocess
import threading
import warnings
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from toolbox.errors import ToolboxError
from toolbox.llama_bench import FIELDS, normalize, parse, rows_of, test_name

SCHEMA_VERSION = 1
RUN_ID_RE = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{6}$")
STATUSES = ("ok", "failed", "timeout", "skipped")
RUN_STATUSES = ("running", "complete", "interrupted", "failed")
OUR_FIELDS = ("case_id", "group_id", "status", "error", "backend", "image", "image_digest", "env", "model_sha256",
              "device_ok", "quality", "source")


class ResultsWarning(UserWarning):
    """A problem in stored results that was skipped (a half-written line, a corrupt run)."""


def new_run_id(now: datetime | None = None) -> str:
    """UTC start time + 6 random hex digits, e.g. 20261126T091502Z-3f9a1c: sorts by time, cannot collide."""
    now = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    return f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _toolbox_state() -> dict:
    from toolbox import __version__
    from toolbox.settings import REPO_ROOT

    def git(*args):
        try:  # read-only; --no-optional-locks: never take the index lock of a tree someone is working in
            r = subprocess.run(["git", "--no-optional-locks", "-C", str(REPO_ROOT), *args], capture_output=True, text=True, timeout=10)
            return r.stdout.strip() if r.returncode == 0 else None
        except (OSError, subprocess.SubprocessError):
            return None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"version": __version__, "git_commit": commit, "git_dirty": None if status is None else bool(status)}


def _clean(value):
    """JSON-safe: NaN/NA -> null, numpy scalars -> Python, tuples -> lists."""
    if value is None or value is pd.NA:
        return None
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        return _clean(value.item())
    if isinstance(value, Path):
        return str(value)
    return value


def _write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(_clean(data), f, indent=2, ensure_ascii=False, default=str)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class RunWriter:
    """Writes one run: run.json (atomic replace) and rows.jsonl (append, flush, fsync per row)."""

    def __init__(self, path: Path, meta: dict):
        self.path = path
        self.run_id = path.name
        self.logs_dir = path / "logs"
        self.meta = meta
        self._rows_path = path / "rows.jsonl"
        self._lock = threading.Lock()

    @classmethod
    def create(cls, results_dir: Path, meta: dict) -> "RunWriter":
        """Make results/<run_id>/ (never an existing one) with logs/ and run.json (status 'running')."""
        results_dir = Path(results_dir)
        results_dir.mkdir(parents=True, exist_ok=True)
        for _ in range(20):
            run_id = new_run_id()
            path = results_dir / run_id
            try:
                path.mkdir()
                break
            except FileExistsError:
                continue
        else:  # pragma: no cover - 20 collisions of 24 random bits in one second
            raise ToolboxError(f"could not create a new run directory in {results_dir}", "try again")
        (path / "logs").mkdir()
        (path / "rows.jsonl").touch()
        full = {"schema_version": SCHEMA_VERSION, "run_id": run_id, "kind": "bench", "status": "running",
                "started_at": _now(), "ended_at": None, "toolbox": _toolbox_state()}
        full.update(meta)
        full.update(schema_version=SCHEMA_VERSION, run_id=run_id)
        full.setdefault("status", "running")
        _write_json_atomic(path / "run.json", full)
        return cls(path, full)

    @classmethod
    def open(cls, results_dir: Path, run_id: str) -> "RunWriter":
        """Reopen an existing run to append to it (`invoke bench --resume`)."""
        meta = _read_meta(_run_dir(Path(results_dir), run_id))
        w = cls(Path(results_dir) / run_id, meta)
        w.logs_dir.mkdir(exist_ok=True)
        return w

    def append(self, row: dict) -> dict:
        """Write one row as one JSON line, flushed and fsynced; returns the row as stored."""
        stored = {"schema_version": SCHEMA_VERSION, "run_id": self.run_id}
        stored.update({k: v for k, v in row.items() if k not in ("schema_version", "run_id")})
        stored = _clean(stored)
        line = json.dumps(stored, ensure_ascii=False, default=str) + "\n"
        with self._lock, open(self._rows_path, "ab+") as f:
            f.seek(0, os.SEEK_END)
            if f.tell() > 0:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":  # a half-written line from a crash: start a fresh line
                    f.write(b"\n")
            f.write(line.encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())
        return stored

    def update(self, **fields) -> None:
        """Merge fields into run.json (written to a temporary file, then renamed over it)."""
        with self._lock:
            self.meta.update(fields)
            _write_json_atomic(self.path / "run.json", self.meta)

    def finish(self, status: str) -> None:
        """Close the run: ended_at and status ('complete', 'interrupted', 'failed')."""
        if status not in RUN_STATUSES:
            raise ValueError(f"run status {status!r} is not one of {RUN_STATUSES}")
        self.update(status=status, ended_at=_now())


def make_row(llama_bench_row: dict, **ours) -> dict:
    """One rows.jsonl record: our fields, llama-bench's fields (normalized) at top level, derived stats, raw."""
    unknown = set(ours) - set(OUR_FIELDS)
    if unknown:
        raise TypeError(f"make_row: unknown fields {sorted(unknown)} (known: {OUR_FIELDS})")
    row: dict = {"case_id": None, "group_id": None, "status": "ok", "error": None, "backend": None, "image": None,
                 "image_digest": None, "env": {}, "model_sha256": None, "device_ok": None, "quality": None, "source": None}
    row.update(ours)
    if row["status"] not in STATUSES:
        raise ValueError(f"row status {row['status']!r} is not one of {STATUSES}")
    norm = normalize(llama_bench_row)
    raw = norm.pop("raw")
    for f in FIELDS:
        row[f] = norm.get(f)
    row.update(derived_stats(row))
    row["raw"] = raw
    return _clean(row)


def derived_stats(row: dict) -> dict:
    """The test name and statistics over the raw samples (median, min, max, count)."""
    out = {"test": test_name(row.get("n_prompt"), row.get("n_gen"), row.get("n_depth"))
           if row.get("n_prompt") is not None or row.get("n_gen") is not None else None}
    ts = [float(v) for v in (row.get("samples_ts") or []) if v is not None]
    out.update(n_samples=len(ts) or None, median_ts=statistics.median(ts) if ts else None,
               min_ts=min(ts) if ts else None, max_ts=max(ts) if ts else None)
    return out


# --- reading -------------------------------------------------------------------------------


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
RUN_MIGRATIONS = {0: lambda meta: {**meta, "schema_version": 1, "kind": meta.get("kind", "bench")}}


def _migrate(obj: dict, migrations: dict, what: str) -> dict:
    v = obj.get("schema_version", 0)
    if not isinstance(v, int) or v > SCHEMA_VERSION:
        raise ToolboxError(f"{what} has schema_version {v!r}, this toolbox reads up to {SCHEMA_VERSION}", "update the toolbox (git pull)")
    while v < SCHEMA_VERSION:
        obj = migrations[v](obj)
        v = obj["schema_version"]
    return obj


def migrate_row(row: dict) -> dict:
    """Upgrade one row to SCHEMA_VERSION in memory (files are never rewritten)."""
    return _migrate(row, ROW_MIGRATIONS, "a row")


def migrate_run(meta: dict) -> dict:
    """Upgrade one run.json to SCHEMA_VERSION in memory."""
    return _migrate(meta, RUN_MIGRATIONS, "run.json")


def read_rows(run_dir: Path) -> list[dict]:
    """All rows of a run. A line that is not JSON (a half-written line after a power cut) is skipped with a warning."""
    path = Path(run_dir) / "rows.jsonl"
    if not path.exists():
        return []
    data = path.read_bytes()
    lines = data.split(b"\n")
    rows = []
    for i, raw_line in enumerate(lines):
        if not raw_line.strip():
            continue
        try:
            row = json.loads(raw_line.decode("utf-8"))
            if not isinstance(row, dict):
                raise ValueError("not an object")
        except (ValueError, UnicodeDecodeError):
            last = all(not rest.strip() for rest in lines[i + 1:])
            what = "half-written last line (the run was cut off while writing)" if last else "line that is not a JSON row"
            warnings.warn(f"{path}: skipped a {what}, line {i + 1}", ResultsWarning, stacklevel=2)
            continue
        rows.append(migrate_row(row))
    return rows


def _run_dir(results_dir: Path, run_id: str) -> Path:
    path = Path(results_dir) / run_id
    if run_id and "/" not in run_id and path.is_dir():
        return path
    ids = _run_ids(results_dir)
    close = difflib.get_close_matches(run_id, ids, n=3, cutoff=0.3) or [i for i in ids if run_id and run_id in i][:3]
    hint = f"did you mean {', '.join(close)}?" if close else "`invoke results` lists the runs"
    raise ToolboxError(f"no run {run_id!r} in {results_dir}", hint)


def _read_meta(run_dir: Path) -> dict:
    path = run_dir / "run.json"
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(meta, dict):
            raise ValueError("not a JSON object")
    except FileNotFoundError:
        raise ToolboxError(f"run {run_dir.name}: run.json is missing", f"its rows are in {run_dir}/rows.jsonl; restore run.json or move the run away") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ToolboxError(f"run {run_dir.name}: run.json is corrupt ({exc})", f"its rows are in {run_dir}/rows.jsonl; restore run.json or move the run away") from None
    return migrate_run(meta)


def _run_ids(results_dir: Path) -> list[str]:
    d = Path(results_dir)
    if not d.is_dir():
        return []
    return sorted(p.name for p in d.iterdir() if p.is_dir() and (RUN_ID_RE.match(p.name) or (p / "run.json").exists()))


def load_run(results_dir: Path, run_id: str) -> tuple[dict, list[dict]]:
    """(run.json, rows) of one run; an unknown id raises ToolboxError naming the closest ids."""
    run_dir = _run_dir(Path(results_dir), run_id)
    meta = _read_meta(run_dir)
    rows = read_rows(run_dir)
    from toolbox.check import merge_quality  # the correctness check's verdicts (quality.jsonl) beside the speed rows

    rows = merge_quality(rows, run_dir)
    if meta.get("kind") == "compose" and len(meta.get("images", {})) == 1:
        # the compose runner writes llama-bench's rows as they are: the run says which image made them
        backend = next(iter(meta["images"]))
        for r in rows:
            r["run_id"] = r.get("run_id") or meta.get("run_id")
            r["backend"] = r.get("backend") or backend
    return meta, rows


def load_rows(results_dir: Path, run_ids: list[str] | None = None) -> pd.DataFrame:
    """Rows of many runs (None = all) as one DataFrame with a run_id column; unreadable runs are skipped with a warning."""
    ids = _run_ids(results_dir) if run_ids is None else list(run_ids)
    if run_ids is not None:
        for rid in ids:
            _run_dir(Path(results_dir), rid)  # a typo is an error, not a warning
    rows = []
    for rid in ids:
        try:
            meta, run_rows = load_run(results_dir, rid)
        except (ToolboxError, OSError) as exc:
            warnings.warn(f"skipped run {rid}: {exc}", ResultsWarning, stacklevel=2)
            continue
        for r in run_rows:
            r = dict(r)
            r["run_id"] = rid
            r.setdefault("kind", meta.get("kind"))
            rows.append(r)
    cols = ["run_id", "kind", *OUR_FIELDS, *FIELDS, "test", "n_samples", "median_ts", "min_ts", "max_ts", "raw"]
    df = pd.DataFrame(rows)
    for c in cols:
        if c not in df.columns:
            df[c] = None
    return df[cols + [c for c in df.columns if c not in cols]]


def latest_run_id(results_dir: Path) -> str:
    """The newest run (run ids sort by start time)."""
    ids = [i for i in _run_ids(results_dir) if RUN_ID_RE.match(i)]
    if not ids:
        raise ToolboxError(f"no runs in {results_dir}", "run `invoke bench`, or `invoke import FILE` for existing llama-bench output")
    return ids[-1]


def list_runs(results_dir: Path) -> list[dict]:
    """One summary per run, oldest first; a run that cannot be read is listed with status 'corrupt'."""
    out = []
    for rid in _run_ids(results_dir):
        entry = {"run_id": rid, "started_at": None, "kind": None, "status": None, "backends": [], "models": [],
                 "rows": 0, "rows_ok": 0, "rows_failed": 0, "error": None}
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                meta, rows = load_run(results_dir, rid)
        except (ToolboxError, OSError) as exc:
            entry.update(status="corrupt", error=str(exc))
            out.append(entry)
            continue
        backends = sorted({str(r.get("backend") or r.get("backends")) for r in rows if r.get("backend") or r.get("backends")})
        models = sorted({str(r.get("model_type") or Path(str(r.get("model_filename"))).name) for r in rows
                         if r.get("model_type") or r.get("model_filename")})
        entry.update(started_at=meta.get("started_at"), kind=meta.get("kind"), status=meta.get("status"), backends=backends,
                     models=models, rows=len(rows), rows_ok=sum(r.get("status") == "ok" for r in rows),
                     rows_failed=sum(r.get("status") != "ok" for r in rows),
                     error="; ".join(str(w.message) for w in caught) or None)
        out.append(entry)
    return out


# --- import --------------------------------------------------------------------------------


def _expand(paths: list[Path]) -> list[Path]:
    files = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.is_file() and not any(part.startswith(".") for part in f.relative_to(p).parts))
        elif p.is_file():
            files.append(p)
        else:
            raise ToolboxError(f"{p} does not exist", "give llama-bench output files or directories that hold them")
    return files


def import_files(paths: list[Path], results_dir: Path, argv: list[str] | None = None) -> str:
    """Turn existing llama-bench output (files, or directories walked recursively) into one run of kind 'imported'."""
    files = _expand(paths)
    if not files:
        raise ToolboxError("no files to import", "give llama-bench output files or directories that hold them")
    parsed = []
    for f in files:
        data = f.read_bytes()
        df = parse(data.decode("utf-8", errors="replace"))
        parsed.append((f, hashlib.sha256(data).hexdigest(), df))
    if not any(len(df) for _, _, df in parsed):
        detail = "; ".join(f"{f.name}: {(df.attrs['errors'] or ['?'])[0]}" for f, _, df in parsed[:5])
        raise ToolboxError(f"no llama-bench results in {len(files)} file(s) ({detail})",
                           "give files that hold llama-bench output (md, csv, json, jsonl or sql)")
    sources = [{"path": str(f.resolve()), "sha256": sha, "format": df.attrs["format"], "rows": len(df),
                "errors": df.attrs["errors"], "warnings": df.attrs["warnings"]} for f, sha, df in parsed]
    writer = RunWriter.create(results_dir, {"kind": "imported", "argv": argv, "sources": sources})
    src_dir = writer.logs_dir / "sources"
    src_dir.mkdir()
    for n, (f, sha, df) in enumerate(parsed):
        shutil.copyfile(f, src_dir / f"{n:03d}-{f.name}")  # the originals, byte for byte
        for lb_row in rows_of(df):
            writer.append(make_row(lb_row, source={"path": str(f.resolve()), "sha256": sha, "format": df.attrs["format"]}))
    writer.finish("complete")
    return writer.run_id
