"""`invoke doctor`: is this host ready for llama.cpp on Strix Halo, and what to fix.

Every verdict is a `Check` (OK / WARN / FAIL / INFO) with the fix and the public source the
threshold comes from (see docs/doctor.md and shared/data/strix-halo-host/README.md). Host checks
are pure functions of `toolbox.host.snapshot()`, so they run the same on this machine and on a
recorded Strix Halo tree. Docker and the current user's groups are read live.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

from toolbox import host

GiB = 1024**3
ROCM_VERSION_LABEL = "org.strix-toolbox.rocm-version"
BACKEND_LABEL = "org.strix-toolbox.backend"

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


def _gib(n: int | float | None) -> str:
    return "?" if n is None else f"{n / GiB:.1f} GiB"


def _has_strix_halo(snap: dict) -> bool:
    gpu = snap["gpu"]
    return gpu["strix_halo_pci"] or any(n["gfx_target"] == "gfx1151" for n in gpu["kfd_nodes"])


# --- Docker (live) -------------------------------------------------------------------


def docker_checks(client=None) -> list[Check]:
    """Daemon reachable and usable by this user, engine version, buildx plugin."""
    import docker  # imported here: host checks must work without a Docker SDK import cost

    try:
        client = client or docker.from_env()
        client.ping()
        version = client.version()
    except docker.errors.DockerException as exc:
        denied = "permission denied" in str(exc).lower()
        return [Check(
            "docker daemon", "FAIL",
            "permission denied on the Docker socket" if denied else f"Docker daemon not reachable ({str(exc)[:120]})",
            "sudo usermod -aG docker $USER, then log in again" if denied
            else "install Docker Engine and start it: sudo systemctl enable --now docker",
            SRC["docker_group"])]
    checks = [Check("docker daemon", "OK", f"reachable as uid {os.getuid()}")]
    server = version.get("Version", "?")
    major = int(m[1]) if (m := re.match(r"(\d+)\.", server)) else 0
    if major >= 23:
        checks.append(Check("docker version", "OK", f"Engine {server}"))
    else:
        checks.append(Check("docker version", "WARN",
                            f"Engine {server}: BuildKit is not the default builder before 23.0",
                            "upgrade Docker Engine, or build with DOCKER_BUILDKIT=1 (the toolbox does)",
                            SRC["docker_buildkit"]))
    try:
        out = subprocess.run(["docker", "buildx", "version"], capture_output=True, text=True, timeout=20)
        buildx = out.stdout.strip() if out.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired):
        buildx = None
    if buildx:
        checks.append(Check("docker buildx", "OK", buildx.splitlines()[0]))
    else:
        checks.append(Check("docker buildx", "WARN", "the buildx plugin is missing",
                            "install docker-buildx-plugin (Docker's repo) or docker-buildx (Debian); "
                            "`DOCKER_BUILDKIT=1 docker build` works meanwhile", SRC["docker_buildkit"]))
    return checks


def newest_image_labels(client, backend: str = "rocm") -> dict | None:
    """Labels of the newest local image labelled org.strix-toolbox.backend=<backend>, or None."""
    images = client.images.list(filters={"label": f"{BACKEND_LABEL}={backend}"})
    if not images:
        return None
    newest = max(images, key=lambda im: im.attrs.get("Created", ""))
    return dict(newest.labels or {})


# --- GPU and devices ----------------------------------------------------------------


def gpu_checks(snap: dict, uid: int | None = None, user_gids: set[int] | None = None) -> list[Check]:
    """Strix Halo present and bound to amdgpu, gfx1151 in KFD, device files, group membership."""
    gpu, devices = snap["gpu"], snap["gpu"]["devices"]
    if not devices["amd_gpu"]:
        return [Check("amd gpu", "INFO",
                      "no AMD GPU on this machine: the cpu backend and vulkan on lavapipe (Mesa's software "
                      "driver) still work here; rocm and the GPU / memory checks need a Strix Halo")]
    checks: list[Check] = []
    if not gpu["strix_halo_pci"]:
        ids = ", ".join(g["pci_id"] for g in gpu["pci"]) or "none on PCI"
        checks.append(Check("amd gpu", "WARN", f"AMD GPU(s) {ids}, but no Strix Halo (1002:1586)",
                            "the thresholds here are for gfx1151; other GPUs are not covered", SRC["doc"]))
    elif gpu["strix_halo_driver"] != "amdgpu":
        checks.append(Check("amd gpu", "FAIL", f"Strix Halo 1002:1586 present, driver {gpu['strix_halo_driver']!r}",
                            "load amdgpu (no nomodeset on the kernel command line; check `dmesg | grep amdgpu`)",
                            SRC["hal0"]))
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
        checks.append(Check("gfx target", "FAIL", f"no KFD node with gfx_target_version 110501 ({seen})",
                            "use a kernel with amdgpu KFD enabled (6.18.4+ recommended); check `dmesg | grep kfd`",
                            SRC["amd"]))

    missing = [p for p, ok in (("/dev/kfd", devices["kfd"]), ("/dev/dri/renderD*", devices["render_nodes"])) if not ok]
    if missing:
        checks.append(Check("device files", "FAIL", "missing: " + ", ".join(missing),
                            "load amdgpu with KFD; ROCm containers need /dev/kfd and /dev/dri", SRC["amd"]))
    else:
        checks.append(Check("device files", "OK", "/dev/kfd, " + ", ".join(devices["render_nodes"])))
    checks.append(device_group_check(snap, uid, user_gids))

    if os.environ.get("HSA_OVERRIDE_GFX_VERSION"):
        checks.append(Check("HSA_OVERRIDE_GFX_VERSION", "WARN",
                            f"set to {os.environ['HSA_OVERRIDE_GFX_VERSION']}: gfx1151 is supported natively",
                            "unset HSA_OVERRIDE_GFX_VERSION", SRC["rocm5824"]))
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
    return Check("device groups", "FAIL", f"not in group(s) {lacking_names}; GIDs: {listing}",
                 f"sudo usermod -aG {lacking_names} $USER, then log in again", SRC["rocm_groups"])


# --- memory and kernel parameters ------------------------------------------------------


def memory_checks(snap: dict) -> list[Check]:
    """Carve-out, GTT and TTM sizes against RAM, and how much memory a model can get."""
    card = snap["gpu"]["card"] or {}
    ram = snap["memory"]["mem_total_bytes"]
    vram, gtt = card.get("mem_info_vram_total"), card.get("mem_info_gtt_total")
    params = snap["kernel"]["params"]
    kver = host.kernel_version(snap["kernel"]["release"])
    pages = snap["ttm"]["pages_limit"]
    if pages is None and params.get("ttm.pages_limit", "").isdigit():
        pages = int(params["ttm.pages_limit"])
    checks: list[Check] = []

    if vram is None:
        checks.append(Check("vram carve-out", "INFO", "mem_info_vram_total not readable"))
    elif vram >= 32 * GiB and kver and kver < (6, 16, 0):
        checks.append(Check("vram carve-out", "FAIL",
                            f"{_gib(vram)} carve-out on kernel {snap['kernel']['release']}: ROCm sees only ~15.5 GB",
                            "set the BIOS GPU memory to its minimum (0.5-4 GB) and raise ttm.pages_limit; "
                            "or upgrade to kernel 6.16.9+", f"{SRC['rocm5444']}; {SRC['amd']}"))
    elif vram >= 32 * GiB:
        checks.append(Check("vram carve-out", "WARN",
                            f"{_gib(vram)} carve-out: that RAM is lost to the OS, and HIP has been seen with only 15.24 GiB",
                            "set the BIOS GPU memory small (AMD: e.g. 0.5 GB) and raise ttm.pages_limit instead",
                            f"{SRC['amd']}; {SRC['apellegr']}"))
    elif vram <= 8 * GiB:
        checks.append(Check("vram carve-out", "OK", f"{_gib(vram)} (small, as AMD recommends)", source=SRC["amd"]))
    else:
        checks.append(Check("vram carve-out", "INFO", f"{_gib(vram)}: AMD recommends a small carve-out plus a raised GTT",
                            source=SRC["amd"]))

    if gtt is not None and ram:
        ratio = gtt / ram
        configured = "ttm.pages_limit" in params or "amdgpu.gttsize" in params
        if gtt > ram:
            checks.append(Check("gtt size", "WARN",
                                f"GTT {_gib(gtt)} exceeds the {_gib(ram)} RAM the OS manages: large models get OOM-killed",
                                f"set ttm.pages_limit to at most {(ram - 4 * GiB) // host.PAGE_SIZE} (RAM minus 4 GiB for the OS) "
                                "and shrink the BIOS carve-out", f"{SRC['apellegr']}; {SRC['kyuz0']}"))
        elif 0.45 <= ratio <= 0.55 and not configured:
            checks.append(Check("gtt size", "WARN",
                                f"GTT {_gib(gtt)} = default, about half of the {_gib(ram)} RAM",
                                f"add ttm.pages_limit={(ram - 4 * GiB) // host.PAGE_SIZE} to the kernel command line "
                                "(RAM minus 4 GiB for the OS), or `amd-ttm --set N` (amd-debug-tools)",
                                f"{SRC['amd']}; {SRC['kyuz0']}"))
        else:
            checks.append(Check("gtt size", "OK", f"GTT {_gib(gtt)} of {_gib(ram)} RAM ({ratio:.0%})"))

    if pages is not None and ram:
        limit = pages * host.PAGE_SIZE
        if limit > ram:
            checks.append(Check("ttm pages_limit", "WARN",
                                f"ttm.pages_limit={pages} ({_gib(limit)}) is more than the {_gib(ram)} RAM",
                                f"use at most {(ram - 4 * GiB) // host.PAGE_SIZE} pages (RAM minus 4 GiB)",
                                f"{SRC['kyuz0']}; {SRC['apellegr']}"))
        elif gtt is not None and abs(gtt - limit) > 64 * 1024**2:
            checks.append(Check("ttm pages_limit", "WARN",
                                f"GTT {_gib(gtt)} but TTM limit {_gib(limit)} ({pages} pages): the smaller one wins for ROCm",
                                "set ttm.pages_limit to the size you want and drop amdgpu.gttsize",
                                f"{SRC['rocm5562']}; {SRC['noamsto42']}"))
        else:
            checks.append(Check("ttm pages_limit", "OK", f"{pages} pages = {_gib(limit)} = GTT", source=SRC["noamsto42"]))

    checks.append(_usable_memory(snap, gtt, pages))
    return checks


def _usable_memory(snap: dict, gtt: int | None, pages: int | None) -> Check:
    """What a model can really get: KFD's memory bank if readable (what HIP reports), else min(GTT, TTM)."""
    nodes = [n for n in snap["gpu"]["kfd_nodes"] if n["gfx_target"] == "gfx1151"]
    bank = nodes[0]["mem_bank_bytes"] if nodes else None
    candidates = [x for x in (gtt, pages * host.PAGE_SIZE if pages else None) if x]
    ceiling = min(candidates) if candidates else None
    usable = bank or ceiling
    if usable is None:
        return Check("memory for a model", "INFO", "unknown (no GTT / TTM / KFD values readable)")
    how = "KFD memory bank (what HIP reports)" if bank else "min(GTT, TTM limit)"
    if gtt and usable < 0.5 * gtt:
        return Check("memory for a model", "WARN", f"ROCm/HIP can use about {_gib(usable)} ({how}), far below GTT {_gib(gtt)}",
                     "raise ttm.pages_limit (TTM caps what KFD gives HIP) and keep the carve-out small",
                     SRC["apellegr"])
    return Check("memory for a model", "INFO", f"ROCm/HIP can use about {_gib(usable)} ({how}), less the KV cache and context")


