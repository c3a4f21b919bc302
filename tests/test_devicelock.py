"""One benchmark per device at a time (issue 18): real fcntl locks held by real processes, and two real
`invoke bench` processes on the cpu image."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from toolbox.engine import devicelock
from toolbox.engine.devices import DeviceSetup, device_setup
from toolbox.errors import ToolboxError

REPO = Path(__file__).resolve().parent.parent
GOOD_HOST = REPO / "tests" / "data" / "hosts" / "strix-halo-128g-good"
MATRICES = REPO / "tests" / "data" / "matrices"

HOLDER = """
import sys, time
from pathlib import Path
from toolbox.engine import devicelock
from toolbox.engine.devices import DeviceSetup
with devicelock.hold(Path(sys.argv[1]), [DeviceSetup(target=sys.argv[2])], what="a test holder"):
    print("held", flush=True)
    time.sleep(float(sys.argv[3]))
"""


def _holder(lock_dir: Path, target: str = "cpu", seconds: float = 30) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", HOLDER, str(lock_dir), target, str(seconds)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def test_lock_names_are_the_devices_a_backend_computes_on(tmp_path):
    rocm = devicelock.device_keys([device_setup("rocm", GOOD_HOST)])  # the recorded tree's /dev/kfd and renderD128
    assert len(rocm) == 2 and rocm[0].endswith("-dev-dri-renderD128") and rocm[1].endswith("-dev-kfd")
    assert devicelock.device_keys([device_setup("cpu")]) == ["cpu"]
    assert devicelock.device_keys([device_setup("vulkan", tmp_path, allow_cpu_vulkan=True)]) == ["cpu"], "lavapipe computes on the CPU"
    assert devicelock.device_keys([DeviceSetup(["/dev/dri/renderD128"], target="gpu")]) == ["dev-dri-renderD128"]


def test_a_second_holder_fails_at_once_without_wait_naming_the_first(tmp_path):
    first = _holder(tmp_path)
    try:
        with pytest.raises(ToolboxError, match=r"device cpu is busy: a test holder \(pid \d+"):
            with devicelock.hold(tmp_path, [DeviceSetup()], what="second", wait=False):
                pass
        # another device is free
        with devicelock.hold(tmp_path, [DeviceSetup(["/dev/dri/renderD128"], target="gpu")], what="gpu run", wait=False) as waited:
            assert waited == {"dev-dri-renderD128": pytest.approx(0, abs=0.5)}
            busy = devicelock.busy_at_start(tmp_path, GOOD_HOST, waited)
            assert busy["gpu_busy_percent"] == {"card1": 100}, "read from sysfs (recorded Strix Halo tree)"
            assert busy["other_toolbox_runs"]["cpu"]["what"] == "a test holder"
    finally:
        first.kill()
        first.wait()


def test_a_second_holder_waits_with_one_line_and_gets_the_device_when_the_first_ends(tmp_path):
    first = _holder(tmp_path, seconds=2)
    said = []
    t0 = time.monotonic()
    with devicelock.hold(tmp_path, [DeviceSetup()], what="second", say=said.append) as waited:
        assert time.monotonic() - t0 >= 1 and waited["cpu"] >= 1
    first.wait()
    assert len(said) == 1 and said[0].startswith("waiting: device cpu is busy with a test holder")


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    first = _holder(tmp_path)
    first.kill()
    first.wait()
    with devicelock.hold(tmp_path, [DeviceSetup()], what="next", wait=False):
        pass


def test_gpu_busy_percent_is_unknown_where_the_host_has_none(tmp_path):
    assert devicelock.gpu_busy_percent(tmp_path) == "unknown"


def _invoke_bench(results: Path, lock_dir: Path, *args) -> subprocess.Popen:
    env = os.environ | {"TOOLBOX_RESULTS_DIR": str(results), "TOOLBOX_LOCK_DIR": str(lock_dir), "COLUMNS": "200"}
    return subprocess.Popen(["invoke", "bench", *args], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.container
def test_two_real_benches_never_measure_on_one_device_at_once(cpu_image, tmp_path):
    locks = tmp_path / "locks"
    first = _invoke_bench(tmp_path / "a", locks, "--matrix", str(MATRICES / "env-groups.toml"))
    t0 = time.monotonic()
    while not list((tmp_path / "a").glob("*/rows.jsonl")) and time.monotonic() - t0 < 120:
        time.sleep(0.1)
    refused = _invoke_bench(tmp_path / "b", locks, "--no-wait")
    out, err = refused.communicate(timeout=120)
    assert refused.returncode == 2, out + err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "device cpu is busy: invoke bench --matrix" in lines[0] and "Traceback" not in err
    assert not (tmp_path / "b").exists() or not list((tmp_path / "b").glob("*/run.json")), "no run is started"

    second = _invoke_bench(tmp_path / "c", locks)
    out2, err2 = second.communicate(timeout=600)
    first_out, first_err = first.communicate(timeout=600)
    assert first.returncode == 0 and second.returncode == 0, first_err + err2
    assert "waiting: device cpu is busy with invoke bench --matrix" in out2
    [a] = [json.loads(p.read_text()) for p in (tmp_path / "a").glob("*/run.json")]
    [c] = [json.loads(p.read_text()) for p in (tmp_path / "c").glob("*/run.json")]
    assert a["ended_at"] <= c["started_at"], "the second run started only after the first ended"
    assert c["busy_at_start"]["waited_s"] > 0
    assert c["busy_at_start"]["gpu_busy_percent"] == "unknown", "this machine has no GPU sysfs"
