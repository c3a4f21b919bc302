"""The one vocabulary of llama.cpp names every layer shares.

llama-bench's JSON field names and their types, the command-line flag of each parameter, test
names (pp512, tg128, pp512+tg128, pp512@d4096), flash-attention spellings, KV cache types and the
rule that a quantized V cache needs flash attention, and the toolbox's backends. Everything here
is checked against the pinned llama.cpp (tools/llama-bench/llama-bench.cpp at the commit in
containers/pins.toml) by the tests; nothing else in the package spells these out again.
"""

from __future__ import annotations

import math
import re

from toolbox.errors import ToolboxError

# --- llama-bench fields ----------------------------------------------------------------------------

# test::get_fields() of the pinned llama-bench, in its order (the columns of `-o sql` / `-o csv`).
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
)  # fmt: skip
# The per-repetition samples that json / jsonl carry.
SAMPLE_FIELDS: tuple[str, ...] = ("samples_ns", "samples_ts")
# Fields older builds printed, kept so that old logs compare with new runs.
LEGACY_FIELDS: tuple[str, ...] = (
    "use_mmap", "use_direct_io",            # replaced by load_mode (-lm)
    "f16_kv", "mul_mat_q",                  # 2023: replaced by type_k/type_v; removed
    "cuda", "opencl", "metal", "gpu_blas", "blas", "vulkan", "kompute", "sycl",  # 2023-24: replaced by backends
    "defrag_thold", "n_threads_batch",
)  # fmt: skip
FIELDS: tuple[str, ...] = CURRENT_FIELDS + SAMPLE_FIELDS + LEGACY_FIELDS

# get_field_type() of the pinned llama-bench: INT and BOOL fields (SQL INTEGER), FLOAT (REAL); the rest is text.
SQL_INT_FIELDS = frozenset({
    "build_number", "n_batch", "n_ubatch", "n_threads", "poll", "model_size", "model_n_params", "n_gpu_layers",
    "main_gpu", "n_prompt", "n_gen", "n_depth", "avg_ns", "stddev_ns", "no_op_offload", "n_cpu_moe",
    "fit_target", "fit_min_ctx", "flash_attn",
})  # fmt: skip
SQL_BOOL_FIELDS = frozenset({"no_kv_offload", "cpu_strict", "embeddings", "no_host", "repack"})
SQL_FLOAT_FIELDS = frozenset({"avg_ts", "stddev_ts"})
# What rows store: integers (current and legacy), booleans as 0/1 (llama-bench prints JSON booleans, older
# builds printed some as ints or "true"), floats.
INT_FIELDS = SQL_INT_FIELDS | {"n_threads_batch"}
BOOL_FIELDS = SQL_BOOL_FIELDS | {
    "use_mmap", "use_direct_io", "f16_kv", "mul_mat_q", "cuda", "opencl", "metal", "gpu_blas", "blas", "vulkan",
    "kompute", "sycl",
}  # fmt: skip
FLOAT_FIELDS = SQL_FLOAT_FIELDS | {"defrag_thold"}


def sql_type(field: str) -> str:
    """The SQLite column type llama-bench's `-o sql` gives a field."""
    if field in SQL_INT_FIELDS or field in SQL_BOOL_FIELDS:
        return "INTEGER"
    return "REAL" if field in SQL_FLOAT_FIELDS else "TEXT"


# --- parameters: JSON field name -> command-line flag of the pinned llama-bench ---------------------

