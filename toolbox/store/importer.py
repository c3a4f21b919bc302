"""`invoke import`: existing llama-bench output (any format, old logs) becomes one run of kind 'imported'."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from toolbox.errors import ToolboxError
from toolbox.parse import parse, rows_of
from toolbox.store.rows import make_row
from toolbox.store.runs import RunWriter


def expand_paths(paths: list[Path]) -> list[Path]:
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
    files = expand_paths(paths)
    if not files:
        raise ToolboxError("no files to import", "give llama-bench output files or directories that hold them")
    parsed = []
    for f in files:
        data = f.read_bytes()
        df = parse(data.decode("utf-8", errors="replace"))
        parsed.append((f, hashlib.sha256(data).hexdigest(), df))
    if not any(len(df) for _, _, df in parsed):
        detail = "; ".join(f"{f.name}: {(df.attrs['errors'] or ['?'])[0]}" for f, _, df in parsed[:5])
        raise ToolboxError(
            f"no llama-bench results in {len(files)} file(s) ({detail})",
            "give files that hold llama-bench output (md, csv, json, jsonl or sql)",
        )
    sources = [
        {
            "path": str(f.resolve()),
            "sha256": sha,
            "format": df.attrs["format"],
            "rows": len(df),
            "errors": df.attrs["errors"],
            "warnings": df.attrs["warnings"],
        }
        for f, sha, df in parsed
    ]
    writer = RunWriter.create(results_dir, {"kind": "imported", "argv": argv, "sources": sources})
    src_dir = writer.logs_dir / "sources"
    src_dir.mkdir()
    for n, (f, sha, df) in enumerate(parsed):
        shutil.copyfile(f, src_dir / f"{n:03d}-{f.name}")  # the originals, byte for byte
        for lb_row in rows_of(df):
            writer.append(make_row(lb_row, source={"path": str(f.resolve()), "sha256": sha, "format": df.attrs["format"]}))
    writer.finish("complete")
    return writer.run_id
