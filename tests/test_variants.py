"""Image variants as data: named variants per backend in containers/pins.toml, built with
`invoke build BACKEND --variant NAME`, listed by `invoke images`, and a matrix dimension (`images`)
whose rows carry the versions of the image that measured them."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from toolbox.build.pins import build_args, load_pins
from toolbox.errors import ToolboxError
from toolbox.run import bench as bench_mod
from toolbox.run.bench import resolve_backends
from toolbox.run.matrix import expand, load_matrix
from toolbox.store import runs as results

REPO = Path(__file__).resolve().parent.parent
PINS = load_pins(REPO / "containers" / "pins.toml")
MATRICES = Path(__file__).resolve().parent / "data" / "matrices"


def test_a_variant_is_its_backend_with_its_own_pins():
    sid, trixie = PINS.backend("vulkan:mesa-sid"), PINS.backend("vulkan")
    assert sid.variant == "mesa-sid" and trixie.variant is None
    assert sid.runtime_packages["mesa-vulkan-drivers"] != trixie.runtime_packages["mesa-vulkan-drivers"]
    assert sid.cmake_flags == trixie.cmake_flags and sid.build_packages == trixie.build_packages  # the same tools
    assert sid.runtime_packages["libgomp1"] == trixie.runtime_packages["libgomp1"]  # merged, not replaced
    args = build_args(PINS, "vulkan:mesa-sid", "base")
    assert args["BACKEND"] == "vulkan" and args["RUNTIME_APT_SUITES"] == "sid"
    assert "mesa-vulkan-drivers=26.2.6-1" in args["RUNTIME_PACKAGES"]
    assert "RUNTIME_APT_SUITES" not in build_args(PINS, "vulkan", "base")
    assert PINS.runs_on("vulkan:mesa-sid") == "vulkan" and PINS.runs_on("rocm-debian") == "rocm"
    assert {"vulkan", "vulkan:mesa-sid", "rocm", "rocm-debian", "cpu"} <= set(PINS.image_names())


def test_every_package_from_another_suite_is_pinned_to_a_version():
    for name in PINS.image_names():
        b = PINS.backend(name)
        if b.runtime_apt_suites or b.apt_extra_suites:
            unpinned = [p for p, v in {**b.runtime_packages, **b.build_packages}.items() if not v]
            assert not unpinned, f"{name}: {unpinned} would float with the extra suite"


def test_unknown_variants_are_one_line_errors():
    with pytest.raises(ToolboxError, match="has no variant 'nope'.*vulkan:mesa-sid"):
        PINS.backend("vulkan:nope")
    p = subprocess.run(["invoke", "build", "vulkan", "--variant", "nope"], cwd=REPO, capture_output=True, text=True)
    assert p.returncode == 2 and p.stderr.strip().count("\n") == 0 and "--variant" in p.stderr


def test_the_variants_preset_makes_one_group_per_image(settings):
    spec, src, text = load_matrix("variants")
    names = resolve_backends(None, spec, settings, None)
    assert names == ["vulkan", "vulkan:mesa-sid"]
    plan = expand(spec, src, text, names, ["m.gguf"])
    assert {g.backend for g in plan.groups} == set(names)
    assert len(plan.cases) == 2 * len(expand(spec, src, text, ["vulkan"], ["m.gguf"]).cases)
    with pytest.raises(ToolboxError, match="unknown backend or image 'vulkan:nope'"):
        resolve_backends(None, spec | {"images": ["vulkan:nope"]}, settings, None)


def test_invoke_images_lists_the_variants():
    p = subprocess.run(["invoke", "images"], cwd=REPO, capture_output=True, text=True, env=os.environ | {"COLUMNS": "250"})
    assert p.returncode == 0, p.stderr
    for name in ("vulkan:mesa-sid", "rocm-debian", "26.2.6-1", "25.0.7-2+deb13u1", "7.2.4", "7.2.1"):
        assert name in p.stdout


@pytest.fixture(scope="session")
def mesa_sid_image(vulkan_image) -> str:
    from toolbox.build.images import build
    from toolbox.settings import load_settings

    return build(load_settings(offline=True), "vulkan:mesa-sid", offline=True).tag


@pytest.mark.container
def test_variants_matrix_on_lavapipe_gives_rows_whose_mesa_versions_differ(vulkan_image, mesa_sid_image, bench_settings, tiny_model):
    r = bench_mod.bench(bench_settings, matrix=str(MATRICES / "variants-small.toml"), allow_cpu_vulkan=True)
    assert r.status == "complete" and r.failed == 0
    meta, rows = results.load_run(bench_settings.results_dir, r.run_id)
    assert {r["backend"] for r in rows} == {"vulkan", "vulkan:mesa-sid"}
    mesa = {r["backend"]: r["versions"]["mesa"] for r in rows}
    assert mesa == {"vulkan": "25.0.7-2+deb13u1", "vulkan:mesa-sid": "26.2.6-1"}
    assert all(r["device_ok"] is True and r["backends"] == "Vulkan" for r in rows), "both must run on lavapipe"
    assert meta["images"]["vulkan:mesa-sid"]["tag"] == mesa_sid_image
    assert meta["images"]["vulkan:mesa-sid"]["labels"]["org.strix-toolbox.variant"] == "mesa-sid"


def test_descriptions_and_other_variants_do_not_change_an_image_tag(settings):
    from toolbox.build.images import inputs_hash

    plain = PINS.backends["vulkan"].model_copy(update={"description": "", "variants": {}})
    other = PINS.model_copy(update={"backends": PINS.backends | {"vulkan": plain}})
    assert inputs_hash(settings, PINS, "vulkan", "base") == inputs_hash(settings, other, "vulkan", "base")
    assert inputs_hash(settings, PINS, "vulkan", "base") != inputs_hash(settings, PINS, "vulkan:mesa-sid", "base")