PARAM_FLAGS = {
    "n_prompt": "-p", "n_gen": "-n", "n_depth": "-d", "n_batch": "-b", "n_ubatch": "-ub",
    "type_k": "-ctk", "type_v": "-ctv", "n_threads": "-t", "cpu_mask": "-C", "cpu_strict": "--cpu-strict",
    "poll": "--poll", "n_gpu_layers": "-ngl", "n_cpu_moe": "-ncmoe", "split_mode": "-sm", "main_gpu": "-mg",
    "no_kv_offload": "-nkvo", "flash_attn": "-fa", "devices": "-dev", "load_mode": "-lm", "lazy_mode": "-lzm",
    "embeddings": "-embd", "tensor_split": "-ts", "no_op_offload": "-nopo", "no_host": "--no-host", "repack": "--repack",
    "n_pg": "-pg",  # [[pp, tg], ...]: combined prompt + generation tests
}  # fmt: skip
TEST_PARAMS = ("n_prompt", "n_gen", "n_depth")  # the shape of a test: shown through its name

# --- test names -------------------------------------------------------------------------------------

_TEST = re.compile(r"^(?:pp\s*(\d+))?(?:\s*\+\s*)?(?:tg\s*(\d+))?(?:\s*@\s*d\s*(\d+))?$")


def as_int(value) -> int | None:
    """An int from anything llama-bench ever printed for a number (None for empty, null, nan or text)."""
    if value is None or isinstance(value, bool):
        return int(value) if isinstance(value, bool) else None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else int(value)
    s = str(value).strip()
    if s == "" or s.lower() in ("null", "none", "nan"):
        return None
    try:
        return int(s)
    except ValueError:
        try:
            f = float(s)
        except ValueError:
            return None
        return None if math.isnan(f) or math.isinf(f) else int(f)


def test_name(n_prompt, n_gen, n_depth=0) -> str:
    """The short name of a test, as compare-llama-bench.py writes it: pp512, tg128, pp512+tg128, pp512@d4096."""
    p, g, d = (as_int(v) or 0 for v in (n_prompt, n_gen, n_depth))
    name = f"pp{p}+tg{g}" if p and g else (f"pp{p}" if p else f"tg{g}")
    return f"{name}@d{d}" if d else name


test_name.__test__ = False  # not a pytest test, although its name starts with test


def parse_test(text: str) -> tuple[int, int, int] | None:
    """(n_prompt, n_gen, n_depth) from a test name: pp512, tg128, pp 512, pp512+tg128, pp512 @ d4096."""
    m = _TEST.match(text.strip())
    if not m or not (m.group(1) or m.group(2)):
        return None
    return int(m.group(1) or 0), int(m.group(2) or 0), int(m.group(3) or 0)


def test_kind(n_prompt, n_gen) -> str | None:
    """'pp' (prompt only), 'tg' (generation only), 'pp+tg', or None when neither is known."""
    p, g = as_int(n_prompt) or 0, as_int(n_gen) or 0
    if p and g:
        return "pp+tg"
    return "pp" if p else "tg" if g else None


# --- flash attention ----------------------------------------------------------------------------------

# Every spelling of -fa that llama-bench printed or accepts -> the value rows store (1 on, 0 off, -1 auto).
FA_VALUES = {
    "on": 1, "enabled": 1, "true": 1, "yes": 1, "1": 1,
    "off": 0, "disabled": 0, "false": 0, "no": 0, "0": 0,
    "auto": -1, "-1": -1,
}  # fmt: skip
FA_NAMES = {1: "on", 0: "off", -1: "auto"}


def fa_value(value, *, strict: bool = True) -> int | None:
    """Flash attention as rows store it: 1 on, 0 off, -1 auto; None stays None.

    An unknown spelling is a ToolboxError when strict, else None.
    """
    if value is None or (isinstance(value, float) and math.isnan(value)) or value == "":
        return None
    if isinstance(value, bool):
        return int(value)
    s = str(value).strip().lower()
    if s in FA_VALUES:
        return FA_VALUES[s]
    if strict:
        raise ToolboxError(f"unknown flash attention value {value!r}", "use on, off or auto")
    return None


def fa_name(value) -> str | None:
    """'on', 'off' or 'auto' for any spelling (None when unknown or absent)."""
    v = fa_value(value, strict=False)
    return None if v is None else FA_NAMES[v]


# --- KV cache types -----------------------------------------------------------------------------------

