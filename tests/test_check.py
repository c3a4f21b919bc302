"""The quality check (toolbox.check): real llama-perplexity in the real cpu and vulkan (lavapipe) images.

Figures measured on the embedded tiny model (8 windows of 128 tokens, 504 scored tokens) against the
cpu image's f16-KV logits: cpu f16 KLD < 1e-6; lavapipe f16 1.5e-5, top-1 97.8 %; q8_0 KV 4e-6 (cpu)
/ 1.7e-5 (lavapipe); q4_0 KV 6.0e-4, top-1 about 92 %; a different model file (seed 1) about 1.0,
top-1 0.2 %.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from toolbox.errors import ToolboxError
from toolbox.quality import base as chk_base
from toolbox.quality import check as chk
from toolbox.quality import verdict as chk_verdict
from toolbox.settings import load_settings
from toolbox.store import quality as quality_store
from toolbox.store import runs as results

REPO = Path(__file__).resolve().parent.parent

# What `llama-perplexity --kl-divergence` printed on stdout for the tiny model with q4_0 K and V on
# the cpu image (pinned commit 0c1e5709), statistics blocks cut after the lines the parser reads.
Q4_OUTPUT = """\
chunk             PPL               ln(PPL(Q)/PPL(base))          KL Divergence              Δp RMS            Same top p
   1    3878.8164 ±  525.6650      -0.00119 ±    0.00471       0.00064 ±    0.00002     0.002 ±  0.000 %    90.476 ±  3.728 %
   2    3695.2645 ±  332.4461      -0.00041 ±    0.00299       0.00061 ±    0.00001     0.002 ±  0.000 %    92.857 ±  2.304 %
   3    3600.8387 ±  256.4987       0.00104 ±    0.00253       0.00061 ±    0.00001     0.002 ±  0.000 %    93.122 ±  1.846 %
   4    3381.5128 ±  207.9015       0.00118 ±    0.00210       0.00061 ±    0.00001     0.002 ±  0.000 %    92.857 ±  1.626 %
   5    3312.5670 ±  184.2807       0.00095 ±    0.00181       0.00060 ±    0.00001     0.002 ±  0.000 %    92.381 ±  1.497 %
   6    3260.2464 ±  166.2765       0.00123 ±    0.00168       0.00059 ±    0.00001     0.002 ±  0.000 %    92.328 ±  1.371 %
   7    3303.0542 ±  157.5384       0.00036 ±    0.00155       0.00060 ±    0.00001     0.002 ±  0.000 %    92.290 ±  1.272 %
   8    3218.3410 ±  144.9160      -0.00060 ±    0.00147       0.00060 ±    0.00001     0.003 ±  0.000 %    91.865 ±  1.219 %

====== Perplexity statistics ======
Mean PPL(Q)                   : 3218.341049 ± 144.916031
Mean PPL(base)                : 3220.281457 ± 144.848085
Cor(ln(PPL(Q)), ln(PPL(base))):  99.95%
Mean ln(PPL(Q)/PPL(base))     :  -0.000603 ±   0.001472
Mean PPL(Q)/PPL(base)         :   0.999397 ±   0.001471
Mean PPL(Q)-PPL(base)         :  -1.940408 ±   4.735350

====== KL divergence statistics ======
Mean    KLD:   0.000601 ±   0.000007
Maximum KLD:   0.001238
99.9%   KLD:   0.001180
99.0%   KLD:   0.001020
95.0%   KLD:   0.000895
Median  KLD:   0.000579
Minimum KLD:   0.000260

