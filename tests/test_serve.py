"""invoke serve-bench end to end, as a user runs it: the real llama-server in the cpu image, the embedded
model, the real load generator, real files; and the ways it can go wrong, one line each."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path

import docker
import pytest

from toolbox.engine.container import find_containers
from toolbox.store import runs as results

REPO = Path(__file__).resolve().parent.parent
QUICK = ["--requests", "8", "--output-tokens", "16", "--crosstalk-tokens", "12"]


def invoke(*args, results_dir: Path, timeout=600) -> subprocess.CompletedProcess:
    env = os.environ | {"TOOLBOX_RESULTS_DIR": str(results_dir), "COLUMNS": "200"}
    return subprocess.run(["invoke", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env)


def only_run(results_dir: Path) -> tuple[dict, list[dict]]:
    ids = results.run_ids(results_dir)
    assert len(ids) == 1, ids
    return results.load_run(results_dir, ids[0])


def leftovers(run_id: str) -> list:
    return find_containers(docker.from_env(), label=f"org.strix-toolbox.run-id={run_id}")


@pytest.mark.container
def test_a_sweep_of_four_concurrency_levels_on_the_cpu_image(cpu_image, tiny_model, tmp_path):
    p = invoke("serve-bench", "--slo", "ttft<5s,itl<500ms", *QUICK, results_dir=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    meta, rows = only_run(tmp_path)
    assert meta["kind"] == "serve" and meta["status"] == "complete" and meta["images"]["cpu"]["tag"] == cpu_image
    assert meta["slo"] == {"ttft": 5000.0, "itl": 500.0} and meta["models"][0]["sha256"] and meta["host"]["kernel"]
    server = next(iter(meta["servers"].values()))
    assert server["build_commit"] == "0c1e5709" and server["build_number"] == 11312 and server["total_slots"] == 8
    assert [r["level"] for r in rows] == ["c1", "c2", "c4", "c8"] and [r["concurrency"] for r in rows] == [1, 2, 4, 8]
    for r in rows:
        assert r["kind"] == "serve" and r["status"] == "ok" and r["n_ok"] == r["n_requests"] >= 8 and r["device_ok"], r
        assert r["tokens_out"] == 16 * r["n_requests"] and r["tokens_in"] > 30 * r["n_requests"]
        assert 0 < r["ttft_ms_p50"] <= r["ttft_ms_p90"] <= r["ttft_ms_p99"] and 0 < r["itl_ms_p50"] <= r["itl_ms_p99"]
        assert r["e2e_ms_p50"] > r["ttft_ms_p50"] and r["output_tps"] > 0 and r["req_per_s"] > 0
        assert r["goodput_rps"] is not None and 0 <= r["goodput_share"] <= 1
        # the client's counts agree with llama-server's own timings and /metrics
        assert r["server_check"]["agree"] and r["server_check"]["timings_tokens_out"] == r["tokens_out"], r["server_check"]
        assert r["server_check"]["metrics_tokens_out"] == r["tokens_out"]
        assert r["crosstalk"] == {"verdict": "same", "n": r["concurrency"]}
        # a gap per streamed chunk after the first; llama-server holds back bytes of an unfinished UTF-8
        # character, so a chunk can carry two tokens of the random-weight model
        req = r["raw"]["requests"][0]
        assert len(r["raw"]["requests"]) == r["n_requests"] and len(req["itl"]) == req["chunks"] - 1 and 12 <= req["chunks"] <= 16
        assert r["image_digest"] == meta["images"]["cpu"]["id"] and r["build_commit"] == "0c1e5709"
    assert "c8" in p.stdout and "cross-talk" in p.stdout and ("knee" in p.stdout)
    assert not leftovers(meta["run_id"])
    # telemetry: the same sampler as bench; each level's window is marked with its case_id
    from toolbox.store.telemetry import read_sessions

    [session] = read_sessions(tmp_path / meta["run_id"])
    marks = [(m["event"], m.get("case_id")) for m in session["marks"]]
    for r in rows:
        assert marks.index(("level_start", r["case_id"])) < marks.index(("row", r["case_id"])), marks
    assert marks[0][0] == "container_start" and marks[-1][0] == "container_end" and session["end"]

    # the report plots latency against throughput and shows the levels
    rep = invoke("report", meta["run_id"], results_dir=tmp_path)
    assert rep.returncode == 0, rep.stderr
    run_dir = tmp_path / meta["run_id"]
    md = (run_dir / "report.md").read_text()
    assert "## Serving" in md and "| c8 |" in md and "serve-latency-throughput.png" in md
    assert (run_dir / "serve-latency-throughput.png").stat().st_size > 10_000


@pytest.mark.container
def test_the_server_killed_mid_sweep_keeps_finished_levels_and_resume_completes(cpu_image, tiny_model, tmp_path):
    env = os.environ | {"TOOLBOX_RESULTS_DIR": str(tmp_path)}
    args = ["invoke", "serve-bench", "--concurrency", "1,2,4,8", "--requests", "16", "--output-tokens", "24", "--crosstalk-tokens", "0"]
    proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    client = docker.from_env()
    deadline = time.monotonic() + 300
    killed = False
    while time.monotonic() < deadline and proc.poll() is None:
        rows_files = list(tmp_path.glob("*/rows.jsonl"))
        if rows_files and rows_files[0].read_text().count("\n") >= 1:
            for c in find_containers(client, running=True, label="org.strix-toolbox.serve-config"):
                if c.labels.get("org.strix-toolbox.run-id") == rows_files[0].parent.name:
                    c.kill()
                    killed = True
            if killed:
                break
        time.sleep(0.05)
    out, err = proc.communicate(timeout=300)
    assert killed, out + err
    assert proc.returncode == 1, out + err
    last = err.strip().splitlines()[-1]
    meta, rows = only_run(tmp_path)
    assert "llama-server exited" in last and f"--resume {meta['run_id']}" in last and "finished levels are kept" in last
    assert meta["status"] == "failed" and meta["stopped_at"]["level"] in ("c2", "c4", "c8")
    assert 1 <= len(rows) < 4 and all(r["status"] == "ok" for r in rows)
    assert not leftovers(meta["run_id"])

    p = invoke("serve-bench", "--resume", meta["run_id"], results_dir=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    meta, rows = only_run(tmp_path)
    assert meta["status"] == "complete" and not meta.get("stopped_at")
    assert sorted(r["level"] for r in rows) == ["c1", "c2", "c4", "c8"] and len({r["case_id"] for r in rows}) == 4
    assert "already done" in p.stdout


def _one_line_error(p) -> str:
    lines = (p.stdout + p.stderr).strip().splitlines()
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stdout + p.stderr
    return lines[-1]


@pytest.mark.container
def test_a_server_that_never_becomes_healthy_is_one_line_with_its_log(cpu_image, tmp_path):
    bad = tmp_path / "models" / "broken.gguf"
    bad.parent.mkdir()
    bad.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + os.urandom(4096))
    p = invoke("serve-bench", "--model", str(bad), "--concurrency", "1", results_dir=tmp_path / "results")
    line = _one_line_error(p)
    assert line.startswith("error: llama-server exited with code 1: ") and "its whole log is" in line, line and not leftovers(
        results.run_ids(tmp_path / "results")[0]
    )


@pytest.mark.container
def test_a_taken_port_is_one_line_before_anything_starts(cpu_image, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        p = invoke("serve-bench", "--port", str(port), results_dir=tmp_path)
    line = _one_line_error(p)
    assert line == f"error: --port: port {port} on 127.0.0.1 is taken: stop what listens there, or leave out --port (a free one is picked)"
    assert not results.run_ids(tmp_path)


@pytest.mark.container
def test_requests_past_their_timeout_fail_the_level_in_one_line(cpu_image, tiny_model, tmp_path):
    p = invoke("serve-bench", "--concurrency", "2", "--requests", "2", "--request-timeout", "0.001", results_dir=tmp_path)
    assert p.returncode == 1, p.stdout + p.stderr
    assert p.stderr.strip().splitlines()[-1] == "1 level(s) failed: timeout after 0.001 s"
    meta, rows = only_run(tmp_path)
    assert (
        rows[0]["status"] == "failed" and rows[0]["n_errors"] == rows[0]["n_requests"] == 4 and rows[0]["crosstalk"]["verdict"] == "error"
    )
    assert json.loads((tmp_path / meta["run_id"] / "run.json").read_text())["status"] == "complete"


@pytest.mark.container
def test_every_server_flag_of_the_vocabulary_is_one_the_pinned_llama_server_knows(cpu_image, settings):
    from toolbox.engine.container import tool_help
    from toolbox.llamacpp import SERVE_FLAGS
    from toolbox.run.serve import check_server_flags
    from toolbox.run.serve_matrix import ServeConfig, ServePlan

    help_text = tool_help(docker.from_env(), cpu_image, "llama-server", settings.cache_dir)
    every = {k: (True if isinstance(v, tuple) else "on" if k == "flash_attn" else 1) for k, v in SERVE_FLAGS.items()}
    both = [
        ServeConfig("cpu", "/m/x.gguf", every),
        ServeConfig("cpu", "/m/x.gguf", {k: False for k, v in SERVE_FLAGS.items() if isinstance(v, tuple)}),
    ]
    plan = ServePlan("t", "", "t.toml", "", both, [], {}, 0, 0, 1.0, 1.0)
    check_server_flags(plan, "cpu", help_text)  # raises when one is unknown
    with pytest.raises(Exception, match="does not know --metrics"):
        check_server_flags(plan, "cpu", help_text.replace("--metrics", "--frobnicate"))


def test_compose_has_a_serving_service_per_profile():
    from test_compose import compose_cmd

    for profile in ("cpu", "vulkan", "rocm"):
        p = subprocess.run([*compose_cmd(), "--profile", profile, "config", "--services"], cwd=REPO, capture_output=True, text=True)
        assert p.returncode == 0 and f"serve-bench-{profile}" in p.stdout.split(), p.stderr


@pytest.mark.container
def test_the_compose_serving_service_serves_the_load_generator(cpu_image, tiny_model, tmp_path):
    import shutil

    from test_compose import compose_cmd

    from toolbox.engine.server import free_port
    from toolbox.run import loadgen

    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(tiny_model, models / tiny_model.name)
    port = free_port()
    env = os.environ | {"CPU_IMAGE": cpu_image, "MODELS_DIR": str(models), "SERVE_PORT": str(port), "SERVE_ARGS": "-np 2 -c 2048"}
    project = ["-p", f"strix-serve-test-{port}"]
    up = subprocess.run(
        [*compose_cmd(), *project, "--profile", "cpu", "up", "-d", "--no-build", "serve-bench-cpu"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    try:
        assert up.returncode == 0, up.stderr
        import httpx

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        recs, _ = loadgen.run_level(f"http://127.0.0.1:{port}/v1/completions", [loadgen.payload("ab cd", 8)] * 4, concurrency=2)
        assert all(r.error is None and r.tokens_out == 8 for r in recs), [r.error for r in recs]
        assert httpx.get(f"http://127.0.0.1:{port}/props", timeout=5).json()["total_slots"] == 2
    finally:
        subprocess.run([*compose_cmd(), *project, "--profile", "cpu", "down"], cwd=REPO, env=env, capture_output=True, timeout=120)
