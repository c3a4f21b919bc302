"""llama-bench parsing on real output: public samples (tests/data/llama-bench/SOURCES.md) and our own captures (ours-*)."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pandas as pd
import pytest

from toolbox.llamacpp import FIELDS, parse_test
from toolbox.llamacpp import test_name as make_test_name
from toolbox.parse import normalize, parse, parse_jsonl_line, rows_of

DATA = Path(__file__).parent / "data" / "llama-bench"
GIB, MIB = 2**30, 2**20


def load(name: str) -> pd.DataFrame:
    return parse((DATA / name).read_text(encoding="utf-8"))


def col(df: pd.DataFrame, field: str) -> list:
    return [v if isinstance(v, list) else (None if pd.isna(v) else v) for v in df[field]]


# file -> (format, rows, {field: expected values per row}, text one of the errors must contain)
EXPECTED = {
    "kyuz0-glm45air-rocm644-rocwmma-hblt0-fa1.log": (
        "md",
        2,
        {
            "model_type": ["glm4moe 106B.A12B Q4_K - Medium"] * 2,
            "model_size": [round(68.01 * GIB)] * 2,
            "model_n_params": [110_470_000_000] * 2,
            "backends": ["ROCm"] * 2,
            "n_gpu_layers": [99, 99],
            "flash_attn": [1, 1],
            "use_mmap": [0, 0],
            "n_prompt": [512, 0],
            "n_gen": [0, 128],
            "n_depth": [0, 0],
            "avg_ts": [171.53, 21.08],
            "stddev_ts": [0.45, 0.0],
            "build_commit": ["11f0af55"] * 2,
            "build_number": [6736] * 2,
            "type_k": [None, None],
            "load_mode": [None, None],
        },
        None,
    ),
    "kyuz0-glm45air-vulkan-radv-fa1.log": (
        "md",
        2,
        {"backends": ["Vulkan"] * 2, "avg_ts": [224.85, 24.64], "stddev_ts": [2.55, 0.01], "build_number": [6486] * 2},
        None,
    ),
    "kyuz0-kimi-dev-72b-rocm7rc-hblt0-failed.log": ("none", 0, {}, "exit 134"),
    "kyuz0-gemma3-12b-loadtime-vulkan-radv-excerpt.log": ("none", 0, {}, "no llama-bench results"),
    "geerlingguy-framework-desktop-rocm-rpc.md": (
        "md",
        3,
        {
            "backends": ["ROCm,RPC"] * 3,
            "model_size": [round(1.87 * GIB)] * 3,
            "model_n_params": [3_210_000_000] * 3,
            "n_prompt": [512, 0, 512],
            "n_gen": [0, 128, 128],
            "avg_ts": [573.52, 74.98, 244.87],
            "stddev_ts": [12.56, 0.0, 0.2],
            "build_commit": ["c81de6e1"] * 3,
            "build_number": [6092] * 3,
        },
        None,
    ),
    "geerlingguy-beowulf-rpc-load-error.log": ("none", 0, {}, "failed to load model"),
    "llamacpp-pr21344-rocm-vulkan-dev-dio.md": (
        "md",
        2,
        {
            "model_type": ["nemotron_h_moe 120B.A12B Q4_K - Medium"] * 2,
            "backends": ["ROCm,Vulkan"] * 2,
            "n_ubatch": [2048, 2048],
            "n_batch": [None, None],
            "flash_attn": [1, 1],
            "devices": ["ROCm0"] * 2,
            "use_mmap": [0, 0],
            "use_direct_io": [1, 1],
            "n_prompt": [128, 256],
            "avg_ts": [124.14, 191.08],
        },
        None,
    ),
    "llamacpp-pr28494-vulkan-batch-ubatch.md": (
        "md",
        3,
        {
            "n_batch": [8192] * 3,
            "n_ubatch": [2048] * 3,
            "n_prompt": [512, 1024, 2048],
            "n_gen": [0, 0, 0],
            "avg_ts": [333.34, 314.97, 298.31],
        },
        None,
    ),
    "lemonade-llamacpp-rocm-pr88-fa-mmap.md": (
        "md",
        4,
        {
            "flash_attn": [0, 0, 1, 1],
            "use_mmap": [0, 0, 0, 0],
            "n_gen": [0, 128, 0, 128],
            "model_size": [round(55.45 * GIB)] * 4,
            "avg_ts": [617.84, 39.22, 612.25, 39.57],
        },
        None,
    ),
    "lhl-strix-halo-testing-issue33-depth.md": (
        "md",
        7,
        {
            "backends": [None] * 7,
            "n_prompt": [2048, 0, 2048, 0, 2048, 0, 2048],
            "n_gen": [0, 32, 0, 32, 0, 32, 0],
            "n_depth": [0, 0, 4096, 4096, 8192, 8192, 16384],
            "avg_ts": [998.24, 47.41, 826.59, 44.14, 703.72, 42.36, 507.39],
        },
        None,
    ),
    "llamacpp-issue26702-indented-kv-q8.md": (
        "md",
        2,
        {
            "type_k": ["q8_0"] * 2,
            "type_v": ["q8_0"] * 2,
            "n_batch": [1024] * 2,
            "n_ubatch": [1024] * 2,
            "flash_attn": [1, 1],
            "n_prompt": [8192, 0],
            "n_gen": [0, 512],
            "avg_ts": [653.37, 34.61],
            "build_commit": ["0a50d9909"] * 2,
            "build_number": [10108] * 2,
        },
        None,
    ),
    "llamacpp-issue28752-kv-q8-dev.md": (
        "md",
        3,
        {
            "type_k": ["q8_0"] * 3,
            "type_v": ["q8_0"] * 3,
            "n_gpu_layers": [999] * 3,
            "devices": ["Vulkan0"] * 3,
            "n_prompt": [2048, 4096, 0],
            "build_number": [None] * 3,
            "avg_ts": [933.70, 917.44, 37.74],
        },
        "failed to create context",
    ),
    "llamacpp-issue19255-depth-fa.md": (
        "md",
        2,
        {
            "model_type": ["deepseek2 30B.A3B IQ4_XS - 4.25 bpw"] * 2,
            "n_gen": [128, 128],
            "n_depth": [0, 4096],
            "avg_ts": [102.97, 41.81],
        },
        None,
    ),
    "llamacpp-pr4812-nkvo-2024.md": (
        "md",
        4,
        {
            "no_kv_offload": [0, 0, 1, 1],
            "n_prompt": [512, 0, 512, 0],
            "n_gen": [0, 128, 0, 128],
            "avg_ts": [4035.47, 127.43, 237.84, 59.99],
            "stddev_ts": [157.68, 0.18, 10.28, 2.35],
            "model_size": [round(3.56 * GIB)] * 4,
            "model_n_params": [6_740_000_000] * 4,
            "build_number": [1786] * 4,
        },
        None,
    ),
    "llamacpp-issue3869-2023-windows.md": (
        "md",
        2,
        {
            "model_type": ["llama 7B mostly Q4_K - Small"] * 2,
            "backends": ["CUDA"] * 2,
            "avg_ts": [998.41, 39.39],
            "stddev_ts": [114.47, 0.16],
            "build_commit": ["b12fa0d"] * 2,
            "build_number": [1468] * 2,
        },
        None,
    ),
    "llamacpp-pr3816-2023-two-tables.md": (
        "md",
        6,
        {"build_number": [1431] * 4 + [None] * 2, "avg_ts": [4098.15, 44.84, 3450.93, 105.11, 4306.38, 45.20]},
        None,
    ),
    "llamacpp-readme-2023-09.md": (
        "md",
        6,
        {"n_gpu_layers": [10, 10, 20, 20, 35, 35], "model_type": ["llama 7B mostly Q4_0"] * 6, "build_number": [None] * 6},
        None,
    ),
    "llamacpp-readme-2023-09.csv": (
        "csv",
        2,
        {
            "build_commit": ["3469684"] * 2,
            "build_number": [1275] * 2,
            "cuda": [1, 1],
            "backends": ["CUDA"] * 2,
            "f16_kv": [1, 1],
            "type_k": ["f16"] * 2,
            "type_v": ["f16"] * 2,
            "model_size": [3825065984] * 2,
            "n_prompt": [512, 0],
            "n_gen": [0, 128],
            "avg_ts": [2413.341687, 132.052051],
            "avg_ns": [212155977, 969320879],
            "n_depth": [0, 0],  # before depth existed: depth 0, as the markdown of that era says
        },
        None,
    ),
    "llamacpp-readme-2023-09.json": (
        "json",
        2,
        {
            "cuda": [1, 1],
            "opencl": [0, 0],
            "mul_mat_q": [1, 1],
            "f16_kv": [1, 1],
            "type_k": ["f16"] * 2,
            "avg_ts": [2410.974041, 130.965708],
            "samples_ns": [
                [213837238, 211635853, 212328053, 211329715, 212698907],
                [984472709, 974901233, 989474741, 970729355, 967548060],
            ],
        },
        None,
    ),
    # a row that ends with a stray pipe (`| 16.41 ± 0.79 ||`) is a row, not a cut-off table
    "llamacpp-readme-2023-threads-extra-pipe.md": (
        "md",
        12,
        {
            "n_threads": [1, 1, 2, 2, 4, 4, 8, 8, 16, 16, 32, 32],
            "avg_ts": [6.17, 4.05, 12.31, 7.80, 23.18, 12.22, 32.29, 16.71, 33.52, 15.32, 59.00, 16.41],
            "stddev_ts": [0.07, 0.02, 0.13, 0.07, 0.06, 0.07, 1.21, 0.66, 0.03, 0.05, 1.11, 0.79],
            "n_gen": [0, 16] * 6,
            "n_depth": [0] * 12,
        },
        None,
    ),
    "llamacpp-readme-2023-jsonl-no-depth.jsonl": (
        "jsonl",
        2,
        {"n_prompt": [512, 0], "n_gen": [0, 128], "n_depth": [0, 0], "cuda": [1, 1], "avg_ts": [2410.974041, 130.965708]},
        None,
    ),
    "llamacpp-readme-2023-09.sql": (
        "sql",
        2,
        {
            "build_number": [1275] * 2,
            "gpu_info": ["NVIDIA GeForce RTX 3090 Ti"] * 2,
            "cpu_info": ["13th Gen Intel(R) Core(TM) i9-13900K"] * 2,
            "avg_ts": [2407.240204, 130.891159],
        },
        None,
    ),
    "llamacpp-readme-b11312.json": (
        "json",
        2,
        {
            "flash_attn": [-1, -1],
            "use_mmap": [1, 1],
            "use_direct_io": [0, 0],
            "repack": [1, 1],
            "cpu_strict": [0, 0],
            "n_gpu_layers": [-1, -1],
            "devices": ["auto"] * 2,
            "build_number": [5163] * 2,
            "samples_ts": [[6863.1, 7147.55, 7136.37, 7115.79, 7237.21], [119.03, 120.178, 119.43, 118.307, 117.464]],
        },
        None,
    ),
    "llamacpp-readme-b11312.jsonl": (
        "jsonl",
        2,
        {"avg_ts": [7263.609157, 119.844681], "n_gen": [0, 128], "flash_attn": [-1, -1], "no_kv_offload": [0, 0]},
        None,
    ),
    "llamacpp-readme-b11312.sql": ("sql", 2, {"n_prompt": [512, 0], "n_gen": [0, 128], "backends": ["CUDA"] * 2}, None),
    # the README's CSV has 42 header names and 41 values per row: refused, never shifted onto wrong columns
    "llamacpp-readme-b11312.csv": ("none", 0, {}, "41 values for 42 columns"),
    "llamacpp-readme-b11312-depth.md": (
        "md",
        4,
        {"n_depth": [0, 0, 512, 512], "n_gpu_layers": [-1] * 4, "avg_ts": [7340.20, 120.60, 6425.91, 116.71]},
        None,
    ),
    "ik-llamacpp-issue381-header-then-crash.log": ("none", 0, {}, "fatal error"),
    "lhl-llama32-1b-default-hip.jsonl": (
        "jsonl",
        4,
        {
            "flash_attn": [1] * 4,
            "use_mmap": [0] * 4,
            "n_depth": [0, 0, 1024, 1024],
            "samples_ts": [[4703.28], [195.653], [4076.03], [188.791]],
            "gpu_info": ["Radeon 8060S Graphics"] * 4,
            "build_number": [6865] * 4,
        },
        None,
    ),
    "lhl-glm45air-raw-runs-truncated.jsonl": ("jsonl", 2, {"n_prompt": [1, 2], "defrag_thold": [-1.0, -1.0]}, "incomplete JSONL"),
    "composite-jsonl-with-stderr.log": ("jsonl", 2, {"n_prompt": [512, 0], "avg_ts": [4703.284998, 195.653022]}, None),
    "composite-md-truncated-crash.log": (
        "md",
        1,
        {"n_prompt": [512], "avg_ts": [573.52], "build_number": [None]},
        "incomplete table row",
    ),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_real_sample(name):
    fmt, n, fields, error = EXPECTED[name]
    df = load(name)
    assert df.attrs["format"] == fmt
    assert len(df) == n
    for field, values in fields.items():
        got = col(df, field)
        if values and isinstance(values[0], float):
            assert got == pytest.approx(values), field
        else:
            assert got == values, field
    if error:
        assert any(error in e for e in df.attrs["errors"]), df.attrs["errors"]
    elif n:
        assert not [e for e in df.attrs["errors"] if "incomplete" in e or "no llama-bench" in e]


def test_enough_real_samples_and_every_one_has_a_source():
    sources = (DATA / "SOURCES.md").read_text(encoding="utf-8")
    files = [p for p in DATA.iterdir() if p.is_file() and p.name != "SOURCES.md"]
    listed = set(re.findall(r"^\| ([^|]+?) \|", sources, re.M))
    names = {n for entry in listed for n in re.split(r" / |, ", entry)}
    for p in files:
        stem = p.name.rsplit(".", 1)[0]
        assert p.name in names or any(n.startswith(stem) or n.endswith(p.suffix) and n.startswith(stem.rsplit("-", 1)[0]) for n in names), (
            f"{p.name} has no entry in SOURCES.md"
        )
    assert len([f for f in files if not f.name.startswith("composite")]) >= 20


def test_our_own_captures_exist():
    """The captures of our own images are the parser's ground truth: an empty set is a failure, not a skip."""
    assert len(list(DATA.glob("ours-*"))) >= 9