====== Token probability statistics ======
RMS Δp    :  0.003 ± 0.000 %
Same top p: 91.865 ± 1.219 %
"""


# --- no container --------------------------------------------------------------


def test_parse_reads_the_statistics_block():
    f = chk_verdict.parse_kld_output(Q4_OUTPUT)
    assert f["ppl"] == pytest.approx(3218.341049) and f["ppl_base"] == pytest.approx(3220.281457)
    assert f["ppl_ratio"] == pytest.approx(0.999397) and f["kld_mean"] == pytest.approx(0.000601)
    assert f["kld_p99"] == pytest.approx(0.001020) and f["kld_max"] == pytest.approx(0.001238)
    assert f["top1_agree"] == pytest.approx(0.91865) and f["top1_agree_err"] == pytest.approx(0.01219)
    assert f["chunks"] == 8 and not f.get("from_chunk_lines")


def test_parse_falls_back_to_the_last_chunk_line_when_the_end_was_lost():
    # the pinned llama.cpp does not flush its logger thread at exit: the statistics block can go missing
    cut = Q4_OUTPUT[: Q4_OUTPUT.index("Mean    KLD")]
    f = chk_verdict.parse_kld_output(cut)
    assert f["from_chunk_lines"] and f["chunks"] == 8
    assert f["kld_mean"] == pytest.approx(0.00060) and f["top1_agree"] == pytest.approx(0.91865)
    assert f["ppl"] == pytest.approx(3218.341049)  # still from the statistics block
    assert chk_verdict.parse_kld_output(Q4_OUTPUT[: Q4_OUTPUT.index("   5  ")])["chunks"] == 4
    assert chk_verdict.parse_kld_output("llama_model_load: error loading model\n") == {}


def test_nan_output_is_broken():
    f = chk_verdict.parse_kld_output(Q4_OUTPUT.replace("0.000601 ±", "nan ±").replace("91.865 ± 1.219 %\n", "-nan ± -nan %\n"))
    assert chk_verdict.verdict(f["kld_mean"], f["top1_agree"]) == "broken"


@pytest.mark.parametrize(
    "kld, top1, expected",
    [
        (0.0, 1.0, "same"),
        (1.5e-5, 0.978, "same"),  # lavapipe vs CPU on the tiny model: flips are near-ties
        (0.00009, 0.90, "same"),  # below the noise KLD top-1 flips do not count
        (0.0014, 0.977, "same"),  # q8_0 weights on LLaMA 3 8B (llama.cpp perplexity README)
        (0.0014, 0.95, "degraded"),
        (0.0006, 0.919, "degraded"),  # q4_0 KV on the tiny model
        (0.031, 0.919, "degraded"),  # q4_K_M on LLaMA 3 8B
        (0.45, 0.711, "degraded"),  # q2_K on LLaMA 3 8B
        (1.0, 0.6, "degraded"),
        (1.01, 0.9, "broken"),
        (0.99, 0.002, "broken"),  # a different model file: top-1 agreement at chance
        (5.3, 0.1, "broken"),  # llama.cpp issue 28211's ROCm output
        (float("inf"), 0.9, "broken"),
    ],
)
def test_verdict_thresholds(kld, top1, expected):
    assert chk_verdict.verdict(kld, top1) == expected


def test_kv_spec_and_flash_attention_rules():
    assert chk.parse_kv("f16/f16, q8_0/q8_0,q4_0/q4_0/on") == [("f16", "f16"), ("q8_0", "q8_0"), ("q4_0", "q4_0", "on")]
    assert chk.parse_kv("q8_0") == [("q8_0", "q8_0")]
    with pytest.raises(ToolboxError, match="TYPE_K/TYPE_V"):
        chk.parse_kv("q8_0/q8_0/on/x")
    with pytest.raises(ToolboxError, match="on, off or auto"):
        chk.parse_kv("q8_0/q8_0/maybe")
    with pytest.raises(ToolboxError, match="needs flash attention"):
        chk._configs([("f16", "q4_0", "off")])
    assert chk._configs([("q4_0", "f16", "off"), ("f16", "f16")]) == [("q4_0", "f16", 0), ("f16", "f16", -1)]


def test_base_header_is_checked_against_the_file_size(tmp_path):
    import struct

    n_ctx, n_vocab, n_chunk = 8, 5, 2
    nv = 2 * ((n_vocab + 1) // 2) + 4
    body = b"_logits_" + struct.pack("<Iii", n_ctx, n_vocab, n_chunk) + bytes(4 * n_ctx * n_chunk + 2 * n_chunk * 3 * nv)
    good = tmp_path / "good.kld"
    good.write_bytes(body)
    assert chk_verdict.read_base_header(good) == {"n_ctx": 8, "n_vocab": 5, "n_chunk": 2, "scored_tokens": 6}
    cut = tmp_path / "cut.kld"
    cut.write_bytes(body[:-1])
    with pytest.raises(ToolboxError, match="truncated"):
        chk_verdict.read_base_header(cut)
    (tmp_path / "other.kld").write_bytes(b"GGUF" + body[4:])
    with pytest.raises(ToolboxError, match="not a llama-perplexity logits file"):
        chk_verdict.read_base_header(tmp_path / "other.kld")


def test_merge_quality_matches_rows_on_their_identity(tmp_path):
    rows = [
        {
            "status": "ok",
            "backend": "vulkan",
            "model_sha256": "a" * 64,
            "type_k": "q8_0",
            "type_v": "q8_0",
            "flash_attn": 1,
            "env": {},
            "quality": None,
        },
        {
            "status": "ok",
            "backend": "vulkan",
            "model_sha256": "a" * 64,
            "type_k": "q8_0",
            "type_v": "q8_0",
            "flash_attn": 0,
            "env": {},
            "quality": None,
        },
        {
            "status": "failed",
            "backend": "vulkan",
            "model_sha256": "a" * 64,
            "type_k": "q8_0",
            "type_v": "q8_0",
            "flash_attn": 1,
            "env": {},
            "quality": None,
        },
    ]
    key = quality_store.quality_key("vulkan", "a" * 64, "q8_0", "q8_0", "on", {})
    first = {"key": key, "verdict": "same", "kld_mean": 1e-5, "top1_agree": 0.99, "ppl": 6.8}
    later = dict(first, verdict="broken", kld_mean=5.3, top1_agree=0.1, ppl=1334.0)
    (tmp_path / quality_store.QUALITY_FILE).write_text(json.dumps(first) + "\n" + "{half a line\n" + json.dumps(later) + "\n")
    merged = quality_store.merge(rows, tmp_path)
    assert merged[0]["quality"]["verdict"] == "broken" and merged[0]["quality"]["ppl"] == 1334.0  # the latest line wins
    assert merged[1]["quality"] is None and merged[2]["quality"] is None  # other flash_attn; failed row
    assert rows[0]["quality"] is None  # inputs untouched


# --- containers ------------------------------------------------------------------


@pytest.fixture(scope="module")
def other_model(tmp_path_factory) -> Path:
    """The tiny model's architecture and vocabulary with other weights (seed 1): 'a different model file behind one backend'."""
    from toolbox.model.tiny import write_tiny_llama

    d = tmp_path_factory.mktemp("other")
    d.chmod(0o755)  # pytest makes it 0700: the containers run as the user, or nobody for root
    return write_tiny_llama(d / "toolbox-tiny-llama-seed1.gguf", seed=1)


