"""The end of `invoke bench`: the run's results as rich tables (a K x V pivot when the KV types vary).

Plain Python on the run's rows (no pandas or scipy: this is printed after every bench, its import
time counts). The rules are the report's: a row is unstable when its spread is above the
`unstable_spread` setting (toolbox.analysis.stats), and failed, off-device or broken rows do not count
(toolbox.quality.gate): they are greyed with their reason, and the notes below the tables say what to do.
"""

from __future__ import annotations

from toolbox.analysis.stats import summarize_row
from toolbox.llamacpp import test_name
from toolbox.quality import gate

SETTINGS = ("backend", "type_k", "type_v", "flash_attn", "n_batch", "n_ubatch", "n_threads", "load_mode", "n_gpu_layers")


def _test(row: dict) -> str:
    return row.get("test") or test_name(row.get("n_prompt"), row.get("n_gen"), row.get("n_depth"))


def _state(row: dict, unstable_spread: float) -> tuple[str | None, str]:
    """(style, note) of one row: greyed with the reason it does not count, yellow when unstable."""
    why = gate.row_not_counted(row)
    if why == "failed":
        return "dim", f"failed: {(row.get('error') or row.get('status') or '?')[:80]}"
    if why:
        return "dim", f"not counted: {why}"
    s = summarize_row(row, unstable_spread)
    if s is not None and s.unstable:
        return "yellow", f"unstable: spread {s.spread:.0%} of the mean"
    return None, ""


def _ts(row: dict) -> str:
    if row.get("avg_ts") is None:
        return "—"
    return f"{row['avg_ts']:.2f} ± {row.get('stddev_ts') or 0:.2f}"


def summary_tables(rows: list[dict], unstable_spread: float = 0.05) -> list:
    """rich tables of a run's results: a K x V pivot per test when the KV types vary, else one row per case."""
    from rich.table import Table
    from rich.text import Text

    shown = [r for r in rows if (r.get("status") == "ok" and r.get("avg_ts") is not None) or r.get("status") != "ok"]
    ok = [r for r in shown if r.get("status") == "ok"]
    if not shown:
        return []
    keys = [k for k in SETTINGS if len({str(r.get(k)) for r in ok or shown}) > 1]
    if {"type_k", "type_v"} <= set(keys):
        rest = [k for k in keys if k not in ("type_k", "type_v")]
        panels: dict[tuple, list[dict]] = {}
        for r in shown:
            panels.setdefault((_test(r), *[str(r.get(k)) for k in rest]), []).append(r)
        tables = []
        for name, sub in panels.items():
            title = ", ".join(f"{k}={v}" for k, v in zip(["test", *rest], name))
            cell: dict[tuple, Text] = {}
            for r in sub:
                style, note = _state(r, unstable_spread)
                text = _ts(r) if not note else f"{_ts(r)} ({note.split(':')[0] if style == 'yellow' else note})"
                cell.setdefault((str(r.get("type_k")), str(r.get("type_v"))), Text(text, style=style or ""))
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
    states = [_state(r, unstable_spread) for r in shown]
    if any(note for _, note in states):
        t.add_column("note")
    for r, (style, note) in zip(shown, states):
        cells = [_test(r), *[str(r.get(k)) for k in keys], _ts(r)]
        if any(n for _, n in states):
            cells.append(note)
        t.add_row(*cells, style=style)
    return [t]


def summary_notes(rows: list[dict], unstable_spread: float = 0.05) -> list[str]:
    """One line per kind of problem in the summary, each saying what to do."""
    unstable, excluded = [], {}
    for r in rows:
        why = gate.row_not_counted(r)
        if why and why != "failed":
            excluded[why] = excluded.get(why, 0) + 1
        elif not why:
            s = summarize_row(r, unstable_spread)
            if s is not None and s.unstable:
                unstable.append(f"{_test(r)} {_ts(r)}")
    out = []
    if unstable:
        shown = "; ".join(unstable[:4]) + (f"; +{len(unstable) - 4} more" if len(unstable) > 4 else "")
        out.append(
            f"{len(unstable)} unstable result(s), spread above {unstable_spread:.0%} of the mean ({shown}): "
            "do not trust them; re-run with more repetitions (--repetitions 10), a --cooldown between groups "
            "and nothing else running on the machine"
        )
    for why, n in sorted(excluded.items()):
        out.append(f"{n} result(s) not counted: {gate.NOT_COUNTED[why]}")
    return out


def telemetry_line(results_dir, run_id: str | None) -> str | None:
    """After a run: derive energy.json and say in one line what telemetry found (none is a valid answer)."""
    import json
    from pathlib import Path

    from toolbox.analysis.energy import attach_energy

    if not run_id:
        return None
    try:
        tel = json.loads((Path(results_dir) / run_id / "run.json").read_text()).get("telemetry") or {}
    except (OSError, ValueError):
        return None
    if not tel.get("enabled"):
        return None
    names = tel.get("sensors") or []
    if not names:
        return "telemetry: no power, clock or temperature sensor on this host (telemetry.jsonl says so; nothing measured, nothing invented)"
    rows = attach_energy(results_dir, run_id)
    tpj = [r["tokens_per_j"] for r in rows if r.get("tokens_per_j")]
    shown = ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
    span = f", tokens/J {min(tpj):.3g}-{max(tpj):.3g}" if tpj else ""
    return f"telemetry: {len(names)} sensors ({shown}); energy for {len(rows)} rows{span} (invoke report: W, tokens/J, telemetry.png)"