@pytest.mark.parametrize("path", sorted(p.name for p in DATA.glob("ours-*")))
def test_our_own_captures_parse_completely(path):
    df = parse((DATA / path).read_text(encoding="utf-8"))
    if "error" in path:  # captured failures: no rows, and the error text llama-bench printed
        assert len(df) == 0 and any("failed to create context" in e for e in df.attrs["errors"])
        return
    assert len(df) > 0 and not [e for e in df.attrs["errors"] if "incomplete" in e]
    assert df["avg_ts"].notna().all() and df["n_prompt"].notna().all()
    assert set(df["build_commit"]) == {"0c1e5709"} and set(df["build_number"]) == {11312}


@pytest.mark.parametrize(
    "name",
    [
        "llamacpp-readme-2023-09.md",
        "llamacpp-readme-2023-09.csv",
        "llamacpp-readme-2023-09.json",
        "llamacpp-readme-2023-09.sql",
        "llamacpp-readme-2023-jsonl-no-depth.jsonl",
        "llamacpp-readme-2023-threads-extra-pipe.md",
    ],
)
def test_no_depth_means_depth_0_in_every_format(name):
    """Output from before depth existed: one meaning in every format, so the same test joins across formats."""
    rows = rows_of(load(name))
    assert rows and all(r["n_depth"] == 0 for r in rows)
    assert {make_test_name(r["n_prompt"], r["n_gen"], r["n_depth"]) for r in rows} <= {"pp512", "tg128", "pp64", "tg16"}


