"""FlashAttention K-V pairs: the ROCm images compile a kernel for every pair the kv presets measure, a
row that took llama.cpp's f16 detour (no kernel compiled for its pair) is flagged and does not count, and
so is a row whose flash attention ran on the CPU because the GPU backend has no kernel for its types."""

from __future__ import annotations

import re
import subprocess
import tomllib
from itertools import product
from pathlib import Path

import pytest

from toolbox.build.pins import load_pins
from toolbox.llamacpp import (
    FA_GPU_TYPES,
    FA_QUANTS_DEFAULT,
    fa_compiled_pairs,
    fa_cpu_reason,
    fa_fallbacks,
    gpu_build,
    row_fa_fallback,
    row_fa_on_cpu,
)
from toolbox.quality import gate
from toolbox.store.rows import make_row

REPO = Path(__file__).resolve().parent.parent
MATRICES = Path(__file__).resolve().parent / "data" / "matrices"
PINS = load_pins(REPO / "containers" / "pins.toml")

# The warning ggml_cuda_flash_attn_ext_vec() prints (ggml/src/ggml-cuda/fattn.cu at the pinned commit,
# GGML_LOG_WARN with __func__), written out from its format string for K=q8_0, V=f16: this machine has
# no AMD GPU to capture it from, and the format is the pinned tree's.
FALLBACK_LINE = (
    "ggml_cuda_flash_attn_ext_vec: no FlashAttention vector kernel compiled for K/V types q8_0-f16, converting K and V"
    ' to f16 instead (slow). Add "q8_0-f16" to GGML_CUDA_FA_QUANTS to compile it.'
)
LOG = "\n".join([
    "ggml_cuda_init: found 1 ROCm devices (Total VRAM: 126976 MiB):",
    "  Device 0: Radeon 8060S Graphics, gfx1151 (0x1151), VMM: no, Wave Size: 32, VRAM: 126976 MiB",
    FALLBACK_LINE,
])  # fmt: skip


def preset_pairs(name: str) -> set[tuple[str, str]]:
    spec = tomllib.loads((REPO / "toolbox" / "matrices" / f"{name}.toml").read_text())["params"]
    return set(product(spec["type_k"], spec["type_v"]))


def test_pinned_fattn_types_and_default_match_the_source():
    """The vocabulary's copy of common.cmake's FA_TYPES and the default pair list, checked against the pinned tree."""
    from toolbox.build.source import sdist_source
    from toolbox.llamacpp import FA_VEC_TYPES
    from toolbox.settings import load_settings

    settings = load_settings()
    tarball = settings.cache_dir / "downloads" / PINS.llama_cpp.sdist.filename
    if not tarball.exists():
        pytest.skip(f"the pinned sdist is not downloaded ({tarball}): run `invoke build cpu --offline` once")
    tree = sdist_source(PINS, settings.cache_dir)
    common = (tree / "ggml" / "cmake" / "common.cmake").read_text()
    assert f"set(FA_TYPES {' '.join(FA_VEC_TYPES)})" in common
    assert f'set   (GGML_CUDA_FA_QUANTS "{FA_QUANTS_DEFAULT}"' in (tree / "ggml" / "CMakeLists.txt").read_text()
    fattn = (tree / "ggml" / "src" / "ggml-cuda" / "fattn.cu").read_text()
    assert "no FlashAttention vector kernel compiled for K/V types %s-%s, converting K and V to f16 instead" in fattn
    # the types each GPU backend's flash attention takes (FA_GPU_TYPES), read from the two functions that decide
    hip = re.search(r"ggml_cuda_fattn_kv_type_supported\(const ggml_type type\) \{(.*?)return true;", fattn, re.S)
    assert _cases(hip[1]) == set(FA_GPU_TYPES["hip"])
    vk = (tree / "ggml" / "src" / "ggml-vulkan" / "ggml-vulkan.cpp").read_text()
    fa_kv_ok = re.search(r"auto fa_kv_ok = \[\]\(ggml_type t\) \{(.*?)return true;", vk, re.S)
    assert _cases(fa_kv_ok[1]) == set(FA_GPU_TYPES["vulkan"])
    assert "if ((op->src[1]->type == GGML_TYPE_BF16) != (op->src[2]->type == GGML_TYPE_BF16)) {" in vk


def _cases(block: str) -> set[str]:
    return {t.lower() for t in re.findall(r"case GGML_TYPE_(\w+):", block)}


