"""Sensors on FAKE sysfs trees (tests/fake_sysfs.py): discovery, units, gpu_metrics layouts, what is skipped."""

from __future__ import annotations

import struct
import warnings
from pathlib import Path

import pytest
from fake_sysfs import DEV, HWMON, fake_strix_halo, write

from toolbox.host import gpu_metrics
from toolbox.host.sensors import Reader, discover, dpm_levels


def test_a_strix_halo_tree_gives_package_power_clock_temperature_and_levels_in_si_units(tmp_path):
    s = discover(fake_strix_halo(tmp_path))
    assert s.warnings == []
    v = Reader(s).read()
    assert v["gpu.power_avg_w"] == pytest.approx(119.095)  # the posted 119095000 µW
    assert v["gpu.temp_edge_c"] == 89.0 and v["gpu.sclk_mhz"] == 2787 and v["gpu.busy_pct"] == 100
    assert v["gpu.sclk_level_mhz"] == 2787 and v["gpu.mclk_level_mhz"] == 1000
    assert v["cpu.temp_tctl_c"] == pytest.approx(45.125)
    assert v["rapl.package_0.energy_uj"] == 1_000_000
    assert v["platform_profile"] == "performance" and v["cpu.epp"] == "performance"
    assert v["gpu.metrics.socket_power_w"] == pytest.approx(119.095) and v["gpu.metrics.dram_read_mbs"] == 12000
    assert s.facts["sclk_max_mhz"] == {"gpu": 2900}
    assert s.facts["gpu_metrics_version"] == {"gpu": "3.0"}
    assert s.facts["rapl_max_energy_range_uj"] == {"rapl.package_0.energy_uj": 262143328850}
    assert s.facts["cards"] == {"gpu": "card1"}
    assert set(v) == set(s.names())  # the header names exactly what samples carry


def test_this_machine_gives_what_it_has_and_invents_nothing():
    s = discover(Path("/"))
    for sensor in s.sensors:
        assert Path(sensor.path).exists(), sensor  # every sensor named is a real file here
    assert set(Reader(s).read()) <= set(s.names())


def test_an_empty_root_has_no_sensors_and_no_warnings(tmp_path):
    s = discover(tmp_path)
    assert s.sensors == [] and s.warnings == [] and Reader(s).read() == {}


def test_missing_and_unreadable_files_are_skipped_with_one_warning_each(tmp_path):
    root = fake_strix_halo(tmp_path)
    (root / HWMON / "power1_average").unlink()  # missing: never looked for, no warning needed
    write(root, f"{DEV}/gpu_busy_percent", "N/A")  # unreadable as a number
    (root / DEV / "mem_busy_percent").mkdir()  # unreadable: EISDIR (root can read a chmod 000 file)
    s = discover(root)
    assert len(s.warnings) == 2, s.warnings
    assert any("gpu_busy_percent" in w for w in s.warnings) and any("mem_busy_percent" in w and "is a directory" in w for w in s.warnings)
    names = s.names()
    assert "gpu.busy_pct" not in names and "gpu.mem_busy_pct" not in names and "gpu.power_avg_w" not in names
    assert "gpu.temp_edge_c" in names


def test_a_sensor_that_vanishes_is_named_once_and_the_others_go_on(tmp_path):
    root = fake_strix_halo(tmp_path)
    r = Reader(discover(root))
    assert "gpu.power_avg_w" in r.read()
    (root / HWMON / "power1_average").unlink()
    for _ in range(5):
        v = r.read()
        assert "gpu.power_avg_w" not in v and v["gpu.temp_edge_c"] == 89.0
    assert len(r.warnings) == 1 and "power1_average" in r.warnings[0]
    write(root, f"{HWMON}/power1_average", "20000000")  # back after a GPU reset
    assert r.read()["gpu.power_avg_w"] == 20.0


def test_dpm_current_level_is_the_starred_line():
    assert dpm_levels("0: 600Mhz\n1: 752Mhz *\n2: 2900Mhz") == ([600, 752, 2900], 752)
    assert dpm_levels("0: 400Mhz\n1: 800Mhz\n2: 1000Mhz *\n")[1] == 1000
    assert dpm_levels("garbage") == ([], None)


# Hand-computed layouts of drivers/gpu/drm/amd/include/kgd_pp_interface.h (x86-64 C alignment written out
# as explicit pad bytes 'x'): an independent check of the ctypes layouts the decoder uses.
V3_0 = (
    "<HBB"  # header
    "HH16HH"  # temperature_gfx, _soc, _core[16], _skin                      -> 42
    "HH8H16HHHHH"  # gfx, vcn, ipu[8], core_c0[16], dram r/w, ipu r/w       -> 102
    "2xQ"  # system_clock_counter at 104                                        -> 112
    "IH2xIIII"  # socket, ipu(u16), pad, apu, gfx, dgpu, all_core           -> 136
    "16HHHH"  # core_power[16], sys, stapm_limit, current_stapm_limit      -> 174
    "8H16HHH"  # 8 average clocks, current_coreclk[16], core/gfx maxfreq    -> 226
    "2x7II4x"  # pad, 7 throttle residencies, alpha, tail pad to 8          -> 264
)
V2_1 = "<HBBHH8H2HHHQHHHH8H6H6H8H2HIH3H"


