"""Provenance: what ran, where, with which versions, as (label, value) pairs that head a report."""

from __future__ import annotations

import os

from toolbox.llamacpp import SIDE_BUILD_PREFIX

MAX_SOURCES = 5  # an imported run lists up to this many source files by name

HOST_PARAM_PREFIXES = ("iommu", "amd_iommu", "ttm.", "amdttm.", "amdgpu.", "transparent_hugepage", "mitigations")


def _get(d, *path, default=None):
    for p in path:
        if not isinstance(d, dict):
            return default
        d = d.get(p)
    return default if d is None else d


def provenance(meta: dict, rows: list[dict]) -> list[tuple[str, str]]:
    """(label, value) pairs that head a report: what ran, where, with which versions. Missing fields are skipped."""
    meta = meta or {}
    out: list[tuple[str, str]] = []

    def add(label, value):
        if value not in (None, "", [], {}):
            out.append((label, str(value)))

    add("run", f"{meta.get('run_id', '?')} ({meta.get('kind', '?')}, {meta.get('status', '?')})")
    add("time", " → ".join(str(t) for t in (meta.get("started_at"), meta.get("ended_at")) if t))
    add("matrix", _get(meta, "matrix", "name"))
    commits = sorted(
        {
            f"{r.get('build_commit')}"
            + (f" (b{r.get('build_number')})" if r.get("build_number") else "")
            + (" (a side tree, not the pinned build)" if str(r.get("build_commit")).startswith(SIDE_BUILD_PREFIX) else "")
            for r in rows
            if r.get("build_commit")
        }
    )
    if not commits:
        commits = sorted(
            {
                f"{_get(i, 'labels', 'org.strix-toolbox.llama-commit', default='')[:12]}"
                for i in (meta.get("images") or {}).values()
                if isinstance(i, dict)
            }
            - {""}
        )
    add("llama.cpp", ", ".join(commits))
    for backend, img in sorted((meta.get("images") or {}).items()):
        if not isinstance(img, dict):
            continue
        labels = img.get("labels") or {}
        digest = img.get("repo_digest") or img.get("id") or ""
        parts = [img.get("tag") or "", digest[:19] if digest else ""]
        for lab, name in (("org.strix-toolbox.rocm-version", "ROCm"), ("org.strix-toolbox.mesa-version", "Mesa")):
            if labels.get(lab):
                parts.append(f"{name} {labels[lab]}")
        add(f"image {backend}", ", ".join(p for p in parts if p))
    gpus = sorted({r.get("gpu_info") for r in rows if r.get("gpu_info")})
    add("gpu (llama-bench)", "; ".join(gpus))
    host = meta.get("host") or {}
    add("host", _get(host, "machine", "hostname"))
    add("cpu", _get(host, "cpu", "model") or (sorted({r.get("cpu_info") for r in rows if r.get("cpu_info")}) or [None])[0])
    mem = _get(host, "memory", "mem_total_bytes")
    add("memory", f"{mem / 2**30:.0f} GiB" if isinstance(mem, (int, float)) else None)
    add("gfx target", _get(host, "gpu", "devices", "gfx_target"))
    add("kernel", _get(host, "kernel", "release"))
    params = _get(host, "kernel", "params") or {}
    add("kernel parameters", " ".join(f"{k}={v}" for k, v in sorted(params.items()) if k.startswith(HOST_PARAM_PREFIXES)))
    add("IOMMU", _get(host, "iommu", "mode"))
    add("tuned profile", _get(host, "power", "tuned"))
    add("cpu governor", _get(host, "cpu", "governor"))
    add("transparent hugepages", host.get("transparent_hugepages") if isinstance(host.get("transparent_hugepages"), str) else None)
    add("linux-firmware", _get(host, "firmware", "linux_firmware_date"))
    add("MES firmware", _get(host, "firmware", "mes"))
    tb = meta.get("toolbox") or {}
    if tb:
        add("toolbox", f"{tb.get('version', '?')} ({tb.get('git_commit') or '?'}{', dirty' if tb.get('git_dirty') else ''})")
    sources = [s for s in meta.get("sources") or [] if isinstance(s, dict)]
    if len(sources) > MAX_SOURCES:  # a folder of logs: the count, and where the list is
        with_rows = sum(1 for s in sources if s.get("rows"))
        common = os.path.commonpath([str(s.get("path") or "") for s in sources]) or "?"
        add(
            "imported from",
            f"{len(sources)} files under {common} ({with_rows} with rows); each with its sha256 in run.json's sources",
        )
        sources = []
    for s in sources:
        add("imported from", f"{s.get('path')} ({s.get('format', '?')}, {s.get('rows', '?')} rows)")
    return out
