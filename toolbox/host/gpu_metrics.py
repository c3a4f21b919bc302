"""amdgpu's binary `gpu_metrics` file, decoded for the APU layouts (format 2, revisions 0-4, and 3.0).

The layouts are the C structs `gpu_metrics_v2_0` ... `gpu_metrics_v2_4` and `gpu_metrics_v3_0` of the
Linux kernel's drivers/gpu/drm/amd/include/kgd_pp_interface.h (read at torvalds/linux, 2026). Every
struct starts with `metrics_table_header` (u16 structure_size, u8 format_revision, u8
content_revision); fields are naturally aligned little-endian integers, so ctypes lays them out
exactly as the kernel's C compiler does. Strix Halo (SMU 14.0.x) fills v3.0
(drivers/gpu/drm/amd/pm/swsmu/smu14/smu_v14_0_0_ppt.c, smu_v14_0_0_get_gpu_metrics).

Units, from the header's comments and the driver that fills them (where the header says nothing):
power in mW, temperatures in centi-degrees Celsius, activity in centi-percent on v2.x and, despite
the v3.0 comment "[0-100]", also centi-percent on v3.0 (smu_v14_0_0 divides GfxActivity by 100 for
gpu_busy_percent), clocks in MHz, DRAM traffic in MB/s (a u16: it cannot say more than 65,535 MB/s).
A field the firmware does not fill reads 0xFFFF (u16) or 0xFFFFFFFF (u32): decoded as absent.
"""

from __future__ import annotations

import ctypes

U8, U16, U32, U64 = ctypes.c_uint8, ctypes.c_uint16, ctypes.c_uint32, ctypes.c_uint64


class _Header(ctypes.LittleEndianStructure):
    _fields_ = [("structure_size", U16), ("format_revision", U8), ("content_revision", U8)]


def _struct(name: str, fields: list[tuple]) -> type[ctypes.LittleEndianStructure]:
    out = [("common_header", _Header)]
    for f in fields:
        out.append((f[0], f[1] * f[2]) if len(f) == 3 else f)
    return type(name, (ctypes.LittleEndianStructure,), {"_fields_": out})


_V2_TEMPS = [("temperature_gfx", U16), ("temperature_soc", U16), ("temperature_core", U16, 8), ("temperature_l3", U16, 2)]
_V2_ACTIVITY = [("average_gfx_activity", U16), ("average_mm_activity", U16)]
_V2_POWER = [
    ("average_socket_power", U16),
    ("average_cpu_power", U16),
    ("average_soc_power", U16),
    ("average_gfx_power", U16),
    ("average_core_power", U16, 8),
]
_V2_CLOCKS = [
    (f"{kind}_{clk}", U16)
    for kind, clks in (
        ("average", ("gfxclk_frequency", "socclk_frequency", "uclk_frequency", "fclk_frequency", "vclk_frequency", "dclk_frequency")),
        ("current", ("gfxclk", "socclk", "uclk", "fclk", "vclk", "dclk")),
    )
    for clk in clks
] + [("current_coreclk", U16, 8), ("current_l3clk", U16, 2), ("throttle_status", U32), ("fan_pwm", U16)]

V2_0 = _struct(
    "gpu_metrics_v2_0",
    [("system_clock_counter", U64), *_V2_TEMPS, *_V2_ACTIVITY, *_V2_POWER, *_V2_CLOCKS, ("padding", U16)],
)
_V2_1_FIELDS = [*_V2_TEMPS, *_V2_ACTIVITY, ("system_clock_counter", U64), *_V2_POWER, *_V2_CLOCKS, ("padding", U16, 3)]
V2_1 = _struct("gpu_metrics_v2_1", _V2_1_FIELDS)
_V2_2_FIELDS = [*_V2_1_FIELDS, ("indep_throttle_status", U64)]
V2_2 = _struct("gpu_metrics_v2_2", _V2_2_FIELDS)
_V2_3_FIELDS = [
    *_V2_2_FIELDS,
    ("average_temperature_gfx", U16),
    ("average_temperature_soc", U16),
    ("average_temperature_core", U16, 8),
    ("average_temperature_l3", U16, 2),
]
V2_3 = _struct("gpu_metrics_v2_3", _V2_3_FIELDS)
V2_4 = _struct(
    "gpu_metrics_v2_4",
    [*_V2_3_FIELDS, *[(f"average_{p}_{q}", U16) for q in ("voltage", "current") for p in ("cpu", "soc", "gfx")]],
)
V3_0 = _struct(
    "gpu_metrics_v3_0",
    [
        ("temperature_gfx", U16),
        ("temperature_soc", U16),
        ("temperature_core", U16, 16),
        ("temperature_skin", U16),
        ("average_gfx_activity", U16),
        ("average_vcn_activity", U16),
        ("average_ipu_activity", U16, 8),
        ("average_core_c0_activity", U16, 16),
        ("average_dram_reads", U16),
        ("average_dram_writes", U16),
        ("average_ipu_reads", U16),
        ("average_ipu_writes", U16),
        ("system_clock_counter", U64),
        ("average_socket_power", U32),
        ("average_ipu_power", U16),
        ("average_apu_power", U32),
        ("average_gfx_power", U32),
        ("average_dgpu_power", U32),
        ("average_all_core_power", U32),
        ("average_core_power", U16, 16),
        ("average_sys_power", U16),
        ("stapm_power_limit", U16),
        ("current_stapm_power_limit", U16),
        *[(f"average_{c}_frequency", U16) for c in ("gfxclk", "socclk", "vpeclk", "ipuclk", "fclk", "vclk", "uclk", "mpipu")],
        ("current_coreclk", U16, 16),
        ("current_core_maxfreq", U16),
        ("current_gfx_maxfreq", U16),
        *[(f"throttle_residency_{t}", U32) for t in ("prochot", "spl", "fppt", "sppt", "thm_core", "thm_gfx", "thm_soc")],
        ("time_filter_alphavalue", U32),
    ],
)

