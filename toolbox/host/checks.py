"""The doctor's host checks: pure functions of a host snapshot (toolbox.host.facts.snapshot()).

This module holds the verdict type, the sources, the GPU / device / tuning checks and host_checks();
memory.py judges carve-out, GTT and TTM sizes and kernel parameters, versions.py kernel, firmware and ROCm.

Every verdict is a `Check` (OK / WARN / FAIL / INFO) with the fix and the public source its
threshold comes from (docs/doctor.md). They run the same on this machine and on a recorded Strix
Halo tree (tests/data/hosts/).
"""

from __future__ import annotations

import os
from pathlib import Path

from toolbox.host import facts as host
from toolbox.host.memory import kernel_param_checks, memory_checks
from toolbox.host.verdicts import SRC, Check, has_strix_halo
from toolbox.host.versions import rocm_image_check, version_checks

# Where each threshold comes from: "short label <url>". The table shows the label, JSON and docs the URL.
# --- GPU and devices ----------------------------------------------------------------


def gpu_checks(snap: dict, uid: int | None = None, user_gids: set[int] | None = None) -> list[Check]:
    """Strix Halo present and bound to amdgpu, gfx1151 in KFD, device files, group membership."""
    gpu, devices = snap["gpu"], snap["gpu"]["devices"]
    if not devices["amd_gpu"]:
        return [
            Check(
                "amd gpu",
                "INFO",
                "no AMD GPU on this machine: the cpu backend and vulkan on lavapipe (Mesa's software "
                "driver) still work here; rocm and the GPU / memory checks need a Strix Halo",
            )
        ]
    checks: list[Check] = []
    if not gpu["strix_halo_pci"]:
        ids = ", ".join(g["pci_id"] for g in gpu["pci"]) or "none on PCI"
        checks.append(
            Check(
                "amd gpu",
                "WARN",
                f"AMD GPU(s) {ids}, but no Strix Halo (1002:1586)",
                "the thresholds here are for gfx1151; other GPUs are not covered",
                SRC["doc"],
            )
        )
    elif gpu["strix_halo_driver"] != "amdgpu":
        checks.append(
            Check(
                "amd gpu",
                "FAIL",
                f"Strix Halo 1002:1586 present, driver {gpu['strix_halo_driver']!r}",
                "load amdgpu (no nomodeset on the kernel command line; check `dmesg | grep amdgpu`)",
                SRC["hal0"],
            )
        )
    else:
        card = gpu["card"] or {}
        vbios = f", VBIOS {card['vbios_version']}" if card.get("vbios_version") else ""
        checks.append(Check("amd gpu", "OK", f"Strix Halo 1002:1586 bound to amdgpu{vbios}"))

    nodes = [n for n in gpu["kfd_nodes"] if n["gfx_target"] == "gfx1151"]
    if nodes:
        n = nodes[0]
        simd = n["simd_count"]
        model = {80: "Radeon 8060S (40 CU)", 64: "Radeon 8050S (32 CU, inferred)"}.get(simd, f"{simd} SIMDs")
        checks.append(Check("gfx target", "OK", f"KFD node {n['node']}: gfx1151 (110501), {model}", source=SRC["kfd"]))
    else:
        seen = ", ".join(str(n["gfx_target"]) for n in gpu["kfd_nodes"]) or "no KFD GPU node"
        checks.append(
            Check(
                "gfx target",
                "FAIL",
                f"no KFD node with gfx_target_version 110501 ({seen})",
                "use a kernel with amdgpu KFD enabled (6.18.4+ recommended); check `dmesg | grep kfd`",
                SRC["amd"],
            )
        )

    missing = [p for p, ok in (("/dev/kfd", devices["kfd"]), ("/dev/dri/renderD*", devices["render_nodes"])) if not ok]
    if missing:
        checks.append(
            Check(
                "device files",
                "FAIL",
                "missing: " + ", ".join(missing),
                "load amdgpu with KFD; ROCm containers need /dev/kfd and /dev/dri",
                SRC["amd"],
            )
        )
    else:
        checks.append(Check("device files", "OK", "/dev/kfd, " + ", ".join(devices["render_nodes"])))
    checks.append(device_group_check(snap, uid, user_gids))

    if os.environ.get("HSA_OVERRIDE_GFX_VERSION"):
        checks.append(
            Check(
                "HSA_OVERRIDE_GFX_VERSION",
                "WARN",
                f"set to {os.environ['HSA_OVERRIDE_GFX_VERSION']}: gfx1151 is supported natively",
                "unset HSA_OVERRIDE_GFX_VERSION",
                SRC["rocm5824"],
            )
        )
    return checks