@pytest.mark.parametrize("backend", ["rocm", "rocm-debian"])
def test_rocm_images_compile_every_pair_the_kv_presets_measure(backend):
    compiled = fa_compiled_pairs(PINS.backends[backend].cmake_flags)
    wanted = {(k, v) for k, v in preset_pairs("kv") | preset_pairs("kv-all") if "iq4_nl" not in (k, v)}
    wanted = {tuple("f16" if t == "f32" else t for t in p) for p in wanted}  # f32 uses the f16 kernel
    assert wanted - compiled == set()


def test_default_build_lacks_the_mixed_pairs():
    """Why the flag is needed: the default list leaves the kv preset's 6 mixed pairs (of 9) to the detour."""
    compiled = fa_compiled_pairs(["-DGGML_HIP=ON"])
    assert compiled == {("q4_0", "q4_0"), ("q8_0", "q8_0"), ("f16", "f16"), ("bf16", "bf16")}
    assert len(preset_pairs("kv") - compiled) == 6
    assert fa_compiled_pairs(["-DGGML_VULKAN=ON"]) is None
    assert fa_compiled_pairs("-DGGML_HIP=ON -DGGML_CUDA_FA_QUANTS=q8_0-f16,f16-q8_0") == {("f16", "f16"), ("q8_0", "f16"), ("f16", "q8_0")}


def test_fallback_line_is_read_from_a_log():
    assert fa_fallbacks(LOG) == {("q8_0", "f16")}
    assert fa_fallbacks("llama_context: flash_attn = 1\n") == set()


def test_row_that_took_the_detour_is_flagged():
    tg = {"n_prompt": 0, "n_gen": 128, "flash_attn": True, "type_k": "q8_0", "type_v": "f16"}
    assert row_fa_fallback(tg, LOG) is True
    assert row_fa_fallback(tg | {"type_v": "q8_0"}, LOG) is False  # another pair: the log does not name it
    assert row_fa_fallback(tg | {"n_gen": 0, "n_prompt": 512}, LOG) is None  # prompt kernels convert every pair
    assert row_fa_fallback(tg | {"flash_attn": False}, LOG) is None
    # llama.cpp warns once per process: the image's flags answer for the later pairs of the same process
    default_flags = "-DGGML_HIP=ON -DGPU_TARGETS=gfx1151"
    assert row_fa_fallback(tg | {"type_k": "q4_0"}, LOG, default_flags) is True
    assert row_fa_fallback(tg | {"type_k": "q4_0"}, LOG, default_flags + " -DGGML_CUDA_FA_QUANTS=all") is False
    assert row_fa_fallback(tg | {"type_k": "f32", "type_v": "f16"}, "", default_flags) is False  # f32 uses f16's kernel
    assert row_fa_fallback(tg | {"type_k": "q4_0"}, "", "-DGGML_VULKAN=ON") is False


def test_a_fallback_row_does_not_count():
    row = make_row({"n_gen": 128, "avg_ts": 50.0, "type_k": "q8_0", "type_v": "f16"}, fa_fallback=True, device_ok=True)
    assert gate.row_not_counted(row) == "fallback"
    assert "GGML_CUDA_FA_QUANTS" in gate.NOT_COUNTED["fallback"]
    assert gate.row_not_counted(row | {"fa_fallback": False}) is None
    assert gate.row_not_counted(row | {"device_ok": False}) == "off-device"  # the stronger reason first


# --- flash attention on the CPU: the GPU backend has no kernel for the K/V types at all ------------------


def test_which_pairs_leave_the_gpu():
    assert gpu_build(PINS.backends["rocm"].cmake_flags) == gpu_build(PINS.backends["rocm-debian"].cmake_flags) == "hip"
    assert gpu_build(PINS.backends["vulkan"].cmake_flags) == "vulkan"
    assert gpu_build(PINS.backends["cpu"].cmake_flags) is None
    assert "iq4_nl" in fa_cpu_reason("hip", "iq4_nl", "f16")
    assert "iq4_nl" in fa_cpu_reason("hip", "q8_0", "iq4_nl")
    assert fa_cpu_reason("hip", "bf16", "f16") is None  # HIP converts, it has no bf16 rule
    assert "bf16" in fa_cpu_reason("vulkan", "bf16", "f16")
    assert "bf16" in fa_cpu_reason("vulkan", "f16", "bf16")
    assert fa_cpu_reason("vulkan", "bf16", "bf16") is None
    assert fa_cpu_reason("vulkan", "iq4_nl", "q8_0") is None
    assert fa_cpu_reason(None, "iq4_nl", "bf16") is None  # the CPU build runs everything on the CPU anyway
    kv_all = preset_pairs("kv-all")
    assert sum(fa_cpu_reason("hip", k, v) is not None for k, v in kv_all) == 17  # iq4_nl as K or V
    assert sum(fa_cpu_reason("vulkan", k, v) is not None for k, v in kv_all) == 16  # bf16 with another type
    assert not any(fa_cpu_reason(b, k, v) for b in FA_GPU_TYPES for k, v in preset_pairs("kv"))