LAYOUTS: dict[tuple[int, int], type[ctypes.LittleEndianStructure]] = {
    (2, 0): V2_0,
    (2, 1): V2_1,
    (2, 2): V2_2,
    (2, 3): V2_3,
    (2, 4): V2_4,
    (3, 0): V3_0,
}

# What the sampler keeps of each layout: our name -> (field, scale to our unit). Names end in their unit.
_COMMON = {
    "gfx_temp_c": ("temperature_gfx", 0.01),
    "soc_temp_c": ("temperature_soc", 0.01),
    "gfx_activity_pct": ("average_gfx_activity", 0.01),
    "socket_power_w": ("average_socket_power", 0.001),
    "gfx_power_w": ("average_gfx_power", 0.001),
    "gfxclk_mhz": ("average_gfxclk_frequency", 1),
    "socclk_mhz": ("average_socclk_frequency", 1),
    "uclk_mhz": ("average_uclk_frequency", 1),
    "fclk_mhz": ("average_fclk_frequency", 1),
}
KEEP = {
    2: _COMMON | {"cpu_power_w": ("average_cpu_power", 0.001), "soc_power_w": ("average_soc_power", 0.001)},
    3: _COMMON
    | {
        "cpu_power_w": ("average_all_core_power", 0.001),
        "apu_power_w": ("average_apu_power", 0.001),
        "sys_power_w": ("average_sys_power", 0.001),
        "dram_read_mbs": ("average_dram_reads", 1),
        "dram_write_mbs": ("average_dram_writes", 1),
        "gfx_maxfreq_mhz": ("current_gfx_maxfreq", 1),
        "stapm_limit_w": ("current_stapm_power_limit", 0.001),
        **{f"throttle_{t}": (f"throttle_residency_{t}", 1) for t in ("prochot", "spl", "fppt", "sppt", "thm_core", "thm_gfx", "thm_soc")},
    },
}
_ABSENT = {1: 0xFF, 2: 0xFFFF, 4: 0xFFFFFFFF, 8: 0xFFFFFFFFFFFFFFFF}


def version(blob: bytes) -> tuple[int, int] | None:
    """(format_revision, content_revision) of a gpu_metrics blob, or None when it is too short."""
    if len(blob) < ctypes.sizeof(_Header):
        return None
    h = _Header.from_buffer_copy(blob[: ctypes.sizeof(_Header)])
    return h.format_revision, h.content_revision


def decode(blob: bytes) -> tuple[str | None, dict[str, float]]:
    """The version ("3.0") and the kept values of a gpu_metrics blob; ({}, None) for a layout we do not know.

    A blob shorter than its layout (a newer kernel may append fields, never shrink them) is not decoded.
    """
    v = version(blob)
    layout = LAYOUTS.get(v) if v else None
    if layout is None or len(blob) < ctypes.sizeof(layout):
        return (f"{v[0]}.{v[1]}" if v else None), {}
    s = layout.from_buffer_copy(blob[: ctypes.sizeof(layout)])
    out = {}
    for name, (fieldname, scale) in KEEP[v[0]].items():
        raw = getattr(s, fieldname)
        if raw == _ABSENT[getattr(layout, fieldname).size]:
            continue
        out[name] = round(raw * scale, 3) if scale != 1 else raw
    return f"{v[0]}.{v[1]}", out


def pack(fmt: tuple[int, int], **values: int) -> bytes:
    """A gpu_metrics blob of layout `fmt` with the given raw field values (the rest 0xFF..): for fake sysfs trees.

    Tests build their fake `gpu_metrics` files with this and check the decoder against independently
    computed offsets (tests/test_sensors.py).
    """
    layout = LAYOUTS[fmt]
    buf = bytearray(b"\xff" * ctypes.sizeof(layout))
    s = layout.from_buffer(buf)
    s.common_header.structure_size = ctypes.sizeof(layout)
    s.common_header.format_revision, s.common_header.content_revision = fmt
    for k, v in values.items():
        setattr(s, k, v)
    del s
    return bytes(buf)
