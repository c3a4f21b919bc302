"""Images: real offline builds (Debian base bootstrapped here, llama.cpp from PyPI's sdist), their labels,
the pinned build info inside, lavapipe, and every bad input the build refuses."""

from __future__ import annotations

import json
import shutil
import subprocess
import time

import docker
import pytest
from testcontainers.core.container import DockerContainer

from toolbox.build.images import build, find_image
from toolbox.build.listing import list_images
from toolbox.build.pins import LABEL_PREFIX, load_pins
from toolbox.build.source import sdist_source
from toolbox.errors import ToolboxError
from toolbox.settings import load_settings

PINS = load_pins(load_settings().pins_file)
TOOLS = ("llama-bench", "llama-server", "llama-cli", "llama-perplexity", "llama-quantize", "ggml-rpc-server")


def run(image, *argv, model_dir=None, env=None) -> tuple[int, str, str]:
    """Run one command in the image with testcontainers; (exit code, stdout, stderr)."""
    container = DockerContainer(image).with_command(list(argv))
    if model_dir:
        container = container.with_volume_mapping(str(model_dir), "/models", "ro")
    for k, v in (env or {}).items():
        container = container.with_env(k, v)
    container.start()
    try:
        code = container.get_wrapped_container().wait(timeout=600)["StatusCode"]
        out, err = container.get_logs()
    finally:
        container.stop()
    return code, out.decode(errors="replace"), err.decode(errors="replace")


def bench_rows(image, model, *args, env=None) -> list[dict]:
    code, out, err = run(
        image,
        "llama-bench",
        "-m",
        f"/models/{model.name}",
        "-p",
        "16",
        "-n",
        "4",
        "-r",
        "1",
        "-o",
        "jsonl",
        *args,
        model_dir=model.parent,
        env=env,
    )
    assert code == 0, err[-500:]
    return [json.loads(ln) for ln in out.splitlines() if ln.startswith("{")]


@pytest.mark.container
@pytest.mark.parametrize("backend", ["cpu", "vulkan"])
def test_image_labels_say_what_is_inside(backend, request):
    image = request.getfixturevalue(f"{backend}_image")
    labels = docker.from_env().images.get(image).labels
    assert labels[f"{LABEL_PREFIX}.llama-commit"] == PINS.llama_cpp.commit
    assert labels[f"{LABEL_PREFIX}.llama-build-number"] == str(PINS.llama_cpp.build_number)
    assert labels[f"{LABEL_PREFIX}.backend"] == backend
    assert labels[f"{LABEL_PREFIX}.cmake-flags"] == " ".join(PINS.backends[backend].cmake_flags)
    assert labels["org.opencontainers.image.revision"] == PINS.llama_cpp.commit
    assert labels[f"{LABEL_PREFIX}.verified"]
    base = docker.from_env().images.get(labels["org.opencontainers.image.base.name"])
    assert labels["org.opencontainers.image.base.digest"] in ((base.attrs.get("RepoDigests") or []) + [base.id])
    # installed versions are read from dpkg in the image, and agree with the pins
    for pkg, version in PINS.backends[backend].runtime_packages.items():
        assert labels[f"{LABEL_PREFIX}.installed.{pkg}"] == version
    if backend == "vulkan":
        assert labels[f"{LABEL_PREFIX}.mesa-version"] == PINS.backends["vulkan"].runtime_packages["mesa-vulkan-drivers"]
    code, out, _ = run(image, "cat", "/opt/llama/build.json")
    assert json.loads(out)["llama_commit"] == PINS.llama_cpp.commit


@pytest.mark.container
@pytest.mark.parametrize("backend", ["cpu", "vulkan"])
def test_image_has_the_tools(backend, request):
    image = request.getfixturevalue(f"{backend}_image")
    code, out, err = run(image, "sh", "-c", " && ".join(f"command -v {t}" for t in TOOLS))
    assert code == 0, err
    assert len(out.split()) == len(TOOLS)


@pytest.mark.container
def test_cpu_image_runs_the_tiny_model_and_reports_the_pinned_build(cpu_image, tiny_model):
    rows = bench_rows(cpu_image, tiny_model, "-ctk", "q8_0", "-ctv", "q8_0", "-fa", "1")
    assert len(rows) == 2
    for r in rows:
        assert r["build_commit"] == PINS.llama_cpp.short_commit
        assert r["build_number"] == PINS.llama_cpp.build_number
        assert r["backends"] == "CPU"
        assert r["type_k"] == r["type_v"] == "q8_0"
        assert r["avg_ts"] > 0


@pytest.mark.container
def test_vulkan_image_runs_on_lavapipe_only_when_named(vulkan_image, tiny_model):
    """ggml ignores CPU-type Vulkan devices unless GGML_VK_VISIBLE_DEVICES names them."""
    rows = bench_rows(vulkan_image, tiny_model, env={"GGML_VK_VISIBLE_DEVICES": "0"})
    assert rows and all(r["backends"] == "Vulkan" for r in rows)
    assert all("llvmpipe" in (r["gpu_info"] + r["devices"]).lower() for r in rows)
    assert all(r["build_commit"] == PINS.llama_cpp.short_commit for r in rows)
    # without it: llama-bench still says "Vulkan" but computes on the CPU (the runner flags such rows)
    fallback = bench_rows(vulkan_image, tiny_model)
    assert fallback and "llvmpipe" not in " ".join(r["gpu_info"] + r["devices"] for r in fallback).lower()


