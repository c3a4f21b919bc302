"""Devices: what a container needs to reach the GPU for a backend, and whether a result ran where it was meant to.

ROCm needs /dev/kfd and the render nodes, Vulkan the render nodes, each with the host's numeric GIDs
of the device files (group names inside an image often differ) and never `privileged`. A missing
device is a one-line error before any container starts. Without a GPU, Vulkan can run on Mesa's
software driver (lavapipe) when asked. llama.cpp's backend string proves nothing about where a
result was computed (Vulkan with no usable device silently computes on the CPU): row_device_ok()
and log_device_ok() check the device llama.cpp reports against the one the run was meant for.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from toolbox.errors import ToolboxError
from toolbox.llamacpp import BACKENDS


@dataclass
class DeviceSetup:
    """What a container needs to reach the GPU: device nodes, their numeric groups, security options."""

    devices: list[str] = field(default_factory=list)
    group_add: list[int] = field(default_factory=list)
    security_opt: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    target: str = "cpu"  # what the results should show they ran on: cpu, lavapipe, gpu
    backend: str = "cpu"  # the backend whose devices these are (an image variant or side variant runs as its backend)


def device_setup(
    backend: str, host_root: Path = Path("/"), allow_cpu_vulkan: bool = False, found: dict[str, int] | None = None
) -> DeviceSetup:
    """Devices for a backend, or a one-line error naming the fix before any container starts.

    found: another machine's device nodes and their GIDs ({"/dev/kfd": 992, ...}, read there by a probe
    container) instead of this machine's.
    """
    if found is not None:
        dri = sorted(n for n in found if n.startswith("/dev/dri/renderD"))
        kfd, has_kfd = Path("/dev/kfd"), "/dev/kfd" in found
    else:
        dri_dir = host_root / "dev" / "dri"
        dri = sorted(str(p) for p in dri_dir.glob("renderD*")) if dri_dir.is_dir() else []
        kfd = host_root / "dev" / "kfd"
        has_kfd = kfd.exists()
    gids = (lambda nodes: sorted({found[n] for n in nodes if n in found})) if found is not None else _gids
    if backend == "cpu":
        return DeviceSetup(target="cpu")
    if backend == "rocm":
        if not has_kfd or not dri:
            raise ToolboxError(
                "no AMD GPU for the rocm backend (/dev/kfd or /dev/dri/renderD* missing)",
                "check amdgpu is loaded (invoke doctor), or use --backend vulkan / cpu",
            )
        nodes = [str(kfd), *dri]
        return DeviceSetup(nodes, gids(nodes), ["seccomp=unconfined"], target="gpu", backend="rocm")
    if backend == "vulkan":
        if dri:
            return DeviceSetup(dri, gids(dri), target="gpu", backend="vulkan")
        if allow_cpu_vulkan:
            # ggml ignores CPU-type Vulkan devices (lavapipe) unless they are named explicitly.
            return DeviceSetup(env={"GGML_VK_VISIBLE_DEVICES": "0"}, target="lavapipe", backend="vulkan")
        raise ToolboxError(
            "no GPU render node for the vulkan backend (/dev/dri/renderD* missing)",
            "add --allow-cpu-vulkan to run on Mesa's software driver (lavapipe), or use --backend cpu",
        )
    raise ToolboxError(f"unknown backend {backend!r}", f"choose {', '.join(BACKENDS)}")


def _gids(nodes: list[str]) -> list[int]:
    """The host's numeric GIDs of the device files: group names inside the image often differ."""
    return sorted({os.stat(n).st_gid for n in nodes if os.path.exists(n)})


def row_device_ok(row: dict, target: str) -> bool | None:
    """Did this llama-bench row run where it was meant to? (gpu_info / devices against the target)."""
    devices = row.get("devices") or ""
    gpu = (row.get("gpu_info") or "") + ("" if devices in ("auto", "none") else " " + devices)
    backends = row.get("backends") or ""
    if target == "cpu":  # with RPC workers a cpu build says "RPC" (llama-bench leaves CPU out when another backend is used)
        return "CPU" in backends or backends in ("", "RPC")
    if target == "lavapipe":
        return "Vulkan" in backends and "llvmpipe" in gpu.lower()
    if target == "gpu":
        return not ("llvmpipe" in gpu.lower() or not gpu.strip())
    return None


# "llama_prepare_model_devices: using device Vulkan0 (llvmpipe (LLVM 19.1.7, 256 bits)) (unknown id) - 23074 MiB free"
# (an info line: tools run with -v print it). No such line: the model is on the CPU.
_DEVICE_RE = re.compile(r"using device (\S+) \((.*)\) \([^()]*\) - \d+ MiB free", re.M)


def devices_in_log(log: str) -> list[str]:
    """Devices llama.cpp says it put the model on ('Vulkan0 (llvmpipe (LLVM 19.1.7, 256 bits))'); [] = CPU only."""
    return list(dict.fromkeys(f"{name} ({desc.strip()})" for name, desc in _DEVICE_RE.findall(log)))


def log_device_ok(backend: str, target: str, devices: list[str]) -> bool:
    """Did a tool run where it was meant to, by the devices its log names? (Vulkan without a usable device uses the CPU.)"""
    text = " ".join(devices).lower()
    if backend == "cpu":
        return True
    if target == "lavapipe":
        return "llvmpipe" in text
    if backend == "rocm":
        return "rocm" in text
    return bool(devices) and "llvmpipe" not in text