def test_row_fa_on_cpu_applies_to_flash_attention_rows_of_gpu_builds():
    vk = PINS.backends["vulkan"].cmake_flags
    row = {"n_prompt": 512, "n_gen": 0, "flash_attn": True, "type_k": "bf16", "type_v": "f16", "n_gpu_layers": 99}
    assert row_fa_on_cpu(row, vk) is True  # prompt processing too: the whole op leaves the GPU
    assert row_fa_on_cpu(row | {"type_v": "bf16"}, vk) is False
    assert row_fa_on_cpu(row | {"flash_attn": False}, vk) is None
    assert row_fa_on_cpu(row | {"flash_attn": -1}, vk) is None  # auto: llama.cpp turns it off instead
    assert row_fa_on_cpu(row | {"n_gpu_layers": 0}, vk) is None
    assert row_fa_on_cpu(row | {"no_kv_offload": True}, vk) is None  # the KV cache on the CPU by choice
    assert row_fa_on_cpu(row, PINS.backends["cpu"].cmake_flags) is None
    assert row_fa_on_cpu(row, PINS.backends["rocm"].cmake_flags) is False
    assert row_fa_on_cpu(row | {"type_k": "iq4_nl"}, PINS.backends["rocm"].cmake_flags) is True


def test_a_row_with_flash_attention_on_the_cpu_does_not_count():
    row = make_row({"n_gen": 128, "avg_ts": 9.8, "type_k": "bf16", "type_v": "f16"}, fa_on_cpu=True, device_ok=True)
    assert gate.row_not_counted(row) == "fa-on-cpu"
    assert "CPU" in gate.NOT_COUNTED["fa-on-cpu"]
    assert gate.row_not_counted(row | {"fa_on_cpu": False}) is None
    assert gate.row_not_counted(row | {"device_ok": False}) == "off-device"


def _splits(image: str, model: Path, type_k: str, type_v: str) -> int:
    """The graph splits `llama-bench -v` reports for one K/V pair with flash attention on, on lavapipe."""
    p = subprocess.run(
        ["docker", "run", "--rm", "-e", "GGML_VK_VISIBLE_DEVICES=0", "-v", f"{model.parent}:/models:ro", image,
         "llama-bench", "-v", "-m", f"/models/{model.name}", "-p", "0", "-n", "1", "-r", "1", "-fa", "1",
         "-ctk", type_k, "-ctv", type_v, "-o", "jsonl"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr[-800:]
    assert '"backends": "Vulkan"' in p.stdout, "lavapipe must be the device"
    found = re.findall(r"sched_reserve: graph: nodes = \d+, splits = (\d+)", p.stderr)
    assert found, p.stderr[-800:]
    return int(found[-1])


@pytest.mark.container
def test_the_vulkan_rule_matches_the_graph_splits_on_lavapipe(vulkan_image, tiny_model):
    """The general signal (docs/pins.md): an op the device has no kernel for adds graph splits. The rule
    above says which pairs leave the GPU without running anything; llama-bench -v shows it on lavapipe."""
    pairs = [("f16", "f16"), ("bf16", "f16"), ("f16", "bf16"), ("bf16", "bf16"), ("iq4_nl", "q8_0"), ("q4_0", "q4_0")]
    splits = {pair: _splits(vulkan_image, tiny_model, *pair) for pair in pairs}
    fewest = min(splits.values())
    assert {pair for pair, n in splits.items() if n > fewest} == {p for p in pairs if fa_cpu_reason("vulkan", *p)}, splits


@pytest.mark.container
def test_bench_flags_flash_attention_on_the_cpu_and_does_not_count_it(vulkan_image, bench_settings, tiny_model):
    from toolbox.analysis.identity import collect
    from toolbox.run import bench as bench_mod
    from toolbox.store import runs

    r = bench_mod.bench(bench_settings, matrix=str(MATRICES / "fa-cpu-small.toml"), allow_cpu_vulkan=True)
    assert r.status == "complete" and r.failed == 0
    meta, rows = runs.load_run(bench_settings.results_dir, r.run_id)
    flagged = {(row["type_k"], row["type_v"]): row["fa_on_cpu"] for row in rows}
    assert flagged == {("f16", "f16"): False, ("bf16", "f16"): True}
    assert all(row["device_ok"] is True for row in rows)  # the rows' devices say lavapipe: only the rule sees it
    why = {(res.row["type_k"], res.row["type_v"]): res.not_counted for res in collect([(meta, rows)]).results}
    assert why == {("f16", "f16"): None, ("bf16", "f16"): "fa-on-cpu"}
