"""invoke bench, end to end, as a user runs it: real containers, real llama-bench, real files."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import docker
import pytest

from toolbox.engine.container import CONTAINER_LABEL, find_containers
from toolbox.errors import ToolboxError
from toolbox.quality.gate import row_not_counted
from toolbox.run import bench as bench_mod
from toolbox.run.matrix import expand, load_matrix
from toolbox.store import runs as results

REPO = Path(__file__).resolve().parent.parent
MATRICES = Path(__file__).resolve().parent / "data" / "matrices"


def invoke(*args, results_dir: Path, timeout=900, env=None) -> subprocess.CompletedProcess:
    e = os.environ | {"TOOLBOX_RESULTS_DIR": str(results_dir), "COLUMNS": "200"} | (env or {})
    return subprocess.run(["invoke", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout, env=e)


def only_run(results_dir: Path) -> tuple[dict, list[dict]]:
    runs = [p.name for p in results_dir.iterdir() if (p / "run.json").exists()]
    assert len(runs) == 1, runs
    return results.load_run(results_dir, runs[0])


@pytest.mark.container
def test_invoke_bench_with_no_arguments_runs_the_default_on_the_cpu_image(cpu_image, tmp_path):
    p = invoke("bench", results_dir=tmp_path)
    assert p.returncode == 0, p.stderr + p.stdout
    assert "pp512" in p.stdout and "tg128" in p.stdout and "t/s" in p.stdout
    meta, rows = only_run(tmp_path)
    assert meta["status"] == "complete" and meta["kind"] == "bench"
    assert meta["images"]["cpu"]["tag"] == cpu_image and meta["images"]["cpu"]["labels"]["org.strix-toolbox.llama-commit"]
    assert meta["models"][0]["sha256"] and meta["host"]["kernel"]
    assert len(rows) == 2 and all(r["status"] == "ok" and r["backend"] == "cpu" and r["device_ok"] for r in rows)
    assert {r["test"] for r in rows} == {"pp512", "tg128"}
    assert all(r["build_commit"] == "0c1e5709" and len(r["samples_ts"]) == 3 and r["raw"]["avg_ts"] == r["avg_ts"] for r in rows)
    assert (tmp_path / meta["run_id"] / "logs").is_dir()


@pytest.mark.container
def test_kv_matrix_on_lavapipe_gives_every_valid_pair(vulkan_image, bench_settings):
    matrix = str(MATRICES / "kv-small.toml")
    r = bench_mod.bench(bench_settings, matrix=matrix, backend="vulkan", allow_cpu_vulkan=True)
    assert r.status == "complete" and r.failed == 0
    meta, rows = results.load_run(bench_settings.results_dir, r.run_id)
    spec, src, text = load_matrix(matrix)
    plan = expand(spec, src, text, ["vulkan"], ["m"])
    assert len(rows) == len(plan.cases) == 3 * 2 * 2 + 9 * 2 * 2  # fa off: 3 K x f16 V; fa on: 9 pairs; x pp/tg x 2 depths
    pairs = {(r["type_k"], r["type_v"], r["flash_attn"]) for r in rows}
    assert {(k, v, 1) for k in ("f16", "q8_0", "q4_0") for v in ("f16", "q8_0", "q4_0")} <= pairs
    assert {(k, "f16", 0) for k in ("f16", "q8_0", "q4_0")} <= pairs
    assert all(r["backends"] == "Vulkan" and r["device_ok"] is True for r in rows), "rows must prove they ran on lavapipe"
    assert len(meta["matrix"]["removed"]) == 6 * 2 * 2
    assert len({r["case_id"] for r in rows}) == len(rows)


@pytest.mark.container
def test_dry_run_prints_the_plan_and_runs_nothing(cpu_image, tmp_path):
    p = invoke("bench", "--matrix", "kv", "--dry-run", results_dir=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "48 cases in 2 groups" in p.stdout
    assert "llama-bench -m /models/" in p.stdout and "-ctk f16,q4_0,q8_0" in p.stdout
    assert "removed 24 cases" in p.stdout and "needs flash attention" in p.stdout
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


def _wait_for_rows(results_dir: Path, n: int, timeout: float = 300) -> Path:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        for rows in results_dir.glob("*/rows.jsonl"):
            if len(rows.read_text().splitlines()) >= n:
                return rows
        time.sleep(0.2)
    raise AssertionError("no rows appeared")


@pytest.mark.container
def test_ctrl_c_keeps_finished_rows_and_resume_completes_the_run(cpu_image, tmp_path):
    matrix = str(MATRICES / "env-groups.toml")
    e = os.environ | {"TOOLBOX_RESULTS_DIR": str(tmp_path)}
    proc = subprocess.Popen(
        ["invoke", "bench", "--matrix", matrix], cwd=REPO, env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    rows_file = _wait_for_rows(tmp_path, 3)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "--resume" in err
    run_id = rows_file.parent.name
    meta, kept = results.load_run(tmp_path, run_id)
    assert meta["status"] == "interrupted"
    assert 3 <= len(kept) < 16 and all(r["status"] == "ok" for r in kept)
    assert not find_containers(docker.from_env(), label=f"org.strix-toolbox.run-id={run_id}"), "containers left behind"

    p = invoke("bench", "--resume", run_id, results_dir=tmp_path)
    assert p.returncode == 0, p.stderr
    meta, rows = results.load_run(tmp_path, run_id)
    assert meta["status"] == "complete"
    ok = [r for r in rows if r["status"] == "ok"]
    assert len(ok) == 16 and len({r["case_id"] for r in ok}) == 16, "every case once, none twice"
    assert rows[: len(kept)] == kept, "rows measured before the interrupt are untouched"


@pytest.mark.container
def test_a_container_killed_mid_group_loses_nothing_and_the_run_goes_on(cpu_image, bench_settings):
    """Kill the llama-bench container while it runs: finished rows stay, the missing cases run again one by one."""
    client = docker.from_env()
    done = {}

    def killer():
        t0 = time.monotonic()
        while time.monotonic() - t0 < 300:
            rows = list(bench_settings.results_dir.glob("*/rows.jsonl"))
            if rows and len(rows[0].read_text().splitlines()) >= 1:
                for c in find_containers(client, running=True, label=CONTAINER_LABEL):
                    c.kill()
                    done["killed"] = True
                return
            time.sleep(0.05)

    import threading

    t = threading.Thread(target=killer)
    t.start()
    spec = MATRICES / "kill.toml"
    r = bench_mod.bench(bench_settings, matrix=str(spec), backend="cpu")
    t.join()
    assert done.get("killed")
    meta, rows = results.load_run(bench_settings.results_dir, r.run_id)
    ok = [x for x in rows if x["status"] == "ok"]
    assert len({x["case_id"] for x in ok}) == 8, "every case measured once the group was re-run case by case"
    assert r.status == "complete"


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--model", "/nonexistent/model.gguf"], "not found"),
        (["--matrix", "kvv"], "did you mean 'kv'"),
        (["--backend", "metal"], "unknown backend 'metal'"),
        (["--backend", "rocm"], "no AMD GPU for the rocm backend"),
        (["--backend", "vulkan"], "--allow-cpu-vulkan"),
    ],
)
@pytest.mark.container
def test_bad_input_is_one_line_before_any_container_starts(cpu_image, tmp_path, args, needle):
    p = invoke("bench", *args, results_dir=tmp_path)
    assert p.returncode == 2, p.stdout + p.stderr
    lines = [ln for ln in p.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0], p.stderr
    assert not tmp_path.exists() or not any(tmp_path.iterdir()), "nothing may be written on bad input"


@pytest.mark.container
def test_bad_model_files_and_matrix_files(cpu_image, tmp_path):
    (tmp_path / "empty").mkdir()
    notgguf = tmp_path / "x.gguf"
    notgguf.write_text("hello")
    typo = tmp_path / "typo.toml"
    typo.write_text("[params]\nflash_atn = [1]\n")
    for args, needle in [
        (["--model", str(tmp_path / "empty")], "no GGUF"),
        (["--model", str(notgguf)], "not a GGUF file"),
        (["--matrix", str(typo)], "unknown llama-bench parameter 'flash_atn' (did you mean 'flash_attn'?)"),
    ]:
        p = invoke("bench", *args, results_dir=tmp_path / "r")
        assert p.returncode == 2 and needle in p.stderr, (args, p.stderr)


@pytest.mark.container
def test_results_dir_that_is_not_writable(cpu_image, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    p = invoke("bench", results_dir=blocker / "results")
    assert p.returncode == 2 and "not writable" in p.stderr


@pytest.mark.container
def test_no_image_built_names_the_build_command(tmp_path, settings):
    pins = tmp_path / "pins.toml"
    pins.write_text(settings.pins_file.read_text().replace("0c1e57098bba43ac29e6e3b677cdceebdd22334f", "1" * 40))
    s = settings.model_copy(update={"pins_file": pins})
    with pytest.raises(ToolboxError, match="no cpu image built.*invoke build cpu"):
        bench_mod.bench(s, backend="cpu")


def test_unknown_flag_for_the_pinned_llama_bench_is_refused():
    spec, src, text = load_matrix("load")
    plan = expand(spec, src, text, ["cpu"], ["m"])
    old_help = (
        "usage: llama-bench\n  -m, --model\n  -p, --n-prompt\n  -n, --n-gen\n  -d, --n-depth\n  -r\n  -o\n"
        "  -fa, --flash-attn\n  -ngl\n  -mmp, --mmap <0|1>\n"
    )
    with pytest.raises(ToolboxError, match="does not know -lm"):
        bench_mod.check_flags(plan, "cpu", old_help)


@pytest.mark.container
def test_bench_check_stores_a_quality_verdict_beside_every_row(cpu_image, tmp_path):
    p = invoke("bench", "--check", results_dir=tmp_path)
    assert p.returncode == 0, p.stderr + p.stdout[-2000:]
    assert "correctness check" in p.stdout
    meta, rows = only_run(tmp_path)
    assert (tmp_path / meta["run_id"] / "quality.jsonl").exists()
    assert all(r["quality"] and r["quality"]["verdict"] == "same" and r["quality"]["kld_mean"] < 1e-3 for r in rows)


@pytest.mark.container
def test_a_group_past_its_timeout_is_recorded_as_timeout(cpu_image, bench_settings):
    r = bench_mod.bench(bench_settings, matrix=str(MATRICES / "timeout.toml"), backend="cpu")
    meta, rows = results.load_run(bench_settings.results_dir, r.run_id)
    assert r.status == "failed" and r.ok == 0
    assert rows and all(x["status"] == "timeout" and x["error"].startswith("timeout after 2 s") for x in rows)
    assert not find_containers(docker.from_env(), label=f"org.strix-toolbox.run-id={r.run_id}")


@pytest.mark.container
def test_reports_comparisons_and_export_on_real_kv_runs_from_both_images(cpu_image, vulkan_image, bench_settings):
    """Issue 5's 'done when' on real data: a kv run on the cpu image and one on lavapipe, reported, compared, exported."""
    import sqlite3

    from toolbox.analysis import compare as cmp
    from toolbox.report import render as rp
    from toolbox.store import export as ex

    matrix = str(MATRICES / "kv-small.toml")
    cpu = bench_mod.bench(bench_settings, matrix=matrix, backend="cpu")
    vk = bench_mod.bench(bench_settings, matrix=matrix, backend="vulkan", allow_cpu_vulkan=True)
    rep = rp.report(bench_settings, [vk.run_id])
    names = {p.name for p in rep.files}
    assert {"report.md", "report.html", "kv.png", "depth.png"} <= names
    md = (bench_settings.results_dir / vk.run_id / "report.md").read_text()
    assert "0c1e5709" in md and "llvmpipe" in md and "25.0.7" in md, "provenance heads the report"
    cr = cmp.compare(bench_settings, cpu.run_id, vk.run_id, ignore=["backend", "backends"])
    assert len(cr.lines) == 48 and all(line.mark == "untested" and line.ratio for line in cr.lines), (
        "one repetition: ratios, but no significance test"
    )
    path, n = ex.export(bench_settings, [cpu.run_id, vk.run_id], "sqlite", not_counted=row_not_counted)
    assert n == 96
    with sqlite3.connect(path) as db:
        assert db.execute("select count(*), count(distinct backends) from llama_bench").fetchone() == (96, 2)
