"""The full ROCm image from Debian's packages (rocm-debian), on a machine without an AMD GPU: its tools
start, say that there is no ROCm device, and neither crash nor hang. Skipped, with the reason, when the
image has not been built here (`invoke build rocm-debian --offline`: about an hour on 2 cores)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import docker
import pytest

from toolbox.build.images import find_image
from toolbox.settings import load_settings

REPO = Path(__file__).resolve().parent.parent
NO_DEVICE = "no ROCm-capable device is detected"


@pytest.fixture(scope="module")
def rocm_debian_image() -> str:
    tag = find_image(load_settings(), "rocm-debian")
    if tag is None:
        pytest.skip("the rocm-debian image is not built from the current pins here: invoke build rocm-debian --offline")
    return tag


def _run(image: str, argv: list[str], model_dir: Path | None = None, timeout: int = 300) -> tuple[int, str]:
    client = docker.from_env()
    volumes = {str(model_dir): {"bind": "/models", "mode": "ro"}} if model_dir else {}
    c = client.containers.run(image, argv, detach=True, volumes=volumes, labels={"org.strix-toolbox.test": "rocm-image"})
    try:
        code = c.wait(timeout=timeout)["StatusCode"]  # a hang raises here
        return code, c.logs(stdout=True, stderr=True).decode(errors="replace")
    finally:
        c.remove(force=True)


@pytest.mark.container
@pytest.mark.skipif(os.path.exists("/dev/kfd"), reason="this machine has an AMD GPU: the no-GPU behaviour cannot be seen")
@pytest.mark.parametrize("tool", ["llama-bench", "llama-server", "llama-perplexity"])
def test_tools_start_without_a_gpu_and_say_so(rocm_debian_image, tool):
    code, out = _run(rocm_debian_image, [tool, "--list-devices"], timeout=120)
    assert code == 0, out[-1500:]
    assert NO_DEVICE in out, out[-1500:]


@pytest.mark.container
@pytest.mark.skipif(os.path.exists("/dev/kfd"), reason="this machine has an AMD GPU")
def test_llama_bench_on_a_model_says_no_rocm_device_and_does_not_crash(rocm_debian_image, tiny_model):
    code, out = _run(rocm_debian_image, ["llama-bench", "-m", f"/models/{tiny_model.name}", "-p", "16", "-n", "4", "-r", "1"],
                     model_dir=tiny_model.parent)  # fmt: skip
    assert NO_DEVICE in out and code in (0, 1), out[-1500:]  # never a signal (134 abort, 139 segfault)


def test_the_toolbox_says_no_gpu_in_one_line_before_any_container(tmp_path):
    if os.path.exists("/dev/kfd"):
        pytest.skip("this machine has an AMD GPU")
    env = os.environ | {"TOOLBOX_RESULTS_DIR": str(tmp_path)}
    p = subprocess.run(["invoke", "bench", "--backend", "rocm-debian"], cwd=REPO, capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 2 and p.stderr.strip().count("\n") == 0, p.stderr
    assert "/dev/kfd" in p.stderr and "rocm" in p.stderr