def device_group_check(snap: dict, uid: int | None = None, user_gids: set[int] | None = None) -> Check:
    """Is the user in the groups that own the GPU device files? Also lists the GIDs containers need."""
    gids = snap["device_gids"]
    if not gids:
        return Check("device groups", "INFO", "no GPU device files")
    uid = os.getuid() if uid is None else uid
    user_gids = (set(os.getgroups()) | {os.getegid()}) if user_gids is None else user_gids
    names = host.group_names(Path(snap["root"]))
    listing = ", ".join(f"{p}={g}" + (f" ({names[g]})" if g in names else "") for p, g in gids.items())
    lacking = sorted({g for g in gids.values() if g not in user_gids})
    if uid == 0 or not lacking:
        return Check("device groups", "OK", f"GIDs for containers (group_add): {listing}")
    lacking_names = ",".join(names.get(g, str(g)) for g in lacking)
    return Check(
        "device groups",
        "FAIL",
        f"not in group(s) {lacking_names}; GIDs: {listing}",
        f"sudo usermod -aG {lacking_names} $USER, then log in again",
        SRC["rocm_groups"],
    )


# --- CPU, power, THP ---------------------------------------------------------------------


def tuning_checks(snap: dict) -> list[Check]:
    """Governor, power profile and transparent huge pages: reported, not judged (no source measured them)."""
    cpu, power = snap["cpu"], snap["power"]
    governor = cpu["governor"] or "not readable"
    if cpu["energy_performance_preference"]:
        governor += f" (EPP {cpu['energy_performance_preference']}, {cpu['scaling_driver']})"
    profiles = ", ".join(f"{k}={v}" for k, v in power.items() if v) or "none found"
    return [
        Check("cpu governor", "INFO", governor),
        Check(
            "power profile",
            "INFO",
            profiles,
            ""
            if power.get("tuned") == "accelerator-performance"
            else "benchmark hosts use `tuned-adm profile accelerator-performance` (record it either way)",
            f"{SRC['lhl']}; {SRC['kyuz0']}",
        ),
        platform_profile_check(snap),
        Check("transparent hugepages", "INFO", snap["transparent_hugepages"] or "not readable"),
    ]


def platform_profile_check(snap: dict) -> Check:
    """The ACPI platform profile caps package power: anything but `performance` is a WARN for a benchmark host."""
    profile = snap["power"].get("platform_profile")
    epp = snap["cpu"].get("energy_performance_preference")
    detail = f"{profile or 'not readable'}" + (f" (CPU EPP {epp})" if epp else "")
    if profile is None:
        return Check("platform profile", "INFO", detail)
    if profile == "performance":
        return Check("platform profile", "OK", detail)
    return Check(
        "platform profile",
        "WARN",
        detail + ": package power and clocks are held lower than with `performance`; results and tokens/J differ",
        "`powerprofilesctl set performance` (or `echo performance | sudo tee /sys/firmware/acpi/platform_profile`; "
        "TLP: PLATFORM_PROFILE_ON_AC=performance), then bench; telemetry records the profile beside every row",
        f"{SRC['noamsto19']}; {SRC['noamsto132']}; {SRC['doc']}",
    )


# --- entry points ---------------------------------------------------------------------------


def host_checks(snap: dict, uid: int | None = None, user_gids: set[int] | None = None, image_labels: dict | None = None) -> list[Check]:
    """Every check that depends only on the host snapshot (plus the user's groups and the image labels)."""
    checks = gpu_checks(snap, uid, user_gids)
    if has_strix_halo(snap):
        checks += memory_checks(snap) + kernel_param_checks(snap) + version_checks(snap)
    else:
        release = snap["kernel"]["release"]
        checks.append(Check("kernel", "INFO", f"{release or '?'} (the Strix Halo kernel and firmware checks do not apply)"))
        checks.append(Check("iommu", "INFO", snap["iommu"]["mode"]))
    checks.append(rocm_image_check(snap, image_labels))
    return checks + tuning_checks(snap)
