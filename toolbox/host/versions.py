"""Doctor checks of versions: kernel, linux-firmware and the MES firmware, the ROCm image against the kernel."""

from __future__ import annotations

import re

from toolbox.host import facts as host
from toolbox.host.verdicts import SRC, Check, has_strix_halo

ROCM_VERSION_LABEL = "org.strix-toolbox.rocm-version"


# --- versions -----------------------------------------------------------------------


def version_checks(snap: dict) -> list[Check]:
    """Kernel, linux-firmware package and the MES firmware amdgpu loaded, against known-good / bad."""
    release = snap["kernel"]["release"]
    kver, oem = host.kernel_version(release), host.ubuntu_oem_abi(release)
    checks: list[Check] = []
    if kver is None:
        checks.append(Check("kernel", "INFO", "kernel release not readable"))
    elif oem is not None and kver[:2] == (6, 14) and oem < 1014:
        checks.append(
            Check(
                "kernel",
                "FAIL",
                f"{release}: Ubuntu OEM kernel without the LR compute fix",
                "install linux-oem-24.04c >= 6.14.0-1018 or a 6.18.4+ kernel",
                SRC["rocm5499"],
            )
        )
    elif oem is not None and kver[:2] == (6, 14) and oem < 1018:
        checks.append(
            Check(
                "kernel",
                "WARN",
                f"{release}: AMD supports it only with ROCm 7.2.0",
                "upgrade to Ubuntu OEM 6.14.0-1018+ (or a 6.18.4+ kernel)",
                SRC["amd"],
            )
        )
    elif oem is None and kver < (6, 18, 4):
        checks.append(
            Check(
                "kernel",
                "WARN",
                f"{release}: older than 6.18.4, which carries the KFD fixes for Strix Halo",
                "upgrade to 6.18.4 or newer (kyuz0's stable set: Fedora 43 6.18.9-200 + linux-firmware 20260110)",
                f"{SRC['amd']}; {SRC['kyuz0']}",
            )
        )
    else:
        checks.append(Check("kernel", "OK", f"{release} (6.18.4+ KFD fixes)", source=SRC["amd"]))

    fw = snap["firmware"]
    date = fw["linux_firmware_date"]
    if date == "20251125":
        checks.append(
            Check(
                "linux-firmware",
                "FAIL",
                "20251125 ships MES 0x83: GPU hangs, memory access faults",
                "downgrade to 20251111 or upgrade to 20260110+",
                f"{SRC['kyuz0_fw']}; {SRC['rocm5724']}",
            )
        )
    elif date in ("20251111", "20260110"):
        checks.append(Check("linux-firmware", "OK", f"{date} (known good)", source=SRC["kyuz0"]))
    elif date:
        checks.append(Check("linux-firmware", "OK", f"{date} (not a known-bad release)", source=SRC["kyuz0_fw"]))
    else:
        checks.append(Check("linux-firmware", "INFO", "package version not found (dpkg, pacman, rpm)"))
    if "amdgpu-dkms-firmware" in fw["packages"]:
        checks.append(
            Check(
                "amdgpu-dkms-firmware",
                "WARN",
                "leftover AMD DKMS firmware package may ship MES 0x83",
                "dpkg -S /lib/firmware/amdgpu/gc_11_5_1_mes1.bin.zst; if it names amdgpu-dkms-firmware, apt autoremove --purge it",
                SRC["rocm5991"],
            )
        )

    mes = fw["mes"]
    if mes is None:
        checks.append(
            Check(
                "mes firmware",
                "INFO",
                "not readable (debugfs amdgpu_firmware_info needs root)",
                "sudo grep MES /sys/kernel/debug/dri/*/amdgpu_firmware_info",
                SRC["rocm5724"],
            )
        )
    elif int(mes, 16) == 0x83:
        checks.append(
            Check(
                "mes firmware",
                "FAIL",
                "MES 0x83 loaded: GPU hang / 'Memory access fault by GPU node-1'",
                "install linux-firmware with MES 0x80 or newer (not 20251125); purge amdgpu-dkms-firmware",
                f"{SRC['rocm5724']}; {SRC['rocm5991']}",
            )
        )
    else:
        checks.append(Check("mes firmware", "OK", f"MES {mes}", source=SRC["rocm5724"]))
    return checks


def rocm_version(text: str | None) -> tuple[int, ...] | None:
    m = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", text or "")
    return (int(m[1]), int(m[2]), int(m[3] or 0)) if m else None


def rocm_image_check(snap: dict, image_labels: dict | None) -> Check:
    """ROCm userspace in the built image against the host's kernel driver (AMD's compatibility table)."""
    if not image_labels:
        return Check("rocm image vs kernel", "INFO", "no rocm image built", "invoke build rocm")
    text = image_labels.get(ROCM_VERSION_LABEL)
    r = rocm_version(text)
    if r is None:
        return Check("rocm image vs kernel", "WARN", f"rocm image has no {ROCM_VERSION_LABEL} label", "rebuild it with `invoke build rocm`")
    release = snap["kernel"]["release"]
    kver, oem = host.kernel_version(release), host.ubuntu_oem_abi(release)
    if not has_strix_halo(snap):
        return Check("rocm image vs kernel", "INFO", f"rocm image has ROCm {text}; running it needs a Strix Halo")
    new_kernel = (oem is not None and oem >= 1018) or (oem is None and kver is not None and kver >= (6, 18, 4))
    src = f"{SRC['amd']}; {SRC['therock2991']}"
    pair = f"ROCm {text} with kernel {release}"
    if r[0] < 7 or r[:2] in {(7, 0), (7, 1), (7, 9), (7, 10)}:
        if new_kernel:
            return Check(
                "rocm image vs kernel",
                "FAIL",
                f"{pair}: incompatible (6.18.4+ KFD change; wrong gfx1151 VGPR count)",
                "pin ROCm 7.2.1+ (or 7.11+) in containers/pins.toml and rebuild",
                src,
            )
        return Check(
            "rocm image vs kernel",
            "WARN",
            f"{pair}: this ROCm has the gfx1151 VGPR/CWSR crash bug",
            "pin ROCm 7.2.1+ and move to kernel 6.18.4+",
            src,
        )
    if r[:3] == (7, 2, 0):
        if oem is not None and oem < 1018:
            return Check("rocm image vs kernel", "OK", f"{pair}: supported (AMD table)", source=SRC["amd"])
        if oem is None and (kver is None or kver < (6, 18, 4)):
            return Check(
                "rocm image vs kernel",
                "FAIL",
                f"{pair}: not supported (AMD table)",
                "upgrade the kernel to 6.18.4+ or pin ROCm 7.2.1+",
                SRC["amd"],
            )
        return Check("rocm image vs kernel", "OK", f"{pair}: supported (AMD table)", source=SRC["amd"])
    if not new_kernel:
        return Check(
            "rocm image vs kernel",
            "WARN",
            f"{pair}: AMD lists this kernel as not validated",
            "upgrade to kernel 6.18.4+ (or Ubuntu OEM 6.14.0-1018+)",
            SRC["amd"],
        )
    return Check("rocm image vs kernel", "OK", f"{pair}: supported (AMD table; 7.2.1+ carries the gfx1151 fix)", source=src)
