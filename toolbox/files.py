"""Small file operations every store and cache uses, written once: hashes, atomic JSON, durable appends, UTC time.

Durable means: a line is flushed and fsynced before the call returns, and a half-written last line
(a crash or power cut mid-write) never glues onto the next one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
from datetime import UTC, datetime
from pathlib import Path


def now_iso() -> str:
    """The current UTC time, to the second, ISO 8601 (2026-11-29T19:39:22+00:00)."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def sha256_file(path: Path) -> str:
    """sha256 of a file's bytes, read in chunks."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def write_json_atomic(path: Path, data, *, indent: int | None = 2) -> None:
    """Write JSON to a temporary file beside `path`, fsync it, then rename it over `path`."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=indent, ensure_ascii=False, default=str, sort_keys=indent is None)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def append_line(path: Path, line: str) -> None:
    """Append one line (a newline is added), flushed and fsynced; starts a fresh line after a half-written one.

    A write that fails (disk full, an I/O error) is cut back: the file ends where it ended before, never
    with half a line, and the OSError is raised."""
    data = (line.rstrip("\n") + "\n").encode("utf-8")
    with open(path, "ab+", buffering=0) as f:
        start = f.seek(0, os.SEEK_END)
        try:
            if start > 0:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    data = b"\n" + data
            view = memoryview(data)
            while view:
                view = view[f.write(view) :]
            os.fsync(f.fileno())
        except OSError:
            with contextlib.suppress(OSError):
                f.truncate(start)
            raise


def append_jsonl(path: Path, record: dict) -> None:
    """Append one JSON object as one durable line (see append_line)."""
    append_line(path, json.dumps(record, ensure_ascii=False, default=str))


def read_jsonl(path: Path) -> tuple[list[dict], list[int]]:
    """The JSON objects of a .jsonl file and the 1-based numbers of lines that were not JSON objects."""
    path = Path(path)
    if not path.exists():
        return [], []
    records, bad = [], []
    for i, raw in enumerate(path.read_bytes().split(b"\n"), 1):
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw.decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            bad.append(i)
            continue
        if isinstance(rec, dict):
            records.append(rec)
        else:
            bad.append(i)
    return records, bad


def check_writable(path, *, directory: bool = False) -> None:
    """Raise ToolboxError when `path` (a file, or with directory=True a directory) cannot be written or created there."""
    from toolbox.errors import ToolboxError

    p = Path(path).expanduser()
    if p.exists():
        if p.is_dir() != directory:
            raise ToolboxError(f"{p} is {'not ' if directory else ''}a directory", f"give {'a directory' if directory else 'a file name'}")
        target = p if directory else p.parent
    else:
        target = p.parent
        while not target.exists() and target != target.parent:
            target = target.parent
        if not target.is_dir():
            raise ToolboxError(f"cannot create {p}: {target} is not a directory", "give a path inside a writable directory")
    if not os.access(target, os.W_OK):
        raise ToolboxError(f"cannot write {p}: {target} is not writable", "give a path inside a writable directory")


def make_dir(path, what: str) -> Path:
    """mkdir -p; a failure is a one-line ToolboxError: 'cannot create the {what} directory PATH: reason'."""
    from toolbox.errors import ToolboxError

    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ToolboxError(
            f"cannot create the {what} directory {p}: {exc.strerror or exc}", "pass a writable directory with --out"
        ) from None
    return p


def write_text(path, text: str) -> None:
    """Write a text file; a failure is a one-line ToolboxError naming the path."""
    from toolbox.errors import ToolboxError

    try:
        Path(path).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ToolboxError(f"cannot write {path}: {exc.strerror or exc}", "give a path inside a writable directory") from None
