"""The end of `invoke bench`: the run's results as rich tables (a K x V pivot when the KV types vary).

Plain Python on the run's rows (no pandas: this is printed after every bench, its import time counts).
"""

from __future__ import annotations

SETTINGS = ("backend", "type_k", "type_v", "flash_attn", "n_batch", "n_ubatch", "n_threads", "load_mode", "n_gpu_layers")


def _ts(row: dict) -> str:
    return f"{row['avg_ts']:.2f} ± {row.get('stddev_ts') or 0:.2f}"


def summary_tables(rows: list[dict]) -> list:
    """rich tables of a run's results: a K x V pivot per test when the KV types vary, else one row per case."""
    from rich.table import Table

    ok = [r for r in rows if r.get("status") == "ok" and r.get("avg_ts") is not None]
    if not ok:
        return []
    keys = [k for k in SETTINGS if len({str(r.get(k)) for r in ok}) > 1]
    if {"type_k", "type_v"} <= set(keys):
        rest = [k for k in keys if k not in ("type_k", "type_v")]
        panels: dict[tuple, list[dict]] = {}
        for r in ok:
            panels.setdefault(tuple(str(r.get(k)) for k in ["test", *rest]), []).append(r)
        tables = []
        for name, sub in panels.items():
            title = ", ".join(f"{k}={v}" for k, v in zip(["test", *rest], name))
            cell = {}
            for r in sub:
                cell.setdefault((str(r.get("type_k")), str(r.get("type_v"))), _ts(r))
            ks = sorted({k for k, _ in cell})
            vs = sorted({v for _, v in cell})
            t = Table(title=f"t/s  {title}  (rows: type_k, columns: type_v)")
            t.add_column("K \\ V")
            for v in vs:
                t.add_column(v, justify="right")
            for k in ks:
                t.add_row(k, *[cell.get((k, v), "") for v in vs])
            tables.append(t)
        return tables
    t = Table(title="results (t/s: mean ± stddev over repetitions)")
    cols = ["test", *keys, "t/s"]
    for c in cols:
        t.add_column(c, justify="right" if c == "t/s" else "left")
    wrong_device = any(r.get("device_ok") is False for r in ok)
    if wrong_device:
        t.add_column("device")
    for r in ok:
        cells = [str(r.get("test")), *[str(r.get(k)) for k in keys], _ts(r)]
        if wrong_device:
            cells.append("ran elsewhere!" if r.get("device_ok") is False else "ok")
        t.add_row(*cells)
    return [t]
