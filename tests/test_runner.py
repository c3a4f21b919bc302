"""Device setup and the "did this row run where it was meant to?" check, on device names posted from
real Strix Halo machines (docs/data/strix-halo-host/llama-cpp-device-lines.txt) and a fake /dev
tree (this machine has no /dev/kfd: the fake is named as such)."""

from __future__ import annotations

import os

import pytest

from toolbox.engine.devices import device_setup
from toolbox.engine.devices import row_device_ok as device_ok
from toolbox.errors import ToolboxError

# gpu_info strings as llama-bench reports them on Strix Halo (recorded: kyuz0, lhl, llama.cpp#20142)
STRIX_HALO_GPU_INFO = [
    "AMD Radeon 8060S Graphics (RADV STRIX_HALO)",
    "Radeon 8060S Graphics (RADV GFX1151)",
    "AMD Radeon 8060S Graphics (AMD open-source driver)",
    "Radeon 8060S Graphics",
    "AMD Radeon Graphics",
]


@pytest.mark.parametrize("gpu", STRIX_HALO_GPU_INFO)
def test_rows_from_the_radeon_8060s_count_as_on_the_gpu(gpu):
    assert device_ok({"backends": "Vulkan", "gpu_info": gpu, "devices": "auto"}, "gpu") is True
    assert device_ok({"backends": "ROCm", "gpu_info": gpu, "devices": "ROCm0"}, "gpu") is True


def test_a_vulkan_row_that_fell_back_to_the_cpu_or_lavapipe_is_flagged():
    # no usable device: llama-bench still says "Vulkan", gpu_info is empty
    assert device_ok({"backends": "Vulkan", "gpu_info": "", "devices": "auto"}, "gpu") is False
    assert device_ok({"backends": "Vulkan", "gpu_info": "llvmpipe (LLVM 19.1.7, 256 bits)", "devices": "auto"}, "gpu") is False
    # ... but lavapipe is right when lavapipe was asked for
    assert device_ok({"backends": "Vulkan", "gpu_info": "llvmpipe (LLVM 19.1.7, 256 bits)", "devices": "auto"}, "lavapipe") is True
    assert device_ok({"backends": "Vulkan", "gpu_info": "", "devices": "auto"}, "lavapipe") is False


def fake_dev(tmp_path, *nodes):
    """A FAKE /dev tree: empty files standing in for device nodes this machine does not have."""
    for n in nodes:
        p = tmp_path / "dev" / n
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("")
    return tmp_path


def test_rocm_needs_kfd_and_a_render_node_and_gets_their_numeric_groups(tmp_path):
    root = fake_dev(tmp_path, "kfd", "dri/renderD128")
    os.chown(root / "dev" / "kfd", -1, 992) if os.geteuid() == 0 else None
    setup = device_setup("rocm", root)
    assert setup.devices == [str(root / "dev/kfd"), str(root / "dev/dri/renderD128")]
    assert setup.security_opt == ["seccomp=unconfined"] and setup.target == "gpu"
    assert set(setup.group_add) == {os.stat(d).st_gid for d in setup.devices}
    with pytest.raises(ToolboxError, match="no AMD GPU for the rocm backend"):
        device_setup("rocm", fake_dev(tmp_path / "nokfd", "dri/renderD128"))


def test_vulkan_uses_render_nodes_else_needs_permission_for_lavapipe(tmp_path):
    assert device_setup("vulkan", fake_dev(tmp_path, "dri/renderD128")).devices == [str(tmp_path / "dev/dri/renderD128")]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ToolboxError, match="--allow-cpu-vulkan"):
        device_setup("vulkan", empty)
    lava = device_setup("vulkan", empty, allow_cpu_vulkan=True)
    assert lava.devices == [] and lava.env == {"GGML_VK_VISIBLE_DEVICES": "0"} and lava.target == "lavapipe"
    assert device_setup("cpu", empty).devices == []
