"""How a model scales over llama.cpp RPC workers: t/s against nodes, efficiency against the one-node row.

A node is a machine computing a share of the model: the client and each of its RPC workers, so a
row with two workers ran on three nodes. Results that differ only in their workers (and in the
ggml backend string, which gains ",RPC") form one series per run, model, test and configuration.
Beside each point: the link the pre-check measured to its slowest worker, and the model load
time (llama-bench prints none: the bench's estimate from the first row of each group).
"""

from __future__ import annotations

import statistics

from toolbox.analysis.identity import IDENTITY_FIELDS, SHAPE_FIELDS, Collected, Result

SERIES_IGNORES = ("rpc", "backends")


def nodes(rpc: str | None) -> int:
    """1 + the number of workers of an identity's rpc value ('a:1,b:2' -> 3)."""
    return 1 + (len(rpc.split(",")) if rpc else 0)


def scaling(col: Collected) -> list[dict]:
    """One entry per point of every series that has more than one node count: nodes, t/s, efficiency, link, load."""
    links = _links(col.metas)
    loads = _loads(col)
    series: dict[tuple, list[Result]] = {}
    for r in col.results:
        if r.summary is None or r.not_counted:
            continue
        key = (r.run_id, r.test, *(str(r.ident.get(f)) for f in IDENTITY_FIELDS if f not in SERIES_IGNORES and f not in SHAPE_FIELDS))
        series.setdefault(key, []).append(r)
    out = []
    for members in series.values():
        if len({nodes(r.ident.get("rpc")) for r in members}) < 2:
            continue
        members.sort(key=lambda r: nodes(r.ident.get("rpc")))
        base = members[0]
        for r in members:
            workers = [w for w in (r.ident.get("rpc") or "").split(",") if w]
            link = [links.get((r.run_id, w)) or {} for w in workers]
            ups = [x["upload_mbs"] for x in link if x.get("upload_mbs")]
            rtts = [x["rtt_ms"] for x in link if x.get("rtt_ms") is not None]
            out.append(
                {
                    "run_id": r.run_id,
                    "model": r.ident.get("model_file") or r.ident.get("model"),
                    "test": r.test,
                    "backend": r.ident.get("backend"),
                    "nodes": nodes(r.ident.get("rpc")),
                    "workers": workers,
                    "ts": r.summary.median,
                    "base_nodes": nodes(base.ident.get("rpc")),
                    "efficiency": r.summary.median / base.summary.median if base.summary.median else None,
                    "link_mbs": min(ups) if ups else None,
                    "rtt_ms": max(rtts) if rtts else None,
                    "load_s": loads.get((r.run_id, r.ident.get("model_file"), r.ident.get("rpc"))),
                }
            )
    return out


def _links(metas: list[dict]) -> dict[tuple[str, str], dict]:
    """(run id, worker address) -> the pre-check's link figures."""
    out = {}
    for m in metas:
        for w in ((m or {}).get("rpc") or {}).get("workers", {}).values():
            out[(m.get("run_id"), w.get("address"))] = w.get("link") or {}
    return out


def _loads(col: Collected) -> dict[tuple, float]:
    """(run id, model file, workers) -> median load-time estimate over the groups that recorded one."""
    found: dict[tuple, list[float]] = {}
    for r in col.results:
        v = r.row.get("load_s")
        if v is not None:
            found.setdefault((r.run_id, r.ident.get("model_file"), r.ident.get("rpc")), []).append(v)
    return {k: statistics.median(v) for k, v in found.items()}
