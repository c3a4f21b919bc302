"""A run that is stopped (SIGTERM, SIGHUP: `timeout`, a closed ssh session, a service manager) ends like
Ctrl-C; a run whose process vanished (SIGKILL, power loss) is closed by the next command that touches
results/ (issue 18). Real `invoke bench` processes on the cpu image, real signals."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import warnings
from pathlib import Path

import docker
import pytest
from test_bench import _wait_for_rows

from toolbox.engine.container import find_containers
from toolbox.store import liveness
from toolbox.store import runs as results

REPO = Path(__file__).resolve().parent.parent
MATRIX = REPO / "tests" / "data" / "matrices" / "env-groups.toml"  # 4 groups x 4 cases, about 1 s per case


def _bench(results_dir: Path) -> subprocess.Popen:
    env = os.environ | {"TOOLBOX_RESULTS_DIR": str(results_dir)}
    return subprocess.Popen(
        ["invoke", "bench", "--matrix", str(MATRIX)], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _containers(run_id: str) -> list:
    return find_containers(docker.from_env(), label=f"org.strix-toolbox.run-id={run_id}")


@pytest.mark.container
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_stop_the_container_keep_the_rows_and_say_how_to_resume(cpu_image, tmp_path, sig):
    proc = _bench(tmp_path)
    rows_file = _wait_for_rows(tmp_path, 2)
    run_id = rows_file.parent.name
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert f"invoke bench --resume {run_id}" in err
    meta, kept = results.load_run(tmp_path, run_id)
    assert meta["status"] == "interrupted" and meta["interrupted_by"] == sig.name
    assert 2 <= len(kept) < 16 and all(r["status"] == "ok" for r in kept)
    assert not _containers(run_id), "the container was stopped and removed"
    assert not (tmp_path / liveness.MARKERS / f"{run_id}.json").exists()


@pytest.mark.container
def test_a_sigkilled_run_is_closed_by_the_next_command_and_its_container_removed(cpu_image, tmp_path):
    proc = _bench(tmp_path)
    rows_file = _wait_for_rows(tmp_path, 1)
    run_id = rows_file.parent.name
    proc.kill()  # SIGKILL: no handler runs, the container runs on
    proc.communicate(timeout=60)
    assert json.loads((rows_file.parent / "run.json").read_text())["status"] == "running"
    t0 = time.monotonic()
    while not _containers(run_id) and time.monotonic() - t0 < 30:
        time.sleep(0.2)  # the next group's container may be starting: the test needs one left over
    listed = subprocess.run(
        ["invoke", "results"], cwd=REPO, env=os.environ | {"TOOLBOX_RESULTS_DIR": str(tmp_path)}, capture_output=True, text=True
    )
    assert listed.returncode == 0, listed.stderr
    warning = [ln for ln in listed.stderr.splitlines() if ln.startswith("warning:")]
    assert len(warning) == 1 and f"run {run_id} was left running" in warning[0] and f"--resume {run_id}" in warning[0], listed.stderr
    assert "Traceback" not in listed.stderr
    meta, kept = results.load_run(tmp_path, run_id)
    assert meta["status"] == "interrupted" and meta["interrupted_by"] == "vanished"
    assert kept and all(r["status"] == "ok" for r in kept)
    assert not _containers(run_id), "its labelled containers are removed"
    p = subprocess.run(
        ["invoke", "bench", "--resume", run_id],
        cwd=REPO,
        env=os.environ | {"TOOLBOX_RESULTS_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
    )
    assert p.returncode == 0, p.stderr
    assert results.load_run(tmp_path, run_id)[0]["status"] == "complete"


def _running_run(results_dir: Path, identity: dict) -> str:
    w = results.RunWriter.create(results_dir, {"kind": "bench"})
    w.update(process=identity)
    liveness.mark_running(w.path, identity)
    return w.run_id


def test_a_run_whose_process_is_alive_is_left_alone(tmp_path):
    run_id = _running_run(tmp_path, liveness.process_identity())
    assert results.run_ids(tmp_path) == [run_id]
    assert results.read_meta(tmp_path / run_id)["status"] == "running"


def test_a_dead_pid_a_reused_pid_and_another_boot_are_gone_another_host_is_not_judged(tmp_path):
    p = subprocess.Popen(["true"])
    p.wait()
    me = liveness.process_identity()
    assert liveness.process_gone(liveness.process_identity() | {"pid": p.pid}) is True
    assert liveness.process_gone(me | {"start_ticks": me["start_ticks"] - 1}) is True, "a pid reused by a younger process"
    assert liveness.process_gone(me | {"boot_id": "another-boot"}) is True
    assert liveness.process_gone(me | {"host": socket.gethostname() + "-elsewhere"}) is None
    assert liveness.process_gone(me) is False
    dead = _running_run(tmp_path, me | {"pid": p.pid})
    other = _running_run(tmp_path, me | {"host": "elsewhere"})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results.run_ids(tmp_path)
    assert [str(w.message).split(":")[0] for w in caught] == [f"run {dead} was left running"]
    assert results.read_meta(tmp_path / dead)["status"] == "interrupted"
    assert results.read_meta(tmp_path / other)["status"] == "running", "a run of another host is never judged from here"
