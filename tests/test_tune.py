"""invoke tune end to end: real containers, real llama-bench and llama-perplexity, real files.

The spaces are small (tests/data/tune/) so that each race takes seconds on the tiny model.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import docker
import pytest

from toolbox.engine.container import find_containers
from toolbox.store import runs as results
from toolbox.store.quality import load as load_quality

REPO = Path(__file__).resolve().parent.parent
SPACES = Path(__file__).resolve().parent / "data" / "tune"
SMALL, TINY = str(SPACES / "small.toml"), str(SPACES / "tiny.toml")


def invoke(*args, results_dir: Path, timeout=900) -> subprocess.CompletedProcess:
    e = os.environ | {"TOOLBOX_RESULTS_DIR": str(results_dir), "COLUMNS": "200"}
    return subprocess.run(["invoke", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout, env=e)


def runs_in(results_dir: Path) -> list[str]:
    return sorted(p.name for p in results_dir.iterdir() if (p / "run.json").exists()) if results_dir.exists() else []


@pytest.mark.container
def test_tune_chat_on_the_cpu_image_recommends_a_checked_configuration_with_its_commands(cpu_image, tmp_path):
    p = invoke("tune", "--space", SMALL, "--goal", "chat", "--budget", "20m", results_dir=tmp_path)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-2000:]
    out = p.stdout
    assert "recommended:" in out and "llama-server -m /models/" in out and "llama-cli -m /models/" in out
    assert "docker run" in out and "services:" in out and "runner-up:" in out
    [rid] = runs_in(tmp_path)
    meta, rows = results.load_run(tmp_path, rid)
    assert meta["kind"] == "tune" and meta["status"] == "complete"
    t = meta["tune"]
    rec = t["answer"]["recommended"]
    assert rec["quality"]["verdict"] == "same", "q4_0 KV is degraded on the tiny model: never recommended without --allow-degraded"
    assert rec["score"]["n"] == 3 and rec["score"]["ci95"][0] < rec["score"]["median"] < rec["score"]["ci95"][1]
    assert rec["p_value"] is not None and rec["significant"] in (True, False) and rec["runner_up"]
    assert rec["figures"]["pp"] > rec["figures"]["tg"] > 0
    cands = t["answer"]["candidates"]
    assert len(cands) == 6 and all(c["status"] in ("recommended", "runner-up") or c["why"] for c in cands), "every drop says why"
    assert all("degraded" in c["why"] for c in cands if c["params"].get("type_v") == "q4_0" and c.get("quality"))
    # every row is the real thing, stored as bench stores it; screening used fewer generated tokens
    ok = [r for r in rows if r["status"] == "ok"]
    assert ok and all(r["device_ok"] and r["build_commit"] == "0c1e5709" for r in ok)
    assert {r["n_gen"] for r in ok if r["n_gen"]} == {32, 128}
    # the confirmation is the only stage at full size: finalists only, 3 samples each
    full = [r for r in ok if r["n_gen"] == 128]
    assert 2 <= len({r["case_id"] for r in full}) <= 3 and all(len(r["samples_ts"]) == 3 for r in full)
    quality = load_quality(tmp_path / rid)
    assert quality and all(q["run_id"] == rid for q in quality.values())
    # the answer's commands run in the image: every flag is one llama-server knows
    from toolbox.engine.client import docker_client
    from toolbox.engine.container import tool_help

    help_text = tool_help(docker_client(), rec["image"], "llama-server")
    for word in rec["commands"]["llama_server"].split():
        if word.startswith("-"):
            assert f"{word}," in help_text or f"{word} " in help_text, word

    # report and compare read it like any other run
    p = invoke("report", rid, "--no-files", results_dir=tmp_path)
    assert p.returncode == 0 and "recommended:" in p.stdout and "pp512" in p.stdout, p.stdout[-2000:] + p.stderr


@pytest.mark.container
@pytest.mark.parametrize(
    "goal,extra,tests",
    [
        ("prefill", ["--weights", "pp=256,tg=0"], {"pp256"}),
        ("generate", [], {"tg32", "tg128"}),
        ("long-context", ["--depth", "256"], {"pp512@d256", "tg32@d256", "tg128@d256"}),
        ("mixed", ["--depth", "128", "--weights", "pp=256,tg=64"], {"pp256@d128", "tg32@d128", "tg64@d128"}),
    ],
)
def test_every_goal_returns_a_configuration(cpu_image, tmp_path, goal, extra, tests):
    p = invoke("tune", "--space", TINY, "--goal", goal, *extra, "--budget", "10m", "--json", results_dir=tmp_path)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-2000:]
    answer = json.loads(p.stdout[p.stdout.index("{") :])
    assert answer["answer"]["recommended"]["commands"]["llama_server"]
    [rid] = runs_in(tmp_path)
    _, rows = results.load_run(tmp_path, rid)
    assert {r["test"] for r in rows} == tests


@pytest.mark.container
def test_ctrl_c_keeps_what_was_measured_and_resume_finishes(cpu_image, tmp_path):
    e = os.environ | {"TOOLBOX_RESULTS_DIR": str(tmp_path)}
    proc = subprocess.Popen(
        ["invoke", "tune", "--space", SMALL, "--budget", "20m"], cwd=REPO, env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    t0 = time.monotonic()
    while time.monotonic() - t0 < 300:
        rows = list(tmp_path.glob("*/rows.jsonl"))
        if rows and len(rows[0].read_text().splitlines()) >= 2:
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, out[-2000:] + err[-2000:]
    assert "--resume" in err
    [rid] = runs_in(tmp_path)
    meta, kept = results.load_run(tmp_path, rid)
    assert meta["status"] == "interrupted" and kept
    assert not find_containers(docker.from_env(), label=f"org.strix-toolbox.run-id={rid}")

    p = invoke("tune", "--resume", rid[-6:], results_dir=tmp_path)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-2000:]
    meta, rows = results.load_run(tmp_path, rid)
    assert meta["status"] == "complete" and meta["tune"]["answer"]["recommended"]

    def bare(rs):  # the quality check's verdicts are merged into rows on reading: compare what was written
        return [{k: v for k, v in r.items() if k != "quality"} for r in rs]

    assert bare(rows[: len(kept)]) == bare(kept), "rows measured before the interrupt are untouched"
    screened = {}
    for r in rows:
        if r["status"] == "ok" and r["n_gen"] != 128:
            screened[r["case_id"]] = screened.get(r["case_id"], 0) + len(r["samples_ts"])
    assert max(screened.values()) <= 3, "resume measures only what is missing"
    assert meta["tune"]["spent_s"] > 0


@pytest.mark.container
def test_bad_input_is_one_line(cpu_image, tmp_path):
    notgguf = tmp_path / "x.gguf"
    notgguf.write_text("hello")
    for args, needle in [
        (["--model", str(notgguf)], "not a GGUF file"),
        (["--space", str(SPACES / "empty.toml")], "is empty"),
        (["--space", SMALL, "--budget", "3s"], "could afford about"),
        (["--goal", "speed"], "unknown goal 'speed'"),
    ]:
        p = invoke("tune", *args, results_dir=tmp_path / "r")
        lines = [ln for ln in p.stderr.strip().splitlines() if ln.strip()]
        assert p.returncode == 2 and len(lines) == 1 and needle in lines[0], (args, p.stdout[-500:], p.stderr)
        assert not runs_in(tmp_path / "r"), "nothing is written on bad input"


@pytest.mark.container
def test_every_configuration_broken_recommends_nothing_and_exits_1(cpu_image, bench_settings, monkeypatch):
    """A ROCm build that computes wrong logits (llama.cpp issue 28211) is what this machine cannot have: the
    check's verdict is replaced by a broken one (a named fake); the measuring is real."""
    from toolbox.quality import check
    from toolbox.tune.driver import tune, tune_exit

    real = check.check_one

    def broken_build(*args, **kwargs):
        r = real(*args, **kwargs)
        return r | {"verdict": "broken", "kld_mean": 5.3, "top1_agree": 0.1}

    monkeypatch.setattr(check, "check_one", broken_build)
    r = tune(bench_settings, space=TINY, backend="cpu", budget="10m")
    code, message = tune_exit(r)
    assert code == 1 and "broken" in message and r.answer["recommended"] is None
    meta, rows = results.load_run(bench_settings.results_dir, r.run_id)
    assert rows and all(c["status"] == "dropped" for c in meta["tune"]["answer"]["candidates"])
    assert all("broken output" in c["why"] for c in meta["tune"]["answer"]["candidates"] if c["quality"])


