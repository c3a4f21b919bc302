"""The doctor's verdict type (Check) and the public sources its thresholds come from (SRC)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

GiB = 1024**3

# Where each threshold comes from: "short label <url>". The table shows the label, JSON and docs the URL.
SRC = {
    "amd": "AMD Strix Halo guide <https://rocm.docs.amd.com/en/latest/how-to/system-optimization/strixhalo.html>",
    "kyuz0": "kyuz0 toolboxes README <https://github.com/kyuz0/amd-strix-halo-toolboxes>",
    "kyuz0_fw": "kyuz0 firmware notes <https://github.com/kyuz0/amd-strix-halo-toolboxes/blob/main/docs/troubleshooting-firmware.md>",
    "rocm5724": "ROCm#5724 <https://github.com/ROCm/ROCm/issues/5724>",
    "rocm5991": "ROCm#5991 <https://github.com/ROCm/ROCm/issues/5991>",
    "rocm5444": "ROCm#5444 <https://github.com/ROCm/ROCm/issues/5444>",
    "rocm5499": "ROCm#5499 <https://github.com/ROCm/ROCm/issues/5499>",
    "rocm5562": "ROCm#5562 <https://github.com/ROCm/ROCm/issues/5562>",
    "rocm5595": "ROCm#5595 <https://github.com/ROCm/ROCm/issues/5595>",
    "rocm5824": "ROCm#5824 <https://github.com/ROCm/ROCm/issues/5824>",
    "therock2991": "TheRock#2991 <https://github.com/ROCm/TheRock/issues/2991>",
    "noamsto42": "nix-amd-ai#42 <https://github.com/noamsto/nix-amd-ai/issues/42>",
    "noamsto132": "nix-amd-ai#132 <https://github.com/noamsto/nix-amd-ai/pull/132>",
    "noamsto19": "nix-amd-ai#19 <https://github.com/noamsto/nix-amd-ai/issues/19>",
    "apellegr": "apellegr ROCm memory limit <https://github.com/apellegr/Strix-Halo-Models/blob/main/docs/ROCM-MEMORY-LIMIT-INVESTIGATION.md>",
    "lhl": "lhl strix-halo-testing <https://github.com/lhl/strix-halo-testing>",
    "geerling": "Jeff Geerling <https://www.jeffgeerling.com/blog/2025/increasing-vram-allocation-on-amd-ai-apus-under-linux>",
    "hanzo345": "hanzo#345 <https://github.com/palazzem/hanzo/pull/345>",
    "kfd": "amd-gfx KFD topology <https://lore.kernel.org/amd-gfx/c5936dfc-216d-48c4-863e-dd2b446cbd34@kernel.org/>",
    "hal0": "strix-halo-host README section 1, hal0 notes <https://github.com/Hal0ai/hal0>",
    "docker_buildkit": "Docker BuildKit docs <https://docs.docker.com/build/buildkit/>",
    "docker_group": "Docker post-install docs <https://docs.docker.com/engine/install/linux-postinstall/>",
    "rocm_groups": "ROCm install prerequisites <https://rocm.docs.amd.com/projects/install-on-linux/en/latest/install/prerequisites.html>",
    "doc": "docs/doctor.md",
}


@dataclass(frozen=True)
class Check:
    """One verdict: status is 'OK', 'WARN', 'FAIL' or 'INFO'; fix and source may be empty."""

    name: str
    status: str
    detail: str
    fix: str = ""
    source: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def gib(n: int | float | None) -> str:
    return "?" if n is None else f"{n / GiB:.1f} GiB"


def has_strix_halo(snap: dict) -> bool:
    gpu = snap["gpu"]
    return gpu["strix_halo_pci"] or any(n["gfx_target"] == "gfx1151" for n in gpu["kfd_nodes"])
