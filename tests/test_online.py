"""The online path (what every user with internet takes), exercised on a machine without internet: a
local registry (Debian's docker-registry, on loopback) holds the bootstrapped base under the name the
pins give it, and a local HTTP server holds llama.cpp's source archive at GitHub's URL shape. The
registry and the source URL come from settings (TOOLBOX_REGISTRY, TOOLBOX_LLAMA_SOURCE_URL); apt reads Debian's
archive as of the pinned snapshot through a loopback stand-in for snapshot.debian.org (TOOLBOX_DEBIAN_SNAPSHOT_URL)."""

from __future__ import annotations

import functools
import http.server
import io
import shutil
import socket
import subprocess
import tarfile
import threading
import time
import urllib.request
from pathlib import Path

import docker
import pytest
from snapshot_proxy import snapshot_proxy

from toolbox.build.base import ensure_offline_base, from_registry
from toolbox.build.images import build, one_build_at_a_time
from toolbox.build.pins import build_args, load_pins
from toolbox.build.source import sdist_source, tree_hash
from toolbox.errors import ToolboxError
from toolbox.settings import load_settings

REPO = Path(__file__).resolve().parent.parent
PINS = load_pins(REPO / "containers" / "pins.toml")
pytestmark = pytest.mark.container


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _push(client, local: str, remote: str) -> None:
    client.images.get(local).tag(remote)
    subprocess.run(["docker", "push", remote], check=True, capture_output=True)


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """Debian's docker-registry on 127.0.0.1 (the daemon trusts 127.0.0.0/8 without TLS), holding the
    offline base as the pins name it (debian:trixie-slim)."""
    exe = shutil.which("docker-registry")
    if exe is None:
        pytest.skip("Debian's docker-registry is not installed (apt-get install docker-registry; ./setup.sh does)")
    root = tmp_path_factory.mktemp("registry")
    port = _free_port()
    (root / "config.yml").write_text(
        f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {root}/data\nhttp:\n  addr: 127.0.0.1:{port}\n"
    )
    proc = subprocess.Popen([exe, "serve", str(root / "config.yml")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    host = f"127.0.0.1:{port}"
    client = docker.from_env()
    pushed = []
    try:
        for _ in range(50):
            try:
                urllib.request.urlopen(f"http://{host}/v2/", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        settings = load_settings(offline=True)
        base = ensure_offline_base(settings, PINS, client)
        for name in ("cpu", "vulkan"):
            remote = from_registry(PINS.backend(name).base_image, host)
            if remote not in pushed:
                _push(client, base, remote)
                pushed.append(remote)
        yield host, pushed
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        for ref in pushed:
            try:
                client.images.remove(ref, noprune=True)
            except docker.errors.APIError:
                pass


def _archive(tree: Path, commit: str, change: str | None = None) -> bytes:
    """A GitHub-style source archive (top directory llama.cpp-<commit>/) of a tree; `change` edits one hashed file."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        tf.add(tree, arcname=f"llama.cpp-{commit}")
        if change:
            data = (tree / change).read_bytes() + b"\n// changed\n"
            info = tarfile.TarInfo(f"llama.cpp-{commit}/{change}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.fixture(scope="module")
def source_server(tmp_path_factory):
    """A local HTTP server with llama.cpp at <url>/archive/<commit>.tar.gz (from the pinned sdist's tree), and a
    second repository URL whose archive has one file changed."""
    tree = sdist_source(PINS, load_settings().cache_dir)
    root = tmp_path_factory.mktemp("www")
    commit = PINS.llama_cpp.commit
    for repo, change in (("ggml-org/llama.cpp", None), ("someone/llama.cpp", "ggml/src/ggml.c")):
        (root / repo / "archive").mkdir(parents=True)
        (root / repo / "archive" / f"{commit}.tar.gz").write_bytes(_archive(tree, commit, change))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", tree
    finally:
        server.shutdown()


def _version(client, image: str) -> str:
    return _run(client, image, "llama-bench", "--version")


@pytest.fixture(scope="module")
def snapshot():
    """snapshot.debian.org's URL shape on loopback (tests/snapshot_proxy.py, a FAKE forwarding to the live mirror)."""
    with snapshot_proxy(PINS.debian.mirror, PINS.debian.snapshot) as proxy:
        yield proxy


def _run(client, image: str, *cmd: str) -> str:
    return client.containers.run(image, list(cmd), remove=True, stderr=True).decode()


@pytest.mark.parametrize("backend", ["cpu", "vulkan"])
def test_online_build_from_the_local_registry_and_source_server(backend, registry, source_server, snapshot, tmp_path):
    host, _ = registry
    url, tree = source_server
    snapshot_url, seen = snapshot
    settings = load_settings(registry=host, llama_source_url=f"{url}/ggml-org/llama.cpp", debian_snapshot_url=snapshot_url)
    r = build(settings, backend, offline=False)
    client = docker.from_env()
    dated = snapshot_url.replace("{snapshot}", PINS.debian.snapshot)
    try:
        log = r.log.read_text() if r.log else ""
        assert r.labels["org.opencontainers.image.base.name"] == f"{host}/debian:trixie-slim"
        if not r.up_to_date:  # the build fetched the archive from the server and checked its tree hash
            assert f"/archive/{PINS.llama_cpp.commit}.tar.gz" in log and "source-context" not in log
            # apt read the pinned suite from the dated snapshot (pins that never rot), not from the live mirror
            assert f"/archive/debian/{PINS.debian.snapshot}/dists/trixie/InRelease" in seen, seen[:20]
        assert tree_hash(tree) == PINS.llama_cpp.tree_sha256  # what the in-build check compared with
        assert _run(client, r.tag, "cat", "/etc/apt/sources.list").split() == ["deb", dated, "trixie", "main"]
        offline = build(load_settings(offline=True), backend, offline=True)
        assert _run(client, offline.tag, "cat", "/etc/apt/sources.list").split() == ["deb", PINS.debian.mirror, "trixie", "main"]
        assert _version(client, r.tag) == _version(client, offline.tag)  # same llama.cpp build info
        assert r.labels["org.strix-toolbox.llama-commit"] == offline.labels["org.strix-toolbox.llama-commit"]
    finally:
        client.images.remove(r.tag, noprune=True)


def test_online_build_refuses_a_source_that_is_not_the_pinned_tree(registry, source_server, snapshot):
    host, _ = registry
    url, _ = source_server
    settings = load_settings(registry=host, llama_source_url=f"{url}/someone/llama.cpp", debian_snapshot_url=snapshot[0])
    with pytest.raises(ToolboxError, match="does not match the pin"):
        build(settings, "cpu", offline=False, force=True)


def test_an_unreachable_snapshot_is_said_as_such_not_as_pins_gone(registry, source_server):
    """Nothing answers at the snapshot URL (a closed loopback port): the one line names the archive and the ways
    out, instead of "a pinned package version is gone" (apt's later "was not found" for every pin)."""
    host, _ = registry
    url, _ = source_server
    closed = f"http://127.0.0.1:{_free_port()}/archive/debian/{{snapshot}}"
    settings = load_settings(registry=host, llama_source_url=f"{url}/ggml-org/llama.cpp", debian_snapshot_url=closed)
    with pytest.raises(ToolboxError) as e:
        build(settings, "cpu", offline=False, force=True)
    said = str(e.value)
    assert "apt cannot read Debian's archive at http://127.0.0.1:" in said and "TOOLBOX_DEBIAN_SNAPSHOT_URL" in said, said
    assert "gone" not in said


def test_rocm_dockerfile_fetch_stage_runs_against_the_source_server(registry, source_server, tmp_path):
    """The ROCm (AMD image) Dockerfile's source-fetch stage, on a stand-in base: our Debian base with curl,
    pushed under AMD's image name. A FAKE of rocm/dev-ubuntu-24.04: only curl, no ROCm, so the build stage
    (hipcc, cmake, the HIP compile) and the runtime stage stay untested here."""
    host, pushed = registry
    url, _ = source_server
    client = docker.from_env()
    fake = from_registry(PINS.backend("rocm").base_image, host)
    ctx = tmp_path / "ctx"
    (ctx / "common").mkdir(parents=True)
    shutil.copy(REPO / "containers" / "common" / "tree-hash.sh", ctx / "common")
    (ctx / "Dockerfile.fake").write_text(
        f"FROM {host}/debian:trixie-slim\nRUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl\n"
    )
    make_fake = ["docker", "buildx", "build", "-q", "-t", fake, "-f", str(ctx / "Dockerfile.fake"), str(ctx)]
    with one_build_at_a_time(load_settings(), print):
        subprocess.run(make_fake, check=True, capture_output=True)
    dockerfile = REPO / "containers" / "rocm" / "Dockerfile"

    def fetch(repo: str) -> subprocess.CompletedProcess:
        args = build_args(PINS, "rocm", fake, "fetch") | {"LLAMA_REPO": f"{url}/{repo}"}
        cmd = ["docker", "buildx", "build", "--progress=plain", "--network", "host", "--target", "source", "-f", str(dockerfile)]
        cmd += [a for k, v in args.items() for a in ("--build-arg", f"{k}={v}")]
        return subprocess.run([*cmd, str(ctx)], capture_output=True, text=True)

    try:
        subprocess.run(["docker", "push", fake], check=True, capture_output=True)
        with one_build_at_a_time(load_settings(), print):
            ok = fetch("ggml-org/llama.cpp")
            bad = fetch("someone/llama.cpp")
        assert ok.returncode == 0, ok.stderr[-2000:]
        assert bad.returncode != 0 and "does not match tree_sha256" in bad.stdout + bad.stderr
    finally:
        client.images.remove(fake, noprune=True)