@pytest.mark.container
def test_two_tune_runs_compare_like_any_runs(cpu_image, tmp_path):
    for _ in range(2):
        p = invoke("tune", "--space", TINY, "--budget", "10m", results_dir=tmp_path)
        assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    a, b = runs_in(tmp_path)
    p = invoke("compare", a, b, results_dir=tmp_path)
    assert p.returncode in (0, 1) and "Traceback" not in p.stderr, p.stderr[-2000:]
    assert "pp512" in p.stdout and "tg128" in p.stdout and "tg32" in p.stdout, p.stdout[-3000:]
    p = invoke("results", results_dir=tmp_path)
    assert p.returncode == 0 and p.stdout.count("tune") >= 2, p.stdout


@pytest.mark.container
@pytest.mark.parametrize("tool", ["llama-server", "llama-cli"])
def test_every_flag_an_answer_can_use_is_one_the_pinned_tool_knows(cpu_image, tool):
    import re

    from toolbox.engine.client import docker_client
    from toolbox.engine.container import tool_help
    from toolbox.llamacpp import SERVER_FLAGS

    help_text = tool_help(docker_client(), cpu_image, tool)
    for param, flag in {**SERVER_FLAGS, "context": "-c"}.items():
        assert re.search(rf"(^|[\s,]){re.escape(flag)}([\s,=]|$)", help_text, re.M), f"{tool} does not know {flag} ({param})"
