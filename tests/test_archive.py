"""Pins that never rot: `invoke pins check` and `invoke pins bump` against the real Debian archive this
machine reaches (the mirror in containers/pins.toml), on copies of the pins."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from toolbox.build.archive import bump_compose_text, bump_text, check_pins, compare_debian_versions
from toolbox.build.pins import load_pins
from toolbox.settings import Settings, load_settings

REPO = Path(__file__).resolve().parent.parent
GONE = "3.31.5-1"  # a cmake version trixie never had at this point release: "gone" for the test


@pytest.mark.skipif(shutil.which("dpkg") is None, reason="dpkg is the reference for Debian version order")
def test_version_order_is_dpkgs():
    versions = ["1:22.1.8-1~deb13u5", "1:22.1.8-1", "2.43-7", "2.41-12+deb13u5", "7.2.4-1~exp1", "7.2.4-1~exp1+b1", "1.0~rc1",
                "1.0", "1.0~", "1.0~~", "4:14.2.0-1", "14.2.0-19", "26.2.6-1", "25.0.7-2+deb13u1", "1.0+dfsg-1", "1.02", "1.2"]  # fmt: skip
    for a in versions:
        for b in versions:
            ref = 0 if subprocess.run(["dpkg", "--compare-versions", a, "eq", b]).returncode == 0 else (
                1 if subprocess.run(["dpkg", "--compare-versions", a, "gt", b]).returncode == 0 else -1)  # fmt: skip
            got = compare_debian_versions(a, b)
            assert (got > 0) - (got < 0) == ref, (a, b)


def pins_copy(tmp_path: Path, cmake: str) -> Path:
    """containers/pins.toml and compose.yaml copied, with cmake pinned to `cmake` everywhere."""
    (tmp_path / "containers").mkdir()
    text = (REPO / "containers" / "pins.toml").read_text().replace('cmake = "3.31.6-2"', f'cmake = "{cmake}"')
    (tmp_path / "containers" / "pins.toml").write_text(text)
    shutil.copy(REPO / "compose.yaml", tmp_path / "compose.yaml")
    return tmp_path / "containers" / "pins.toml"


def invoke(*args, pins_file: Path) -> subprocess.CompletedProcess:
    env = os.environ | {"TOOLBOX_PINS_FILE": str(pins_file), "COLUMNS": "200"}
    return subprocess.run(["invoke", *args], cwd=REPO, capture_output=True, text=True, env=env, timeout=600)


def test_check_finds_every_pin_in_the_archive_and_names_a_gone_one(tmp_path):
    settings = load_settings()
    states, sources = check_pins(load_pins(REPO / "containers" / "pins.toml"), settings.cache_dir)
    assert len(sources) == 3 and all("/dists/" in s for s in sources)  # trixie, sid, experimental
    assert {s.image for s in states} == {"cpu", "vulkan", "vulkan:mesa-sid", "rocm-debian"}
    found = {(s.package, s.suite) for s in states}
    assert ("mesa-vulkan-drivers", "sid") in found and ("librocblas5", "experimental") in found and ("cmake", "trixie") in found
    p = invoke("pins", "check", pins_file=pins_copy(tmp_path, GONE))
    assert p.returncode == 1
    assert f"cmake {GONE} is gone from the archive (newest there: 3.31.6-2)" in p.stdout, p.stdout + p.stderr
    assert "invoke pins bump" in p.stderr


def test_bump_sets_the_newest_version_and_says_what_changed(tmp_path):
    pins_file = pins_copy(tmp_path, GONE)
    dry = invoke("pins", "bump", "--dry-run", pins_file=pins_file)
    assert dry.returncode == 0 and f"cmake: {GONE} -> 3.31.6-2" in dry.stdout and "dry run" in dry.stdout
    assert f'cmake = "{GONE}"' in pins_file.read_text()
    p = invoke("pins", "bump", pins_file=pins_file)
    assert p.returncode == 0 and f"cmake: {GONE} -> 3.31.6-2" in p.stdout, p.stdout + p.stderr
    text = pins_file.read_text()
    real = load_pins(REPO / "containers" / "pins.toml").debian.snapshot
    moved = load_pins(pins_file).debian.snapshot  # the bumped versions are today's: the snapshot moves to now
    assert f"debian snapshot: {real} -> {moved}" in p.stdout and moved > real
    assert GONE not in text and text.replace(moved, real) == (REPO / "containers" / "pins.toml").read_text()  # comments kept
    assert invoke("pins", "check", pins_file=pins_file).returncode == 0


def test_bump_takes_a_new_llama_cpp_source_s_tree_hash(tmp_path):
    from toolbox.build.source import sdist_source

    settings = load_settings()
    pins = load_pins(REPO / "containers" / "pins.toml")
    tree = sdist_source(pins, settings.cache_dir)
    patched = tmp_path / "llama.cpp"
    shutil.copytree(tree, patched, symlinks=True)
    (patched / "ggml" / "src" / "ggml.c").write_text((patched / "ggml" / "src" / "ggml.c").read_text() + "\n// a patch\n")
    (tmp_path / "p").mkdir()
    pins_file = pins_copy(tmp_path / "p", "3.31.6-2")
    p = invoke("pins", "bump", "--source", str(patched), pins_file=pins_file)
    assert p.returncode == 0 and f"tree_sha256: {pins.llama_cpp.tree_sha256[:12]} ->" in p.stdout, p.stdout + p.stderr
    new = load_pins(pins_file).llama_cpp.tree_sha256
    assert new != pins.llama_cpp.tree_sha256 and new in (tmp_path / "p" / "compose.yaml").read_text()


def test_bump_keeps_the_file_s_layout():
    text = 'a = { cmake = "1-1", "g++" = "2-1" }\n# cmake = "1-1" in a comment\nlibcmake = "1-1"\n'
    out = bump_text(text, {("cmake", "1-1"): "1-2", ("g++", "2-1"): "2-2"})
    assert out == 'a = { cmake = "1-2", "g++" = "2-2" }\n# cmake = "1-2" in a comment\nlibcmake = "1-1"\n'
    assert bump_compose_text("X: libc6=2.43-7 libc6-dev=2.43-7", {("libc6", "2.43-7"): "2.43-8"}) == "X: libc6=2.43-8 libc6-dev=2.43-7"


def test_the_snapshot_is_a_dated_archive_url(tmp_path):
    pins = load_pins(REPO / "containers" / "pins.toml")
    default = Settings.model_fields["debian_snapshot_url"].default
    assert pins.debian.snapshot_mirror(default) == f"http://snapshot.debian.org/archive/debian/{pins.debian.snapshot}"
    assert (
        pins.debian.snapshot_mirror("http://127.0.0.1:9/archive/debian/{snapshot}/")
        == f"http://127.0.0.1:9/archive/debian/{pins.debian.snapshot}"
    )
    assert pins.debian.snapshot_mirror("") is None  # the setting emptied: the online path reads the mirror
    bad = tmp_path / "pins.toml"
    bad.write_text((REPO / "containers" / "pins.toml").read_text().replace(pins.debian.snapshot, "last tuesday"))
    from toolbox.errors import ToolboxError

    with pytest.raises(ToolboxError, match="debian.snapshot"):
        load_pins(bad)


def test_check_snapshot_reads_the_dated_archive():
    """`pins check --snapshot` reads the package lists under the snapshot's URL (the setting
    debian_snapshot_url), here a loopback stand-in for snapshot.debian.org (tests/snapshot_proxy.py)."""
    from snapshot_proxy import snapshot_proxy

    pins = load_pins(REPO / "containers" / "pins.toml")
    with snapshot_proxy(pins.debian.mirror, pins.debian.snapshot) as (url, seen):
        env = os.environ | {"TOOLBOX_DEBIAN_SNAPSHOT_URL": url}
        p = subprocess.run(["invoke", "pins", "check", "--snapshot"], cwd=REPO, capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    want = f"/archive/debian/{pins.debian.snapshot}/dists/"
    assert {s.split("/")[5] for s in seen if s.startswith(want)} == {"trixie", "sid", "experimental"}, seen
    assert p.stdout.count(f"read {url.replace('{snapshot}', pins.debian.snapshot)}/dists/") == 3
