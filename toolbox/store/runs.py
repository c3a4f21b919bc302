"""The results store: results/<run_id>/{run.json, rows.jsonl, logs/}. See docs/results-schema.md.

rows.jsonl is the source of truth: rows are appended, flushed and fsynced as they arrive, a
half-written last line (a power cut) is skipped with a warning on read and never breaks a later
append. Runs are never overwritten; run ids sort by time and cannot collide. Nothing is parsed back
from a file name: every parameter lives in the data. When a run finishes, run.json gets a summary
(row counts, backends, models) so that listing a hundred runs reads no rows.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import secrets
import subprocess
import threading
import warnings
from datetime import UTC, datetime
from pathlib import Path

from toolbox.errors import ToolboxError
from toolbox.files import append_line, now_iso, write_json_atomic
from toolbox.store import quality as quality_store
from toolbox.store import telemetry as telemetry_store
from toolbox.store.liveness import close_vanished, mark_running, process_identity, unmark
from toolbox.store.rows import OUR_FIELDS, SCHEMA_VERSION, clean, migrate, migrate_row

RUN_ID_RE = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{6}$")
RUN_STATUSES = ("running", "complete", "interrupted", "failed")
RUN_MIGRATIONS = {0: lambda meta: {**meta, "schema_version": 1, "kind": meta.get("kind", "bench")}}


class ResultsWarning(UserWarning):
    """A problem in stored results that was skipped (a half-written line, a corrupt run)."""


class ResultsWriteError(ToolboxError):
    """Results could not be written (disk full, an I/O error): the run ends cleanly, rows on disk stay readable."""


RESERVE = ".reserve"  # space set aside when a run starts, given back so run.json can still say why a full disk ended it
RESERVE_BYTES = 256 * 1024


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"  # pragma: no cover


def new_run_id(now: datetime | None = None) -> str:
    """UTC start time + 6 random hex digits, e.g. 20261126T091502Z-3f9a1c: sorts by time, cannot collide."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    return f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


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