def test_columns_are_found_by_name_not_position():
    """Shuffle the columns of a real table: every value must land in the same field."""
    lines = (DATA / "llamacpp-issue26702-indented-kv-q8.md").read_text(encoding="utf-8").splitlines()
    table = [ln.strip() for ln in lines if ln.strip().startswith("|")]
    cells = [[c.strip() for c in ln.strip("|").split("|")] for ln in table]
    order = list(range(len(cells[0])))
    random.Random(3).shuffle(order)
    shuffled = "\n".join("| " + " | ".join(row[j] for j in order) + " |" for row in cells)
    a, b = load("llamacpp-issue26702-indented-kv-q8.md"), parse(shuffled)
    for f in ("type_k", "type_v", "n_batch", "n_ubatch", "flash_attn", "n_prompt", "n_gen", "avg_ts", "stddev_ts", "model_size"):
        assert col(a, f) == col(b, f), f


def test_formats_agree_on_the_same_fields():
    """The same llama-bench version's json, jsonl, sql rows give the same field set and types."""
    frames = [load(f"llamacpp-readme-b11312.{ext}") for ext in ("json", "jsonl", "sql")]
    for f in ("build_commit", "model_type", "model_size", "n_batch", "type_k", "flash_attn", "use_mmap", "n_prompt", "n_gen"):
        assert col(frames[0], f) == col(frames[1], f) == col(frames[2], f), f