def kernel_param_checks(snap: dict) -> list[Check]:
    """amdgpu.gttsize (deprecated), misspelled / ignored parameters, page pool, CWSR workaround, IOMMU."""
    params = snap["kernel"]["params"]
    ram = snap["memory"]["mem_total_bytes"]
    checks: list[Check] = []
    if "amdgpu.gttsize" in params:
        checks.append(Check("amdgpu.gttsize", "WARN",
                            f"amdgpu.gttsize={params['amdgpu.gttsize']} is deprecated (dmesg: 'please use ttm.pages_limit')",
                            "remove amdgpu.gttsize and set ttm.pages_limit=<pages of 4 KiB>",
                            f"{SRC['geerling']}; {SRC['rocm5562']}"))
    if "amdgpu.gtt_size" in params:
        checks.append(Check("amdgpu.gtt_size", "FAIL", "misspelled parameter: the kernel ignores it ('unknown parameter')",
                            "replace it with ttm.pages_limit=<pages of 4 KiB>", SRC["rocm5595"]))
    if any(k.startswith("amdttm.") for k in params) and not snap["ttm"]["amdttm_loaded"]:
        checks.append(Check("amdttm parameters", "FAIL",
                            "amdttm.* set but the amdttm module is not loaded: the in-tree ttm ignores them",
                            "use ttm.pages_limit / ttm.page_pool_size (with the amdgpu DKMS, set both)", SRC["rocm5562"]))
    pool = snap["ttm"]["page_pool_size"]
    if pool is None and params.get("ttm.page_pool_size", "").isdigit():
        pool = int(params["ttm.page_pool_size"])
    if pool and ram and pool * host.PAGE_SIZE >= 0.25 * ram:
        checks.append(Check("ttm.page_pool_size", "INFO",
                            f"{_gib(pool * host.PAGE_SIZE)} pre-allocated pool: fine on a dedicated LLM box, "
                            "that memory is not available for the rest of the system", source=SRC["lhl"]))
    if params.get("amdgpu.cwsr_enable") == "0":
        checks.append(Check("amdgpu.cwsr_enable=0", "INFO",
                            "CWSR disabled: the work-around for the MES 0x80 hang on kernels before 6.18-rc6; "
                            "obsolete with the gfx1151 CWSR kernel fixes and ROCm 7.2.1+",
                            "remove it once on kernel 6.18.4+ with ROCm 7.2.1+", f"{SRC['rocm5991']}; {SRC['hanzo345']}"))
    mode = snap["iommu"]["mode"]
    checks.append(Check("iommu", "INFO",
                        {"off": "amd_iommu=off: the fastest measured (5-12 % over IOMMU-enabled modes); no VFIO passthrough",
                         "pt": "iommu=pt: amd_iommu=off measured 5-12 % faster; pt did not raise bandwidth",
                         }.get(mode, f"IOMMU {mode}: amd_iommu=off measured 5-12 % faster (it disables VFIO passthrough)"),
                        "" if mode == "off" else "optional: add amd_iommu=off to the kernel command line",
                        f"{SRC['kyuz0']}; {SRC['lhl']}"))
    return checks


