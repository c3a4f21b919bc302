"""compose.yaml: valid, and the cpu profile runs a real matrix on the embedded model, leaving a run
directory that the toolbox reads as if it were local."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from toolbox.store import runs as results

REPO = Path(__file__).resolve().parent.parent


def compose_cmd() -> list[str]:
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    pytest.fail("neither `docker compose` nor `docker-compose` is installed: ./setup.sh or apt-get install docker-compose")


def test_compose_file_is_valid():
    p = subprocess.run([*compose_cmd(), "config", "-q"], cwd=REPO, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    for profile in ("cpu", "vulkan", "rocm"):
        p = subprocess.run([*compose_cmd(), "--profile", profile, "config", "--services"], cwd=REPO, capture_output=True, text=True)
        assert p.returncode == 0 and f"bench-{profile}" in p.stdout.split(), p.stderr


def as_user(tmp_path: Path) -> dict:
    """What `invoke compose-env` writes to .env: the user the services run as, and a shader cache they own."""
    (tmp_path / "shader-cache").mkdir(exist_ok=True)
    return {"TOOLBOX_UID": str(os.getuid()), "TOOLBOX_GID": str(os.getgid()), "SHADER_CACHE_DIR": str(tmp_path / "shader-cache")}


@pytest.mark.container
def test_cpu_profile_runs_a_matrix_and_the_toolbox_reads_the_run(cpu_image, tiny_model, tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(tiny_model, models / tiny_model.name)
    out = tmp_path / "results"
    out.mkdir()
    env = (
        os.environ
        | {
            "CPU_IMAGE": cpu_image,
            "MODELS_DIR": str(models),
            "RESULTS_DIR": str(out),
            "MATRIX": "default",
            "HOST_NAME": "compose-test-host",
            "HOST_ID": "0123456789abcdef",
        }
        | as_user(tmp_path)
    )
    p = subprocess.run(
        [*compose_cmd(), "--profile", "cpu", "run", "--rm", "-T", "bench-cpu"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert p.returncode == 0, p.stdout[-1000:] + p.stderr[-1000:]
    [run_id] = [d.name for d in out.iterdir()]
    meta, rows = results.load_run(out, run_id)
    assert meta["kind"] == "compose" and meta["status"] == "complete"
    assert meta["images"]["cpu"]["build"]["llama_commit"] == "0c1e57098bba43ac29e6e3b677cdceebdd22334f"
    assert meta["host"]["machine"]["hostname"] == "compose-test-host" and meta["host"]["kernel"]["release"]
    assert [m["name"] for m in meta["models"]] == [tiny_model.name]
    assert len(rows) == 2 and {r["test"] for r in rows} == {"pp512", "tg128"}
    assert all(r["backend"] == "cpu" and r["status"] == "ok" and r["build_number"] == 11312 and r["avg_ts"] > 0 for r in rows)
    listed = subprocess.run(["invoke", "results"], cwd=REPO, env=env | {"TOOLBOX_RESULTS_DIR": str(out)}, capture_output=True, text=True)
    assert listed.returncode == 0 and run_id in listed.stdout, listed.stderr
    report = subprocess.run(
        ["invoke", "report", run_id, "--no-files"],
        cwd=REPO,
        env=env | {"TOOLBOX_RESULTS_DIR": str(out)},
        capture_output=True,
        text=True,
    )
    assert report.returncode == 0, report.stderr
    assert "pp512" in report.stdout


@pytest.mark.container
def test_compose_refuses_an_unknown_matrix_and_a_missing_model(cpu_image, tmp_path):
    (tmp_path / "models").mkdir()
    env = (
        os.environ
        | {
            "CPU_IMAGE": cpu_image,
            "MODELS_DIR": str(tmp_path / "models"),
            "RESULTS_DIR": str(tmp_path),
            "MATRIX": "kvv",
        }
        | as_user(tmp_path)
    )
    p = subprocess.run(
        [*compose_cmd(), "--profile", "cpu", "run", "--rm", "-T", "bench-cpu"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 2 and "unknown matrix 'kvv'" in p.stderr + p.stdout
    p = subprocess.run(
        [*compose_cmd(), "--profile", "cpu", "run", "--rm", "-T", "bench-cpu"],
        cwd=REPO,
        env=env | {"MATRIX": "default"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 2 and "no GGUF model" in p.stderr + p.stdout
    assert not list(tmp_path.glob("2*")), "no run directory on bad input"