@pytest.mark.parametrize(
    "args,name",
    [
        ((512, 0, 0), "pp512"),
        ((0, 128, 0), "tg128"),
        ((512, 128, 0), "pp512+tg128"),
        ((512, 0, 4096), "pp512@d4096"),
        (("2048", "0", None), "pp2048"),
        ((0, 32, 8192), "tg32@d8192"),
    ],
)
def test_test_name(args, name):
    assert make_test_name(*args) == name


@pytest.mark.parametrize(
    "text,shape",
    [
        ("pp512", (512, 0, 0)),
        ("tg128", (0, 128, 0)),
        ("pp 512", (512, 0, 0)),
        ("tg 128", (0, 128, 0)),
        ("pp512+tg128", (512, 128, 0)),
        ("pp512 @ d4096", (512, 0, 4096)),
        ("pp7500+tg512", (7500, 512, 0)),
        ("tg32 @ d16384", (0, 32, 16384)),
        ("pp", None),
        ("512", None),
        ("t/s", None),
    ],
)
def test_parse_test(text, shape):
    assert parse_test(text) == shape


def test_normalize_types_and_renames():
    row = normalize(
        {
            "flash_attn": True,
            "use_mmap": "false",
            "n_batch": "2048",
            "ngl": "99",
            "fa": "0",
            "f16_kv": False,
            "avg_ts": "12.5",
            "mystery": 1,
            "samples_ns": [1, 2],
        }
    )
    assert row["flash_attn"] == 1 and row["use_mmap"] == 0 and row["n_batch"] == 2048 and row["n_gpu_layers"] == 99
    assert row["type_k"] == row["type_v"] == "f32" and row["avg_ts"] == 12.5 and row["samples_ns"] == [1, 2]
    assert "mystery" not in row and row["raw"]["mystery"] == 1
    assert normalize({"flash_attn": "on"})["flash_attn"] == 1 and normalize({"flash_attn": "auto"})["flash_attn"] == -1


