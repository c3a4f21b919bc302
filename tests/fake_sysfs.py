"""FAKE sensor trees for the telemetry tests: a recorded Strix Halo host tree plus sensor files, and a writer
thread that changes them over time. Not a live system.

The starting values are the ones posted from a Strix Halo under load (docs/data/strix-halo-host/
rocm-smi-amd-smi-hwmon.txt [1], ROCm/ROCm#6035: power1_average 119095000 µW, temp1_input 89000 m°C,
freq1_input 2787000000 Hz, gpu_busy_percent 100, pp_dpm_sclk 600 / 2787* / 2900 MHz) and at idle
(same file [3]: pp_dpm_mclk 400 / 800 / 1000* MHz, k10temp Tctl 45.1 °C). gpu_metrics blobs are packed
per the kernel's layouts (toolbox.host.gpu_metrics.pack; checked against hand-computed offsets in
tests/test_sensors.py). platform_profile and energy_performance_preference take the kernel's own
choice names (no post recorded them); the RAPL counter is made up (Strix Halo posts show none).
"""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

from toolbox.host import gpu_metrics

RECORDED = Path(__file__).resolve().parent / "data" / "hosts" / "strix-halo-128g-good"
DEV = "sys/devices/pci0000:00/0000:bf:00.0"
HWMON = f"{DEV}/hwmon/hwmon3"


def write(root: Path, rel: str, data: str | bytes) -> None:
    """Replace a file atomically (a reader never sees half a value)."""
    path = Path(root) / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data if isinstance(data, bytes) else (data + "\n").encode())
    os.replace(tmp, path)


def metrics_v3(power_w: float, gfxclk: int = 2787, temp_c: float = 89.0, dram_read_mbs: int = 12000) -> bytes:
    return gpu_metrics.pack(
        (3, 0),
        average_socket_power=int(power_w * 1000),
        average_gfx_power=int(power_w * 600),
        average_all_core_power=int(power_w * 200),
        temperature_gfx=int(temp_c * 100),
        temperature_soc=int(temp_c * 100) - 300,
        average_gfx_activity=10000,
        average_gfxclk_frequency=gfxclk,
        average_uclk_frequency=1000,
        average_dram_reads=dram_read_mbs,
        average_dram_writes=dram_read_mbs // 10,
        current_gfx_maxfreq=2900,
        system_clock_counter=1,
    )


def set_power(root: Path, watts: float, *, sclk_mhz: int = 2787, temp_c: float = 89.0) -> None:
    """What the writer thread changes: package power, gfx clock, temperature (hwmon and gpu_metrics agree)."""
    write(root, f"{HWMON}/power1_average", str(int(watts * 1e6)))
    write(root, f"{HWMON}/freq1_input", str(sclk_mhz * 1_000_000))
    write(root, f"{HWMON}/temp1_input", str(int(temp_c * 1000)))
    write(root, f"{DEV}/gpu_metrics", metrics_v3(watts, sclk_mhz, temp_c))


def fake_strix_halo(root: Path, *, metrics: bool = True, rapl: bool = True, profile: str = "performance") -> Path:
    """A recorded Strix Halo host tree with FAKE sensor files under root; returns root."""
    shutil.copytree(RECORDED, root, symlinks=True, dirs_exist_ok=True)
    write(root, f"{HWMON}/name", "amdgpu")
    write(root, f"{HWMON}/power1_label", "PPT")
    write(root, f"{HWMON}/temp1_label", "edge")
    write(root, f"{HWMON}/freq1_label", "sclk")
    write(root, f"{DEV}/gpu_busy_percent", "100")
    write(root, f"{DEV}/pp_dpm_sclk", "0: 600Mhz\n1: 2787Mhz *\n2: 2900Mhz")
    write(root, f"{DEV}/pp_dpm_mclk", "0: 400Mhz\n1: 800Mhz\n2: 1000Mhz *")
    set_power(root, 119.095)
    if not metrics:
        (Path(root) / DEV / "gpu_metrics").unlink()
    os.symlink(f"../../{DEV.removeprefix('sys/')}/hwmon/hwmon3", _mk(root, "sys/class/hwmon") / "hwmon3")
    write(root, "sys/devices/platform/k10temp/hwmon/hwmon2/name", "k10temp")
    write(root, "sys/devices/platform/k10temp/hwmon/hwmon2/temp1_input", "45125")
    write(root, "sys/devices/platform/k10temp/hwmon/hwmon2/temp1_label", "Tctl")
    os.symlink("../../devices/platform/k10temp/hwmon/hwmon2", Path(root) / "sys/class/hwmon/hwmon2")
    if rapl:
        zone = "sys/devices/virtual/powercap/intel-rapl/intel-rapl:0"
        write(root, f"{zone}/name", "package-0")
        write(root, f"{zone}/energy_uj", "1000000")
        write(root, f"{zone}/max_energy_range_uj", "262143328850")
        os.symlink(f"../../{zone.removeprefix('sys/')}", _mk(root, "sys/class/powercap") / "intel-rapl:0")
    write(root, "sys/firmware/acpi/platform_profile", profile)
    write(root, "sys/devices/system/cpu/cpu0/cpufreq/energy_performance_preference", "performance")
    return Path(root)


def _mk(root: Path, rel: str) -> Path:
    p = Path(root) / rel
    p.mkdir(parents=True, exist_ok=True)
    return p


class FakeWriter(threading.Thread):
    """Changes the fake sensors over time: `steps` is [(seconds from start, watts, sclk MHz, °C)], applied in order."""

    def __init__(self, root: Path, steps: list[tuple[float, float, int, float]]):
        super().__init__(daemon=True, name="fake-sysfs-writer")
        self.root, self.steps = Path(root), steps
        self.stop = threading.Event()
        self.applied: list[float] = []  # monotonic time each step was written

    def run(self) -> None:
        import time

        t0 = time.monotonic()
        for at, watts, sclk, temp in self.steps:
            if self.stop.wait(max(0.0, t0 + at - time.monotonic())):
                return
            set_power(self.root, watts, sclk_mhz=sclk, temp_c=temp)
            self.applied.append(time.monotonic())
