"""Energy per row on known inputs: windows, joules and tokens per joule right to the joule; flags; the store merge."""

from __future__ import annotations

import json
import threading
import time

import pytest
from fake_sysfs import FakeWriter, fake_strix_halo

from toolbox.analysis import energy
from toolbox.run.telemetry import start_sampler
from toolbox.store import runs
from toolbox.store.telemetry import read_sessions


def session(power, t_end=10.0, hz=20, idle=None, extra=None, header=None):
    """A hand-made session: power(t) in watts sampled at hz from 0 to t_end (phase group), idle samples before."""
    samples = []
    for t, w in idle or []:
        samples.append({"t": t, "phase": "idle", "group": "g1", "v": {"gpu.power_input_w": w}})
    for k in range(int(t_end * hz) + 1):
        t = k / hz
        v = {"gpu.power_input_w": power(t)} | (extra(t) if extra else {})
        samples.append({"t": t, "phase": "group", "group": "g1", "v": v})
    return {"header": header or {"facts": {"sclk_max_mhz": {"gpu": 2900}}, "sensor_names": []}, "samples": samples, "marks": []}


TG = {"n_prompt": 0, "n_gen": 128, "samples_ns": [2_000_000_000] * 3}


def test_constant_power_gives_exact_joules_and_tokens_per_joule():
    s = session(lambda t: 100.0, idle=[(-3 + i / 20, 12.0) for i in range(60)])
    e = energy.row_energy(TG, 9.0, s, energy.idle_power(s, "g1", 9.0))
    assert e["window_s"] == 6.0 and e["energy_j"] == pytest.approx(600.0, abs=1e-6)
    assert e["mean_w"] == 100.0 and e["tokens"] == 384 and e["tokens_per_j"] == pytest.approx(0.64)
    assert e["idle_w"] == 12.0 and e["energy_above_idle_j"] == pytest.approx(528.0)
    assert e["tokens_per_j_above_idle"] == pytest.approx(384 / 528)
    assert e["samples_tokens_per_j"] == pytest.approx([0.64, 0.64, 0.64])  # 128 tokens per 2 s x 100 W
    assert e["scope"].startswith("APU package") and e["flags"] == []


def test_a_power_step_is_charged_to_the_repetitions_it_falls_in():
    s = session(lambda t: 50.0 if t < 5.975 else 150.0)  # the step halfway between two samples
    e = energy.row_energy(TG, 9.0, s, None)
    assert e["energy_j"] == pytest.approx(50 * 2.975 + 150 * 3.025, abs=1.0)  # 602.5 J
    assert e["samples_tokens_per_j"] == pytest.approx([128 / 100, 128 / 202.5, 128 / 300], rel=1e-3)
    assert e["peak_w"] == 150.0 and e["idle_w"] is None and "energy_above_idle_j" not in e


def test_rapl_counters_become_watts_across_a_wrap():
    top = 10_000_000  # µJ: wraps every 0.1 s at 100 W
    samples = [
        {"t": k / 20, "phase": "group", "group": "g1", "v": {"rapl.package_0.energy_uj": int(k / 20 * 100e6) % (top + 1)}}
        for k in range(201)
    ]
    header = {"facts": {"rapl_max_energy_range_uj": {"rapl.package_0.energy_uj": top}}, "sensor_names": ["rapl.package_0.energy_uj"]}
    s = {"header": header, "samples": samples, "marks": []}
    e = energy.row_energy(TG, 9.0, s, None)
    assert e["power_source"] == "rapl.package_0.energy_uj" and e["scope"] == "CPU package (RAPL)"
    assert e["energy_j"] == pytest.approx(600.0, abs=1.0)


def test_throttling_heat_profile_short_windows_and_dram_are_flagged():
    def extra(t):
        return {
            "gpu.sclk_mhz": 2380.0,
            "gpu.busy_pct": 100,
            "gpu.temp_edge_c": 97.0,
            "platform_profile": "balanced",
            "gpu.metrics.dram_read_mbs": 65535,
            "gpu.metrics.dram_write_mbs": 1000,
            "gpu.metrics.throttle_sppt": int(t * 10),
        }

    e = energy.row_energy(TG, 9.0, session(lambda t: 120.0, extra=extra), None)
    text = "; ".join(e["flags"])
    assert e["gfx_share"] == pytest.approx(2380 / 2900, abs=1e-4)
    assert "throttled: gfx clock at 82% of 2900 MHz" in text and "hot: gpu.temp_edge_c reached 97" in text
    assert "power profile balanced, not performance" in text and "firmware throttling: sppt" in text
    assert e["dram_gbs"] == pytest.approx(66.535) and "65.5 GB/s ceiling" in text
    short = energy.row_energy({"n_prompt": 512, "n_gen": 0, "samples_ns": [30_000_000]}, 9.0, session(lambda t: 120.0), None)
    assert short["flags"][0].startswith("short window (30 ms") and short["energy_j"] == pytest.approx(3.6)


def test_no_power_source_means_no_energy_not_zero():
    s = {
        "header": {"facts": {}, "sensor_names": []},
        "samples": [{"t": 1.0, "phase": "group", "v": {"cpu.temp_tctl_c": 50.0}}],
        "marks": [],
    }
    assert energy.row_energy(TG, 2.0, s, None) is None


