"""One llama-bench row in canonical form: llama-bench's JSON field names, one type per field.

Markdown headers of every llama-bench version map to field names here (MD_COLUMNS); booleans become
0/1, numbers come out of strings, 2023-era fields (f16_kv, one boolean per backend) become today's.
"""

from __future__ import annotations

import math
import re

from toolbox.llamacpp import BOOL_FIELDS, FIELDS, FLOAT_FIELDS, INT_FIELDS, SAMPLE_FIELDS, as_int, fa_value

# Markdown header -> field. Display names of every llama-bench version, and the field names themselves.
MD_COLUMNS: dict[str, str] = {
    "model": "model_type",
    "size": "model_size",
    "params": "model_n_params",
    "backend": "backends",
    "ngl": "n_gpu_layers",
    "threads": "n_threads",
    "sm": "split_mode",
    "mg": "main_gpu",
    "nkvo": "no_kv_offload",
    "fa": "flash_attn",
    "lm": "load_mode",
    "embd": "embeddings",
    "nopo": "no_op_offload",
    "noh": "no_host",
    "rpk": "repack",
    "dev": "devices",
    "ts": "tensor_split",
    "ot": "tensor_buft_overrides",
    "fitt": "fit_target",
    "fitc": "fit_min_ctx",
    "mmap": "use_mmap",
    "mmp": "use_mmap",
    "dio": "use_direct_io",
    "mmq": "mul_mat_q",
    "ncmoe": "n_cpu_moe",
    "lzm": "lazy_mode",
}
MD_COLUMNS.update({f: f for f in FIELDS})
MD_SPECIAL = ("test", "t/s")

# Names a row dict may carry instead of the JSON field name (markdown display names, CLI-ish names).
ALIASES: dict[str, str] = {k: v for k, v in MD_COLUMNS.items() if k != v and k not in ("model", "size", "params")}

_LEGACY_BACKENDS = {
    "cuda": "CUDA",
    "opencl": "OpenCL",
    "metal": "Metal",
    "vulkan": "Vulkan",
    "kompute": "Kompute",
    "sycl": "SYCL",
    "gpu_blas": "GPU BLAS",
    "blas": "BLAS",
}

_UNIT = {"B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40}
_COUNT = {"": 1, "K": 1e3, "M": 1e6, "B": 1e9, "G": 1e9, "T": 1e12}


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
        out[field] = convert(field, value)
    # Builds before depth existed (2025) ran every test at depth 0: every format says so, as the
    # markdown test names of that era do (`pp 512` = pp512 at depth 0).
    if out.get("n_depth") is None and (out.get("n_prompt") is not None or out.get("n_gen") is not None):
        out["n_depth"] = 0
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


def parse_bytes(text: str) -> int | None:
    m = re.fullmatch(r"\s*([0-9.]+)\s*(B|KiB|MiB|GiB|TiB)\s*", text)
    return round(float(m.group(1)) * _UNIT[m.group(2)]) if m else None


def parse_count(text: str) -> int | None:
    m = re.fullmatch(r"\s*([0-9.]+)\s*([KMBGT]?)\s*", text)
    return round(float(m.group(1)) * _COUNT[m.group(2)]) if m else None


def convert(field: str, value):
    if value is None:
        return None
    if field == "flash_attn":
        v = fa_value(value, strict=False)
        return v if v is not None else as_int(value)
    if field in BOOL_FIELDS:
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return int(value.strip().lower() == "true")
        v = as_int(value)
        return None if v is None else int(v != 0)
    if field in INT_FIELDS:
        return as_int(value)
    if field in FLOAT_FIELDS:
        try:
            f = float(value)
        except (TypeError, ValueError):
            return None
        return None if math.isnan(f) else f
    if field in SAMPLE_FIELDS:
        # a list with anything but numbers in it (null, text) is no samples at all: a partial list would lie about n
        try:
            out = [float(v) if field == "samples_ts" else int(v) for v in value] if isinstance(value, list) else None
        except (TypeError, ValueError, OverflowError):
            return None
        return out if out is None or all(math.isfinite(v) for v in out) else None
    if field == "build_commit":
        return str(value).strip() or None
    return value if isinstance(value, str) else str(value)
