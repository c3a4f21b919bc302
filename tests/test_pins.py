"""Versions are data: containers/pins.toml is the only place a version lives, and the rest agrees with it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from toolbox.build.pins import apt_spec, build_args, load_pins
from toolbox.build.source import tree_hash
from toolbox.errors import ToolboxError

REPO = Path(__file__).resolve().parent.parent
CONTAINERS = REPO / "containers"
PINS = load_pins(CONTAINERS / "pins.toml")


def dockerfiles() -> list[Path]:
    return sorted(CONTAINERS.glob("*/Dockerfile"))


def test_every_backend_has_its_dockerfile():
    for name, b in PINS.backends.items():
        assert (CONTAINERS / b.dockerfile).is_file(), f"{name}: {b.dockerfile} missing"
    assert {"rocm", "vulkan", "cpu"} <= set(PINS.backends)


@pytest.mark.parametrize("dockerfile", dockerfiles(), ids=lambda p: p.parent.name)
def test_dockerfiles_hard_code_no_version(dockerfile):
    """No version numbers, commits or image references in Dockerfiles: they come in as build args."""
    text = dockerfile.read_text()
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    assert not re.search(r"\b[0-9a-f]{40}\b", code), "a commit hash is hard-coded"
    assert not re.search(r"=\d+\.\d+[.\d-]*", code), "a package version is hard-coded"
    assert not re.search(r"FROM\s+[a-z0-9./-]+:[\w.-]+", code), "a base image is hard-coded"
    for arg in ("BASE_IMAGE", "LLAMA_COMMIT", "LLAMA_BUILD_NUMBER", "CMAKE_FLAGS"):
        assert f"ARG {arg}" in text, f"{dockerfile} does not take {arg}"


@pytest.mark.parametrize("dockerfile", dockerfiles(), ids=lambda p: p.parent.name)
def test_dockerfiles_use_every_build_arg_they_are_given(dockerfile):
    users = [n for n in PINS.image_names() if CONTAINERS / PINS.backend(n).dockerfile == dockerfile]
    for name in users:
        for arg in build_args(PINS, name, "base"):
            assert re.search(rf"ARG {arg}\b", dockerfile.read_text()), f"{dockerfile} ignores build arg {arg} ({name})"


def test_labels_carry_the_pins():
    for dockerfile in dockerfiles():
        text = dockerfile.read_text()
        for label in (
            "org.strix-toolbox.llama-commit",
            "org.strix-toolbox.llama-build-number",
            "org.strix-toolbox.cmake-flags",
            "org.strix-toolbox.backend",
            "org.opencontainers.image.revision",
        ):
            assert label in text, f"{dockerfile} lacks label {label}"


def test_flags_that_llama_cpp_dropped_are_not_pinned():
    """GGML_HIP_ROCWMMA_FATTN and GGML_HIP_UMA no longer exist; AMDGPU_TARGETS is deprecated; LLAMA_CURL is dead."""
    for name, b in PINS.backends.items():
        flags = " ".join(b.cmake_flags)
        for dead in ("GGML_HIP_ROCWMMA_FATTN", "GGML_HIP_UMA", "AMDGPU_TARGETS", "LLAMA_CURL"):
            assert dead not in flags, f"{name} pins the dead flag {dead}"
        if "GGML_HIP=ON" in flags:
            assert f"-DGPU_TARGETS={PINS.backends[name].gpu_target}" in flags


def test_short_commit_is_the_commit_prefix():
    assert PINS.llama_cpp.commit.startswith(PINS.llama_cpp.short_commit)


def test_build_args_pin_exact_package_versions():
    args = build_args(PINS, "vulkan", "base")
    assert f"mesa-vulkan-drivers={PINS.backends['vulkan'].runtime_packages['mesa-vulkan-drivers']}" in args["RUNTIME_PACKAGES"]
    assert args["LLAMA_COMMIT"] == PINS.llama_cpp.commit
    assert apt_spec({"a": "1", "b": ""}) == "a=1 b"


def test_tree_hash_python_agrees_with_the_shell_script(tmp_path):
    """toolbox/build/source.py and containers/common/tree-hash.sh must give the same hash (online vs offline path)."""
    tree = tmp_path / "llama.cpp"
    for rel, content in {
        "CMakeLists.txt": "x",
        "ggml/a.c": "1",
        "ggml/B.c": "2",
        "src/z/y.cpp": "3",
        "tools/llama-bench/m.cpp": "4",
        "tools/server/ignored.cpp": "5",
        "common/_u.h": "6",
    }.items():
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_text(content)
    shell = subprocess.run(
        ["sh", str(CONTAINERS / "common" / "tree-hash.sh"), str(tree)], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert shell == tree_hash(tree)
    (tree / "tools/server/ignored.cpp").write_text("changed")
    assert tree_hash(tree) == shell, "files outside the hashed set must not change the hash"
    (tree / "ggml/a.c").write_text("changed")
    assert tree_hash(tree) != shell


def test_compose_agrees_with_pins():
    compose = (REPO / "compose.yaml").read_text()
    assert PINS.llama_cpp.commit in compose
    assert f'LLAMA_BUILD_NUMBER: "{PINS.llama_cpp.build_number}"' in compose
    assert PINS.llama_cpp.tree_sha256 in compose
    for name in ("rocm", "vulkan", "cpu"):
        b = PINS.backends[name]
        assert b.base_image in compose, f"compose.yaml does not build {name} from {b.base_image}"
        assert " ".join(b.cmake_flags) in compose, f"compose.yaml's {name} CMake flags differ from the pins"
        if b.runtime_packages:
            assert apt_spec(b.runtime_packages) in compose


def test_broken_pins_file_is_one_line_error(tmp_path):
    bad = tmp_path / "pins.toml"
    bad.write_text((CONTAINERS / "pins.toml").read_text().replace('commit = "0c1e', 'commit = "zz1e', 1))
    with pytest.raises(ToolboxError, match=r"llama_cpp.commit"):
        load_pins(bad)
    with pytest.raises(ToolboxError, match="unknown backend 'metal'"):
        PINS.backend("metal")


def test_every_image_builds_the_rpc_server():
    """ggml-rpc-server (tools/rpc, built only with GGML_RPC=ON) is in every image and in the tree hash."""
    for name, b in PINS.backends.items():
        assert "-DGGML_RPC=ON" in b.cmake_flags, f"{name} is built without the RPC backend"
    for script in [CONTAINERS / "common" / "build-llama.sh", *dockerfiles()]:
        assert "ggml-rpc-server" in script.read_text(), f"{script} does not build ggml-rpc-server"
    assert "tools/rpc" in (CONTAINERS / "common" / "tree-hash.sh").read_text()