def test_parse_jsonl_line_takes_results_only():
    line = (DATA / "lhl-llama32-1b-default-hip.jsonl").read_text(encoding="utf-8").splitlines()[2]
    row = parse_jsonl_line(line + "\n")
    assert row["n_depth"] == 1024 and row["flash_attn"] == 1 and row["raw"] == json.loads(line)
    for other in (
        "",
        "ggml_vulkan: 0 = Radeon 8060S Graphics (RADV GFX1151) (radv) | uma: 1",
        '{"level": "info"}',
        line[:200],
        "[",
        "}",
    ):
        assert parse_jsonl_line(other) is None


def test_unknown_column_is_kept_under_raw_with_a_warning():
    text = (DATA / "kyuz0-glm45air-vulkan-radv-fa1.log").read_text(encoding="utf-8")
    text = text.replace("| fa | mmap |", "| fa | wobble |").replace("|  1 |    0 |", "|  1 |    7 |")
    df = parse(text)
    assert len(df) == 2 and df.iloc[0]["raw"]["wobble"] == "7" and pd.isna(df.iloc[0]["use_mmap"])
    assert any("wobble" in w for w in df.attrs["warnings"])


def test_unknown_json_field_is_kept_under_raw_with_a_warning():
    obj = json.loads((DATA / "llamacpp-readme-b11312.jsonl").read_text(encoding="utf-8").splitlines()[0])
    obj["gpu_temp_c"] = 71
    df = parse(json.dumps(obj))
    assert len(df) == 1 and df.iloc[0]["raw"]["gpu_temp_c"] == 71 and any("gpu_temp_c" in w for w in df.attrs["warnings"])


@pytest.mark.parametrize("data", [b"", b"   \n\n", bytes(range(256)) * 20, b"\x7fELF\x02\x01\x01" + b"\x00" * 4000])
def test_bad_input_gives_no_rows_and_an_error(data):
    df = parse(data.decode("utf-8", errors="replace"))
    assert len(df) == 0 and df.attrs["errors"] and list(df.columns) == list(FIELDS) + ["raw"]


def test_rows_of_gives_plain_python_values():
    rows = rows_of(load("llamacpp-readme-b11312.json"))
    assert rows[0]["n_batch"] == 2048 and type(rows[0]["n_batch"]) is int and rows[0]["load_mode"] is None
    json.dumps(rows)
