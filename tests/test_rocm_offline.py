"""rocm-debian is a backend of bench and check, `--backend rocm` uses whichever ROCm image is built (saying
which), and a build goes offline by itself when no registry answers (issue 18)."""

from __future__ import annotations

import http.server
import os
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from toolbox.build import choose
from toolbox.run import bench as bench_mod
from toolbox.settings import load_settings

REPO = Path(__file__).resolve().parent.parent
GOOD_HOST = REPO / "tests" / "data" / "hosts" / "strix-halo-128g-good"  # recorded: has /dev/kfd and renderD128


def test_rocm_uses_whichever_rocm_image_is_built_and_says_which():
    only_debian = {"rocm-debian": "strix-toolbox/llama-rocm-debian:b1-x"}.get
    assert choose.pick_backends(["rocm"], only_debian) == (
        ["rocm-debian"],
        ["rocm: no rocm image is built; using the rocm-debian image (strix-toolbox/llama-rocm-debian:b1-x)"],
    )
    both = {"rocm": "r", "rocm-debian": "d"}.get
    assert choose.pick_backends(["rocm", "vulkan"], both) == (["rocm", "vulkan"], [])
    assert choose.pick_backends(["rocm"], {}.get) == (["rocm"], []), "neither: the missing rocm image is reported as usual"
    assert choose.pick_backends(["rocm", "rocm-debian"], only_debian)[0] == ["rocm-debian"], "never the same image twice"
    assert "invoke build rocm-debian" in choose.build_hint("rocm") and "--offline" not in choose.build_hint("vulkan")


def test_auto_and_explicit_rocm_pick_rocm_debian_on_a_strix_halo_with_only_that_image(monkeypatch):
    """resolve_backends on a recorded Strix Halo tree; find_image is a fake that knows only a rocm-debian image."""
    fake_images = {"rocm-debian": "strix-toolbox/llama-rocm-debian:fake"}
    monkeypatch.setattr(bench_mod, "find_image", lambda settings, backend, client=None: fake_images.get(backend))
    s = load_settings(host_root=GOOD_HOST)
    said = []
    assert bench_mod.resolve_backends("auto", {}, s, None, say=said.append) == ["rocm-debian"]
    assert bench_mod.resolve_backends("rocm", {}, s, None, say=said.append) == ["rocm-debian"]
    assert bench_mod.resolve_backends("rocm-debian", {}, s, None, say=said.append) == ["rocm-debian"]
    assert said == ["rocm: no rocm image is built; using the rocm-debian image (strix-toolbox/llama-rocm-debian:fake)"] * 2


@pytest.mark.parametrize("task", ["bench", "check"])
def test_rocm_debian_is_a_backend_of_bench_and_check(task, tmp_path):
    """On this machine (no /dev/kfd) it gets the device error, not `unknown backend`."""
    env = os.environ | {"TOOLBOX_RESULTS_DIR": str(tmp_path)}
    p = subprocess.run(["invoke", task, "--backend", "rocm-debian"], cwd=REPO, capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 2, p.stdout + p.stderr
    assert "no AMD GPU for the rocm backend" in p.stderr and "unknown" not in p.stderr  # rocm-debian runs on the rocm devices
    assert len(p.stderr.strip().splitlines()) == 1


class _Registry(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's name
        self.send_response(401)  # what Docker Hub answers an anonymous /v2/
        self.end_headers()

    def log_message(self, *args):
        pass


def test_a_registry_that_answers_and_one_that_does_not():
    server = http.server.HTTPServer(("127.0.0.1", 0), _Registry)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert choose.registry_answers(f"127.0.0.1:{server.server_port}/debian:trixie-slim")
    finally:
        server.shutdown()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]  # bound, not listening: connection refused
        t0 = time.monotonic()
        assert not choose.registry_answers(f"127.0.0.1:{closed}/debian:trixie-slim", timeout_s=2)
    assert time.monotonic() - t0 < 3
    assert choose.registry_host("debian:trixie-slim") == "registry-1.docker.io"
    assert choose.registry_host("rocm/dev-ubuntu-24.04:7.2.1-complete") == "registry-1.docker.io"
    assert choose.registry_host("localhost:5000/debian:trixie-slim") == "localhost:5000"


@pytest.mark.container
def test_a_build_goes_offline_by_itself_when_no_registry_answers(cpu_image):
    """The decision invoke build makes before building (nothing is built here): a base that is here needs
    no registry; one that is not, behind a registry that does not answer, means offline, with one line."""
    import docker

    from toolbox.build.images import _online_possible

    client = docker.from_env()
    said = []
    assert _online_possible(client, "strix-toolbox/base:debian-trixie", said.append) is True and not said
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        gone = f"127.0.0.1:{s.getsockname()[1]}/debian:trixie-slim"
        assert _online_possible(client, gone, said.append) is False
    assert said == [
        f"no registry answers ({gone.split('/')[0]}): building offline (the base from Debian's archive, llama.cpp from PyPI's sdist)"
    ]


def test_bench_takes_offline_and_no_hint_names_a_flag_bench_does_not_have():
    help_text = subprocess.run(["invoke", "--help", "bench"], cwd=REPO, capture_output=True, text=True).stdout
    assert "--offline" in help_text
    offenders = [str(p.relative_to(REPO)) for p in (REPO / "toolbox").rglob("*.py") if "add --offline without a registry" in p.read_text()]
    assert not offenders, offenders
