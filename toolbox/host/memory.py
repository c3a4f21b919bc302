"""Doctor checks of memory: BIOS carve-out, GTT and TTM limits against RAM, what a model can get, kernel parameters."""

from __future__ import annotations

from toolbox.host import facts as host
from toolbox.host.verdicts import SRC, Check, GiB, gib

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
        checks.append(
            Check(
                "vram carve-out",
                "FAIL",
                f"{gib(vram)} carve-out on kernel {snap['kernel']['release']}: ROCm sees only ~15.5 GB",
                "set the BIOS GPU memory to its minimum (0.5-4 GB) and raise ttm.pages_limit; or upgrade to kernel 6.16.9+",
                f"{SRC['rocm5444']}; {SRC['amd']}",
            )
        )
    elif vram >= 32 * GiB:
        checks.append(
            Check(
                "vram carve-out",
                "WARN",
                f"{gib(vram)} carve-out: that RAM is lost to the OS, and HIP has been seen with only 15.24 GiB",
                "set the BIOS GPU memory small (AMD: e.g. 0.5 GB) and raise ttm.pages_limit instead",
                f"{SRC['amd']}; {SRC['apellegr']}",
            )
        )
    elif vram <= 8 * GiB:
        checks.append(Check("vram carve-out", "OK", f"{gib(vram)} (small, as AMD recommends)", source=SRC["amd"]))
    else:
        checks.append(
            Check("vram carve-out", "INFO", f"{gib(vram)}: AMD recommends a small carve-out plus a raised GTT", source=SRC["amd"])
        )

    if gtt is not None and ram:
        ratio = gtt / ram
        configured = "ttm.pages_limit" in params or "amdgpu.gttsize" in params
        if gtt > ram:
            checks.append(
                Check(
                    "gtt size",
                    "WARN",
                    f"GTT {gib(gtt)} exceeds the {gib(ram)} RAM the OS manages: large models get OOM-killed",
                    f"set ttm.pages_limit to at most {(ram - 4 * GiB) // host.PAGE_SIZE} (RAM minus 4 GiB for the OS) "
                    "and shrink the BIOS carve-out",
                    f"{SRC['apellegr']}; {SRC['kyuz0']}",
                )
            )
        elif 0.45 <= ratio <= 0.55 and not configured:
            checks.append(
                Check(
                    "gtt size",
                    "WARN",
                    f"GTT {gib(gtt)} = default, about half of the {gib(ram)} RAM",
                    f"add ttm.pages_limit={(ram - 4 * GiB) // host.PAGE_SIZE} to the kernel command line "
                    "(RAM minus 4 GiB for the OS), or `amd-ttm --set N` (amd-debug-tools)",
                    f"{SRC['amd']}; {SRC['kyuz0']}",
                )
            )
        else:
            checks.append(Check("gtt size", "OK", f"GTT {gib(gtt)} of {gib(ram)} RAM ({ratio:.0%})"))

    if pages is not None and ram:
        limit = pages * host.PAGE_SIZE
        if limit > ram:
            checks.append(
                Check(
                    "ttm pages_limit",
                    "WARN",
                    f"ttm.pages_limit={pages} ({gib(limit)}) is more than the {gib(ram)} RAM",
                    f"use at most {(ram - 4 * GiB) // host.PAGE_SIZE} pages (RAM minus 4 GiB)",
                    f"{SRC['kyuz0']}; {SRC['apellegr']}",
                )
            )
        elif gtt is not None and abs(gtt - limit) > 64 * 1024**2:
            checks.append(
                Check(
                    "ttm pages_limit",
                    "WARN",
                    f"GTT {gib(gtt)} but TTM limit {gib(limit)} ({pages} pages): the smaller one wins for ROCm",
                    "set ttm.pages_limit to the size you want and drop amdgpu.gttsize",
                    f"{SRC['rocm5562']}; {SRC['noamsto42']}",
                )
            )
        else:
            checks.append(Check("ttm pages_limit", "OK", f"{pages} pages = {gib(limit)} = GTT", source=SRC["noamsto42"]))

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
        return Check(
            "memory for a model",
            "WARN",
            f"ROCm/HIP can use about {gib(usable)} ({how}), far below GTT {gib(gtt)}",
            "raise ttm.pages_limit (TTM caps what KFD gives HIP) and keep the carve-out small",
            SRC["apellegr"],
        )
    return Check("memory for a model", "INFO", f"ROCm/HIP can use about {gib(usable)} ({how}), less the KV cache and context")