@pytest.mark.container
def test_cpu_and_lavapipe_agree_on_the_tiny_model(cpu_image, vulkan_image, tiny_model, settings):
    out = chk.run_check(
        settings,
        backends=["cpu", "vulkan"],
        models=[tiny_model],
        kv=[("f16", "f16"), ("f16", "f16", "off")],
        allow_cpu_vulkan=True,
        images={"cpu": cpu_image, "vulkan": vulkan_image},
    )
    assert [(r["backend"], r["flash_attn"]) for r in out] == [("cpu", -1), ("cpu", 0), ("vulkan", -1), ("vulkan", 0)]
    for r in out:
        assert r["error"] is None and r["verdict"] == "same", r
        assert r["kld_mean"] < 1e-4 and r["top1_agree"] > 0.95 and r["scored_tokens"] == 504
        assert abs(r["ppl"] / r["ppl_base"] - 1) < 1e-3
        assert r["base"]["image"] == cpu_image and r["base"]["type_k"] == r["base"]["type_v"] == "f16"
    cpu, vk = out[0], out[2]
    assert cpu["devices"] == [] and cpu["device_ok"]
    assert vk["device_ok"] and any("llvmpipe" in d for d in vk["devices"]) and vk["offloaded"] == "5/5"
    assert vk["image"] == vulkan_image and Path(vk["log"]).is_file()


