"""The telemetry sampler on FAKE sysfs trees that change over time, and in real `invoke bench` runs."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from fake_sysfs import HWMON, FakeWriter, fake_strix_halo

from toolbox.host.sensors import discover
from toolbox.run.telemetry import Sampler, start_sampler
from toolbox.store.telemetry import read_sessions


def test_the_sampler_sees_the_sensors_change_and_keeps_every_sample(tmp_path):
    root = fake_strix_halo(tmp_path / "host")
    run = tmp_path / "run"
    run.mkdir()
    writer = FakeWriter(root, [(0.0, 20.0, 600, 45.0), (0.6, 120.0, 2900, 80.0)])
    sampler = start_sampler(root, run, rate_hz=20, idle_s=0)
    writer.start()
    time.sleep(1.4)
    sampler.close()
    writer.join()
    [session] = read_sessions(run)
    samples = session["samples"]
    assert session["header"]["rate_hz"] == 20 and "gpu.power_avg_w" in session["header"]["sensor_names"]
    assert session["end"]["samples"] == len(samples) >= 5
    powers = [s["v"]["gpu.power_avg_w"] for s in samples]
    assert 20.0 in powers and 120.0 in powers and powers.index(120.0) > powers.index(20.0)
    clocks = {s["v"]["gpu.sclk_mhz"] for s in samples} | {s["v"]["gpu.metrics.gfxclk_mhz"] for s in samples}
    assert {600, 2900} <= clocks
    ts = [s["t"] for s in samples]
    assert ts == sorted(ts) and all(abs(s["wall"] - time.time()) < 60 for s in samples)


def test_a_sensor_vanishing_mid_run_does_not_stop_sampling(tmp_path):
    root = fake_strix_halo(tmp_path / "host")
    run = tmp_path / "run"
    run.mkdir()
    sampler = start_sampler(root, run, rate_hz=20, idle_s=0)
    time.sleep(0.4)
    (root / HWMON / "power1_average").unlink()
    time.sleep(0.5)
    sampler.close()
    [session] = read_sessions(run)
    with_power = [s for s in session["samples"] if "gpu.power_avg_w" in s["v"]]
    without = [s for s in session["samples"] if "gpu.power_avg_w" not in s["v"]]
    assert with_power and without and all("gpu.temp_edge_c" in s["v"] for s in without)
    assert len(session["end"]["warnings"]) == 1 and "power1_average" in session["end"]["warnings"][0]


def test_without_sensors_only_the_header_and_marks_are_written(tmp_path):
    sampler = Sampler(discover(tmp_path / "empty"), tmp_path, 20, idle_s=5).start()
    assert not sampler.active and sampler._thread is None
    t0 = time.monotonic()
    sampler.idle(threading.Event(), "g1")  # no sensors: no idle baseline to wait for
    assert time.monotonic() - t0 < 1
    sampler.mark("container_start", group="g1")
    sampler.close()
    [session] = read_sessions(tmp_path)
    assert session["header"]["sensors"] == [] and session["samples"] == [] and session["end"]["samples"] == 0
    assert [m["event"] for m in session["marks"]] == ["container_start"]


def test_idle_baseline_and_group_phases_are_on_the_samples(tmp_path):
    root = fake_strix_halo(tmp_path / "host")
    sampler = start_sampler(root, tmp_path, rate_hz=20, idle_s=0.5)
    sampler.idle(threading.Event(), "g1")
    sampler.mark("container_start", group="g1")
    time.sleep(0.4)
    sampler.mark("container_end", group="g1")
    sampler.close()
    [session] = read_sessions(tmp_path)
    phases = [s["phase"] for s in session["samples"]]
    assert "idle" in phases and "group" in phases and phases.index("idle") < phases.index("group")
    assert {s["group"] for s in session["samples"] if s["phase"] in ("idle", "group")} == {"g1"}
    assert [m["event"] for m in session["marks"]] == ["idle_start", "idle_end", "container_start", "container_end"]


# --- real runs -------------------------------------------------------------------------------------


def _bench(settings, **kw):
    from toolbox.run import bench as bench_mod

    return bench_mod.bench(settings, backend="cpu", **kw)


@pytest.mark.container
def test_a_real_bench_run_on_this_machine_says_which_sensors_exist(cpu_image, settings):
    r = _bench(settings)
    assert r.status == "complete"
    [session] = read_sessions(r.run_dir)
    here = discover(Path("/"))
    assert session["header"]["sensor_names"] == here.names()  # none is a valid answer; nothing invented
    meta = json.loads((r.run_dir / "run.json").read_text())
    assert meta["telemetry"]["enabled"] is True and meta["telemetry"]["sensors"] == here.names()
    rows = [m for m in session["marks"] if m["event"] == "row"]
    assert sorted(m["case_id"] for m in rows) == sorted(row["case_id"] for row in r.rows)
    if not here.sensors:
        assert session["samples"] == []


@pytest.mark.container
def test_no_telemetry_writes_no_file(cpu_image, settings):
    r = _bench(settings, telemetry=False)
    assert r.status == "complete" and not (r.run_dir / "telemetry.jsonl").exists()
    assert json.loads((r.run_dir / "run.json").read_text())["telemetry"] == {"enabled": False}


@pytest.mark.container
def test_a_bench_run_on_a_fake_strix_halo_tree_samples_idle_and_every_row(cpu_image, tmp_path):
    from toolbox.settings import load_settings

    root = fake_strix_halo(tmp_path / "host")
    s = load_settings(results_dir=tmp_path / "results", host_root=root, telemetry_idle_s=1.0)
    writer = FakeWriter(root, [(0.0, 12.0, 600, 45.0), (1.0, 110.0, 2787, 70.0)])  # idle, then "load"
    writer.start()
    r = _bench(s)
    writer.stop.set()
    assert r.status == "complete"
    [session] = read_sessions(r.run_dir)
    events = [m["event"] for m in session["marks"]]
    assert events[:3] == ["idle_start", "idle_end", "container_start"] and events[-1] == "container_end"
    assert events.count("row") == len(r.rows) == 2
    idle = [x for x in session["samples"] if x["phase"] == "idle"]
    busy = [x for x in session["samples"] if x["phase"] == "group"]
    assert len(idle) >= 5 and busy
    assert idle[0]["v"]["gpu.power_avg_w"] == 12.0 and busy[-1]["v"]["gpu.power_avg_w"] == 110.0
    meta = json.loads((r.run_dir / "run.json").read_text())
    assert meta["telemetry"]["gpu_metrics_version"] == {"gpu": "3.0"}


def test_a_telemetry_file_that_cannot_be_written_stops_sampling_not_the_run(tmp_path):
    root = fake_strix_halo(tmp_path / "host")
    run = tmp_path / "run"
    run.mkdir()
    sampler = start_sampler(root, run, rate_hz=20, idle_s=0)
    (run / "telemetry.jsonl").unlink()
    (run / "telemetry.jsonl").mkdir()  # every later write fails (EISDIR; root ignores chmod)
    time.sleep(1.3)  # past the first flush
    sampler.mark("row", group="g", case_id="c")
    sampler.close()  # does not raise
    assert sampler._thread is not None and not sampler._thread.is_alive()
    assert sampler._stop.is_set() and (run / "telemetry.jsonl").is_dir()
