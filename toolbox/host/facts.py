"""Host facts: one collector per area, every read relative to a root directory.

The root is `Settings.host_root` (default `/`). Tests point it at a recorded Strix Halo tree
(tests/data/hosts/...). Collectors never raise on a missing or unreadable file: a fact that can't
be read is `None`. `snapshot()` gathers everything into a JSON-serialisable dict; it is stored in
every run.json and is what `toolbox.host.doctor` judges.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from pathlib import Path

STRIX_HALO_PCI_ID = "1002:1586"
AMD_VENDOR = "1002"
PAGE_SIZE = 4096  # TTM pages are 4 KiB on x86-64

# Packages that carry the amdgpu firmware, per packaging system.
FIRMWARE_PACKAGES = (
    "linux-firmware",  # Ubuntu, Arch, Fedora (meta)
    "linux-firmware-amdgpu",  # Arch split package
    "amd-gpu-firmware",  # Fedora 43 split package
    "firmware-amd-graphics",  # Debian
    "amdgpu-dkms-firmware",  # AMD's DKMS leftovers (ROCm/ROCm#5991)
)


def _path(root: Path, absolute: str) -> Path:
    return Path(root) / absolute.lstrip("/")


def _read(root: Path, absolute: str) -> str | None:
    """The stripped text of a file under root, or None if it is absent or unreadable."""
    try:
        return _path(root, absolute).read_text(errors="replace").strip()
    except (OSError, ValueError):
        return None


def _read_int(root: Path, absolute: str) -> int | None:
    text = _read(root, absolute)
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _key_values(text: str | None, sep: str = " ") -> dict[str, str]:
    """Parse `key value` (KFD properties) or `KEY=value` (uevent, os-release) lines."""
    out: dict[str, str] = {}
    for line in (text or "").splitlines():
        key, found, value = line.strip().partition(sep)
        if found and key:
            out[key.strip()] = value.strip().strip('"')
    return out


def _glob(root: Path, pattern: str) -> list[Path]:
    return sorted(Path(root).glob(pattern.lstrip("/")))


def _abs(root: Path, path: Path) -> str:
    """The host path of a file found under root ('/dev/kfd' for <root>/dev/kfd)."""
    return "/" + str(path.relative_to(root))


# --- identity, kernel, OS ------------------------------------------------------


def machine_identity(root: Path = Path("/")) -> dict:
    """Hostname and a hashed machine-id: tells runs from several machines apart without leaking the id."""
    hostname = _read(root, "/proc/sys/kernel/hostname") or _read(root, "/etc/hostname")
    raw_id = _read(root, "/etc/machine-id") or _read(root, "/var/lib/dbus/machine-id")
    machine_id = hashlib.sha256(raw_id.encode()).hexdigest()[:16] if raw_id else None
    return {"hostname": hostname, "machine_id": machine_id}


def parse_cmdline(cmdline: str | None) -> dict[str, str]:
    """Kernel command line as {param: value}; bare flags get ''. Later duplicates win, as in the kernel."""
    params: dict[str, str] = {}
    for token in (cmdline or "").split():
        if token == "--":  # everything after is for init
            break
        key, _, value = token.partition("=")
        params[key] = value
    return params


def kernel_info(root: Path = Path("/")) -> dict:
    """Kernel release, command line, and the distribution's name."""
    cmdline = _read(root, "/proc/cmdline")
    os_release = _key_values(_read(root, "/etc/os-release") or _read(root, "/usr/lib/os-release"), "=")
    return {
        "release": _read(root, "/proc/sys/kernel/osrelease"),
        "cmdline": cmdline,
        "params": parse_cmdline(cmdline),
        "os": os_release.get("PRETTY_NAME"),
    }


def kernel_version(release: str | None) -> tuple[int, int, int] | None:
    """(major, minor, patch) from a release string such as '6.18.9-200.fc43.x86_64' or '7.1.0'."""
    m = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", release or "")
    return (int(m[1]), int(m[2]), int(m[3] or 0)) if m else None


def ubuntu_oem_abi(release: str | None) -> int | None:
    """The ABI number of an Ubuntu OEM kernel ('6.14.0-1018-oem' -> 1018), else None."""
    m = re.match(r"\d+\.\d+\.\d+-(\d+)-oem", release or "")
    return int(m[1]) if m else None