@pytest.mark.container
def test_quantized_kv_shows_its_measured_divergence(cpu_image, vulkan_image, tiny_model, settings):
    out = chk.run_check(
        settings,
        backends=["cpu", "vulkan"],
        models=[tiny_model],
        kv=[("q8_0", "q8_0"), ("q4_0", "q4_0")],
        allow_cpu_vulkan=True,
        images={"cpu": cpu_image, "vulkan": vulkan_image},
    )
    by = {(r["backend"], r["type_k"]): r for r in out}
    for backend in ("cpu", "vulkan"):
        q8, q4 = by[(backend, "q8_0")], by[(backend, "q4_0")]
        assert q8["verdict"] == "same" and q4["verdict"] == "degraded", (q8, q4)
        assert 0 < q8["kld_mean"] < 1e-4 < 3e-4 < q4["kld_mean"] < 0.01  # measured: 4e-6 / 1.7e-5 and 6.0e-4
        assert q4["top1_agree"] < 0.97 < q8["top1_agree"]
        assert q4["kld_p99"] > q4["kld_mean"]


@pytest.mark.container
def test_a_different_model_file_behind_a_backend_is_broken(cpu_image, vulkan_image, tiny_model, other_model, settings):
    out = chk.run_check(
        settings,
        backends=["cpu", "vulkan"],
        models=[other_model],
        reference=tiny_model,
        allow_cpu_vulkan=True,
        images={"cpu": cpu_image, "vulkan": vulkan_image},
    )
    assert [r["verdict"] for r in out] == ["broken", "broken"], out
    for r in out:
        assert r["kld_mean"] > 0.5 and r["top1_agree"] < 0.05
        assert r["base"]["model_sha256"] != r["model_sha256"]
    # the same file checked against its own logits is fine: it is the mismatch that is flagged
    own = chk.run_check(settings, backends=["cpu"], models=[other_model], images={"cpu": cpu_image})
    assert own[0]["verdict"] == "same"


@pytest.mark.container
def test_vulkan_that_silently_computes_on_the_cpu_is_not_called_same(cpu_image, vulkan_image, tiny_model, settings):
    from toolbox.engine.client import docker_client

    client = docker_client()
    base = chk_base.ensure_base(settings, client, tiny_model, cpu_image=cpu_image)
    # without GGML_VK_VISIBLE_DEVICES ggml ignores lavapipe and runs on the CPU, exit 0, right logits
    config = chk.CheckConfig("vulkan", vulkan_image, tiny_model, env={"GGML_VK_VISIBLE_DEVICES": ""})
    r = chk.check_one(settings, client, config, base, allow_cpu_vulkan=True)
    assert r["kld_mean"] is not None and r["device_ok"] is False and r["devices"] == []
    assert r["verdict"] is None and "not on the lavapipe device" in r["error"]


@pytest.mark.container
def test_base_logits_are_cached_and_a_damaged_file_is_written_again(cpu_image, tiny_model, tmp_path):
    from toolbox.engine.client import docker_client

    s = load_settings(results_dir=tmp_path / "results", cache_dir=tmp_path / "cache")
    client = docker_client()
    first = chk_base.ensure_base(s, client, tiny_model, cpu_image=cpu_image)
    path = Path(first["path"])
    assert not first["cached"] and path.parent == tmp_path / "cache" / "kld-base"
    assert path.name.startswith(first["model_sha256"] + "-" + client.images.get(cpu_image).id.split(":")[1][:12])
    assert first["n_chunk"] == 8 and first["n_ctx"] == 128 and first["n_vocab"] == 2048
    again = chk_base.ensure_base(s, client, tiny_model, cpu_image=cpu_image)
    assert again["cached"] and again["path"] == first["path"]
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    healed = chk_base.ensure_base(s, client, tiny_model, cpu_image=cpu_image)
    assert not healed["cached"] and path.read_bytes() == data  # deterministic: the same bytes again
    other = chk_base.ensure_base(s, client, tiny_model, cpu_image=cpu_image, ctx=64, chunks=4)
    assert other["path"] != first["path"] and other["n_ctx"] == 64 and other["n_chunk"] == 4


