"""Side variants: `invoke build BACKEND --source PATH` with another llama.cpp tree than the pin builds an image
named IMAGE@<tree12>, usable wherever an image name is; its rows say which tree, and that it is not the pinned build.

The unit tests here use no container; the one marked `container` builds the cpu side variant of a one-line
change to the pinned tree and benches it against the pinned cpu image on the tiny model."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from toolbox.analysis.compare import compare_runs
from toolbox.analysis.provenance import provenance
from toolbox.build import side as sd
from toolbox.build.images import image_tag, inputs_hash
from toolbox.build.pins import build_args, image_versions, load_pins
from toolbox.build.source import given_source, tree_hash
from toolbox.engine.container import find_containers
from toolbox.errors import ToolboxError
from toolbox.llamacpp import build_text, parse_build_info
from toolbox.parse import parse, rows_of
from toolbox.quality.gate import row_not_counted
from toolbox.run.bench import resolve_backends
from toolbox.run.matrix import expand, load_matrix
from toolbox.store.rows import make_row

REPO = Path(__file__).resolve().parent.parent
PINS = load_pins(REPO / "containers" / "pins.toml")
TREE = "3f2a9c1b7d40" + "e" * 52  # a side tree hash (64 hex digits)
SIDE = f"cpu@{TREE[:12]}"


def fake_tree(root: Path, text: str = "int main() {}\n") -> Path:
    """The smallest directory the toolbox takes for a llama.cpp tree (CMakeLists.txt, ggml/, tools/llama-bench/)."""
    (root / "ggml").mkdir(parents=True)
    (root / "tools" / "llama-bench").mkdir(parents=True)
    (root / "CMakeLists.txt").write_text("project(llama.cpp)\n")
    (root / "tools" / "llama-bench" / "llama-bench.cpp").write_text(text)
    return root


def invoke(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["invoke", *args], cwd=REPO, capture_output=True, text=True, env=os.environ | env)


# --- naming and tagging ------------------------------------------------------------------------------


def test_a_side_name_is_its_image_and_twelve_digits_of_its_tree():
    assert sd.side_name("cpu", TREE) == SIDE
    assert sd.split_name(SIDE) == ("cpu", TREE[:12])
    assert sd.split_name("vulkan:mesa-sid@" + TREE[:12]) == ("vulkan:mesa-sid", TREE[:12])
    assert sd.split_name("vulkan:mesa-sid") == ("vulkan:mesa-sid", None)
    assert sd.side_repo(SIDE) == f"strix-toolbox/llama-cpu-src-{TREE[:12]}"
    assert sd.side_repo("vulkan:mesa-sid@" + TREE[:12]) == f"strix-toolbox/llama-vulkan-mesa-sid-src-{TREE[:12]}"
    for bad in ("cpu@", "cpu@3f2a", "cpu@3F2A9C1B7D40", "cpu@3f2a9c1b7d40aa", "cpu@zzzzzzzzzzzz"):
        with pytest.raises(ToolboxError, match="is not a side variant name") as e:
            sd.split_name(bad)
        assert "\n" not in str(e.value)


def test_a_side_variant_has_the_pins_and_devices_of_its_image():
    for image, runs_on in (("cpu", "cpu"), ("vulkan", "vulkan"), ("vulkan:mesa-sid", "vulkan"), ("rocm-debian", "rocm")):
        name = sd.side_name(image, TREE)
        assert PINS.backend(name) == PINS.backend(image)
        assert PINS.runs_on(name) == runs_on
    PINS.check_image_names([SIDE, "vulkan:mesa-sid@" + TREE[:12]])
    with pytest.raises(ToolboxError, match="unknown backend or image 'metal@"):
        PINS.check_image_names(["metal@" + TREE[:12]])
    with pytest.raises(ToolboxError, match="is not a side variant name"):
        PINS.check_image_names(["cpu@nothex"])


def test_side_tags_carry_the_tree_and_pinned_tags_do_not_change(settings):
    pinned = inputs_hash(settings, PINS, "cpu", "base")
    assert inputs_hash(settings, PINS, "cpu", "base", None) == pinned  # a pinned image keeps its tag
    side = inputs_hash(settings, PINS, SIDE, "base", TREE)
    assert side != pinned and side != inputs_hash(settings, PINS, SIDE, "base", "0" * 64)  # another tree, another image
    assert image_tag(PINS, SIDE, side) == f"strix-toolbox/llama-cpu-src-{TREE[:12]}:{side[:12]}"
    assert image_tag(PINS, "cpu", pinned) == f"strix-toolbox/llama-cpu:b{PINS.llama_cpp.build_number}-{pinned[:12]}"


def test_a_side_build_reports_its_tree_not_the_pinned_commit():
    args = build_args(PINS, SIDE, "base", "context") | sd.side_build_args(TREE)
    assert args["BACKEND"] == "cpu" and args["LLAMA_SOURCE"] == "context"
    assert args["LLAMA_SHORT_COMMIT"] == f"tree-{TREE[:12]}" and args["LLAMA_BUILD_NUMBER"] == "0"
    assert PINS.llama_cpp.commit not in args.values() and PINS.llama_cpp.short_commit not in args.values()
    assert args["LLAMA_TREE_SHA256"] == TREE and args["CMAKE_FLAGS"] == " ".join(PINS.backend("cpu").cmake_flags)
    assert build_text(f"tree-{TREE[:12]}", 0) == f"tree-{TREE[:12]} (side tree)"
    assert build_text("0c1e5709", 11312) == "0c1e5709 (b11312)"
    assert parse_build_info(f"b0-tree-{TREE[:12]}") == (0, f"tree-{TREE[:12]}")  # llama-server's /props build_info
    assert parse_build_info("b11312-0c1e5709") == (11312, "0c1e5709") and parse_build_info(None) == (None, None)


def test_side_labels_say_which_tree_from_where_and_not_the_pinned_one(tmp_path):
    src = sd.SideSource(tmp_path, TREE, str(tmp_path), PINS.llama_cpp.tree_sha256)
    labels = sd.side_labels(SIDE, src) | {"org.strix-toolbox.image": SIDE, "org.strix-toolbox.variant": "default"}
    assert labels["org.strix-toolbox.llama-source"] == "side"
    assert labels["org.strix-toolbox.llama-tree-sha256"] == TREE
    assert labels["org.strix-toolbox.llama-source-origin"] == str(tmp_path)
    assert labels["org.strix-toolbox.llama-pinned-tree-sha256"] == PINS.llama_cpp.tree_sha256
    assert labels["org.strix-toolbox.side-of"] == "cpu"
    assert image_versions(labels) == {"image": SIDE, "variant": "default", "llama_source": "side", "llama_tree": TREE}
    assert image_versions(sd.pinned_labels(PINS.llama_cpp.tree_sha256))["llama_source"] == "pinned"


def test_a_side_variant_is_judged_on_the_devices_of_its_backend(tmp_path):
    from toolbox.engine.devices import device_setup, log_device_ok

    cpu = device_setup(PINS.runs_on(SIDE))
    assert cpu.backend == "cpu" and log_device_ok(cpu.backend, cpu.target, []) is True  # no device in the log: the CPU, as meant
    lavapipe = device_setup(PINS.runs_on("vulkan:mesa-sid@" + TREE[:12]), tmp_path, allow_cpu_vulkan=True)
    assert (lavapipe.backend, lavapipe.target) == ("vulkan", "lavapipe")
    assert log_device_ok(lavapipe.backend, lavapipe.target, []) is False  # on the CPU instead of lavapipe


# --- the source given with --source ---------------------------------------------------------------------


def test_a_tree_that_is_not_the_pin_is_a_side_source_with_its_origin(tmp_path):
    tree = fake_tree(tmp_path / "patched")
    got, side = given_source(tree, PINS, tmp_path / "cache")
    assert got == tree and side is not None
    assert side.tree_sha256 == tree_hash(tree) != PINS.llama_cpp.tree_sha256
    assert side.origin == str(tree.resolve()) and side.pinned_sha256 == PINS.llama_cpp.tree_sha256
    # a tarball of it: the same tree, its origin names the tarball and its sha256
    tarball = tmp_path / "patched.tar.gz"
    with tarfile.open(tarball, "w:gz") as tf:
        tf.add(tree, arcname="llama.cpp-patched")
    _, from_tar = given_source(tarball, PINS, tmp_path / "cache")
    assert from_tar.tree_sha256 == side.tree_sha256
    assert from_tar.origin.startswith(str(tarball.resolve())) and "(sha256 " in from_tar.origin
    # the pinned tree (here: pins whose tree hash is this tree's) is no side variant: the pinned image as before
    pinned = PINS.model_copy(update={"llama_cpp": PINS.llama_cpp.model_copy(update={"tree_sha256": side.tree_sha256})})
    assert given_source(tree, pinned, tmp_path / "cache") == (tree, None)


def test_a_git_checkout_names_its_commit_in_the_origin(tmp_path):
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    tree = fake_tree(tmp_path / "checkout")
    git = ["git", "-C", str(tree), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "x"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    assert sd.origin_of(tree, None) == f"{tree.resolve()} (git {head})"
    (tree / "CMakeLists.txt").write_text("project(changed)\n")
    assert sd.origin_of(tree, None) == f"{tree.resolve()} (git {head}-dirty)"


# --- bad input: one line, exit 2 -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, needle",
    [
        (["build", "cpu", "--source", "{tmp}/nothing"], "does not exist"),
        (["build", "cpu", "--source", "{tmp}/empty"], "is not a llama.cpp tree"),
        (["build", "cpu", "--source", "{tmp}/junk.tar.gz"], "neither a directory nor a tarball"),
        (["build", SIDE], "is the name of a side variant"),
        (["bench", "--backend", "cpu@nothex", "--dry-run"], "is not a side variant name"),
        (["bench", "--backend", "metal@" + TREE[:12], "--dry-run"], "unknown backend 'metal@"),
    ],
)
def test_bad_side_input_is_one_line(tmp_path, args, needle):
    (tmp_path / "empty").mkdir()
    (tmp_path / "junk.tar.gz").write_bytes(b"not a tarball")
    p = invoke(*[a.replace("{tmp}", str(tmp_path)) for a in args], TOOLBOX_RESULTS_DIR=str(tmp_path / "results"))
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert p.returncode == 2 and len(lines) == 1 and needle in lines[0], p.stderr


def test_a_side_name_that_was_never_built_is_one_line_naming_the_build(settings):
    from toolbox.build.images import find_images
    from toolbox.engine.client import docker_client

    never = "cpu@" + "0" * 12
    with pytest.raises(ToolboxError, match=r"no cpu@0{12} image built.*invoke build cpu --source PATH") as e:
        find_images(settings, docker_client(), [never], build_missing=True)  # --build cannot make it either
    assert "\n" not in str(e.value)
    with pytest.raises(ToolboxError, match=r"invoke build vulkan --variant mesa-sid --source PATH"):
        find_images(settings, docker_client(), ["vulkan:mesa-sid@" + "0" * 12])


# --- matrices, rows, reports ------------------------------------------------------------------------------


def test_a_matrix_names_side_variants_in_images(settings):
    spec, src, text = load_matrix(str(REPO / "tests" / "data" / "matrices" / "variants-small.toml"))
    spec = spec | {"images": ["cpu", SIDE]}
    names = resolve_backends(None, spec, settings, None)
    assert names == ["cpu", SIDE]
    plan = expand(spec, src, text, names, ["m.gguf"])
    assert {g.backend for g in plan.groups} == {"cpu", SIDE}
    assert len({c.case_id for c in plan.cases}) == len(plan.cases) == 2  # one case per image, told apart
    assert resolve_backends(f"cpu,{SIDE}", {}, settings, None) == ["cpu", SIDE]


def lb_row(commit: str, number: int, samples: list[float]) -> dict:
    line = (REPO / "tests" / "data" / "llama-bench" / "lhl-llama32-1b-default-hip.jsonl").read_text().splitlines()[1]
    row = json.loads(line) | {"build_commit": commit, "build_number": number, "samples_ts": samples}
    return row | {"samples_ns": [round(1e9 * 128 / s) for s in samples], "avg_ts": sum(samples) / len(samples)}


def run_of(run_id: str, backend: str, labels: dict, commit: str, number: int, samples: list[float]) -> tuple[dict, list[dict]]:
    row = make_row(lb_row(commit, number, samples), backend=backend, image=f"{backend}-tag", versions=image_versions(labels), status="ok")
    meta = {"run_id": run_id, "kind": "bench", "status": "complete", "images": {backend: {"tag": f"{backend}-tag", "labels": labels}}}
    return meta, [row]


def test_side_rows_say_their_tree_count_and_compare_with_the_pinned_build():
    side_labels = sd.side_labels(SIDE, sd.SideSource(Path("/x"), TREE, "/x", PINS.llama_cpp.tree_sha256)) | {
        "org.strix-toolbox.image": SIDE
    }
    pinned_labels = sd.pinned_labels(PINS.llama_cpp.tree_sha256) | {"org.strix-toolbox.image": "cpu"}
    base = run_of("base", "cpu", pinned_labels, PINS.llama_cpp.short_commit, PINS.llama_cpp.build_number, [100.0, 101.0, 99.0])
    new = run_of("new", SIDE, side_labels, f"tree-{TREE[:12]}", 0, [120.0, 121.0, 119.0])
    row = new[1][0]
    assert row["versions"]["llama_source"] == "side" and row["versions"]["llama_tree"] == TREE
    assert row["build_commit"] == f"tree-{TREE[:12]}" and row["build_number"] == 0
    assert row_not_counted(row) is None  # a side build's row is a result like any other
    assert dict(provenance(*new))["llama.cpp"] == f"tree-{TREE[:12]} (a side tree, not the pinned build)"
    cr = compare_runs(base, new, ignore=["backend"])
    assert [ln.mark for ln in cr.lines] == ["faster"]
    assert (
        "llama.cpp",
        f"{PINS.llama_cpp.short_commit} (b{PINS.llama_cpp.build_number})",
        f"tree-{TREE[:12]} (a side tree, not the pinned build)",
    ) in cr.differences


def test_a_side_build_footer_parses_from_markdown_logs():
    md = (REPO / "tests" / "data" / "llama-bench" / "llamacpp-readme-b11312-depth.md").read_text().splitlines()[:4]
    rows = rows_of(parse("\n".join(md + ["", f"build: tree-{TREE[:12]} (0)", ""])))
    assert rows and {(r["build_commit"], r["build_number"]) for r in rows} == {(f"tree-{TREE[:12]}", 0)}


# --- the real thing: a side build of a one-line change against the pinned cpu image ---------------------

USAGE = 'printf("usage: %s [options]\\n", argv[0]);'  # tools/llama-bench/llama-bench.cpp line 428 at the pin
SIDE_USAGE = 'printf("usage (a side tree): %s [options]\\n", argv[0]);'
BENCH_MATRIX = """
name = "side-small"
description = "tg8 on the pinned cpu image and a side variant"
images = {images}
repetitions = 1