# -ctk / -ctv values the pinned llama-bench accepts (ggml types with a CPU copy kernel).
KV_TYPES = ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1")
UNQUANTIZED_KV = frozenset({"f32", "f16", "bf16"})
QUANTIZED_KV = tuple(t for t in KV_TYPES if t not in UNQUANTIZED_KV)
# Display order: widest first.
KV_ORDER = ("f32", "f16", "bf16", "q8_0", "q6_k", "q5_1", "q5_0", "iq4_nl", "q4_1", "q4_0")


def kv_order(t: str) -> tuple[int, str]:
    return (KV_ORDER.index(t) if t in KV_ORDER else len(KV_ORDER), t)


def kv_reject_reason(type_v, flash_attn) -> str | None:
    """Why the pinned llama.cpp refuses a KV configuration, or None.

    A quantized V cache needs flash attention: with -fa off llama.cpp fails to create the context
    (llama-bench exits 1 and abandons the rest of its process).
    """
    tv = str(type_v or "f16").strip().lower()
    if fa_value(flash_attn, strict=False) == 0 and tv not in UNQUANTIZED_KV:
        return f"quantized V cache ({tv}) needs flash attention: llama.cpp fails to create the context with -fa off"
    return None


# --- FlashAttention kernels per K-V pair (HIP / CUDA build switch) --------------------------------------

