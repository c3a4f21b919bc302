"""Parse llama-bench output (jsonl, json, csv, sql, markdown; current and historical) into rows.

Every row uses llama-bench's own JSON field names (toolbox.llamacpp.FIELDS). Results are found
inside logs, between ggml init lines, shell prompts, `time` output and log lines that contain `|`:
structured.py reads the machine formats, markdown.py the tables, values.py makes one canonical row.
pandas is imported only by parse() and rows_of(): the streaming path (parse_jsonl_line) stays light.
"""

from __future__ import annotations

import json
import math
import re

from toolbox.llamacpp import BOOL_FIELDS, FIELDS, FLOAT_FIELDS, INT_FIELDS
from toolbox.parse.markdown import find_md
from toolbox.parse.structured import find_csv, find_json, find_jsonl, find_sql, is_result
from toolbox.parse.values import normalize

__all__ = ["normalize", "parse", "parse_jsonl_line", "rows_of"]

_ERROR = re.compile(
    r"\b(error|errors|failed|failure|abort(ed)?|segmentation fault|core dumped|fatal|out of memory|"
    r"terminate called|exception|killed|cannot|could not|unable to)\b",
    re.I,
)
_FINDERS = (("json", find_json), ("jsonl", find_jsonl), ("csv", find_csv), ("sql", find_sql), ("md", find_md))


def parse_jsonl_line(line: str) -> dict | None:
    """One line of `llama-bench -o jsonl` stdout -> a normalized row (see normalize), or None for any other line."""
    s = line.strip()
    if not s.startswith("{"):
        return None
    try:
        obj = json.loads(s)
    except ValueError:
        return None
    if not isinstance(obj, dict) or not is_result(obj):
        return None
    return normalize(obj)


def parse(text: str):
    """All llama-bench results in `text` (any format, inside logs) as a DataFrame, one row per test.

    df.attrs: "format" (jsonl, json, csv, sql, md, or a '+'-joined mix; "none" when nothing was found),
    "errors" (error text the run printed, and why nothing or only part was readable), "warnings"
    (columns or fields this parser does not know; their values are kept under `raw`).
    """
    errors: list[str] = []
    warnings: list[str] = []
    rows: list[dict] = []
    formats: list[str] = []
    used: set[int] = set()  # line numbers that belong to results

    text = text or ""
    if _looks_binary(text):
        return _frame([], "none", ["input is binary data, not llama-bench output"], [])
    text = text.replace("\r\n", "\n").replace("\r", "\n").lstrip("\ufeff")
    lines = text.split("\n")
    for name, finder in _FINDERS:
        found = finder(lines, used, errors, warnings)
        if found:
            formats.append(name)
            rows.extend(found)
    for i, line in enumerate(lines):
        if i not in used and _ERROR.search(line):
            msg = line.strip()
            if msg and msg not in errors:
                errors.append(msg)
    if not rows:  # after the specific reasons (a cut-off row, a short CSV row): those say what went wrong
        why = "empty input" if not text.strip() else "no result rows in it"
        errors.append(f"no llama-bench results found ({why})")
    return _frame(rows, "+".join(formats) or "none", errors[:50], sorted(set(warnings)))


def _looks_binary(text: str) -> bool:
    if not text:
        return False
    head = text[:8192]
    bad = head.count("\x00") + head.count("\ufffd") + sum(1 for c in head if ord(c) < 32 and c not in "\n\r\t\f\v\x1b")
    return bad > max(8, len(head) // 100)


def _frame(rows: list[dict], fmt: str, errors: list[str], warnings: list[str]):
    import pandas as pd

    cols = list(FIELDS) + ["raw"]
    df = pd.DataFrame([{c: r.get(c) for c in cols} for r in rows], columns=cols)
    for c in cols:
        if c in INT_FIELDS or c in BOOL_FIELDS:
            df[c] = df[c].astype("Int64")
        elif c in FLOAT_FIELDS:
            df[c] = df[c].astype("Float64")
    df.attrs["format"] = fmt
    df.attrs["errors"] = errors
    df.attrs["warnings"] = warnings
    return df


def rows_of(df) -> list[dict]:
    """A parsed frame back to plain row dicts (pandas NA -> None, numpy numbers -> Python numbers)."""
    import pandas as pd

    out = []
    for rec in df.to_dict(orient="records"):
        row = {}
        for k, v in rec.items():
            if isinstance(v, (list, dict)):
                row[k] = v
            elif v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
                row[k] = None
            elif hasattr(v, "item"):
                row[k] = v.item()
            else:
                row[k] = v
        out.append(row)
    return out
