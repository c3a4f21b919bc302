"""llama-bench's structured formats inside a log: jsonl, json (possibly cut off), csv and sql."""

from __future__ import annotations

import csv
import json
import re

from toolbox.llamacpp import FIELDS, SAMPLE_FIELDS
from toolbox.parse.values import ALIASES, normalize

_SQL_INSERT = re.compile(r"INSERT\s+INTO\s+(\w+)\s*\(([^)]*)\)\s*VALUES\s*\(", re.I)
_SQL_TABLES = ("llama_bench", "test")


def find_jsonl(lines, used, errors, warnings) -> list[dict]:
    out = []
    for i, line in enumerate(lines):
        if i in used:
            continue
        s = line.strip()
        if not s.startswith("{"):
            continue
        try:
            obj = json.loads(s)
        except ValueError:
            if '"build_commit"' in s or '"avg_ns"' in s:
                used.add(i)
                errors.append(f"line {i + 1}: incomplete JSONL result (the output stops mid-row): {s[:80]}...")
            continue
        if isinstance(obj, dict) and is_result(obj):
            used.add(i)
            out.append(_structured(obj, warnings))
    return out


def find_json(lines, used, errors, warnings) -> list[dict]:
    """`-o json`: a pretty-printed array of objects, possibly cut off (the complete objects are kept)."""
    out = []
    i = 0
    while i < len(lines):
        nxt = lines[i + 1].strip() if i + 1 < len(lines) else ""
        if i in used or lines[i].strip() != "[" or not nxt.startswith("{"):
            i += 1
            continue
        start = i
        chunk = "\n".join(lines[i:])
        dec = json.JSONDecoder()
        pos = chunk.index("[") + 1
        found = []
        end_line = len(lines) - 1
        while True:
            while pos < len(chunk) and chunk[pos] in " \t\n,":
                pos += 1
            if pos >= len(chunk) or chunk[pos] == "]":
                end_line = start + chunk.count("\n", 0, pos)
                break
            try:
                obj, pos = dec.raw_decode(chunk, pos)
            except ValueError:
                end_line = start + chunk.count("\n", 0, pos)
                if '"build_commit"' in chunk[pos : pos + 400]:
                    errors.append(f"line {end_line + 1}: incomplete JSON result (the output stops mid-object)")
                    end_line = len(lines) - 1
                break
            if isinstance(obj, dict) and is_result(obj):
                found.append(_structured(obj, warnings))
        if found:
            out.extend(found)
            used.update(range(start, end_line + 1))
        i = end_line + 1 if found else i + 1
    return out


def find_csv(lines, used, errors, warnings) -> list[dict]:
    out = []
    i = 0
    while i < len(lines):
        s = lines[i].strip()
        if not (s.startswith("build_commit,") and ("avg_ns" in s or "avg_ts" in s)):
            i += 1
            continue
        header = next(csv.reader([s]))
        used.add(i)
        i += 1
        while i < len(lines) and lines[i].strip():
            cells = next(csv.reader([lines[i].strip()]), [])
            if len(cells) != len(header):
                if not lines[i].lstrip().startswith('"'):
                    break  # the CSV block ended
                used.add(i)
                # never shift values onto the wrong columns: a short row is refused, not guessed
                errors.append(
                    f"line {i + 1}: CSV row has {len(cells)} values for {len(header)} columns "
                    "(cut off, or header and rows from different builds): skipped"
                )
                i += 1
                continue
            used.add(i)
            out.append(_structured(dict(zip(header, cells)), warnings))
            i += 1
    return out


def find_sql(lines, used, errors, warnings) -> list[dict]:
    out = []
    for i, line in enumerate(lines):
        m = _SQL_INSERT.search(line)
        if not m:
            continue
        used.add(i)
        table = m.group(1)
        if table.lower() not in _SQL_TABLES:
            warnings.append(f"SQL table {table!r} is not llama-bench's (llama_bench, or test before 2024): read anyway")
        cols = [c.strip() for c in m.group(2).split(",")]
        values, complete = _sql_values(line, m.end())
        if not complete or len(values) != len(cols):
            errors.append(f"line {i + 1}: incomplete SQL INSERT (the output stops mid-statement)")
            continue
        out.append(_structured(dict(zip(cols, values)), warnings))
    for i, line in enumerate(lines):  # the CREATE TABLE block is part of the output, not noise
        if line.lstrip().upper().startswith("CREATE TABLE"):
            j = i
            while j < len(lines):
                used.add(j)
                if lines[j].strip().endswith(");"):
                    break
                j += 1
    return out


def _sql_values(line: str, pos: int) -> tuple[list, bool]:
    values: list = []
    n = len(line)
    while pos < n:
        while pos < n and line[pos] in " \t":
            pos += 1
        if pos >= n:
            break
        if line[pos] == "'":
            pos += 1
            buf = []
            while pos < n:
                if line[pos] == "'":
                    if pos + 1 < n and line[pos + 1] == "'":
                        buf.append("'")
                        pos += 2
                        continue
                    break
                buf.append(line[pos])
                pos += 1
            if pos >= n:
                return values, False
            values.append("".join(buf))
            pos += 1
        else:
            m = re.match(r"[^,)]*", line[pos:])
            tok = m.group(0).strip()
            values.append(None if tok.upper() == "NULL" else tok)
            pos += m.end()
        while pos < n and line[pos] in " \t":
            pos += 1
        if pos < n and line[pos] == ",":
            pos += 1
            continue
        if pos < n and line[pos] == ")":
            return values, True
        break
    return values, False


def _structured(obj: dict, warnings: list[str]) -> dict:
    for key in obj:
        if key not in FIELDS and key not in ALIASES and key != "raw":
            warnings.append(f"field {key!r} is not a llama-bench field this toolbox knows: kept under raw")
    row = normalize(obj)
    for key in SAMPLE_FIELDS:
        if isinstance(obj.get(key), list) and row.get(key) is None:
            warnings.append(f"{key} holds values that are not numbers: the row keeps its mean, without samples (kept under raw)")
    return row


def is_result(obj: dict) -> bool:
    return ("avg_ns" in obj or "avg_ts" in obj or "samples_ns" in obj) and ("n_prompt" in obj or "n_gen" in obj)