def test_gpu_metrics_layouts_match_hand_computed_offsets():
    assert struct.calcsize(V3_0) == 264 and struct.calcsize(V2_1) == 120
    import ctypes

    assert ctypes.sizeof(gpu_metrics.V3_0) == 264 and ctypes.sizeof(gpu_metrics.V2_1) == 120
    values = [0] * len(struct.unpack(V3_0, bytes(264)))
    values[0:3] = [264, 3, 0]
    values[3] = 8912  # temperature_gfx, centi-degrees
    values[22] = 9876  # average_gfx_activity, centi-percent
    values[48] = 51234  # average_dram_reads, MB/s
    values[53] = 118_500  # average_socket_power, mW
    values[55] = 31_000  # average_apu_power (after the u16 ipu power and 2 pad bytes)
    values[56] = 70_250  # average_gfx_power
    values[78] = 2750  # average_gfxclk_frequency
    values[103] = 2900  # current_gfx_maxfreq
    values[106] = 77  # throttle_residency_fppt
    version, v = gpu_metrics.decode(struct.pack(V3_0, *values))
    assert version == "3.0"
    assert v["gfx_temp_c"] == 89.12 and v["gfx_activity_pct"] == 98.76 and v["dram_read_mbs"] == 51234
    assert v["socket_power_w"] == 118.5 and v["apu_power_w"] == 31.0 and v["gfx_power_w"] == 70.25
    assert v["gfxclk_mhz"] == 2750 and v["gfx_maxfreq_mhz"] == 2900 and v["throttle_fppt"] == 77


def test_gpu_metrics_v2_layouts_decode_and_unfilled_fields_are_absent():
    values = [0] * len(struct.unpack(V2_1, bytes(120)))
    values[0:3] = [120, 2, 1]
    values[3] = 6550  # temperature_gfx
    values[18] = 45_000  # average_socket_power, mW
    values[19] = 0xFFFF  # average_cpu_power: not filled by the firmware
    values[30] = 2200  # average_gfxclk_frequency
    version, v = gpu_metrics.decode(struct.pack(V2_1, *values))
    assert version == "2.1" and v["gfx_temp_c"] == 65.5 and v["socket_power_w"] == 45.0 and v["gfxclk_mhz"] == 2200
    assert "cpu_power_w" not in v
    for fmt in gpu_metrics.LAYOUTS:
        assert gpu_metrics.decode(gpu_metrics.pack(fmt, average_gfxclk_frequency=1234))[1]["gfxclk_mhz"] == 1234


def test_an_unknown_or_short_gpu_metrics_is_named_not_guessed(tmp_path):
    root = fake_strix_halo(tmp_path)
    write(root, f"{DEV}/gpu_metrics", struct.pack("<HBB", 96, 1, 3) + bytes(92))  # a dGPU layout (v1.3)
    s = discover(root)
    assert s.facts["gpu_metrics_version"] == {"gpu": "1.3"}
    assert any("layout 1.3" in w for w in s.warnings)
    assert not any(n.startswith("gpu.metrics.") for n in s.names())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert gpu_metrics.decode(gpu_metrics.pack((3, 0))[:100]) == ("3.0", {})


def test_doctor_warns_when_the_platform_profile_is_not_performance(tmp_path):
    from toolbox.host.checks import platform_profile_check
    from toolbox.host.facts import snapshot

    balanced = platform_profile_check(snapshot(fake_strix_halo(tmp_path / "a", profile="balanced")))
    assert balanced.status == "WARN" and "balanced" in balanced.detail and "powerprofilesctl set performance" in balanced.fix
    assert "nix-amd-ai#132" in balanced.source
    assert platform_profile_check(snapshot(fake_strix_halo(tmp_path / "b"))).status == "OK"
    assert platform_profile_check(snapshot(tmp_path / "empty")).status == "INFO"


def test_doctor_says_which_telemetry_sensors_exist(tmp_path):
    from toolbox.host.doctor import sensors_check
    from toolbox.host.facts import snapshot

    root = fake_strix_halo(tmp_path / "host")
    c = sensors_check(root, snapshot(root))
    assert c.status == "INFO" and "power from gpu.power_avg_w" in c.detail and "gpu_metrics v3.0" in c.detail
    for f in (root / HWMON).glob("power1_*"):
        f.unlink()
    (root / DEV / "gpu_metrics").unlink()
    no_power = sensors_check(root, snapshot(root))
    assert no_power.status == "WARN" and "no amdgpu package power" in no_power.detail  # RAPL alone is the CPU's share
    here = sensors_check(Path("/"), snapshot(Path("/")))
    assert here.status == "INFO"  # this machine: no AMD GPU, whatever it has is just reported
