"""Markdown tables of llama-bench (`-o md`, the default), found by their header anywhere in a log.

Columns are found by header name, never by position: the table changes shape with the arguments
(`-ctk q8_0` adds `type_k`, `-fa 1` adds `fa`, ...) and columns were renamed over the years.
"""

from __future__ import annotations

import re

from toolbox.llamacpp import SIDE_BUILD_PREFIX, parse_test
from toolbox.parse.values import MD_COLUMNS, MD_SPECIAL, convert, parse_bytes, parse_count

# "build: 0c1e5709 (11312)"; a side build (another tree than the pin) says "build: tree-3f2a9c1b7d40 (0)"
_FOOTER = re.compile(rf"^\s*build:\s*((?:{SIDE_BUILD_PREFIX})?[0-9a-fA-F]{{6,40}})\s+\((\d+)\)\s*$")
_TS = re.compile(r"^\s*([0-9.eE+-]+|nan|inf)\s*(?:±|\+/-|\+-|Â±|\?)\s*([0-9.eE+-]+|nan|inf)\s*$")


def find_md(lines, used, errors, warnings) -> list[dict]:
    out: list[dict] = []
    table = None  # {"header": [...], "rows": [dicts], "build": None}
    tables = []
    for i, line in enumerate(lines):
        if i in used:
            continue
        s = line.strip()
        m = _FOOTER.match(s)
        if m and table is not None and table["build"] is None:
            table["build"] = (m.group(1), int(m.group(2)))
            used.add(i)
            table = None  # a footer closes its table
            continue
        if not s.startswith("|"):
            continue
        cells = _cells(s)
        if "test" in cells and "t/s" in cells and i + 1 < len(lines) and _is_separator(lines[i + 1].strip()):
            table = {"header": cells, "rows": [], "build": None}
            tables.append(table)
            used.update((i, i + 1))
            unknown = [c for c in cells if c not in MD_COLUMNS and c not in MD_SPECIAL]
            for c in unknown:
                warnings.append(f"markdown column {c!r} is not a llama-bench field: kept under raw")
            continue
        if table is None or _is_separator(s):
            continue
        used.add(i)
        while len(cells) > len(table["header"]) and cells[-1] == "":
            cells.pop()  # stray pipes after the last cell (`| 16.41 ± 0.79 ||`, llama.cpp's README in 2023)
        if not s.endswith("|") or len(cells) != len(table["header"]):
            errors.append(f"line {i + 1}: incomplete table row (the output stops mid-row): {s[:100]}")
            continue
        row = _md_row(table["header"], cells, i, errors)
        if row is not None:
            table["rows"].append(row)
    for t in tables:
        for row in t["rows"]:
            if t["build"] is not None:
                row.setdefault("build_commit", t["build"][0])
                row.setdefault("build_number", t["build"][1])
            out.append(row)
    return out


def _md_row(header: list[str], cells: list[str], i: int, errors: list[str]) -> dict | None:
    raw = dict(zip(header, cells))
    row: dict = {}
    for name, value in raw.items():
        if name == "test":
            shape = parse_test(value)
            if shape is None:
                errors.append(f"line {i + 1}: test {value!r} is not a llama-bench test name")
                return None
            row["n_prompt"], row["n_gen"], row["n_depth"] = shape
        elif name == "t/s":
            m = _TS.match(value)
            if not m:
                errors.append(f"line {i + 1}: t/s {value!r} is not 'mean ± stddev'")
                return None
            row["avg_ts"], row["stddev_ts"] = float(m.group(1)), float(m.group(2))
        elif name == "size":
            row["model_size"] = parse_bytes(value)
        elif name == "params":
            row["model_n_params"] = parse_count(value)
        elif name in MD_COLUMNS:
            field = MD_COLUMNS[name]
            row[field] = convert(field, value)
    out = {k: v for k, v in row.items()}
    out["raw"] = raw
    return out


def _cells(s: str) -> list[str]:
    s = s.strip()
    if s.startswith("|"):
        s = s[1:]
    if s.endswith("|"):
        s = s[:-1]
    return [c.strip() for c in s.split("|")]


def _is_separator(s: str) -> bool:
    if not s.startswith("|"):
        return False
    cells = _cells(s)
    return bool(cells) and all(re.fullmatch(r":?-+:?", c) for c in cells)
