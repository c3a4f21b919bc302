"""A fleet campaign side by side (its runs found by run.json's `campaign`): one run per host, the hosts'
identities, and each host against the first with the significance test of `invoke compare` (same
identity keys, raw samples)."""

from __future__ import annotations

import json
from pathlib import Path

from toolbox.analysis.compare import CompareResult, compare_runs
from toolbox.errors import ToolboxError
from toolbox.report.render import Report, build_report, write_report
from toolbox.store.runs import load_run, run_ids


def campaign_run_ids(results_dir: Path, campaign: str) -> list[str]:
    """The runs of a fleet campaign (run.json's `campaign`), oldest first; none is a one-line error."""
    found = []
    for rid in run_ids(results_dir):
        try:
            meta = json.loads((Path(results_dir) / rid / "run.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(meta, dict) and meta.get("campaign") == campaign:
            found.append(rid)
    if not found:
        raise ToolboxError(f"no run of campaign {campaign!r} in {results_dir}", "invoke bench --host ... prints its campaign id")
    return found


def host_label(meta: dict) -> str:
    """The host as the campaign names it: its engine (context or URL), and the machine's name there."""
    host = meta.get("host") or {}
    name = (host.get("machine") or {}).get("hostname")
    engine = meta.get("engine") or "local"
    return f"{engine} ({name})" if name and name != engine else engine


def campaign_report(
    settings, campaign: str, *, write: bool = True
) -> tuple[Report, list[list[str]], list[tuple[str, CompareResult | str]]]:
    """(the report over every host's run, one line per host, each later host against the first)."""
    runs = [load_run(settings.results_dir, rid) for rid in campaign_run_ids(settings.results_dir, campaign)]
    rep = build_report(
        runs, peak_bandwidth_gbs=settings.peak_bandwidth_gbs, peak_tflops=settings.peak_tflops, unstable_spread=settings.unstable_spread
    )
    hosts = []
    for meta, rows in runs:
        ok = sum(1 for r in rows if r.get("status") == "ok")
        sent = ", ".join(sorted(set((meta.get("image_transfer") or {}).values()))) or "—"
        hosts.append([host_label(meta), meta.get("run_id"), meta.get("status") or "?", str(ok), str(len(rows) - ok), sent])
    comparisons: list[tuple[str, CompareResult | str]] = []
    base = next(((m, r) for m, r in runs if any(x.get("status") == "ok" for x in r)), None)
    for meta, rows in runs:
        if base is None or meta is base[0]:
            continue
        try:
            cr = compare_runs(base, (meta, rows), unstable_spread=settings.unstable_spread)
            comparisons.append((f"{host_label(meta)} against {host_label(base[0])}", cr))
        except ToolboxError as exc:
            comparisons.append((f"{host_label(meta)} against {host_label(base[0])}", str(exc)))
    if write:
        write_report(rep, Path(settings.results_dir) / runs[-1][0]["run_id"] / "reports" / campaign)
    return rep, hosts, comparisons


HOST_HEADER = ["host", "run", "status", "rows ok", "rows failed", "image"]
