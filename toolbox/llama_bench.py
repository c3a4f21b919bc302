"""Parse llama-bench output (jsonl, json, csv, sql, markdown; current and historical) into rows.

Every row uses llama-bench's own JSON field names (FIELDS). Markdown columns are found by header
name, never by position: the table changes shape with the arguments (`-ctk q8_0` adds `type_k`,
`-fa 1` adds `fa`, ...) and columns were renamed over the years (`n_gpu_layers` -> `ngl`,
`mmap` -> `lm`, `pp 512` -> `pp512`). Results are found inside logs, between ggml init lines,
shell prompts, `time` output and log lines that contain `|`.
"""

from __future__ import annotations

import csv
import json
import math
import re

import pandas as pd

# The pinned llama-bench's field list (test::get_fields(), tools/llama-bench/llama-bench.cpp) ...
CURRENT_FIELDS: tuple[str, ...] = (
    "build_commit", "build_number", "cpu_info", "gpu_info", "backends",
    "model_filename", "model_type", "model_size", "model_n_params", "n_batch",
    "n_ubatch", "n_threads", "cpu_mask", "cpu_strict", "poll",
    "type_k", "type_v", "n_gpu_layers", "n_cpu_moe", "split_mode",
    "main_gpu", "no_kv_offload", "flash_attn", "devices", "tensor_split",
    "tensor_buft_overrides", "load_mode", "lazy_mode",
    "embeddings", "no_op_offload", "no_host", "repack", "fit_target", "fit_min_ctx",
    "n_prompt", "n_gen", "n_depth",
    "test_time", "avg_ns", "stddev_ns", "avg_ts", "stddev_ts",
)
# ... plus the per-repetition samples that json/jsonl carry ...
SAMPLE_FIELDS: tuple[str, ...] = ("samples_ns", "samples_ts")
# ... plus fields that older builds printed (kept so old logs compare with new runs).
LEGACY_FIELDS: tuple[str, ...] = (
    "use_mmap", "use_direct_io",            # replaced by load_mode (-lm)
    "f16_kv", "mul_mat_q",                  # 2023: replaced by type_k/type_v; removed
    "cuda", "opencl", "metal", "gpu_blas", "blas", "vulkan", "kompute", "sycl",  # 2023-24: replaced by backends
    "defrag_thold", "n_threads_batch",
)
FIELDS: tuple[str, ...] = CURRENT_FIELDS + SAMPLE_FIELDS + LEGACY_FIELDS

INT_FIELDS = frozenset({
    "build_number", "n_batch", "n_ubatch", "n_threads", "poll", "model_size", "model_n_params", "n_gpu_layers",
    "main_gpu", "n_prompt", "n_gen", "n_depth", "avg_ns", "stddev_ns", "no_op_offload", "n_cpu_moe",
    "fit_target", "fit_min_ctx", "flash_attn", "n_threads_batch",
})
# Printed as JSON booleans by llama-bench (and by older builds for flash_attn too): stored as 0/1.
BOOL_FIELDS = frozenset({
    "no_kv_offload", "cpu_strict", "embeddings", "no_host", "repack", "use_mmap", "use_direct_io", "f16_kv",
    "mul_mat_q", "cuda", "opencl", "metal", "gpu_blas", "blas", "vulkan", "kompute", "sycl",
})
FLOAT_FIELDS = frozenset({"avg_ts", "stddev_ts", "defrag_thold"})

# Markdown header -> field. Display names of every llama-bench version, and the field names themselves.
MD_COLUMNS: dict[str, str] = {
    "model": "model_type", "size": "model_size", "params": "model_n_params", "backend": "backends",
    "ngl": "n_gpu_layers", "threads": "n_threads", "sm": "split_mode", "mg": "main_gpu", "nkvo": "no_kv_offload",
    "fa": "flash_attn", "lm": "load_mode", "embd": "embeddings", "nopo": "no_op_offload", "noh": "no_host",
    "rpk": "repack", "dev": "devices", "ts": "tensor_split", "ot": "tensor_buft_overrides", "fitt": "fit_target",
    "fitc": "fit_min_ctx", "mmap": "use_mmap", "mmp": "use_mmap", "dio": "use_direct_io", "mmq": "mul_mat_q",
    "ncmoe": "n_cpu_moe", "lzm": "lazy_mode",
}
MD_COLUMNS.update({f: f for f in FIELDS})
MD_SPECIAL = ("test", "t/s")

# Names a row dict may carry instead of the JSON field name (markdown display names, CLI-ish names).
ALIASES: dict[str, str] = {k: v for k, v in MD_COLUMNS.items() if k != v and k not in ("model", "size", "params")}

_LEGACY_BACKENDS = {"cuda": "CUDA", "opencl": "OpenCL", "metal": "Metal", "vulkan": "Vulkan", "kompute": "Kompute",
                    "sycl": "SYCL", "gpu_blas": "GPU BLAS", "blas": "BLAS"}