# --- versions -----------------------------------------------------------------------


def version_checks(snap: dict) -> list[Check]:
    """Kernel, linux-firmware package and the MES firmware amdgpu loaded, against known-good / bad."""
    release = snap["kernel"]["release"]
    kver, oem = host.kernel_version(release), host.ubuntu_oem_abi(release)
    checks: list[Check] = []
    if kver is None:
        checks.append(Check("kernel", "INFO", "kernel release not readable"))
    elif oem is not None and kver[:2] == (6, 14) and oem < 1014:
        checks.append(Check("kernel", "FAIL", f"{release}: Ubuntu OEM kernel without the LR compute fix",
                            "install linux-oem-24.04c >= 6.14.0-1018 or a 6.18.4+ kernel", SRC["rocm5499"]))
    elif oem is not None and kver[:2] == (6, 14) and oem < 1018:
        checks.append(Check("kernel", "WARN", f"{release}: AMD supports it only with ROCm 7.2.0",
                            "upgrade to Ubuntu OEM 6.14.0-1018+ (or a 6.18.4+ kernel)", SRC["amd"]))
    elif oem is None and kver < (6, 18, 4):
        checks.append(Check("kernel", "WARN", f"{release}: older than 6.18.4, which carries the KFD fixes for Strix Halo",
                            "upgrade to 6.18.4 or newer (kyuz0's stable set: Fedora 43 6.18.9-200 + linux-firmware 20260110)",
                            f"{SRC['amd']}; {SRC['kyuz0']}"))
    else:
        checks.append(Check("kernel", "OK", f"{release} (6.18.4+ KFD fixes)", source=SRC["amd"]))

    fw = snap["firmware"]
    date = fw["linux_firmware_date"]
    if date == "20251125":
        checks.append(Check("linux-firmware", "FAIL", "20251125 ships MES 0x83: GPU hangs, memory access faults",
                            "downgrade to 20251111 or upgrade to 20260110+", f"{SRC['kyuz0_fw']}; {SRC['rocm5724']}"))
    elif date in ("20251111", "20260110"):
        checks.append(Check("linux-firmware", "OK", f"{date} (known good)", source=SRC["kyuz0"]))
    elif date:
        checks.append(Check("linux-firmware", "OK", f"{date} (not a known-bad release)", source=SRC["kyuz0_fw"]))
    else:
        checks.append(Check("linux-firmware", "INFO", "package version not found (dpkg, pacman, rpm)"))
    if "amdgpu-dkms-firmware" in fw["packages"]:
        checks.append(Check("amdgpu-dkms-firmware", "WARN", "leftover AMD DKMS firmware package may ship MES 0x83",
                            "dpkg -S /lib/firmware/amdgpu/gc_11_5_1_mes1.bin.zst; if it names amdgpu-dkms-firmware, "
                            "apt autoremove --purge it", SRC["rocm5991"]))

    mes = fw["mes"]
    if mes is None:
        checks.append(Check("mes firmware", "INFO", "not readable (debugfs amdgpu_firmware_info needs root)",
                            "sudo grep MES /sys/kernel/debug/dri/*/amdgpu_firmware_info", SRC["rocm5724"]))
    elif int(mes, 16) == 0x83:
        checks.append(Check("mes firmware", "FAIL", "MES 0x83 loaded: GPU hang / 'Memory access fault by GPU node-1'",
                            "install linux-firmware with MES 0x80 or newer (not 20251125); purge amdgpu-dkms-firmware",
                            f"{SRC['rocm5724']}; {SRC['rocm5991']}"))
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
        return Check("rocm image vs kernel", "WARN", f"rocm image has no {ROCM_VERSION_LABEL} label",
                     "rebuild it with `invoke build rocm`")
    release = snap["kernel"]["release"]
    kver, oem = host.kernel_version(release), host.ubuntu_oem_abi(release)
    if not _has_strix_halo(snap):
        return Check("rocm image vs kernel", "INFO", f"rocm image has ROCm {text}; running it needs a Strix Halo")
    new_kernel = (oem is not None and oem >= 1018) or (oem is None and kver is not None and kver >= (6, 18, 4))
    src = f"{SRC['amd']}; {SRC['therock2991']}"
    pair = f"ROCm {text} with kernel {release}"
    if r[0] < 7 or r[:2] in {(7, 0), (7, 1), (7, 9), (7, 10)}:
        if new_kernel:
            return Check("rocm image vs kernel", "FAIL", f"{pair}: incompatible (6.18.4+ KFD change; wrong gfx1151 VGPR count)",
                         "pin ROCm 7.2.1+ (or 7.11+) in containers/pins.toml and rebuild", src)
        return Check("rocm image vs kernel", "WARN", f"{pair}: this ROCm has the gfx1151 VGPR/CWSR crash bug",
                     "pin ROCm 7.2.1+ and move to kernel 6.18.4+", src)
    if r[:3] == (7, 2, 0):
        if oem is not None and oem < 1018:
            return Check("rocm image vs kernel", "OK", f"{pair}: supported (AMD table)", source=SRC["amd"])
        if oem is None and (kver is None or kver < (6, 18, 4)):
            return Check("rocm image vs kernel", "FAIL", f"{pair}: not supported (AMD table)",
                         "upgrade the kernel to 6.18.4+ or pin ROCm 7.2.1+", SRC["amd"])
        return Check("rocm image vs kernel", "OK", f"{pair}: supported (AMD table)", source=SRC["amd"])
    if not new_kernel:
        return Check("rocm image vs kernel", "WARN", f"{pair}: AMD lists this kernel as not validated",
                     "upgrade to kernel 6.18.4+ (or Ubuntu OEM 6.14.0-1018+)", SRC["amd"])
    return Check("rocm image vs kernel", "OK", f"{pair}: supported (AMD table; 7.2.1+ carries the gfx1151 fix)", source=src)


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
        Check("power profile", "INFO", profiles,
              "" if power.get("tuned") == "accelerator-performance" else
              "benchmark hosts use `tuned-adm profile accelerator-performance` (record it either way)",
              f"{SRC['lhl']}; {SRC['kyuz0']}"),
        Check("transparent hugepages", "INFO", snap["transparent_hugepages"] or "not readable"),
    ]


