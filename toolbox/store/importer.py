"""`invoke import`: existing llama-bench output (any format, old logs) becomes one run of kind 'imported'.

Content is identified by its sha256: a file whose content is already in an imported run is not
imported again (`already imported as RUN`). `read_files` parses without writing anything, for
`invoke compare FILE`, which must not create a run as a side effect.
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from toolbox.errors import ToolboxError
from toolbox.parse import parse, rows_of
from toolbox.store.rows import make_row
from toolbox.store.runs import RunWriter, read_meta, run_ids


@dataclass
class Parsed:
    path: Path
    sha256: str
    frame: object  # the parsed DataFrame (attrs: format, errors, warnings)

    @property
    def source(self) -> dict:
        return {"path": str(self.path.resolve()), "sha256": self.sha256, "format": self.frame.attrs["format"]}

    @property
    def reason(self) -> str:
        """Why the file gave no rows: its most specific error (e.g. 'CSV row has 41 values for 42 columns')."""
        errors = self.frame.attrs["errors"] or ["no llama-bench results found"]
        return errors[0]


@dataclass
class Imported:
    run_id: str
    rows: int
    sources: list[dict]
    already: list[tuple[str, str]] = field(default_factory=list)  # (path, run id it is already in)


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


def parse_files(paths: list[Path]) -> list[Parsed]:
    """Every file under `paths`, parsed (nothing written). No files at all is an error."""
    files = expand_paths(paths)
    if not files:
        raise ToolboxError("no files to import", "give llama-bench output files or directories that hold them")
    out = []
    for f in files:
        data = f.read_bytes()
        out.append(Parsed(f, hashlib.sha256(data).hexdigest(), parse(data.decode("utf-8", errors="replace"))))
    return out


def no_rows_error(parsed: list[Parsed]) -> ToolboxError:
    detail = "; ".join(f"{p.path.name}: {p.reason}" for p in parsed[:5]) + ("; ..." if len(parsed) > 5 else "")
    return ToolboxError(
        f"no llama-bench results in {len(parsed)} file(s) ({detail})",
        "give files that hold llama-bench output (md, csv, json, jsonl or sql)",
    )


def read_files(paths: list[Path]) -> tuple[dict, list[dict]]:
    """(meta, rows) of llama-bench output files as an imported run would hold them, without writing a run."""
    parsed = parse_files(paths)
    rows = [make_row(r, source=p.source) for p in parsed for r in rows_of(p.frame)]
    if not rows:
        raise no_rows_error(parsed)
    name = "+".join(p.path.name for p in parsed[:3]) + ("+..." if len(parsed) > 3 else "")
    return {"run_id": name, "kind": "imported", "sources": [p.source for p in parsed]}, rows


def imported_content(results_dir: Path) -> dict[str, str]:
    """sha256 of every source of an imported run -> that run's id (the first that holds it)."""
    out: dict[str, str] = {}
    for run_id in run_ids(results_dir):
        try:
            meta = read_meta(Path(results_dir) / run_id)
        except ToolboxError:
            continue  # a corrupt run is listed by `invoke results`; it holds nothing to compare against
        if meta.get("kind") != "imported":
            continue
        for src in meta.get("sources") or []:
            if src.get("sha256") and src.get("rows", 1):
                out.setdefault(src["sha256"], run_id)
    return out


def import_files(paths: list[Path], results_dir: Path, argv: list[str] | None = None) -> Imported:
    """Turn llama-bench output (files, or directories walked recursively) into one run of kind 'imported'.

    Files whose content is already imported are left out and named; when nothing new is left, or no
    file holds results, nothing is written and the error says why (each file's own reason).
    """
    parsed = parse_files(paths)
    seen = imported_content(results_dir)
    already = [(str(p.path), seen[p.sha256]) for p in parsed if p.sha256 in seen]
    new, shas = [], set()
    for p in parsed:
        if p.sha256 not in seen and p.sha256 not in shas:  # the same content twice in one call counts once
            shas.add(p.sha256)
            new.append(p)
    if not new:
        path, run_id = already[0]
        more = f" (and {len(already) - 1} more file(s))" if len(already) > 1 else ""
        raise ToolboxError(f"{path} is already imported as {run_id}{more}", f"its rows are there: invoke report {run_id}")
    if not any(len(p.frame) for p in new):
        raise no_rows_error(new)
    sources = [
        {
            **p.source,
            "rows": len(p.frame),
            "errors": p.frame.attrs["errors"],
            "warnings": p.frame.attrs["warnings"],
        }
        for p in new
    ]
    writer = RunWriter.create(results_dir, {"kind": "imported", "argv": argv, "sources": sources})
    src_dir = writer.logs_dir / "sources"
    src_dir.mkdir()
    n_rows = 0
    for n, p in enumerate(new):
        shutil.copyfile(p.path, src_dir / f"{n:03d}-{p.path.name}")  # the originals, byte for byte
        for lb_row in rows_of(p.frame):
            writer.append(make_row(lb_row, source=p.source))
            n_rows += 1
    writer.finish("complete")
    return Imported(writer.run_id, n_rows, sources, already)