FLASH_ATTN_NAMES = {"on": 1, "enabled": 1, "true": 1, "yes": 1, "off": 0, "disabled": 0, "false": 0, "no": 0, "auto": -1}

_FOOTER = re.compile(r"^\s*build:\s*([0-9a-fA-F]{6,40})\s+\((\d+)\)\s*$")
_TEST = re.compile(r"^(?:pp\s*(\d+))?(?:\s*\+\s*)?(?:tg\s*(\d+))?(?:\s*@\s*d\s*(\d+))?$")
_TS = re.compile(r"^\s*([0-9.eE+-]+|nan|inf)\s*(?:±|\+/-|\+-|Â±|\?)\s*([0-9.eE+-]+|nan|inf)\s*$")
_UNIT = {"B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40}
_COUNT = {"": 1, "K": 1e3, "M": 1e6, "B": 1e9, "G": 1e9, "T": 1e12}
_ERROR = re.compile(
    r"\b(error|errors|failed|failure|abort(ed)?|segmentation fault|core dumped|fatal|out of memory|"
    r"terminate called|exception|killed|cannot|could not|unable to)\b", re.I)
_SQL_INSERT = re.compile(r"INSERT\s+INTO\s+(\w+)\s*\(([^)]*)\)\s*VALUES\s*\(", re.I)
_SQL_TABLES = ("llama_bench", "test")


def test_name(n_prompt, n_gen, n_depth=0) -> str:
    """The short name of a test, as compare-llama-bench.py writes it: pp512, tg128, pp512+tg128, pp512@d4096."""
    p, g, d = (_as_int(v) or 0 for v in (n_prompt, n_gen, n_depth))
    name = f"pp{p}+tg{g}" if p and g else (f"pp{p}" if p else f"tg{g}")
    return f"{name}@d{d}" if d else name


def parse_test(text: str) -> tuple[int, int, int] | None:
    """(n_prompt, n_gen, n_depth) from a markdown `test` cell: pp512, tg128, pp 512, pp512+tg128, pp512 @ d4096."""
    m = _TEST.match(text.strip())
    if not m or not (m.group(1) or m.group(2)):
        return None
    return int(m.group(1) or 0), int(m.group(2) or 0), int(m.group(3) or 0)


def normalize(row: dict) -> dict:
    """Canonical names and types for one llama-bench row: bool -> 0/1, numbers from strings, renamed fields.

    Returns every field of FIELDS that the row states (absent ones are left out), plus `raw`: the
    original row (or the row's own `raw` if it already has one). Keys that are not llama-bench fields
    only survive under `raw`.
    """
    out: dict = {}
    for key, value in row.items():
        if key == "raw":
            continue
        field = key if key in FIELDS else ALIASES.get(key)
        if field is None or (field != key and field in row):
            continue
        out[field] = _convert(field, value)
    # 2023 builds had f16_kv (a bool) where type_k / type_v are now.
    if out.get("f16_kv") is not None:
        kv = "f16" if out["f16_kv"] else "f32"
        out.setdefault("type_k", kv)
        out.setdefault("type_v", kv)
    # 2023-24 builds had one boolean per backend instead of the backends string; their markdown
    # printer named the backend in this order of precedence.
    if out.get("backends") is None and any(out.get(f) is not None for f in _LEGACY_BACKENDS):
        out["backends"] = next((name for f, name in _LEGACY_BACKENDS.items() if out.get(f)), "CPU")
    out["raw"] = row["raw"] if isinstance(row.get("raw"), dict) else {k: v for k, v in row.items() if k != "raw"}
    return out


def parse_jsonl_line(line: str) -> dict | None:
    """One line of `llama-bench -o jsonl` stdout -> a normalized row (see normalize), or None for any other line."""
    s = line.strip()
    if not s.startswith("{"):
        return None
    try:
        obj = json.loads(s)
    except ValueError:
        return None
    if not isinstance(obj, dict) or not _is_result(obj):
        return None
    return normalize(obj)


def parse(text: str) -> pd.DataFrame:
    """All llama-bench results in `text` (any format, inside logs) as one row per test.

    df.attrs: "format" (jsonl, json, csv, sql, md, or a '+'-joined mix; "none" when nothing was found),
    "errors" (error text the run printed, and why nothing or only part was readable), "warnings"
    (columns or fields this parser does not know; their values are kept under `raw`).
    """
    errors: list[str] = []
    warnings: list[str] = []
    rows: list[dict] = []
    formats: list[str] = []
    used: set[int] = set()  # line numbers that belong to results

    if text is None:
        text = ""
    if _looks_binary(text):
        return _frame([], "none", ["input is binary data, not llama-bench output"], [])
    text = text.replace("\r\n", "\n").replace("\r", "\n").lstrip("\ufeff")
    lines = text.split("\n")

    for name, finder in (("json", _find_json), ("jsonl", _find_jsonl), ("csv", _find_csv), ("sql", _find_sql), ("md", _find_md)):
        found = finder(lines, used, errors, warnings)
        if found:
            formats.append(name)
            rows.extend(found)

    for i, line in enumerate(lines):
        if i not in used and _ERROR.search(line):
            msg = line.strip()
            if msg and msg not in errors:
                errors.append(msg)
    if not rows:
        why = "empty input" if not text.strip() else "no result rows in it"
        errors.insert(0, f"no llama-bench results found ({why})")
    return _frame(rows, "+".join(formats) or "none", errors[:50], sorted(set(warnings)))


# --- formats -------------------------------------------------------------------------------


def _find_jsonl(lines, used, errors, warnings) -> list[dict]:
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
        if isinstance(obj, dict) and _is_result(obj):
            used.add(i)
            out.append(_structured(obj, warnings))
    return out


def _find_json(lines, used, errors, warnings) -> list[dict]:
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
                if '"build_commit"' in chunk[pos:pos + 400]:
                    errors.append(f"line {end_line + 1}: incomplete JSON result (the output stops mid-object)")
                    end_line = len(lines) - 1
                break
            if isinstance(obj, dict) and _is_result(obj):
                found.append(_structured(obj, warnings))
        if found:
            out.extend(found)
            used.update(range(start, end_line + 1))
        i = end_line + 1 if found else i + 1
    return out


def _find_csv(lines, used, errors, warnings) -> list[dict]:
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
                errors.append(f"line {i + 1}: CSV row has {len(cells)} values for {len(header)} columns "
                              "(cut off, or header and rows from different builds): skipped")
                i += 1
                continue
            used.add(i)
            out.append(_structured(dict(zip(header, cells)), warnings))
            i += 1
    return out


def _find_sql(lines, used, errors, warnings) -> list[dict]:
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


def _find_md(lines, used, errors, warnings) -> list[dict]:
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
            row["model_size"] = _bytes(value)
        elif name == "params":
            row["model_n_params"] = _count(value)
        elif name in MD_COLUMNS:
            field = MD_COLUMNS[name]
            row[field] = _convert(field, value)
    out = {k: v for k, v in row.items()}
    out["raw"] = raw
    return out


# --- helpers -------------------------------------------------------------------------------


def _structured(obj: dict, warnings: list[str]) -> dict:
    for key in obj:
        if key not in FIELDS and key not in ALIASES and key != "raw":
            warnings.append(f"field {key!r} is not a llama-bench field this toolbox knows: kept under raw")
    return normalize(obj)


def _is_result(obj: dict) -> bool:
    return ("avg_ns" in obj or "avg_ts" in obj or "samples_ns" in obj) and ("n_prompt" in obj or "n_gen" in obj)


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


def _bytes(text: str) -> int | None:
    m = re.fullmatch(r"\s*([0-9.]+)\s*(B|KiB|MiB|GiB|TiB)\s*", text)
    return round(float(m.group(1)) * _UNIT[m.group(2)]) if m else None


def _count(text: str) -> int | None:
    m = re.fullmatch(r"\s*([0-9.]+)\s*([KMBGT]?)\s*", text)
    return round(float(m.group(1)) * _COUNT[m.group(2)]) if m else None


def _as_int(value) -> int | None:
    if value is None or isinstance(value, bool):
        return int(value) if isinstance(value, bool) else None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return None if math.isnan(value) else int(value)
    s = str(value).strip()
    if s == "" or s.lower() in ("null", "none", "nan"):
        return None
    try:
        return int(s)
    except ValueError:
        try:
            return int(float(s))
        except ValueError:
            return None


def _convert(field: str, value):
    if value is None:
        return None
    if field == "flash_attn":
        if isinstance(value, str) and value.strip().lower() in FLASH_ATTN_NAMES:
            return FLASH_ATTN_NAMES[value.strip().lower()]
        return _as_int(value)
    if field in BOOL_FIELDS:
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return int(value.strip().lower() == "true")
        v = _as_int(value)
        return None if v is None else int(v != 0)
    if field in INT_FIELDS:
        return _as_int(value)
    if field in FLOAT_FIELDS:
        try:
            f = float(value)
        except (TypeError, ValueError):
            return None
        return None if math.isnan(f) else f
    if field in SAMPLE_FIELDS:
        if isinstance(value, list):
            return [float(v) if field == "samples_ts" else int(v) for v in value]
        return None
    if field == "build_commit":
        return str(value).strip() or None
    return value if isinstance(value, str) else str(value)


def _looks_binary(text: str) -> bool:
    if not text:
        return False
    head = text[:8192]
    bad = head.count("\x00") + head.count("\ufffd") + sum(1 for c in head if ord(c) < 32 and c not in "\n\r\t\f\v\x1b")
    return bad > max(8, len(head) // 100)


def _frame(rows: list[dict], fmt: str, errors: list[str], warnings: list[str]) -> pd.DataFrame:
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


def rows_of(df: pd.DataFrame) -> list[dict]:
    """A parsed frame back to plain row dicts (pandas NA -> None, numpy numbers -> Python numbers)."""
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