def kernel_param_checks(snap: dict) -> list[Check]:
    """amdgpu.gttsize (deprecated), misspelled / ignored parameters, page pool, CWSR workaround, IOMMU."""
    params = snap["kernel"]["params"]
    ram = snap["memory"]["mem_total_bytes"]
    checks: list[Check] = []
    if "amdgpu.gttsize" in params:
        checks.append(
            Check(
                "amdgpu.gttsize",
                "WARN",
                f"amdgpu.gttsize={params['amdgpu.gttsize']} is deprecated (dmesg: 'please use ttm.pages_limit')",
                "remove amdgpu.gttsize and set ttm.pages_limit=<pages of 4 KiB>",
                f"{SRC['geerling']}; {SRC['rocm5562']}",
            )
        )
    if "amdgpu.gtt_size" in params:
        checks.append(
            Check(
                "amdgpu.gtt_size",
                "FAIL",
                "misspelled parameter: the kernel ignores it ('unknown parameter')",
                "replace it with ttm.pages_limit=<pages of 4 KiB>",
                SRC["rocm5595"],
            )
        )
    if any(k.startswith("amdttm.") for k in params) and not snap["ttm"]["amdttm_loaded"]:
        checks.append(
            Check(
                "amdttm parameters",
                "FAIL",
                "amdttm.* set but the amdttm module is not loaded: the in-tree ttm ignores them",
                "use ttm.pages_limit / ttm.page_pool_size (with the amdgpu DKMS, set both)",
                SRC["rocm5562"],
            )
        )
    pool = snap["ttm"]["page_pool_size"]
    if pool is None and params.get("ttm.page_pool_size", "").isdigit():
        pool = int(params["ttm.page_pool_size"])
    if pool and ram and pool * host.PAGE_SIZE >= 0.25 * ram:
        checks.append(
            Check(
                "ttm.page_pool_size",
                "INFO",
                f"{gib(pool * host.PAGE_SIZE)} pre-allocated pool: fine on a dedicated LLM box, "
                "that memory is not available for the rest of the system",
                source=SRC["lhl"],
            )
        )
    if params.get("amdgpu.cwsr_enable") == "0":
        checks.append(
            Check(
                "amdgpu.cwsr_enable=0",
                "INFO",
                "CWSR disabled: the work-around for the MES 0x80 hang on kernels before 6.18-rc6; "
                "obsolete with the gfx1151 CWSR kernel fixes and ROCm 7.2.1+",
                "remove it once on kernel 6.18.4+ with ROCm 7.2.1+",
                f"{SRC['rocm5991']}; {SRC['hanzo345']}",
            )
        )
    mode = snap["iommu"]["mode"]
    checks.append(
        Check(
            "iommu",
            "INFO",
            {
                "off": "amd_iommu=off: the fastest measured (5-12 % over IOMMU-enabled modes); no VFIO passthrough",
                "pt": "iommu=pt: amd_iommu=off measured 5-12 % faster; pt did not raise bandwidth",
            }.get(mode, f"IOMMU {mode}: amd_iommu=off measured 5-12 % faster (it disables VFIO passthrough)"),
            "" if mode == "off" else "optional: add amd_iommu=off to the kernel command line",
            f"{SRC['kyuz0']}; {SRC['lhl']}",
        )
    )
    return checks
