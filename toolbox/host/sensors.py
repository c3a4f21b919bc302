"""Power, clock and temperature sensors of the host: found once under a root, then read many times a second.

Every path is relative to a root (`Settings.host_root`, default `/`), so tests run on fake sysfs trees.
What is read, and in which unit it is kept (names end in their unit):

- amdgpu hwmon (`/sys/class/drm/cardN/device/hwmon/hwmonM/`): `power1_average` and `power1_input`
  (µW -> W; on an APU such as Strix Halo this is the whole package, CPU cores included, not the GPU
  alone), every `tempK_input` with its `tempK_label` (m°C -> °C), `freq1_input` (the gfx clock,
  Hz -> MHz), `fan1_input` (rpm);
- the card (`/sys/class/drm/cardN/device/`): `gpu_busy_percent`, `mem_busy_percent`, the current
  level of `pp_dpm_sclk` / `pp_dpm_mclk` (the line marked `*`), and `gpu_metrics` (binary, decoded by
  toolbox.host.gpu_metrics; its version is recorded);
- CPU hwmon (k10temp, zenpower, coretemp): temperatures with their labels;
- RAPL (`/sys/class/powercap/intel-rapl:*/energy_uj`, also on AMD CPUs): a µJ counter that wraps at
  `max_energy_range_uj`; kept raw, turned into watts by toolbox.analysis.energy;
- `/sys/firmware/acpi/platform_profile` and cpu0's `energy_performance_preference` (text).

A sensor that is missing or unreadable when the sampler starts is skipped and named once in
`SensorSet.warnings`; one that fails later (a GPU reset, a module unloaded) is left out of the samples
it cannot give and named once in `Reader.warnings`, and the run goes on.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from toolbox.host import gpu_metrics

CPU_HWMONS = ("k10temp", "zenpower", "coretemp")


@dataclass(frozen=True)
class Sensor:
    """One file to sample. kind: how its text becomes a number (see _convert); name ends in the unit."""

    name: str
    path: str  # the host path, e.g. /sys/class/drm/card1/device/hwmon/hwmon3/power1_average
    kind: str  # uw_to_w, mc_to_c, hz_to_mhz, int, dpm, energy_uj, text, gpu_metrics
    label: str = ""


@dataclass
class SensorSet:
    """What discover() found: the sensors, facts that do not change during a run, and what was skipped."""

    root: str
    sensors: list[Sensor] = field(default_factory=list)
    facts: dict = field(default_factory=dict)  # sclk_max_mhz, rapl max ranges, gpu_metrics_version, temp limits
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"root": self.root, "sensors": [asdict(s) for s in self.sensors], "facts": self.facts, "warnings": self.warnings}

    def names(self) -> list[str]:
        out = []
        for s in self.sensors:
            out.extend(self.facts.get("gpu_metrics_fields", {}).get(s.name, [])) if s.kind == "gpu_metrics" else out.append(s.name)
        return out


def _under(root: Path, absolute: str) -> Path:
    return Path(root) / absolute.lstrip("/")


def _host(root: Path, p: Path) -> str:
    return "/" + str(p.relative_to(root))


def _read_bytes(path: Path) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.read(fd, 8192)
    finally:
        os.close(fd)


def _text(path: Path) -> str | None:
    try:
        return _read_bytes(path).decode("utf-8", "replace").strip()
    except OSError:
        return None


DPM_LINE = re.compile(r"^\s*\d+:\s*(\d+)\s*[Mm][Hh]z\s*(\*)?", re.M)


def dpm_levels(text: str) -> tuple[list[int], int | None]:
    """pp_dpm_sclk text -> (every level's MHz, the current one's MHz or None). '1: 2787Mhz *' is current."""
    levels, current = [], None
    for m in DPM_LINE.finditer(text or ""):
        levels.append(int(m[1]))
        if m[2]:
            current = int(m[1])
    return levels, current


def _convert(kind: str, raw: bytes):
    if kind == "gpu_metrics":
        return gpu_metrics.decode(raw)[1]
    text = raw.decode("utf-8", "replace").strip()
    if kind == "text":
        return text
    if kind == "dpm":
        current = dpm_levels(text)[1]
        if current is None:
            raise ValueError("no current level")
        return current
    value = int(text)
    return {"uw_to_w": value / 1e6, "mc_to_c": value / 1000, "hz_to_mhz": value / 1e6}.get(kind, value)


def _check(s: SensorSet, root: Path, sensor: Sensor) -> None:
    """Keep a sensor if one read works now; otherwise name it once in the warnings."""
    try:
        _convert(sensor.kind, _read_bytes(_under(root, sensor.path)))
    except (OSError, ValueError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__
        s.warnings.append(f"{sensor.path}: {why.lower()}, not sampled")
        return
    s.sensors.append(sensor)


def _amdgpu_cards(root: Path) -> list[Path]:
    cards = []
    for card in sorted(_under(root, "/sys/class/drm").glob("card*"), key=lambda p: int(re.sub(r"\D", "", p.name) or 0)):
        if re.fullmatch(r"card\d+", card.name) and "DRIVER=amdgpu" in (_text(card / "device" / "uevent") or ""):
            cards.append(card)
    return cards


def _temps(s: SensorSet, root: Path, hwmon: Path, prefix: str) -> None:
    for t in sorted(hwmon.glob("temp*_input")):
        n = t.name[len("temp") : -len("_input")]
        label = _text(hwmon / f"temp{n}_label") or f"temp{n}"
        key = re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_")
        _check(s, root, Sensor(f"{prefix}.temp_{key}_c", _host(root, t), "mc_to_c", label))
        crit = _text(hwmon / f"temp{n}_crit")
        if crit and crit.lstrip("-").isdigit() and int(crit) > 0:
            s.facts.setdefault("temp_limits_c", {})[f"{prefix}.temp_{key}_c"] = int(crit) / 1000


def _card(s: SensorSet, root: Path, card: Path, prefix: str) -> None:
    dev = card / "device"
    for hwmon in sorted((dev / "hwmon").glob("hwmon*")):
        for fname, name, kind in (
            ("power1_average", "power_avg_w", "uw_to_w"),
            ("power1_input", "power_input_w", "uw_to_w"),
            ("freq1_input", "sclk_mhz", "hz_to_mhz"),
            ("fan1_input", "fan_rpm", "int"),
        ):
            if (hwmon / fname).exists():
                label = _text(hwmon / fname.replace("input", "label").replace("average", "label")) or ""
                _check(s, root, Sensor(f"{prefix}.{name}", _host(root, hwmon / fname), kind, label))
        _temps(s, root, hwmon, prefix)
    for fname, name, kind in (
        ("gpu_busy_percent", "busy_pct", "int"),
        ("mem_busy_percent", "mem_busy_pct", "int"),
        ("pp_dpm_sclk", "sclk_level_mhz", "dpm"),
        ("pp_dpm_mclk", "mclk_level_mhz", "dpm"),
    ):
        if (dev / fname).exists():
            _check(s, root, Sensor(f"{prefix}.{name}", _host(root, dev / fname), kind))
    levels = dpm_levels(_text(dev / "pp_dpm_sclk") or "")[0]
    if levels:
        s.facts.setdefault("sclk_max_mhz", {})[prefix] = max(levels)
    metrics = dev / "gpu_metrics"
    if metrics.exists():
        try:
            blob = _read_bytes(metrics)
        except OSError as exc:
            s.warnings.append(f"{_host(root, metrics)}: {(exc.strerror or str(exc)).lower()}, not sampled")
            return
        version, values = gpu_metrics.decode(blob)
        s.facts.setdefault("gpu_metrics_version", {})[prefix] = version
        if not values:
            s.warnings.append(f"{_host(root, metrics)}: layout {version} is not one this toolbox decodes (2.0-2.4, 3.0), not sampled")
            return
        name = f"{prefix}.metrics"
        s.sensors.append(Sensor(name, _host(root, metrics), "gpu_metrics", f"gpu_metrics v{version}"))
        s.facts.setdefault("gpu_metrics_fields", {})[name] = [f"{name}.{k}" for k in values]


def discover(root: Path = Path("/")) -> SensorSet:
    """Every sensor under root that can be read now (an empty set is a valid answer: nothing is invented)."""
    root = Path(root)
    s = SensorSet(str(root))
    for i, card in enumerate(_amdgpu_cards(root)):
        prefix = "gpu" if i == 0 else f"gpu{i}"
        s.facts.setdefault("cards", {})[prefix] = card.name
        _card(s, root, card, prefix)
    for hwmon in sorted(_under(root, "/sys/class/hwmon").glob("hwmon*")):
        if (_text(hwmon / "name") or "") in CPU_HWMONS:
            _temps(s, root, hwmon, "cpu")
    for zone in sorted(_under(root, "/sys/class/powercap").glob("intel-rapl:*")):
        name = re.sub(r"[^a-z0-9]+", "_", (_text(zone / "name") or zone.name).lower()).strip("_")
        key = f"rapl.{name}" + ("" if zone.name.count(":") == 1 else f"_{zone.name.split(':', 1)[1].replace(':', '_')}")
        if (zone / "energy_uj").exists():
            before = len(s.sensors)
            _check(s, root, Sensor(f"{key}.energy_uj", _host(root, zone / "energy_uj"), "energy_uj", zone.name))
            top = _text(zone / "max_energy_range_uj")
            if len(s.sensors) > before and top and top.isdigit():
                s.facts.setdefault("rapl_max_energy_range_uj", {})[f"{key}.energy_uj"] = int(top)
    for path, name in (
        ("/sys/firmware/acpi/platform_profile", "platform_profile"),
        ("/sys/devices/system/cpu/cpu0/cpufreq/energy_performance_preference", "cpu.epp"),
    ):
        if _under(root, path).exists():
            _check(s, root, Sensor(name, path, "text"))
    return s


class Reader:
    """Reads a SensorSet's files; a sensor that fails is left out of that sample and named once in `warnings`."""

    def __init__(self, sensors: SensorSet):
        self.root = Path(sensors.root)
        # resolved once: /sys/class/... are symlinks, and walking them on every read is most of a read's cost
        self.sensors = [(s, _under(self.root, s.path).resolve()) for s in sensors.sensors]
        self.warnings: list[str] = []
        self._failed: set[str] = set()

    def read(self) -> dict:
        """One sample: {sensor name: value}; gpu_metrics fields are spread as '<card>.metrics.<field>'."""
        out: dict = {}
        for sensor, path in self.sensors:
            try:
                value = _convert(sensor.kind, _read_bytes(path))
            except (OSError, ValueError) as exc:
                if sensor.name not in self._failed:
                    self._failed.add(sensor.name)
                    why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__
                    self.warnings.append(f"{sensor.path}: {why.lower()} during the run; left out of the samples it could not give")
                continue
            if sensor.kind == "gpu_metrics":
                out.update({f"{sensor.name}.{k}": v for k, v in value.items()})
            else:
                out[sensor.name] = value
        return out
