"""The compose runner's shell sampler (containers/compose/telemetry.sh) on a FAKE sysfs tree: the same
telemetry.jsonl as `invoke bench`, rows placed by their line in rows.jsonl, energy right to the joule."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from fake_sysfs import FakeWriter, fake_strix_halo

from toolbox.analysis import energy
from toolbox.store.telemetry import merge_energy, read_sessions

REPO = Path(__file__).resolve().parent.parent
ESC = r"""esc() { printf '%s' "$1" | sed 's/\\/\\\\/g; s/"/\\"/g' | tr -d '\n\r\t'; }"""


def run_sampler(run: Path, sysfs: Path, body: str, **env) -> subprocess.CompletedProcess:
    """telemetry.sh sourced by dash (Debian's /bin/sh, as in the image) with bench.sh's `dir` and `esc`."""
    script = f"set -eu\ndir='{run}'\n{ESC}\n. '{REPO}/containers/compose/telemetry.sh'\n{body}"
    e = os.environ | {"TELEMETRY_SYSFS": str(sysfs)} | env
    return subprocess.run([shutil.which("dash") or "sh", "-c", script], capture_output=True, text=True, env=e, timeout=60)


def test_the_shell_sampler_writes_what_the_python_one_reads(tmp_path):
    root = fake_strix_halo(tmp_path / "host")
    run = tmp_path / "run"
    run.mkdir()
    writer = FakeWriter(root, [(0.0, 12.0, 600, 45.0), (1.2, 110.0, 2787, 70.0)])
    writer.start()
    body = "\n".join(
        ["tel_start", "tel_idle group-1", "tel_mark container_start group-1", "sleep 1.6", "tel_mark row group-1 1"]
        + ["tel_mark container_end group-1", "tel_stop"]
    )
    p = run_sampler(run, root / "sys", body, TELEMETRY_IDLE_S="1")
    writer.join()
    assert p.returncode == 0, p.stderr
    [s] = read_sessions(run)
    assert s["header"]["sensor_names"] == ["gpu.power_avg_w", "gpu.temp_edge_c", "gpu.sclk_mhz", "gpu.busy_pct", "cpu.temp_tctl_c"]
    assert s["header"]["facts"]["sclk_max_mhz"] == {"gpu": 2900} and s["end"]["samples"] == len(s["samples"]) >= 8
    assert [m["event"] for m in s["marks"]] == ["idle_start", "idle_end", "container_start", "row", "container_end"]
    powers = [x["v"]["gpu.power_avg_w"] for x in s["samples"]]
    assert 12.0 in powers and 110.0 in powers
    assert {x["phase"] for x in s["samples"]} >= {"idle", "group"} and not (run / ".tel-phase").exists()
    rows = [{"status": "ok", "n_prompt": 0, "n_gen": 32, "samples_ns": [400_000_000]}]  # a compose row: no ids
    [rec] = energy.compute(run, rows)
    assert rec["row_index"] == 1 and rec["energy_j"] == pytest.approx(110 * 0.4, abs=1.0) and rec["idle_w"] == pytest.approx(12.0)
    (run / "energy.json").write_text(json.dumps({"rows": [rec]}))
    assert merge_energy(rows, run)[0]["energy"]["tokens_per_j"] == rec["tokens_per_j"]


def test_without_sensors_the_header_says_so_and_nothing_runs(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    t0 = time.monotonic()
    p = run_sampler(run, tmp_path / "nothing", "tel_start\ntel_idle group-1\ntel_mark row group-1 1\ntel_stop")
    assert p.returncode == 0, p.stderr
    assert time.monotonic() - t0 < 2  # no idle wait without a sensor
    [s] = read_sessions(run)
    assert s["header"]["sensors"] == [] and s["samples"] == [] and [m["event"] for m in s["marks"]] == ["row"]


def test_telemetry_0_writes_no_file(tmp_path):
    root = fake_strix_halo(tmp_path / "host")
    p = run_sampler(tmp_path, root / "sys", "tel_start\ntel_idle g\ntel_mark row g 1\ntel_stop", TELEMETRY="0")
    assert p.returncode == 0, p.stderr
    assert not (tmp_path / "telemetry.jsonl").exists()


@pytest.mark.container
def test_a_compose_run_on_a_fake_tree_records_telemetry_and_energy_per_row(cpu_image, tiny_model, tmp_path):
    from test_compose import as_user, compose_cmd

    from toolbox.store import runs

    root = fake_strix_halo(tmp_path / "host")
    models, out = tmp_path / "models", tmp_path / "results"
    models.mkdir()
    out.mkdir()
    shutil.copy(tiny_model, models / tiny_model.name)
    env = os.environ | {"CPU_IMAGE": cpu_image, "MODELS_DIR": str(models), "RESULTS_DIR": str(out), "MATRIX": "default"} | as_user(tmp_path)
    cmd = [*compose_cmd(), "--profile", "cpu", "run", "--rm", "-T", "-v", f"{root}:/fakehost:ro"]
    cmd += ["-e", "TELEMETRY_SYSFS=/fakehost/sys", "-e", "TELEMETRY_IDLE_S=1", "bench-cpu"]
    p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-1000:] + p.stderr[-1000:]
    [run_id] = [d.name for d in out.iterdir()]
    [s] = read_sessions(out / run_id)
    assert "gpu.power_avg_w" in s["header"]["sensor_names"] and s["samples"] and s["end"]["samples"] == len(s["samples"])
    assert [m["row"] for m in s["marks"] if m["event"] == "row"] == [1, 2]
    records = energy.attach_energy(out, run_id)
    meta, rows = runs.load_run(out, run_id)
    assert meta["status"] == "complete" and len(rows) == len(records) == 2
    assert all(r["energy"]["mean_w"] == pytest.approx(119.095, abs=0.01) for r in rows)  # the fake tree's constant power
