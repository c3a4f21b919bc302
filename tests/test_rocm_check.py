"""The ROCm build checked without an AMD GPU: `invoke build rocm-debian --offline --check`.

Debian's ROCm packages (experimental) on the offline Debian base: configure llama.cpp's HIP backend
for gfx1151 with the pinned flags (CMake must use every one) and compile the pinned representative
HIP units (check_targets). The first test downloads the toolchain (about 1.1 GB, mostly rocBLAS and
rocSOLVER) once; the second reuses that cached layer and only re-runs the configure. The assertions
read the check's own output, which the Dockerfile's check-report stage exports on every build.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from toolbox.build.images import build
from toolbox.build.pins import load_pins
from toolbox.errors import ToolboxError
from toolbox.settings import load_settings

pytestmark = pytest.mark.container

BACKEND = "rocm-debian"


def test_rocm_debian_check_configures_for_gfx1151_and_compiles_the_units():
    settings = load_settings(offline=True)
    pins = load_pins(settings.pins_file).backend(BACKEND)
    result = build(settings, BACKEND, offline=True, check=True, echo=lambda *a: None)
    # the check step's own output, exported by the Dockerfile's check-report stage: present whether
    # BuildKit ran the step now or cached it from an earlier identical run
    log = result.check_report.read_text(errors="replace")
    assert "The HIP compiler identification is Clang" in log
    assert "HIP and hipBLAS found" in log
    assert "Manually-specified variables were not used" not in log
    assert re.search(rf"GPU_TARGETS: {pins.gpu_target}\b", log), "the configure did not take the pinned GPU target"
    for unit in pins.check_targets:
        assert re.search(rf"compiled {re.escape(unit)} for: --offload-arch={pins.gpu_target}\b", log), (
            f"{unit} was not compiled for {pins.gpu_target}"
        )
    assert "check passed" in log


def test_rocm_debian_check_fails_on_a_flag_cmake_does_not_use(tmp_path):
    """GGML_HIP_UMA was removed from llama.cpp: CMake would only warn (or stay silent), the check must fail."""
    settings = load_settings(offline=True)
    text = settings.pins_file.read_text()
    flags = '"-DGGML_HIP=ON", "-DGPU_TARGETS=gfx1151"'
    section = text.index("[backends.rocm-debian]")
    assert flags in text[section:], "pins changed: update this test's flag anchor"
    bad = tmp_path / "pins.toml"
    bad.write_text(text[:section] + text[section:].replace(flags, flags + ', "-DGGML_HIP_UMA=ON"', 1))
    with pytest.raises(ToolboxError, match="CMake ignores a pinned flag") as err:
        build(load_settings(offline=True, pins_file=bad), BACKEND, offline=True, check=True, echo=lambda *a: None)
    log = re.search(r"full log: (\S+)", err.value.fix or "")
    assert log, err.value
    text = Path(log.group(1)).read_text(errors="replace")
    assert re.search(r"CMake did not use some of the pinned flags.*GGML_HIP_UMA", text), "the check failed for another reason"