@pytest.mark.container
def test_second_build_is_up_to_date(cpu_image):
    t0 = time.monotonic()
    r = build(load_settings(offline=True), "cpu", offline=True)
    took = time.monotonic() - t0
    print(f"\n'invoke build cpu --offline' when up to date: {took:.2f} s")
    assert r.up_to_date and r.tag == cpu_image
    assert find_image(load_settings(), "cpu") is not None
    assert any(row["tag"] == cpu_image for row in list_images(load_settings()))


@pytest.mark.container
def test_a_stage_is_built_from_the_cache_and_tagged_beside_the_image(cpu_image):
    """build(stage="build") (benchmarks/image_build.py): the build stage, with compilers and objects, from the
    BuildKit cache of the image's own build; tagged <tag>-build, unverified, never the image itself."""
    r = build(load_settings(offline=True), "cpu", offline=True, stage="build")
    client = docker.from_env()
    try:
        assert r.tag == f"{cpu_image}-build" and not r.up_to_date and not r.labels
        assert r.size_bytes > client.images.get(cpu_image).attrs["Size"]
        assert " CACHED" in r.log.read_text() and "build-llama.sh" in r.log.read_text()  # not compiled again
        assert find_image(load_settings(), "cpu") == cpu_image
    finally:
        client.images.remove(r.tag, noprune=False)


@pytest.mark.container
def test_invoke_build_cli_answers_up_to_date(cpu_image):
    p = subprocess.run(["invoke", "build", "cpu", "--offline"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "up to date" in p.stdout and cpu_image in p.stdout


# --- bad input: one line, the fix, and no image tagged as if it were good ---------------------


def test_unknown_backend():
    with pytest.raises(ToolboxError, match="unknown backend 'metal'.*rocm"):
        build(load_settings(offline=True), "metal", offline=True)


@pytest.mark.container
def test_online_build_without_registry_suggests_offline(cpu_image):
    """This machine reaches no registry: the real online path must fail with the --offline hint."""
    with pytest.raises(ToolboxError) as exc:
        build(load_settings(), "cpu", offline=False)
    assert "--offline" in str(exc.value) and "\n" not in str(exc.value)


def test_rocm_upstream_base_is_not_offline_capable():
    with pytest.raises(ToolboxError, match="rocm-debian"):
        build(load_settings(offline=True), "rocm", offline=True)


@pytest.mark.container
def test_source_must_exist_and_be_llama_cpp(tmp_path, cpu_image):
    with pytest.raises(ToolboxError, match="does not exist"):
        build(load_settings(offline=True), "cpu", offline=True, source=tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ToolboxError, match="not a llama.cpp tree"):
        build(load_settings(offline=True), "cpu", offline=True, source=tmp_path / "empty")
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"not a tarball")
    with pytest.raises(ToolboxError, match="neither a directory nor a tarball"):
        build(load_settings(offline=True), "cpu", offline=True, source=junk)


@pytest.mark.container
def test_the_pinned_source_is_the_pinned_image(tmp_path, cpu_image):
    """A copy of the pinned tree given with --source is the pinned image (up to date); a changed tree builds a
    side variant beside it instead (tests/test_side.py)."""
    s = load_settings(offline=True)
    tree = sdist_source(PINS, s.cache_dir)
    copy = tmp_path / "llama.cpp"
    shutil.copytree(tree, copy, symlinks=True, ignore=shutil.ignore_patterns(".git"))
    r = build(s, "cpu", offline=True, source=copy)
    assert r.up_to_date and r.tag == cpu_image


def settings_with_pins(tmp_path, old: str, new: str):
    """Offline settings whose pins file has one change (the first occurrence of `old`)."""
    text = load_settings().pins_file.read_text()
    assert old in text
    pins = tmp_path / "pins.toml"
    pins.write_text(text.replace(old, new, 1))
    return load_settings(offline=True, pins_file=pins)


@pytest.mark.container
def test_unused_cmake_flag_fails_the_build_and_tags_nothing(tmp_path, cpu_image):
    """A flag CMake does not use (GGML_HIP_UMA is gone at the pinned commit) must fail the build."""
    s = settings_with_pins(tmp_path, '"-DLLAMA_OPENSSL=OFF"]', '"-DLLAMA_OPENSSL=OFF", "-DGGML_HIP_UMA=ON"]')
    with pytest.raises(ToolboxError, match="CMake ignores a pinned flag"):
        build(s, "cpu", offline=True)
    client = docker.from_env()
    tagged = [t for i in client.images.list() for t in i.tags]
    assert not [t for t in tagged if t.endswith("-unverified")]
    assert find_image(s, "cpu") is None, "no image may carry the flag CMake did not use"
    assert find_image(load_settings(), "cpu") == cpu_image, "the failed build must not replace the good image"


def test_docker_daemon_down_is_one_line(monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    with pytest.raises(ToolboxError, match="Docker daemon is not reachable.*systemctl start docker"):
        build(load_settings(offline=True), "cpu", offline=True)


@pytest.mark.container
def test_pinned_package_version_gone_from_the_archive(tmp_path, cpu_image):
    s = settings_with_pins(tmp_path, 'runtime_packages = { libgomp1 = "14.2.0-19" }', 'runtime_packages = { libgomp1 = "0.0-gone" }')
    with pytest.raises(ToolboxError, match="pinned package version is gone from the archive.*pins.toml"):
        build(s, "cpu", offline=True)
    assert find_image(s, "cpu") is None
