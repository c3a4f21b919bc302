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

Samples are written in batches (flushed and fsynced about once a second, files.append_line), so a
crash loses at most the last second of samples and never a row.
"""

from __future__ import annotations

import json
from pathlib import Path

from toolbox.files import append_line, read_jsonl

FILE = "telemetry.jsonl"


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
