"""results/<run_id>/telemetry.jsonl: every sensor sample of a run, beside its rows.

One JSON object per line, each with a `kind`:

- `header`: a sampling session starts (one per `invoke bench`, a second one after `--resume`): the
  sensors found (none is a valid answer), facts that do not change (highest gfx clock, gpu_metrics
  version, RAPL wrap value), the sensors skipped and why, the rate, and the clocks at its start
  (`t0` monotonic seconds, `wall0` Unix seconds);
- `sample`: `t` (monotonic seconds, the same clock as the marks of its session), `wall` (Unix
  seconds), `phase` (idle: before a group, no model loaded; group: a container runs; between),
  `group`, and `v`: {sensor name: value}. A sensor that could not be read is absent, never guessed;
- `mark`: an event on the same clock: `container_start`, `row` (a result row arrived, with its
  case_id), `container_end`, `idle_start`;
- `end`: the session stopped: sample count, warnings raised while sampling.

energy.json beside it holds what toolbox.analysis.energy derived per row (window, joules, tokens per
joule, clocks, temperatures, flags); readers get it merged into each row's `energy`.

Samples are written in batches (flushed and fsynced about once a second, files.append_line), so a
crash loses at most the last second of samples and never a row.
"""

from __future__ import annotations

import json
from pathlib import Path

from toolbox.files import append_line, now_iso, read_jsonl, write_json_atomic

FILE = "telemetry.jsonl"
ENERGY_FILE = "energy.json"  # derived from telemetry.jsonl and rows.jsonl by toolbox.analysis.energy; rebuildable


def telemetry_path(run_path: Path) -> Path:
    return Path(run_path) / FILE


def append_records(run_path: Path, records: list[dict]) -> None:
    """Append records as JSON lines in one durable write."""
    if records:
        append_line(telemetry_path(run_path), "\n".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")) for r in records))


def read_sessions(run_path: Path) -> list[dict]:
    """The sampling sessions of a run: [{header, samples, marks, end}], oldest first; [] without telemetry."""
    records, _ = read_jsonl(telemetry_path(run_path))
    sessions: list[dict] = []
    for r in records:
        kind = r.get("kind")
        if kind == "header" or not sessions:
            sessions.append({"header": r if kind == "header" else {}, "samples": [], "marks": [], "end": None})
            if kind == "header":
                continue
        cur = sessions[-1]
        if kind == "sample":
            cur["samples"].append(r)
        elif kind == "mark":
            cur["marks"].append(r)
        elif kind == "end":
            cur["end"] = r
    return sessions


def write_energy(run_path: Path, records: list[dict]) -> None:
    """Store the energy records of a run (replacing earlier ones: they are derived, never measured)."""
    write_json_atomic(Path(run_path) / ENERGY_FILE, {"computed_at": now_iso(), "rows": records})


def merge_energy(rows: list[dict], run_path: Path) -> list[dict]:
    """Rows with `energy` filled from energy.json (matched on group_id and case_id, or for compose runs on the
    line of rows.jsonl); rows without stay as they are."""
    path = Path(run_path) / ENERGY_FILE
    if not path.exists():
        return rows
    try:
        records = json.loads(path.read_text()).get("rows") or []
    except (OSError, ValueError, AttributeError):
        return rows
    found = {(r.get("group_id"), r.get("case_id")): r for r in records if isinstance(r, dict) and r.get("case_id")}
    by_line = {r["row_index"]: r for r in records if isinstance(r, dict) and isinstance(r.get("row_index"), int)}
    out = []
    for i, r in enumerate(rows, 1):  # compose rows have no ids: their records name the line instead
        e = found.get((r.get("group_id"), r.get("case_id"))) if r.get("case_id") else by_line.get(i)
        out.append(dict(r, energy={k: v for k, v in e.items() if k not in ("group_id", "case_id", "row_index")}) if e else r)
    return out