[params]
n_prompt = [0]
n_gen = [8]
"""


@pytest.mark.container
def test_a_side_variant_builds_and_benches_beside_the_pinned_image(cpu_image, tiny_model, bench_settings, tmp_path):
    from toolbox.build.images import build, find_image
    from toolbox.build.listing import list_images
    from toolbox.build.source import sdist_source
    from toolbox.engine.client import docker_client
    from toolbox.engine.container import ContainerSpec, run_to_end
    from toolbox.run import bench as bench_mod
    from toolbox.settings import load_settings
    from toolbox.store import runs as results

    s = load_settings(offline=True)
    pinned = sdist_source(PINS, s.cache_dir)
    copy = tmp_path / "llama.cpp"
    shutil.copytree(pinned, copy, symlinks=True, ignore=shutil.ignore_patterns(".git"))
    # the pinned tree given with --source is the pinned image, as before
    assert build(s, "cpu", offline=True, source=copy).tag == cpu_image
    # one printed string changed (code, not a comment: ccache's preprocessor mode strips comments)
    bench_cpp = copy / "tools" / "llama-bench" / "llama-bench.cpp"
    text = bench_cpp.read_text()
    assert text.count(USAGE) == 1
    bench_cpp.write_text(text.replace(USAGE, SIDE_USAGE))
    t0 = time.monotonic()
    r = build(s, "cpu", offline=True, source=copy)
    seconds = time.monotonic() - t0
    tree = tree_hash(copy)
    name = sd.side_name("cpu", tree)
    print(f"side variant {name} ({r.tag}) built in {seconds:.0f} s (up to date: {r.up_to_date})")
    assert r.backend == name and r.tag.startswith(f"strix-toolbox/llama-cpu-src-{tree[:12]}:")
    assert r.labels["org.strix-toolbox.llama-tree-sha256"] == tree and r.labels["org.strix-toolbox.llama-source"] == "side"
    # where the tree came from when the image was built (an earlier run's copy when it is up to date: the same tree)
    assert r.labels["org.strix-toolbox.llama-source-origin"] == str(copy.resolve()) or r.up_to_date
    assert r.labels["org.strix-toolbox.llama-commit"] == f"tree-{tree}" and r.labels["org.strix-toolbox.image"] == name
    assert find_image(s, name) == r.tag and find_image(s, "cpu") == cpu_image
    assert build(s, "cpu", offline=True, source=copy).up_to_date  # the same tree again: up to date
    usage = {t: run_to_end(docker_client(), ContainerSpec(t, ["llama-bench", "--help"]), timeout_s=120).stdout for t in (cpu_image, r.tag)}
    assert "usage (a side tree): " in usage[r.tag] and "usage (a side tree)" not in usage[cpu_image]  # the side tree's code ran
    listed = {row["tag"]: row for row in list_images(s)}
    assert listed[r.tag]["image"] == name and listed[r.tag]["current"] and listed[r.tag]["side"]

    matrix = tmp_path / "side.toml"
    matrix.write_text(BENCH_MATRIX.format(images=json.dumps(["cpu", name])))
    run = bench_mod.bench(bench_settings, matrix=str(matrix), models=[str(tiny_model)])
    assert run.status == "complete" and run.failed == 0
    meta, rows = results.load_run(bench_settings.results_dir, run.run_id)
    by = {row["backend"]: row for row in rows}
    assert set(by) == {"cpu", name}
    assert by["cpu"]["build_commit"] == PINS.llama_cpp.short_commit and by["cpu"]["build_number"] == PINS.llama_cpp.build_number
    assert by[name]["build_commit"] == f"tree-{tree[:12]}" and by[name]["build_number"] == 0
    assert by[name]["versions"]["llama_tree"] == tree and by[name]["versions"]["llama_source"] == "side"
    assert by["cpu"]["versions"].get("llama_tree") != tree
    assert meta["images"][name]["tag"] == r.tag
    cpu_rows = [x for x in rows if x["backend"] == "cpu"]
    side_rows = [x for x in rows if x["backend"] == name]
    cr = compare_runs((meta | {"run_id": "pinned"}, cpu_rows), (meta | {"run_id": "side"}, side_rows), ignore=["backend"])
    assert len(cr.lines) == 1 and any(d[0] == "llama.cpp" for d in cr.differences)

    # the same side variant as a cluster worker: rpc-worker takes any image name and names its container after it
    from toolbox.run import rpc

    client = docker_client()
    net = client.networks.create(f"strix-side-rpc-{os.getpid()}", driver="bridge", labels={"org.strix-toolbox.test": "side"})
    try:
        w = rpc.start_worker(bench_settings, name, port=50052, network=net.name, threads=1)
        assert w["image"] == r.tag and w["binary"] == "ggml-rpc-server" and w["devices"][0].startswith("CPU")
        assert w["name"] == f"strix-rpc-cpu-{tree[:12]}-50052"
    finally:
        for c in find_containers(client, network=net.name):
            c.remove(force=True)
        net.remove()
