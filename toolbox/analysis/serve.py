"""Serving rows read back: one latency-vs-throughput curve per server configuration, the knee where
latency explodes, tokens per joule when telemetry recorded energy, and two runs side by side.

A level that does not count (failed, off-device, cross-talk: quality.gate.not_counted) is kept on its
curve, marked, and never chosen as a knee, a best configuration or one side of a ratio.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from toolbox.analysis.answer import tokens_per_joule as answer_tokens_per_joule
from toolbox.quality.gate import row_not_counted

# Knee: the last level before one where latency grows by LATENCY_JUMP or more while throughput grows
# by less than THROUGHPUT_GAIN: past it, more load buys queueing, not tokens.
LATENCY_JUMP = 1.5
THROUGHPUT_GAIN = 1.1
LATENCY_KEY = "e2e_ms_p90"


@dataclass
class Curve:
    """One server configuration's levels, in load order (closed-loop levels, then open-loop ones)."""

    config_id: str
    backend: str
    server: dict
    model: str
    levels: list[dict] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.backend} " + (" ".join(f"{k}={v}" for k, v in self.server.items()) or "defaults")

    def counted(self, mode: str | None = None) -> list[dict]:
        return [r for r in self.levels if not row_not_counted(r) and (mode is None or r.get("mode") == mode)]

    def knee(self) -> dict | None:
        """Where latency explodes: {'level', 'next', 'latency_x', 'throughput_x'}, None when it never does."""
        for mode in ("concurrency", "rate"):
            pts = [r for r in self.counted(mode) if r.get(LATENCY_KEY) and r.get("output_tps")]
            for a, b in zip(pts, pts[1:]):
                lat, tput = b[LATENCY_KEY] / a[LATENCY_KEY], b["output_tps"] / a["output_tps"]
                if lat >= LATENCY_JUMP and tput < THROUGHPUT_GAIN:
                    return {"level": a["level"], "next": b["level"], "latency_x": round(lat, 2), "throughput_x": round(tput, 2)}
        return None

    def best(self, key: str = "output_tps") -> dict | None:
        counted = [r for r in self.counted() if r.get(key) is not None]
        return max(counted, key=lambda r: r[key]) if counted else None


def _order(r: dict) -> tuple:
    return (0 if r.get("mode") == "concurrency" else 1, r.get("concurrency") or r.get("rate") or 0)


def curves(rows: list[dict]) -> list[Curve]:
    """The serving rows of one or more runs grouped into one curve per configuration (run, config)."""
    out: dict[tuple, Curve] = {}
    for r in rows:
        if r.get("kind") != "serve":
            continue
        key = (r.get("run_id"), r.get("config_id"))
        if key not in out:
            out[key] = Curve(r.get("config_id"), r.get("backend"), r.get("server") or {}, r.get("model_filename"))
        out[key].levels.append(r)
    for c in out.values():
        c.levels.sort(key=_order)
    return list(out.values())


def tokens_per_joule(row: dict) -> float | None:
    """Output tokens per joule of a level: as the telemetry stage stored it, or from the level's energy_j."""
    stored = answer_tokens_per_joule(row)
    if stored is not None:
        return stored
    energy = (row.get("telemetry") or {}).get("energy_j")
    return round(row["tokens_out"] / energy, 3) if energy and row.get("tokens_out") else None


def compare_serve(base_rows: list[dict], new_rows: list[dict], threshold: float = 0.05) -> list[dict]:
    """Levels of the same configuration and load in two runs: output tok/s and p90 latency ratios (new / base),
    and a mark: faster / slower (throughput changed by more than the threshold) or same.

    A side that does not count gives no ratio and no mark, only its reason."""

    def key(r):
        return (r.get("backend"), r.get("model_filename"), tuple(sorted((r.get("server") or {}).items())), r.get("level"))

    base = {key(r): r for r in base_rows if r.get("kind") == "serve"}
    out = []
    for r in new_rows:
        b = base.get(key(r)) if r.get("kind") == "serve" else None
        if b is None:
            continue
        why = row_not_counted(b) or row_not_counted(r)
        item = {"config": Curve(r.get("config_id"), r.get("backend"), r.get("server") or {}, "").label, "level": r.get("level")}
        item.update(
            base_tps=b.get("output_tps"), new_tps=r.get("output_tps"), base_latency=b.get(LATENCY_KEY), new_latency=r.get(LATENCY_KEY)
        )
        if why:
            item.update(not_counted=why, tps_ratio=None, latency_ratio=None, mark="not counted")
        else:
            tps = round(r["output_tps"] / b["output_tps"], 3) if b.get("output_tps") else None
            item.update(
                not_counted=None,
                tps_ratio=tps,
                latency_ratio=round(r[LATENCY_KEY] / b[LATENCY_KEY], 3) if b.get(LATENCY_KEY) and r.get(LATENCY_KEY) else None,
                mark="same" if tps is None or abs(tps - 1) < threshold else ("faster" if tps > 1 else "slower"),
            )
        out.append(item)
    return out
