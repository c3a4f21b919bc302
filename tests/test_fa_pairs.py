"""FlashAttention K-V pairs: the ROCm images compile a kernel for every pair the kv presets measure, and
a row that took llama.cpp's f16 detour (no kernel compiled for its pair) is flagged and does not count."""

from __future__ import annotations

import tomllib
from itertools import product
from pathlib import Path

import pytest

from toolbox.build.pins import load_pins
from toolbox.llamacpp import FA_QUANTS_DEFAULT, fa_compiled_pairs, fa_fallbacks, row_fa_fallback
from toolbox.quality import gate
from toolbox.store.rows import make_row

REPO = Path(__file__).resolve().parent.parent
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