@pytest.mark.container
def test_invoke_check_prints_the_table_and_fails_on_broken(cpu_image, tiny_model, other_model, tmp_path):
    env = os.environ | {"TOOLBOX_RESULTS_DIR": str(tmp_path), "COLUMNS": "200"}
    p = subprocess.run(
        ["invoke", "check", "--backend", "cpu", "--kv", "f16/f16,q4_0/q4_0"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert p.returncode == 0, p.stderr + p.stdout
    assert "same" in p.stdout and "degraded" in p.stdout and "base: " in p.stdout and "q4_0/q4_0" in p.stdout
    p = subprocess.run(
        ["invoke", "check", "--backend", "cpu", "--model", str(other_model), "--reference", str(tiny_model), "--json"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert p.returncode == 1, p.stderr + p.stdout
    data = json.loads(p.stdout)
    assert data[0]["verdict"] == "broken" and "broken" in p.stderr
    p = subprocess.run(
        ["invoke", "check", "--backend", "cpu", "--kv", "f16/q8_0/off"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert p.returncode == 2 and "needs flash attention" in p.stderr


@pytest.mark.container
def test_attach_quality_checks_each_configuration_of_a_bench_run(cpu_image, tiny_model, bench_settings, tmp_path):
    from toolbox.run import bench as bench_mod

    matrix = tmp_path / "kv-check.toml"
    matrix.write_text(
        'repetitions = 1\n[params]\nn_prompt = [32]\nn_gen = [8]\ntype_k = ["f16", "q4_0"]\ntype_v = ["f16", "q4_0"]\nflash_attn = ["on"]\n'
    )
    r = bench_mod.bench(bench_settings, matrix=str(matrix), backend="cpu", models=[str(tiny_model)])
    assert r.status == "complete" and r.failed == 0
    out = chk.attach_quality(bench_settings, r.run_id)
    assert len(out) == 4 and {(q["type_k"], q["type_v"]) for q in out} == {
        ("f16", "f16"),
        ("f16", "q4_0"),
        ("q4_0", "f16"),
        ("q4_0", "q4_0"),
    }
    verdicts = {(q["type_k"], q["type_v"]): q["verdict"] for q in out}
    assert verdicts[("f16", "f16")] == "same" and verdicts[("q4_0", "q4_0")] == "degraded"
    assert all(q["flash_attn"] == 1 and q["run_id"] == r.run_id and q["image_id"] for q in out)
    run_dir = bench_settings.results_dir / r.run_id
    lines = (run_dir / quality_store.QUALITY_FILE).read_text().splitlines()
    assert len(lines) == 4 and all(json.loads(ln)["key"] for ln in lines)
    meta, rows = results.load_run(bench_settings.results_dir, r.run_id)
    merged = quality_store.merge(rows, run_dir)
    assert len(rows) == 8 and all(m["quality"] and m["quality"]["verdict"] == verdicts[(m["type_k"], m["type_v"])] for m in merged)
    assert all(m["quality"]["kld_mean"] is not None and m["quality"]["top1_agree"] is not None for m in merged)
    assert list(run_dir.glob("logs/check-*.log"))
    # append-only: a second pass adds lines, the latest wins
    chk.attach_quality(bench_settings, r.run_id)
    assert len((run_dir / quality_store.QUALITY_FILE).read_text().splitlines()) == 8