class RunWriter:
    """Writes one run: run.json (atomic replace) and rows.jsonl (append, flush, fsync per row)."""

    def __init__(self, path: Path, meta: dict):
        self.path = path
        self.run_id = path.name
        self.logs_dir = path / "logs"
        self.meta = meta
        self.rows_path = path / "rows.jsonl"
        self._lock = threading.Lock()

    @classmethod
    def create(cls, results_dir: Path, meta: dict) -> RunWriter:
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
        full = {
            "schema_version": SCHEMA_VERSION,
            "run_id": run_id,
            "kind": "bench",
            "status": "running",
            "started_at": now_iso(),
            "ended_at": None,
            "toolbox": _toolbox_state(),
            "process": process_identity(),
        }
        full.update(meta)
        full.update(schema_version=SCHEMA_VERSION, run_id=run_id)
        full.setdefault("status", "running")
        write_json_atomic(path / "run.json", clean(full))
        mark_running(path, full["process"])
        _reserve(path)
        return cls(path, full)

    @classmethod
    def open(cls, results_dir: Path, run_id: str) -> RunWriter:
        """Reopen an existing run to append to it (`invoke bench --resume`)."""
        path = run_dir(Path(results_dir), run_id)
        w = cls(path, read_meta(path))
        w.logs_dir.mkdir(exist_ok=True)
        w.update(process=process_identity())
        mark_running(path, w.meta["process"])
        _reserve(path)
        return w

    def append(self, row: dict) -> dict:
        """Write one row as one JSON line, flushed and fsynced; returns the row as stored."""
        stored = {"schema_version": SCHEMA_VERSION, "run_id": self.run_id}
        stored.update({k: v for k, v in row.items() if k not in ("schema_version", "run_id")})
        stored = clean(stored)
        with self._lock:
            try:
                append_line(self.rows_path, json.dumps(stored, ensure_ascii=False, default=str))
            except OSError as exc:  # the line was cut back: every row before it stays readable
                raise self.write_error(exc, self.rows_path) from None
        return stored

    def write_error(self, exc: OSError, path: Path, remaining_rows: int = 0) -> ResultsWriteError:
        """A one-line error for a failed write: what failed, the space free there and the space the run still needs."""
        import shutil

        try:
            free = shutil.disk_usage(self.path).free
        except OSError:
            free = None
        rows = max(1, sum(1 for _ in open(self.rows_path, "rb"))) if self.rows_path.exists() else 1
        per_row = max(4096, (self.rows_path.stat().st_size if self.rows_path.exists() else 0) // rows)
        need = remaining_rows * per_row + 1024 * 1024  # the rows still to come, their logs and run.json
        where = f"{_size(free)} free in {self.path.parent}" if free is not None else f"in {self.path.parent}"
        err = ResultsWriteError(
            f"cannot write {path.name} of run {self.run_id} ({exc.strerror or exc}); {where}, the run needs about "
            f"{_size(need)} more" + (f" for {remaining_rows} rows" if remaining_rows else ""),
            f"free at least {_size(need)} there, then `invoke bench --resume {self.run_id}` measures what is missing",
        )
        err.os_error, err.path = exc, path
        return err

    def update(self, **fields) -> None:
        """Merge fields into run.json (written to a temporary file, then renamed over it).

        On a full disk the space set aside at the start is given back and the write tried once more."""
        with self._lock:
            self.meta.update(fields)
            try:
                write_json_atomic(self.path / "run.json", clean(self.meta))
            except OSError as exc:
                try:
                    (self.path / RESERVE).unlink()
                    write_json_atomic(self.path / "run.json", clean(self.meta))
                except OSError:
                    raise self.write_error(exc, self.path / "run.json") from None

    def finish(self, status: str) -> None:
        """Close the run: ended_at, status ('complete', 'interrupted', 'failed') and the summary `invoke results` shows."""
        if status not in RUN_STATUSES:
            raise ValueError(f"run status {status!r} is not one of {RUN_STATUSES}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResultsWarning)
            summary = summarize(read_rows(self.path))
        summary["rows_bytes"] = self.rows_path.stat().st_size if self.rows_path.exists() else 0
        self.update(status=status, ended_at=now_iso(), summary=summary)
        unmark(self.path)
        (self.path / RESERVE).unlink(missing_ok=True)


def _reserve(path: Path) -> None:
    """Set RESERVE_BYTES aside in the run directory (really allocated), for run.json's last word on a full disk."""
    try:
        fd = os.open(path / RESERVE, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            os.posix_fallocate(fd, 0, RESERVE_BYTES)
        finally:
            os.close(fd)
    except OSError:
        (path / RESERVE).unlink(missing_ok=True)  # no room even for that: run.json is written as it can be


def summarize(rows: list[dict]) -> dict:
    """Row counts, backends and models of a run's rows (what `invoke results` lists)."""
    backends = sorted({str(r.get("backend") or r.get("backends")) for r in rows if r.get("backend") or r.get("backends")})
    models = sorted(
        {
            str(r.get("model_type") or Path(str(r.get("model_filename"))).name)
            for r in rows
            if r.get("model_type") or r.get("model_filename")
        }
    )
    ok = sum(r.get("status", "ok") == "ok" for r in rows)
    return {"rows": len(rows), "rows_ok": ok, "rows_failed": len(rows) - ok, "backends": backends, "models": models}


# --- reading -------------------------------------------------------------------------------


def migrate_run(meta: dict) -> dict:
    """Upgrade one run.json to SCHEMA_VERSION in memory."""
    return migrate(meta, RUN_MIGRATIONS, "run.json")


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
            last = all(not rest.strip() for rest in lines[i + 1 :])
            what = "half-written last line (the run was cut off while writing)" if last else "line that is not a JSON row"
            warnings.warn(f"{path}: skipped a {what}, line {i + 1}", ResultsWarning, stacklevel=2)
            continue
        rows.append(migrate_row(row))
    return rows


def resolve_run_id(results_dir: Path, ref: str) -> str:
    """The run id a user means: the whole id, `latest`, a unique prefix, or the 6-digit tail (c33c33).

    An unknown or ambiguous reference is a one-line error naming the closest ids or the candidates.
    """
    ref = str(ref or "").strip()
    ids = run_ids(results_dir)
    if ref in ids:
        return ref
    if ref == "latest":
        return latest_run_id(results_dir)
    matches = [i for i in ids if ref and "/" not in ref and (i.startswith(ref) or i.endswith(f"-{ref}"))]
    if len(matches) == 1:
        return matches[0]
    if matches:
        shown = ", ".join(matches[:5]) + (f" (+{len(matches) - 5} more)" if len(matches) > 5 else "")
        raise ToolboxError(f"run {ref!r} is ambiguous: {shown}", "give more of the run id")
    close = difflib.get_close_matches(ref, ids, n=3, cutoff=0.3) or [i for i in ids if ref and ref in i][:3]
    hint = f"did you mean {', '.join(close)}?" if close else "`invoke results` lists the runs"
    raise ToolboxError(f"no run {ref!r} in {results_dir}", hint)


def run_dir(results_dir: Path, run_id: str) -> Path:
    """The directory of a run (any reference resolve_run_id takes); an unknown id is a one-line error naming the closest ids."""
    return Path(results_dir) / resolve_run_id(results_dir, run_id)


def read_meta(run_dir: Path) -> dict:
    """run.json of a run directory, migrated; a missing or corrupt file is a one-line error."""
    path = run_dir / "run.json"
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(meta, dict):
            raise ValueError("not a JSON object")
    except FileNotFoundError:
        raise ToolboxError(
            f"run {run_dir.name}: run.json is missing",
            f"its rows are in {run_dir}/rows.jsonl; restore run.json or move the run away",
        ) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ToolboxError(
            f"run {run_dir.name}: run.json is corrupt ({exc})",
            f"its rows are in {run_dir}/rows.jsonl; restore run.json or move the run away",
        ) from None
    return migrate_run(meta)


def run_ids(results_dir: Path) -> list[str]:
    """Every run directory in results_dir, oldest first. Runs whose process vanished are closed first (store.liveness)."""
    d = Path(results_dir)
    if not d.is_dir():
        return []
    close_vanished(d)
    return sorted(p.name for p in d.iterdir() if p.is_dir() and (RUN_ID_RE.match(p.name) or (p / "run.json").exists()))


def load_run(results_dir: Path, run_id: str) -> tuple[dict, list[dict]]:
    """(run.json, rows) of one run, the quality check's verdicts merged into the rows; an unknown id
    raises ToolboxError naming the closest ids."""
    path = run_dir(Path(results_dir), run_id)
    meta = read_meta(path)
    rows = telemetry_store.merge_energy(quality_store.merge(read_rows(path), path), path)
    if meta.get("kind") == "compose" and len(meta.get("images", {})) == 1:
        # the compose runner writes llama-bench's rows as they are: the run says which image made them
        backend = next(iter(meta["images"]))
        for r in rows:
            r["run_id"] = r.get("run_id") or meta.get("run_id")
            r["backend"] = r.get("backend") or backend
    return meta, rows


def load_rows(results_dir: Path, ids: list[str] | None = None):
    """Rows of many runs (None = all) as one DataFrame with run_id and kind columns; unreadable runs are skipped with a warning."""
    import pandas as pd

    from toolbox.llamacpp import FIELDS

    explicit = ids is not None
    ids = run_ids(results_dir) if ids is None else list(ids)
    if explicit:
        for rid in ids:
            run_dir(Path(results_dir), rid)  # a typo is an error, not a warning
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
    ids = [i for i in run_ids(results_dir) if RUN_ID_RE.match(i)]
    if not ids:
        raise ToolboxError(f"no runs in {results_dir}", "run `invoke bench`, or `invoke import FILE` for existing llama-bench output")
    return ids[-1]


def list_runs(results_dir: Path) -> list[dict]:
    """One summary per run, oldest first; a run that cannot be read is listed with status 'corrupt'.

    A finished run's summary comes from its run.json while rows.jsonl has not changed since; other
    runs (running, interrupted, older toolbox) have their rows read.
    """
    out = []
    for rid in run_ids(results_dir):
        entry = {
            "run_id": rid,
            "started_at": None,
            "kind": None,
            "status": None,
            "backends": [],
            "models": [],
            "rows": 0,
            "rows_ok": 0,
            "rows_failed": 0,
            "error": None,
        }
        path = Path(results_dir) / rid
        try:
            meta = read_meta(path)
            summary = meta.get("summary") or {}
            rows_file = path / "rows.jsonl"
            size = rows_file.stat().st_size if rows_file.exists() else 0
            caught: list = []
            if summary.get("rows_bytes") != size or meta.get("kind") == "compose":
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    summary = summarize(load_run(results_dir, rid)[1])
        except (ToolboxError, OSError) as exc:
            entry.update(status="corrupt", error=str(exc))
            out.append(entry)
            continue
        entry.update({k: summary.get(k, entry[k]) for k in ("backends", "models", "rows", "rows_ok", "rows_failed")})
        entry.update(
            started_at=meta.get("started_at"),
            kind=meta.get("kind"),
            status=meta.get("status"),
            error="; ".join(str(w.message) for w in caught) or None,
        )
        out.append(entry)
    return out


def load_runs(results_dir: Path, ids: list[str] | None) -> list[tuple[dict, list[dict]]]:
    """(meta, rows) per run id; the latest run when no id is given. Unknown ids raise ToolboxError naming the closest."""
    ids = list(ids or []) or [latest_run_id(results_dir)]
    return [load_run(results_dir, rid) for rid in ids]