# --- entry points ---------------------------------------------------------------------------


def host_checks(snap: dict, uid: int | None = None, user_gids: set[int] | None = None,
                image_labels: dict | None = None) -> list[Check]:
    """Every check that depends only on the host snapshot (plus the user's groups and the image labels)."""
    checks = gpu_checks(snap, uid, user_gids)
    if _has_strix_halo(snap):
        checks += memory_checks(snap) + kernel_param_checks(snap) + version_checks(snap)
    else:
        release = snap["kernel"]["release"]
        checks.append(Check("kernel", "INFO", f"{release or '?'} (the Strix Halo kernel and firmware checks do not apply)"))
        checks.append(Check("iommu", "INFO", snap["iommu"]["mode"]))
    checks.append(rocm_image_check(snap, image_labels))
    return checks + tuning_checks(snap)


def run_checks(settings, docker_client=None, image_labels: dict | None = None) -> list[Check]:
    """All checks for the host under settings.host_root: Docker first, then GPU, memory, versions, tuning."""
    snap = host.snapshot(settings.host_root)
    return docker_checks(docker_client) + host_checks(snap, image_labels=image_labels)


STYLE = {"OK": "bold green", "WARN": "bold yellow", "FAIL": "bold red", "INFO": "bold blue"}


def render(checks: list[Check], machine: dict | None = None):
    """One screen: a table of verdicts with the fix and its source, then a one-line summary."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    title = "invoke doctor" + (f": {machine.get('hostname')} ({machine.get('machine_id')})" if machine else "")
    table = Table(title=title, show_lines=False, expand=True)
    table.add_column("", no_wrap=True)
    table.add_column("check", no_wrap=True)
    table.add_column("finding", ratio=3)
    table.add_column("fix / source", ratio=3, style="dim")
    for c in checks:
        label = re.sub(r"\s*<[^>]+>", "", c.source)
        fix = c.fix + (f" [{label}]" if label and c.status in ("WARN", "FAIL") else "")
        table.add_row(Text(c.status, style=STYLE.get(c.status, "")), c.name, c.detail, Text(fix))
    counts = {s: sum(c.status == s for c in checks) for s in ("FAIL", "WARN", "OK", "INFO")}
    summary = Text("  ".join(f"{n} {s}" for s, n in counts.items()),
                   style="bold red" if counts["FAIL"] else ("bold yellow" if counts["WARN"] else "bold green"))
    return Group(table, summary)
