"""Serving without a model: the SLO, per-level figures, the cross-talk verdict, the serving matrix, the knee,
the report, and the load generator against the no-model streaming server of benchmarks/serve_client_ceiling.py
(a fake llama-server: it streams tokens in llama-server's format, computes nothing)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from toolbox.errors import ToolboxError
from toolbox.llamacpp import server_args
from toolbox.quality.gate import not_counted, row_not_counted, serve_exit
from toolbox.run import loadgen
from toolbox.run import serve_stats as st
from toolbox.run.loadgen import Record
from toolbox.run.serve_matrix import expand, load_serve_matrix, serve_presets

REPO = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data" / "serve"


def _ceiling():
    spec = importlib.util.spec_from_file_location("serve_client_ceiling", REPO / "benchmarks" / "serve_client_ceiling.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def fake_server():
    proc, url = _ceiling().start_fake_server(tokens=16)
    yield url
    proc.kill()
    proc.join()


# --- SLO -------------------------------------------------------------------------------------------


def test_slo_reads_bounds_in_ms_and_s():
    assert st.parse_slo("ttft<2s,itl<100ms") == {"ttft": 2000.0, "itl": 100.0}
    assert st.parse_slo(" e2e <= 1.5s ") == {"e2e": 1500.0}
    assert st.parse_slo("") == {} and st.parse_slo(None) == {}


@pytest.mark.parametrize("bad", ["ttft<2", "fast", "ttft>2s", "tpot<3ms", "ttft<2s,ttft<1s", "ttft<2s,", "itl<abc ms"])
def test_an_slo_that_cannot_be_read_is_one_line(bad):
    with pytest.raises(ToolboxError) as exc:
        st.parse_slo(bad)
    assert "\n" not in str(exc.value) and "ttft<2s,itl<100ms" in str(exc.value)


# --- per-level figures -------------------------------------------------------------------------------


def _rec(i, ttft, gaps, tokens_in=10, error=None):
    return Record(i, ttft=ttft, itl=list(gaps), e2e=ttft + sum(gaps), tokens_in=tokens_in, tokens_out=len(gaps) + 1, error=error)


def test_percentiles_throughput_and_goodput_of_a_level():
    recs = [_rec(i, 0.1 * (i + 1), [0.01] * 9) for i in range(10)] + [_rec(10, 0, [], error="timeout after 5 s")]
    s = st.summarize_level(recs, wall_s=2.0, slo={"ttft": 450.0, "itl": 50.0})
    assert s["n_requests"] == 11 and s["n_ok"] == 10 and s["n_errors"] == 1 and s["first_error"] == "timeout after 5 s"
    assert s["tokens_out"] == 100 and s["output_tps"] == 50.0 and s["req_per_s"] == 5.0
    assert s["ttft_ms_p50"] == pytest.approx(550.0) and s["ttft_ms_p90"] == pytest.approx(910.0)
    assert s["ttft_ms_p99"] == pytest.approx(991.0) and s["itl_ms_p50"] == pytest.approx(10.0)
    # ttft < 450 ms: requests 0..3 (100..400 ms); the failed one never counts
    assert s["goodput_rps"] == 2.0 and s["goodput_share"] == pytest.approx(4 / 11, abs=1e-4)
    assert st.summarize_level(recs, 2.0, {})["goodput_rps"] is None


def test_server_check_compares_client_counts_with_timings_and_metrics():
    recs = [_rec(i, 0.1, [0.01] * 4) for i in range(3)]
    for r in recs:
        r.timings = {"predicted_n": 5}
    before = {"tokens_predicted_total": 100, "prompt_tokens_total": 50, "prompt_tokens_cached_total": 0}
    after = {"tokens_predicted_total": 115, "prompt_tokens_total": 80, "prompt_tokens_cached_total": 0}
    c = st.server_check(recs, before, after)
    assert c["client_tokens_out"] == 15 and c["timings_tokens_out"] == 15 and c["metrics_tokens_out"] == 15 and c["agree"]
    assert c["client_tokens_in"] == 30 and c["metrics_tokens_in"] == 30
    after["tokens_predicted_total"] = 120
    assert not st.server_check(recs, before, after)["agree"]


# --- cross-talk ---------------------------------------------------------------------------------------


def _recorded(name):
    data = json.loads((DATA / name).read_text())
    alone = [Record(i, text=t) for i, t in enumerate(data["alone"])]
    return data["prompts"], alone, [Record(i, text=t) for i, t in enumerate(data["together"])]


def test_recorded_answers_of_the_same_prompts_are_the_same():
    prompts, alone, together = _recorded("crosstalk-same.json")
    assert st.crosstalk_verdict(prompts, alone, together) == {"verdict": "same", "n": len(prompts)}


def test_recorded_swapped_answers_are_flagged_with_the_first_differing_request():
    """llama.cpp issue 25992's symptom: request 2 received request 3's reply."""
    prompts, alone, together = _recorded("crosstalk-same.json")
    together[2], together[3] = together[3], together[2]
    v = st.crosstalk_verdict(prompts, alone, together)
    assert v["verdict"] == "differs" and v["request"] == 2 and v["n"] == len(prompts)
    assert v["alone"] in alone[2].text and v["concurrent"] in alone[3].text and v["prompt"] == prompts[2][:80]


def test_one_token_different_is_a_difference_and_a_failed_request_is_an_error():
    prompts, alone, together = _recorded("crosstalk-same.json")
    together[1] = Record(1, text=alone[1].text[:-3] + "zzz")
    v = st.crosstalk_verdict(prompts, alone, together)
    assert v["verdict"] == "differs" and v["request"] == 1 and v["at_char"] == len(alone[1].text) - 3
    together[0] = Record(0, error="timeout after 5 s")
    assert st.crosstalk_verdict(prompts, alone, together)["verdict"] == "error"


def test_the_gate_never_counts_a_level_with_cross_talk():
    assert not_counted("ok", True, None, crosstalk="differs") == "cross-talk"
    assert not_counted("ok", True, None, crosstalk="same") is None
    row = {"status": "ok", "device_ok": True, "crosstalk": {"verdict": "differs"}, "level": "c4"}
    assert row_not_counted(row) == "cross-talk"
    code, msg = serve_exit("complete", "r1", None, [row])
    assert code == 1 and "cross-talk" in msg
    code, msg = serve_exit("failed", "r1", {"level": "c8", "reason": "llama-server exited (code 137)", "server": "np=8"}, [])
    assert code == 1 and "--resume r1" in msg and "c8" in msg and "\n" not in msg


# --- serving matrix -----------------------------------------------------------------------------------


def test_presets_expand_into_configurations_and_levels():
    assert {"default", "slots", "rate"} <= set(serve_presets())
    spec, src, text = load_serve_matrix("slots")
    plan = expand(spec, src, text, ["cpu"], ["/m/tiny.gguf"], {})
    assert len(plan.configs) == 4 and [lv.name for lv in plan.levels] == ["c1", "c2", "c4", "c8"]
    assert plan.requests_at(plan.levels[-1]) == 16 and len({c.config_id for c in plan.configs}) == 4
    plan = expand(spec, src, text, ["cpu"], ["/m/tiny.gguf"], {"rate": [0.5, 2.0], "requests": 3})
    assert [lv.name for lv in plan.levels] == ["r0.5", "r2"] and plan.requests_at(plan.levels[0]) == 3


def test_bad_serving_matrices_are_one_line(tmp_path):
    for text, needle in [
        ("[server]\nn_paralel = [2]\n[load]\nconcurrency=[1]", "did you mean 'n_parallel'"),
        ("[load]\nconcurency=[1]", "concurrency"),
        ("[server]\nn_parallel=[2]", "no load levels"),
        ("[load]\nconcurrency=[0]", "positive"),
        ("[server]\ntype_k=['q9']\n[load]\nconcurrency=[1]", "KV cache type"),
        ("[load\n", "not valid TOML"),
    ]:
        p = tmp_path / "m.toml"
        p.write_text(text)
        with pytest.raises(ToolboxError, match=needle):
            load_serve_matrix(str(p))
    with pytest.raises(ToolboxError, match="did you mean 'slots'"):
        load_serve_matrix("slot")


def test_quantized_v_without_flash_attention_is_removed_before_the_run(tmp_path):
    p = tmp_path / "m.toml"
    p.write_text("[server]\ntype_v=['f16','q8_0']\nflash_attn=['off']\n[load]\nconcurrency=[1]")
    plan = expand(*load_serve_matrix(str(p)), ["cpu"], ["/m/x.gguf"], {})
    assert [c.params["type_v"] for c in plan.configs] == ["f16"] and "flash attention" in plan.removed[0][1]


def test_a_serving_configuration_with_flash_attention_on_the_cpu_does_not_count(tmp_path):
    """Serving levels go through the same rule as bench rows (toolbox.llamacpp.row_fa_on_cpu) and the same gate."""
    from toolbox.build.pins import load_pins
    from toolbox.llamacpp import row_fa_on_cpu
    from toolbox.store.rows import make_serve_row

    p = tmp_path / "m.toml"
    p.write_text("[server]\ntype_k=['f16','bf16']\ntype_v=['f16']\nflash_attn=['on','auto']\n[load]\nconcurrency=[1]")
    plan = expand(*load_serve_matrix(str(p)), ["vulkan"], ["/m/x.gguf"], {})
    flags = load_pins(REPO / "containers" / "pins.toml").backends["vulkan"].cmake_flags
    found = {(c.params["type_k"], c.params["flash_attn"]): row_fa_on_cpu(c.params, flags) for c in plan.configs}
    assert found == {("f16", "on"): False, ("bf16", "on"): True, ("f16", "auto"): None, ("bf16", "auto"): None}
    row = make_serve_row({"n_ok": 1}, [], status="ok", device_ok=True, fa_on_cpu=True, level="c1")
    assert row_not_counted(row) == "fa-on-cpu"


def test_server_args_use_the_pinned_flags():
    assert server_args({"n_parallel": 4, "kv_unified": True, "flash_attn": "on", "cont_batching": False}) == [
        "-np", "4", "--kv-unified", "-fa", "on", "--no-cont-batching",
    ]  # fmt: skip
    with pytest.raises(ToolboxError, match="unknown llama-server parameter"):
        server_args({"slots": 2})


# --- the load generator against the fake server ---------------------------------------------------------


def test_closed_loop_streams_every_request_and_times_each_token(fake_server):
    bodies = [loadgen.payload(f"p{i}", 16) for i in range(12)]
    recs, wall = loadgen.run_level(f"{fake_server}/v1/completions", bodies, concurrency=4)
    assert [r.index for r in recs] == list(range(12)) and not any(r.error for r in recs)
    assert all(r.tokens_out == 16 and r.chunks == 16 and len(r.itl) == 15 and r.ttft > 0 and r.e2e >= r.ttft for r in recs)
    assert all(r.timings == {"predicted_n": 16, "prompt_n": 8} for r in recs) and wall > 0


def test_open_loop_arrivals_follow_the_seeded_poisson_process(fake_server):
    gaps = loadgen.poisson_gaps(50.0, 20, seed=3)
    assert gaps == loadgen.poisson_gaps(50.0, 20, seed=3) and gaps != loadgen.poisson_gaps(50.0, 20, seed=4)
    recs, wall = loadgen.run_level(f"{fake_server}/v1/completions", [loadgen.payload("x", 4)] * 20, rate=50.0, seed=3)
    starts = [r.start for r in sorted(recs, key=lambda r: r.index)]
    expected = [sum(gaps[1 : i + 1]) for i in range(20)]
    assert all(abs(s - e) < 0.05 for s, e in zip(starts, expected)), (starts, expected)


def test_a_request_past_its_timeout_is_an_error_and_the_rest_go_on():
    proc, url = _ceiling().start_fake_server(tokens=50, delay_s=0.02)
    try:
        bodies = [loadgen.payload("x", 50), loadgen.payload("y", 2)]
        recs, _ = loadgen.run_level(f"{url}/v1/completions", bodies, concurrency=2, timeout_s=0.3)
    finally:
        proc.kill()
    assert recs[0].error == "timeout after 0.3 s" and recs[1].error is None and recs[1].tokens_out == 2


def test_a_server_that_is_not_there_is_an_error_per_request():
    from toolbox.engine.server import free_port

    recs, _ = loadgen.run_level(f"http://127.0.0.1:{free_port()}/v1/completions", [loadgen.payload("x", 2)], concurrency=1, timeout_s=5)
    assert recs[0].error and "Connect" in recs[0].error


def test_a_taken_port_is_one_line():
    import socket

    from toolbox.engine.server import check_port_free

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        with pytest.raises(ToolboxError, match=f"port {s.getsockname()[1]} on 127.0.0.1 is taken"):
            check_port_free(s.getsockname()[1])


# --- curves, the knee, compare, the report ------------------------------------------------------------


def _level(c, tps, e2e, ttft=50.0, crosstalk="same", run="r1", np_=8):
    return {
        "kind": "serve", "run_id": run, "config_id": f"cfg{np_}", "backend": "cpu", "model_filename": "m.gguf",
        "server": {"n_parallel": np_}, "level": f"c{c}", "mode": "concurrency", "concurrency": c, "status": "ok",
        "device_ok": True, "output_tps": tps, "e2e_ms_p90": e2e, "ttft_ms_p90": ttft, "req_per_s": tps / 32,
        "tokens_out": int(tps * 10), "n_requests": 16, "n_errors": 0, "crosstalk": {"verdict": crosstalk, "n": c},
    }  # fmt: skip


def test_the_knee_is_the_last_level_before_latency_explodes_and_cross_talk_never_is_one():
    from toolbox.analysis.serve import curves

    rows = [_level(1, 100, 300), _level(2, 190, 320), _level(4, 260, 480), _level(8, 270, 1000)]
    [c] = curves(rows)
    assert c.knee() == {"level": "c4", "next": "c8", "latency_x": 2.08, "throughput_x": 1.04}
    assert c.best()["level"] == "c8"
    rows[3]["crosstalk"]["verdict"] = "differs"  # c8 does not count: no knee left, and c4 is the best
    [c] = curves(rows)
    assert c.knee() is None and c.best()["level"] == "c4"


def test_compare_marks_levels_and_gives_no_ratio_where_one_side_does_not_count():
    from toolbox.analysis.serve import compare_serve

    base = [_level(1, 100, 300), _level(2, 200, 300)]
    new = [_level(1, 120, 250, run="r2"), _level(2, 150, 400, run="r2", crosstalk="differs")]
    out = {i["level"]: i for i in compare_serve(base, new)}
    assert out["c1"]["mark"] == "faster" and out["c1"]["tps_ratio"] == 1.2 and out["c1"]["latency_ratio"] == 0.833
    assert out["c2"]["mark"] == "not counted" and out["c2"]["tps_ratio"] is None and out["c2"]["not_counted"] == "cross-talk"


def test_the_report_plots_latency_against_throughput_with_the_knee_and_greys_cross_talk(tmp_path):
    from toolbox.report.serve_view import plot_serve, serve_markdown

    rows = [_level(1, 100, 300), _level(2, 190, 320), _level(4, 260, 480), _level(8, 270, 1000)]
    rows += [_level(c, t, e, run="r1", np_=4, crosstalk="differs" if c == 8 else "same") for c, t, e in ((1, 90, 310), (8, 300, 900))]
    p = plot_serve(rows)
    assert p.name == "serve-latency-throughput.png" and len(p.png) > 10_000
    assert any("not counted: cross-talk" in t for t in p.texts) and any("n_parallel=4" in t for t in p.texts)
    md = "\n".join(serve_markdown(rows))
    assert "knee at c4" in md and "not counted: cross-talk" in md and md.count("### cpu n_parallel=") == 2


def test_a_serving_level_gets_its_energy_from_the_samples_of_its_own_window():
    """Fake sensor samples (this machine has none): 50 W flat, then 80 W while the level's load ran."""
    from toolbox.analysis.energy import row_energy
    from toolbox.analysis.serve import tokens_per_joule

    samples = [{"t": i / 10, "v": {"gpu.power_input_w": 80.0 if i >= 20 else 50.0}, "phase": "group", "group": "cfg8"} for i in range(61)]
    session = {"header": {"facts": {}}, "samples": samples, "marks": []}
    row = _level(4, 260, 480) | {"wall_s": 4.0, "tokens_out": 640}
    e = row_energy(row, 6.0, session, idle_w=None)  # the level's `row` mark at t=6 s: its window is 2..6 s
    assert e["window_s"] == 4.0 and e["tokens"] == 640 and e["energy_j"] == pytest.approx(320.0, rel=0.02)
    assert tokens_per_joule(row | {"energy": e}) == pytest.approx(2.0, rel=0.02)