# --- CPU, memory, power -----------------------------------------------------------


def cpu_info(root: Path = Path("/")) -> dict:
    """CPU model, cpufreq driver, governor and energy/performance preference (cpu0)."""
    cpuinfo = _read(root, "/proc/cpuinfo") or ""
    models = re.findall(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
    freq = "/sys/devices/system/cpu/cpu0/cpufreq/"
    return {
        "model": models[0].strip() if models else None,
        "scaling_driver": _read(root, freq + "scaling_driver"),
        "governor": _read(root, freq + "scaling_governor"),
        "energy_performance_preference": _read(root, freq + "energy_performance_preference"),
    }


def memory_info(root: Path = Path("/")) -> dict:
    """RAM the kernel manages (MemTotal): installed RAM minus the BIOS carve-out and reservations."""
    meminfo = _read(root, "/proc/meminfo") or ""
    m = re.search(r"^MemTotal:\s*(\d+)\s*kB", meminfo, re.M)
    return {"mem_total_bytes": int(m[1]) * 1024 if m else None}


def transparent_hugepages(root: Path = Path("/")) -> str | None:
    """The active THP mode ('always [madvise] never' -> 'madvise')."""
    text = _read(root, "/sys/kernel/mm/transparent_hugepage/enabled")
    m = re.search(r"\[(\w+)\]", text or "")
    return m[1] if m else text


def power_profile(root: Path = Path("/")) -> dict:
    """tuned's active profile, the ACPI platform profile and power-profiles-daemon's saved profile."""
    ppd = _read(root, "/var/lib/power-profiles-daemon/state.ini")
    m = re.search(r"^Profile=(\S+)", ppd or "", re.M)
    return {
        "tuned": _read(root, "/etc/tuned/active_profile") or None,
        "platform_profile": _read(root, "/sys/firmware/acpi/platform_profile"),
        "power_profiles_daemon": m[1] if m else None,
    }


def iommu_info(root: Path = Path("/")) -> dict:
    """IOMMU mode from the command line, and whether an IOMMU is active (/sys/class/iommu)."""
    params = parse_cmdline(_read(root, "/proc/cmdline"))
    if params.get("amd_iommu") == "off" or params.get("iommu") == "off":
        mode = "off"
    elif params.get("iommu") == "pt" or params.get("iommu.passthrough") == "1":
        mode = "pt"
    elif params.get("iommu.passthrough") == "0":
        mode = "translated"
    else:
        mode = "default"
    iommu_dir = _path(root, "/sys/class/iommu")
    active = any(iommu_dir.iterdir()) if iommu_dir.is_dir() else None
    return {"mode": mode, "active": active}


# --- GPU ---------------------------------------------------------------------------


def gfx_target(gfx_target_version: int | None) -> str | None:
    """KFD's gfx_target_version as an ISA name: 110501 -> 'gfx1151' (stepping in hex, 90010 -> 'gfx90a')."""
    if not gfx_target_version:
        return None
    major, minor, step = gfx_target_version // 10000, gfx_target_version // 100 % 100, gfx_target_version % 100
    return f"gfx{major}{minor}{step:x}"


def _pci_class(uevent: dict[str, str]) -> int | None:
    try:
        return int(uevent.get("PCI_CLASS", ""), 16) >> 16
    except ValueError:
        return None


def pci_gpus(root: Path = Path("/")) -> list[dict]:
    """AMD display devices on the PCI bus (class 03), with the driver bound to each."""
    out = []
    for uevent_file in _glob(root, "/sys/bus/pci/devices/*/uevent"):
        uevent = _key_values(_read(root, _abs(root, uevent_file)), "=")
        pci_id = uevent.get("PCI_ID", "").lower()
        if pci_id.startswith(AMD_VENDOR + ":") and _pci_class(uevent) == 3:
            out.append({"slot": uevent.get("PCI_SLOT_NAME", uevent_file.parent.name), "pci_id": pci_id, "driver": uevent.get("DRIVER")})
    return out


def kfd_gpu_nodes(root: Path = Path("/")) -> list[dict]:
    """KFD topology nodes that are GPUs (gfx_target_version != 0), with their memory bank sizes."""
    nodes = []
    for props_file in _glob(root, "/sys/class/kfd/kfd/topology/nodes/*/properties"):
        props = _key_values(_read(root, _abs(root, props_file)))
        version = int(props.get("gfx_target_version", "0") or 0)
        if not version:
            continue  # CPU node
        banks = [_key_values(_read(root, _abs(root, p))) for p in _glob(root, _abs(root, props_file.parent) + "/mem_banks/*/properties")]
        bank_bytes = [int(b["size_in_bytes"]) for b in banks if b.get("size_in_bytes", "").isdigit()]

        def num(key: str, props=props) -> int | None:
            return int(props[key]) if props.get(key, "").isdigit() else None

        nodes.append(
            {
                "node": props_file.parent.name,
                "gfx_target_version": version,
                "gfx_target": gfx_target(version),
                "vendor_id": num("vendor_id"),
                "device_id": num("device_id"),
                "simd_count": num("simd_count"),
                "local_mem_size": num("local_mem_size"),
                "mem_bank_bytes": sum(bank_bytes) if bank_bytes else None,
            }
        )
    return nodes


def drm_cards(root: Path = Path("/")) -> list[dict]:
    """amdgpu DRM cards with their memory totals (carve-out and GTT) and VBIOS version."""
    cards = []
    for card in _glob(root, "/sys/class/drm/card*"):
        if not re.fullmatch(r"card\d+", card.name):
            continue  # card1-eDP-1 and other connectors
        dev = _abs(root, card) + "/device/"
        uevent = _key_values(_read(root, dev + "uevent"), "=")
        if uevent.get("DRIVER") != "amdgpu":
            continue
        cards.append(
            {
                "card": card.name,
                "pci_id": uevent.get("PCI_ID", "").lower() or None,
                "slot": uevent.get("PCI_SLOT_NAME"),
                "mem_info_vram_total": _read_int(root, dev + "mem_info_vram_total"),
                "mem_info_gtt_total": _read_int(root, dev + "mem_info_gtt_total"),
                "vbios_version": _read(root, dev + "vbios_version"),
            }
        )
    return cards


def ttm_info(root: Path = Path("/")) -> dict:
    """The TTM limits in force (module parameters, in 4 KiB pages) and which TTM modules are loaded."""
    return {
        "pages_limit": _read_int(root, "/sys/module/ttm/parameters/pages_limit"),
        "page_pool_size": _read_int(root, "/sys/module/ttm/parameters/page_pool_size"),
        "ttm_loaded": _path(root, "/sys/module/ttm").is_dir(),
        "amdttm_loaded": _path(root, "/sys/module/amdttm").is_dir(),
    }


def gpu_devices(root: Path = Path("/")) -> dict:
    """What a ROCm or Vulkan container needs: /dev/kfd, render nodes, and whether the GPU is a gfx1151."""
    kfd = _path(root, "/dev/kfd").exists()
    render_nodes = [_abs(root, p) for p in _glob(root, "/dev/dri/renderD*")]
    gpus = pci_gpus(root)
    targets = [n["gfx_target"] for n in kfd_gpu_nodes(root)]
    return {
        "kfd": kfd,
        "render_nodes": render_nodes,
        "amd_gpu": bool(gpus) or bool(targets),
        "gfx_target": "gfx1151" if "gfx1151" in targets else (targets[0] if targets else None),
    }


def device_gids(root: Path = Path("/")) -> dict[str, int]:
    """Numeric group ids of the GPU device files that exist: {'/dev/kfd': gid, '/dev/dri/renderD128': gid, ...}.

    Containers need the numbers (group_add), because group names resolve differently inside an image.
    """
    files = [_path(root, "/dev/kfd")] + _glob(root, "/dev/dri/renderD*") + _glob(root, "/dev/dri/card*")
    out = {}
    for f in files:
        try:
            out[_abs(root, f)] = f.stat().st_gid
        except OSError:
            continue
    return out


def group_names(root: Path = Path("/")) -> dict[int, str]:
    """gid -> group name from <root>/etc/group."""
    names = {}
    for line in (_read(root, "/etc/group") or "").splitlines():
        parts = line.split(":")
        if len(parts) >= 3 and parts[2].isdigit():
            names.setdefault(int(parts[2]), parts[0])
    return names


def gpu_info(root: Path = Path("/")) -> dict:
    """Everything about the AMD GPU: PCI presence and driver, KFD nodes, memory totals, device files."""
    gpus = pci_gpus(root)
    cards = drm_cards(root)
    strix = [g for g in gpus if g["pci_id"] == STRIX_HALO_PCI_ID]
    card = next((c for c in cards if c["pci_id"] == STRIX_HALO_PCI_ID), cards[0] if cards else None)
    return {
        "pci": gpus,
        "strix_halo_pci": bool(strix),
        "strix_halo_driver": strix[0]["driver"] if strix else None,
        "kfd_nodes": kfd_gpu_nodes(root),
        "card": card,
        "devices": gpu_devices(root),
    }


# --- firmware ------------------------------------------------------------------------


def _dpkg_versions(root: Path) -> dict[str, str]:
    out = {}
    for para in (_read(root, "/var/lib/dpkg/status") or "").split("\n\n"):
        fields = dict(re.findall(r"^(Package|Version|Status): (.+)$", para, re.M))
        if fields.get("Package") in FIRMWARE_PACKAGES and "installed" in fields.get("Status", "installed"):
            out[fields["Package"]] = fields.get("Version", "")
    return out


def _pacman_versions(root: Path) -> dict[str, str]:
    out = {}
    for desc in _glob(root, "/var/lib/pacman/local/*/desc"):
        text = _read(root, _abs(root, desc)) or ""
        name = re.search(r"%NAME%\n(.+)", text)
        version = re.search(r"%VERSION%\n(.+)", text)
        if name and version and name[1] in FIRMWARE_PACKAGES:
            out[name[1]] = version[1]
    return out


def _rpm_versions(root: Path) -> dict[str, str]:
    # The rpm database is binary (sqlite + rpm headers): ask rpm itself, pointed at the same root.
    if not shutil.which("rpm") or not _path(root, "/var/lib/rpm").is_dir():
        return {}
    try:
        proc = subprocess.run(
            ["rpm", "--root", str(root), "-q", "--qf", "%{NAME} %{VERSION}-%{RELEASE}\n", *FIRMWARE_PACKAGES],
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.TimeoutExpired):
        return {}
    return dict(line.split(" ", 1) for line in proc.stdout.splitlines() if " " in line and "not installed" not in line)


def firmware_date(version: str | None) -> str | None:
    """The linux-firmware release date in a package version ('1:20260309-1' -> '20260309')."""
    m = re.search(r"(20\d{6})", version or "")
    return m[1] if m else None


def amdgpu_firmware_info(root: Path = Path("/")) -> dict | None:
    """Firmware versions the running amdgpu loaded (debugfs, root only): {'MES': '0x00000080', ...}."""
    for f in _glob(root, "/sys/kernel/debug/dri/*/amdgpu_firmware_info"):
        text = _read(root, _abs(root, f))
        if not text:
            continue
        versions = dict(re.findall(r"^(\w[\w ]*?) feature version: .*?firmware version: (0x[0-9a-fA-F]+)", text, re.M))
        vbios = re.search(r"^VBIOS version: (.+)$", text, re.M)
        if vbios:
            versions["VBIOS"] = vbios[1].strip()
        if versions:
            return versions
    return None


def firmware_info(root: Path = Path("/")) -> dict:
    """Firmware package versions (dpkg, pacman, rpm) and, when readable, the versions amdgpu loaded."""
    packages = {**_rpm_versions(root), **_pacman_versions(root), **_dpkg_versions(root)}
    main = next((packages[p] for p in FIRMWARE_PACKAGES[:4] if p in packages), None)
    loaded = amdgpu_firmware_info(root)
    return {
        "packages": packages,
        "linux_firmware_date": firmware_date(main),
        "amdgpu_loaded": loaded,
        "mes": (loaded or {}).get("MES"),
    }


# --- snapshot ------------------------------------------------------------------------


def snapshot(root: Path = Path("/")) -> dict:
    """All host facts as one JSON-serialisable dict (stored in run.json, judged by the doctor)."""
    root = Path(root)
    return {
        "root": str(root),
        "machine": machine_identity(root),
        "kernel": kernel_info(root),
        "cpu": cpu_info(root),
        "memory": memory_info(root),
        "gpu": gpu_info(root),
        "ttm": ttm_info(root),
        "firmware": firmware_info(root),
        "iommu": iommu_info(root),
        "transparent_hugepages": transparent_hugepages(root),
        "power": power_profile(root),
        "device_gids": device_gids(root),
    }