def test_the_whole_path_on_a_fake_tree_gives_the_written_watts_right_to_the_joule(tmp_path):
    """FAKE sysfs, real sampler thread and files: idle 12 W, then 110 W; a row of 2 x 0.5 s arrives at a known time."""
    root = fake_strix_halo(tmp_path / "host")
    results = tmp_path / "results"
    w = runs.RunWriter.create(results, {"kind": "bench"})
    writer = FakeWriter(root, [(0.0, 12.0, 600, 45.0), (0.9, 110.0, 2787, 70.0)])
    writer.start()
    sampler = start_sampler(root, w.path, rate_hz=20, idle_s=0.8)
    sampler.idle(threading.Event(), "g1")
    sampler.mark("container_start", group="g1")
    time.sleep(1.6)  # 110 W since ~0.9 s: the row's window [0.6 s before arrival, arrival] is all 110 W
    row = {"case_id": "c1", "group_id": "g1", "status": "ok", "n_prompt": 0, "n_gen": 64, "samples_ns": [300_000_000, 300_000_000]}
    sampler.mark("row", group="g1", case_id="c1")
    w.append(row)
    time.sleep(0.2)
    sampler.mark("container_end", group="g1")
    sampler.close()
    writer.join()
    [rec] = energy.attach_energy(results, w.run_id)
    assert rec["energy_j"] == pytest.approx(110 * 0.6, abs=1.0) and rec["mean_w"] == pytest.approx(110.0, abs=1.5)
    assert rec["idle_w"] == pytest.approx(12.0, abs=0.5) and rec["tokens_per_j"] == pytest.approx(128 / 66, rel=0.02)
    assert rec["gfx_share"] == pytest.approx(2787 / 2900, abs=0.01) and rec["dram_gbs"] == pytest.approx(13.2)
    _, stored = runs.load_run(results, w.run_id)
    assert stored[0]["energy"]["energy_j"] == rec["energy_j"]  # merged into the row on read
    assert json.loads((w.path / "energy.json").read_text())["rows"][0]["case_id"] == "c1"
    assert len(read_sessions(w.path)) == 1


def test_report_shows_watts_tokens_per_joule_flags_and_the_telemetry_plot(tmp_path):
    from toolbox.report.render import report
    from toolbox.settings import load_settings

    root = fake_strix_halo(tmp_path / "host", profile="balanced")
    results = tmp_path / "results"
    w = runs.RunWriter.create(results, {"kind": "bench"})
    sampler = start_sampler(root, w.path, rate_hz=20, idle_s=0.3)
    sampler.idle(threading.Event(), "g1")
    sampler.mark("container_start", group="g1")
    time.sleep(0.5)
    raw = {"n_prompt": 0, "n_gen": 16, "samples_ns": [100_000_000, 100_000_000], "samples_ts": [160.0, 160.0], "avg_ts": 160.0}
    raw |= {"model_size": 1_000_000_000, "model_n_params": 2_000_000_000, "backends": "ROCm", "type_k": "f16", "type_v": "f16"}
    sampler.mark("row", group="g1", case_id="c1")
    w.append({"case_id": "c1", "group_id": "g1", "status": "ok", "backend": "rocm", "device_ok": True, **raw})
    sampler.mark("container_end", group="g1")
    sampler.close()
    w.finish("complete")  # no energy.json yet: the report derives it
    rep = report(load_settings(results_dir=results), [w.run_id])
    md = (w.path / "report.md").read_text()
    assert "tokens/J" in md and "W (idle)" in md and "power profile balanced, not performance" in md
    assert (w.path / "energy.json").exists() and (w.path / "telemetry.png").stat().st_size > 10_000
    plot = next(p for p in rep.plots if p.name == "telemetry.png")
    assert "power, W" in plot.texts and "gfx clock, MHz" in plot.texts and "gpu.power_avg_w" in plot.texts
    [res] = rep.collected.results
    assert res.tokens_per_j == pytest.approx(32 / (119.095 * 0.2), rel=0.01)


def _run_with_energy(results, tpj: list[float], ts: list[float]):
    from toolbox.store.telemetry import write_energy

    w = runs.RunWriter.create(results, {"kind": "bench"})
    row = {"case_id": "c1", "group_id": "g1", "status": "ok", "backend": "rocm", "device_ok": True, "n_prompt": 0, "n_gen": 128}
    row |= {"samples_ts": ts, "avg_ts": sum(ts) / len(ts), "type_k": "f16", "type_v": "f16", "model_type": "llama 7B Q4_0"}
    w.append(row)
    write_energy(
        w.path, [{"group_id": "g1", "case_id": "c1", "energy_j": 500.0, "tokens_per_j": sum(tpj) / len(tpj), "samples_tokens_per_j": tpj}]
    )
    w.finish("complete")
    return runs.load_run(results, w.run_id)


def test_compare_judges_tokens_per_joule_with_the_same_test(tmp_path):
    from toolbox.analysis.compare import compare_runs
    from toolbox.report.compare_view import render_markdown

    base = _run_with_energy(tmp_path, [0.50, 0.51, 0.49, 0.50, 0.50], [48.0, 48.2, 47.9, 48.1, 48.0])
    new = _run_with_energy(tmp_path, [0.60, 0.61, 0.59, 0.60, 0.60], [48.1, 48.0, 48.2, 47.9, 48.0])  # same speed, 20 % less energy
    cr = compare_runs(base, new)
    [ln] = cr.lines
    assert ln.mark == "same" and ln.tpj_mark == "more efficient" and ln.tpj_ratio == pytest.approx(1.2, rel=1e-3) and ln.tpj_p < 0.001
    md = render_markdown(cr)
    assert "tokens/J NEW/BASE" in md and "more efficient" in md
    same = compare_runs(base, base)
    assert same.lines[0].tpj_mark == "same"