# ggml/cmake/common.cmake (ggml_cuda_fattn_vec_instances): the types a FlashAttention vector kernel
# can be compiled for, and GGML_CUDA_FA_QUANTS's default (ggml/CMakeLists.txt). f32 K or V uses the
# f16 instance (fattn.cu FATTN_VEC_CASE); iq4_nl has no FlashAttention kernel on HIP at all
# (ggml_cuda_fattn_kv_type_supported), so the op leaves the GPU.
FA_VEC_TYPES = ("q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "bf16", "f16")
FA_QUANTS_DEFAULT = "q4_0-q4_0;q8_0-q8_0;f16-f16;bf16-bf16"
# ggml_cuda_flash_attn_ext_vec() in ggml/src/ggml-cuda/fattn.cu: printed once per process, for the
# first pair that has no compiled vector kernel (token generation only: the batched kernels convert
# K and V to f16 for every pair anyway).
_FA_FALLBACK = re.compile(r"no FlashAttention vector kernel compiled for K/V types ([a-z0-9_]+)-([a-z0-9_]+)")


def fa_compiled_pairs(cmake_flags) -> set[tuple[str, str]] | None:
    """The (K, V) pairs a HIP/CUDA build has FlashAttention vector kernels for; None if not such a build."""
    flags = cmake_flags.split() if isinstance(cmake_flags, str) else list(cmake_flags or [])
    if not any(f in ("-DGGML_HIP=ON", "-DGGML_CUDA=ON") for f in flags):
        return None
    value = next((f.split("=", 1)[1] for f in flags if f.split("=", 1)[0].split(":")[0] == "-DGGML_CUDA_FA_QUANTS"), FA_QUANTS_DEFAULT)
    value = value.strip().lower()
    if value == "all":
        return {(k, v) for k in FA_VEC_TYPES for v in FA_VEC_TYPES}
    pairs = {("f16", "f16")}
    for combo in value.replace(",", ";").split(";"):
        if combo.strip():
            k, _, v = combo.strip().partition("-")
            pairs.add((k, v))
    return pairs


def fa_fallbacks(log_text: str) -> set[tuple[str, str]]:
    """K-V pairs a llama.cpp log says had no FlashAttention vector kernel (converted to f16 instead)."""
    return {(m.group(1), m.group(2)) for m in _FA_FALLBACK.finditer(log_text or "")}


def row_fa_fallback(row: dict, log_text: str, cmake_flags=None) -> bool | None:
    """Did this row's token generation take the f16 detour? True/False for a flash-attention row with
    tokens generated, None when the question does not apply (no generation, flash attention off)."""
    if not row.get("n_gen") or fa_value(row.get("flash_attn"), strict=False) == 0:
        return None
    pair = tuple(str(row.get(t) or "f16").strip().lower() for t in ("type_k", "type_v"))
    if pair in fa_fallbacks(log_text):
        return True
    # llama.cpp names only the first pair per process: the image's compiled pairs answer for the rest
    # (f32 runs through the f16 kernel, fattn.cu FATTN_VEC_CASE).
    compiled = fa_compiled_pairs(cmake_flags)
    if compiled is not None and all(t in (*FA_VEC_TYPES, "f32") for t in pair):
        return tuple("f16" if t == "f32" else t for t in pair) not in compiled
    return False


# --- FlashAttention that leaves the GPU (no kernel for the K/V types at all) ----------------------------

# The K/V types a GPU backend's FlashAttention takes at the pinned commit. For any other type ggml's
# scheduler runs the whole op on the CPU, in prompt processing and in generation, and says nothing
# (llama-bench prints ggml's log only with -v; then the graph shows more splits). HIP:
# ggml_cuda_fattn_kv_type_supported (ggml/src/ggml-cuda/fattn.cu); Vulkan: supports_op for
# GGML_OP_FLASH_ATTN_EXT (ggml/src/ggml-vulkan/ggml-vulkan.cpp), where bf16 goes only with bf16.
FA_GPU_TYPES = {
    "hip": ("f32", "f16", "bf16", "q4_0", "q4_1", "q5_0", "q5_1", "q8_0"),
    "vulkan": ("f32", "f16", "bf16", "q8_0", "q5_1", "q5_0", "q4_1", "q4_0", "iq4_nl"),
}


def gpu_build(cmake_flags) -> str | None:
    """'hip' or 'vulkan' for an image built with that GPU backend (its cmake flags), None for a CPU build."""
    flags = cmake_flags.split() if isinstance(cmake_flags, str) else list(cmake_flags or [])
    if any(f in ("-DGGML_HIP=ON", "-DGGML_CUDA=ON") for f in flags):
        return "hip"
    return "vulkan" if "-DGGML_VULKAN=ON" in flags else None


def fa_cpu_reason(build: str | None, type_k, type_v) -> str | None:
    """Why a GPU build runs FlashAttention for these K/V types on the CPU, None when it has a kernel."""
    if build not in FA_GPU_TYPES:
        return None
    k, v = (str(t or "f16").strip().lower() for t in (type_k, type_v))
    missing = [t for t in dict.fromkeys((k, v)) if t not in FA_GPU_TYPES[build]]
    if missing:
        return f"{build} has no FlashAttention kernel for {' or '.join(missing)}"
    if build == "vulkan" and (k == "bf16") != (v == "bf16"):
        return "vulkan takes bf16 K or V only together (bf16 K with bf16 V)"
    return None


def row_fa_on_cpu(row: dict, cmake_flags=None) -> bool | None:
    """Did this row's FlashAttention run on the CPU for want of a GPU kernel for its K/V types? None when the
    question does not apply (flash attention not on, a CPU build, no layers offloaded, the KV cache kept on
    the CPU on purpose with no_kv_offload)."""
    if fa_value(row.get("flash_attn"), strict=False) != 1 or row.get("n_gpu_layers") == 0 or row.get("no_kv_offload"):
        return None
    build = gpu_build(cmake_flags)
    if build is None:
        return None
    return fa_cpu_reason(build, row.get("type_k"), row.get("type_v")) is not None


# --- backends -------------------------------------------------------------------------------------------

# The toolbox's backends: an image flavour each (containers/pins.toml [backends.*]).
BACKENDS = ("rocm", "vulkan", "cpu")

# A side build (invoke build BACKEND --source PATH with another tree than the pin) reports no git commit:
# its build_commit is "tree-" and the first 12 hex digits of its tree hash, its build_number 0 (docs/pins.md).
SIDE_BUILD_PREFIX = "tree-"


def build_text(commit, number) -> str:
    """How tables name a llama.cpp build: '0c1e5709 (b11312)', or 'tree-3f2a9c1b7d40 (side tree)' for a side build."""
    if not commit:
        return "—"
    commit = str(commit)
    if commit.startswith(SIDE_BUILD_PREFIX):
        return f"{commit[:17]} (side tree)"
    return commit[:9] + (f" (b{number})" if number else "")


def parse_build_info(text) -> tuple[int | None, str | None]:
    """llama-server's build_info ('b11312-0c1e5709'; a side build 'b0-tree-3f2a9c1b7d40') -> (build_number, build_commit)."""
    m = re.match(rf"b(\d+)-((?:{SIDE_BUILD_PREFIX})?[0-9a-f]+)", str(text or ""))
    return (int(m.group(1)), m.group(2)) if m else (None, None)


# --- the serving tools ------------------------------------------------------------------------------

# llama-bench parameter -> the flag llama-server and llama-cli (common arguments) take for the same
# setting at the pinned commit (checked against their --help in the images by tests/test_tune.py).
# The test shape (n_prompt, n_gen, n_depth) has none: a server's context size is -c.
SERVER_FLAGS = {
    "n_batch": "-b", "n_ubatch": "-ub", "type_k": "-ctk", "type_v": "-ctv", "flash_attn": "-fa",
    "n_threads": "-t", "n_gpu_layers": "-ngl", "n_cpu_moe": "-ncmoe", "split_mode": "-sm", "main_gpu": "-mg",
    "no_kv_offload": "-nkvo", "devices": "-dev", "tensor_split": "-ts", "load_mode": "-lm",
    "cpu_mask": "-C", "cpu_strict": "--cpu-strict", "poll": "--poll",
}  # fmt: skip

# What a serving matrix sweeps (toolbox.run.serve_matrix): the settings above plus the server's own,
# named as llama-server's options (common/arg.cpp at the pinned commit). Booleans are (flag when true,
# flag when false); no_kv_offload is a switch. Checked against the image's llama-server --help.
SERVE_FLAGS: dict[str, str | tuple[str, str]] = SERVER_FLAGS | {
    "n_parallel": "-np",
    "ctx_size": "-c",
    "kv_unified": ("--kv-unified", "--no-kv-unified"),
    "cont_batching": ("--cont-batching", "--no-cont-batching"),
    "cache_reuse": "--cache-reuse",
}
SERVER_PORT = 8080  # llama-server's port inside the container (published on 127.0.0.1 only)


def server_args(params: dict) -> list[str]:
    """llama-server's command-line words for serving parameters ({'n_parallel': 4, 'kv_unified': True} -> -np 4 --kv-unified)."""
    out: list[str] = []
    for name, value in params.items():
        flag = SERVE_FLAGS.get(name)
        if flag is None:
            raise ToolboxError(f"unknown llama-server parameter {name!r}", f"use one of {', '.join(SERVE_FLAGS)}")
        if isinstance(flag, tuple):
            out.append(flag[0] if _truthy(value) else flag[1])
        elif name == "no_kv_offload":
            out += [flag] if _truthy(value) else []
        elif name == "flash_attn":
            out += [flag, FA_NAMES[fa_value(value)]]
        else:
            out += [flag, str(value)]
    return out


def _truthy(value) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "on", "yes")
    return bool(value)


# --- RPC ------------------------------------------------------------------------------------------------

# The RPC server's executable: ggml-rpc-server in the pinned tree (tools/rpc/CMakeLists.txt), rpc-server before.
RPC_SERVER_NAMES = ("ggml-rpc-server", "rpc-server")
# RPC_PROTO_{MAJOR,MINOR,PATCH}_VERSION of ggml/include/ggml-rpc.h: a client talks only to servers of its major version.
RPC_PROTO_VERSION = (7, 0, 0)
