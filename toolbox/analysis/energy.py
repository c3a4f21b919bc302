"""Energy per row: watts, joules, tokens per joule, clocks and temperatures over each row's own window.

How a row's window is found (docs/energy.md says what this can and cannot separate): llama-bench runs
one test after another in one process and prints a row the moment its repetitions are done. The
sampler marks each row's arrival on its monotonic clock (the `row` mark), and llama-bench says how
long each repetition took (`samples_ns`). So the row's measured time is the `sum(samples_ns)` just
before its arrival, and repetition i is placed back to back inside it, the last one ending at the
arrival. Warmup, model load, context creation and the untimed depth fill before each repetition lie
outside (before) that window and are not charged to the row.

Power is integrated (trapezoids between samples, linear interpolation at the window's ends) from the
first source present, in this order: amdgpu hwmon `power1_input`, `power1_average`, gpu_metrics'
socket power (all three: the whole APU package on Strix Halo), then RAPL's package counter (CPU
package only: the cpu backend on a machine without amdgpu). Idle power is the mean over the group's
idle baseline (no model loaded) and is shown beside, and subtracted in, `tokens_per_j_above_idle`.
"""

from __future__ import annotations

from pathlib import Path

from toolbox.store import telemetry as store

POWER_SOURCES = ("gpu.power_input_w", "gpu.power_avg_w", "gpu.metrics.socket_power_w")
THROTTLE_SHARE = 0.85  # gfx clock below this share of its maximum while the GPU is busy: throttled
BUSY_PCT = 50.0
HOT_MARGIN_C = 5.0  # within this of the sensor's limit: "at its limit"
DEFAULT_TEMP_LIMIT_C = 100.0  # Strix Halo's Tjmax when a sensor states no crit
DRAM_FIELD_CAP_MBS = 65535  # gpu_metrics v3.0 DRAM reads/writes are 16-bit MB/s


def power_series(session: dict) -> tuple[str | None, list[tuple[float, float]]]:
    """(source name, [(t, watts)]) of a session, from the first power source it has; RAPL counters become watts."""
    samples = session["samples"]
    for name in POWER_SOURCES:
        pts = [(s["t"], float(s["v"][name])) for s in samples if isinstance(s["v"].get(name), (int, float))]
        if pts:
            return name, pts
    ranges = (session["header"].get("facts") or {}).get("rapl_max_energy_range_uj") or {}
    for name in sorted(n for n in session["header"].get("sensor_names", []) if n.startswith("rapl.") and "package" in n):
        counter = [(s["t"], s["v"][name]) for s in samples if isinstance(s["v"].get(name), int)]
        top = ranges.get(name)
        pts = []
        for (t1, e1), (t2, e2) in zip(counter, counter[1:], strict=False):
            d = e2 - e1
            if d < 0 and top:  # the counter wrapped at max_energy_range_uj
                d += top + 1
            if t2 > t1 and d >= 0:
                pts.append(((t1 + t2) / 2, d / 1e6 / (t2 - t1)))
        if pts:
            return name, pts
    return None, []


def _at(pts: list[tuple[float, float]], t: float) -> float:
    """The series at time t: linear between samples, held flat beyond the ends."""
    if t <= pts[0][0]:
        return pts[0][1]
    if t >= pts[-1][0]:
        return pts[-1][1]
    lo, hi = 0, len(pts) - 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if pts[mid][0] <= t else (lo, mid)
    (t1, p1), (t2, p2) = pts[lo], pts[hi]
    return p1 + (p2 - p1) * (t - t1) / (t2 - t1)


def integrate(pts: list[tuple[float, float]], t0: float, t1: float) -> float:
    """∫ P dt over [t0, t1] in joules (trapezoids; the window's ends interpolated)."""
    if not pts or t1 <= t0:
        return 0.0
    inner = [(t, p) for t, p in pts if t0 < t < t1]
    knots = [(t0, _at(pts, t0)), *inner, (t1, _at(pts, t1))]
    return sum((b[0] - a[0]) * (a[1] + b[1]) / 2 for a, b in zip(knots, knots[1:], strict=False))


def _values(samples: list[dict], t0: float, t1: float, pred) -> list[tuple[str, float]]:
    return [(k, v) for s in samples if t0 <= s["t"] <= t1 for k, v in s["v"].items() if pred(k) and isinstance(v, (int, float))]


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def _tokens_per_rep(row: dict) -> int:
    if row.get("kind") == "serve":  # a serving level: the tokens its requests generated
        return int(row.get("tokens_out") or 0)
    return int(row.get("n_prompt") or 0) + int(row.get("n_gen") or 0)


def _durations(row: dict) -> list[float]:
    """Seconds of each repetition, as llama-bench measured them; a serving level is one window, its wall time
    (its `row` mark is set the moment its load ends, toolbox.run.serve)."""
    if row.get("kind") == "serve":
        return [float(row["wall_s"])] if row.get("wall_s") else []
    ns = row.get("samples_ns")
    if isinstance(ns, list) and ns:
        return [n / 1e9 for n in ns]
    ts, tok = row.get("samples_ts"), _tokens_per_rep(row)
    if isinstance(ts, list) and ts and tok:
        return [tok / x for x in ts if x]
    return []


def row_energy(row: dict, arrival: float, session: dict, idle_w: float | None) -> dict | None:
    """The energy record of one row that arrived at `arrival` (monotonic seconds); None without power or timing."""
    source, pts = power_series(session)
    reps = _durations(row)
    if not pts or not reps:
        return None
    window = sum(reps)
    t0, t1 = arrival - window, arrival
    energy = integrate(pts, t0, t1)
    tok = _tokens_per_rep(row)
    per_rep, end = [], t1
    for d in reversed(reps):
        e = integrate(pts, end - d, end)
        per_rep.insert(0, tok / e if e > 0 else None)
        end -= d
    samples = session["samples"]
    inside = [p for t, p in pts if t0 <= t <= t1]
    facts = session["header"].get("facts") or {}
    out: dict = {
        "window_s": round(window, 6),
        "samples": len([s for s in samples if t0 <= s["t"] <= t1]),
        "power_source": source,
        "scope": "CPU package (RAPL)" if source.startswith("rapl.") else "APU package (CPU + GPU + memory controller)",
        "energy_j": round(energy, 4),
        "mean_w": round(energy / window, 3),
        "peak_w": round(max(inside or [_at(pts, t0), _at(pts, t1)]), 3),
        "idle_w": None if idle_w is None else round(idle_w, 3),
        "tokens": tok * len(reps),
        "tokens_per_j": round(tok * len(reps) / energy, 6) if energy > 0 else None,
        "j_per_token": round(energy / (tok * len(reps)), 6) if tok else None,
        "samples_tokens_per_j": [None if x is None else round(x, 6) for x in per_rep],
    }
    if idle_w is not None:
        above = energy - idle_w * window
        out["energy_above_idle_j"] = round(above, 4)
        out["tokens_per_j_above_idle"] = round(tok * len(reps) / above, 6) if above > 0 else None
    _clocks_temps(out, samples, facts, t0, t1)
    _flags(out, row, samples, t0, t1)
    return out


def _clocks_temps(out: dict, samples: list[dict], facts: dict, t0: float, t1: float) -> None:
    clk = [v for _, v in _values(samples, t0, t1, lambda k: k == "gpu.sclk_mhz")] or [
        v for _, v in _values(samples, t0, t1, lambda k: k == "gpu.metrics.gfxclk_mhz")
    ]
    top = (facts.get("sclk_max_mhz") or {}).get("gpu") or max(
        (v for _, v in _values(samples, t0, t1, lambda k: k == "gpu.metrics.gfx_maxfreq_mhz")), default=None
    )
    if clk:
        out["gfx_mhz"] = round(_mean(clk), 1)
        if top:
            out["gfx_max_mhz"], out["gfx_share"] = top, round(_mean(clk) / top, 4)
    busy = [v for _, v in _values(samples, t0, t1, lambda k: k in ("gpu.busy_pct", "gpu.metrics.gfx_activity_pct"))]
    if busy:
        out["busy_pct"] = round(_mean(busy), 1)
    temps = _values(samples, t0, t1, lambda k: k.endswith("_c") and "temp" in k)
    if temps:
        name, peak = max(temps, key=lambda kv: kv[1])
        limit = (facts.get("temp_limits_c") or {}).get(name, DEFAULT_TEMP_LIMIT_C)
        out.update(peak_temp_c=round(peak, 2), peak_temp_sensor=name, temp_limit_c=limit)
    reads = [v for _, v in _values(samples, t0, t1, lambda k: k == "gpu.metrics.dram_read_mbs")]
    writes = [v for _, v in _values(samples, t0, t1, lambda k: k == "gpu.metrics.dram_write_mbs")]
    if reads:
        out["dram_read_gbs"] = round(_mean(reads) / 1000, 3)
        out["dram_gbs"] = round((_mean(reads) + (_mean(writes) or 0)) / 1000, 3)
        out["dram_capped"] = max(reads + writes) >= DRAM_FIELD_CAP_MBS
    for key, name in (("platform_profile", "platform_profile"), ("cpu.epp", "epp")):
        seen = sorted({s["v"][key] for s in samples if t0 - 2 <= s["t"] <= t1 and isinstance(s["v"].get(key), str)})
        if seen:
            out[name] = ",".join(seen)


def _flags(out: dict, row: dict, samples: list[dict], t0: float, t1: float) -> None:
    flags = []
    if out["samples"] < 3:
        flags.append(f"short window ({out['window_s'] * 1000:.0f} ms, {out['samples']} samples): interpolated")
    if out.get("gfx_share") is not None and out["gfx_share"] < THROTTLE_SHARE and (out.get("busy_pct") or 100) >= BUSY_PCT:
        flags.append(f"throttled: gfx clock at {out['gfx_share']:.0%} of {out['gfx_max_mhz']} MHz while busy")
    if out.get("peak_temp_c") is not None and out["peak_temp_c"] >= out["temp_limit_c"] - HOT_MARGIN_C:
        flags.append(f"hot: {out['peak_temp_sensor']} reached {out['peak_temp_c']:.0f} °C (limit {out['temp_limit_c']:.0f})")
    residency = {}
    for s in samples:
        if t0 - 1 <= s["t"] <= t1:
            for k, v in s["v"].items():
                if k.startswith("gpu.metrics.throttle_"):
                    residency.setdefault(k, []).append(v)
    grew = sorted(k.removeprefix("gpu.metrics.throttle_") for k, v in residency.items() if max(v) > min(v))
    if grew:
        flags.append("firmware throttling: " + ", ".join(grew))
    if out.get("platform_profile") and out["platform_profile"] != "performance":
        flags.append(f"power profile {out['platform_profile']}, not performance")
    if row.get("n_prompt") and row.get("n_gen"):
        flags.append("pp and tg in one sample: not separable")
    if out.get("dram_capped"):
        flags.append("DRAM counter at its 65.5 GB/s ceiling: at least this much")
    out["flags"] = flags


def idle_power(session: dict, group: str | None, before: float) -> float | None:
    """Mean power over the group's idle baseline, else over the last baseline before `before`; None without one."""
    idle = [s for s in session["samples"] if s.get("phase") == "idle"]
    mine = [s for s in idle if s.get("group") == group]
    if not mine:
        earlier = [s for s in idle if s["t"] < before]
        mine = [s for s in earlier if s.get("group") == earlier[-1].get("group")] if earlier else []
    _, pts = power_series({"header": session["header"], "samples": mine})
    return _mean([p for _, p in pts])


def pool(rows: list[dict]) -> dict | None:
    """The energy of several rows of one identity (one row: its own record): joules and windows summed, flags joined."""
    es = [r["energy"] for r in rows if isinstance(r.get("energy"), dict) and r["energy"].get("energy_j")]
    if not es:
        return None
    if len(es) == 1:
        return es[0]
    joules, window, tokens = (sum(e.get(k) or 0 for e in es) for k in ("energy_j", "window_s", "tokens"))
    out = {
        "energy_j": round(joules, 4),
        "window_s": round(window, 6),
        "tokens": tokens,
        "mean_w": round(joules / window, 3) if window else None,
        "peak_w": max(e.get("peak_w") or 0 for e in es),
        "tokens_per_j": round(tokens / joules, 6) if joules else None,
        "samples_tokens_per_j": [x for e in es for x in e.get("samples_tokens_per_j") or []],
        "flags": sorted({f for e in es for f in e.get("flags") or []}),
    }
    for key in ("idle_w", "gfx_mhz", "gfx_share", "busy_pct", "dram_gbs", "tokens_per_j_above_idle"):
        vals = [e[key] for e in es if isinstance(e.get(key), (int, float))]
        if vals:
            out[key] = round(sum(vals) / len(vals), 4)
    temps = [e for e in es if e.get("peak_temp_c") is not None]
    if temps:
        hottest = max(temps, key=lambda e: e["peak_temp_c"])
        out.update(peak_temp_c=hottest["peak_temp_c"], peak_temp_sensor=hottest.get("peak_temp_sensor"))
    for key in ("power_source", "scope", "platform_profile", "epp"):
        vals = sorted({str(e[key]) for e in es if e.get(key)})
        if vals:
            out[key] = ",".join(vals)
    return out


def compute(run_path: Path, rows: list[dict]) -> list[dict]:
    """Energy records for the rows of a run, from its telemetry.jsonl: [{group_id, case_id, ...}]."""
    out = []
    for session in store.read_sessions(run_path):
        source, _ = power_series(session)
        if source is None:
            continue
        ok = {(r.get("group_id"), r.get("case_id")): r for r in rows if r.get("status") == "ok" and r.get("case_id")}
        for m in session["marks"]:
            if m.get("event") != "row":
                continue
            if m.get("case_id"):
                row, key = ok.get((m.get("group"), m.get("case_id"))), {"group_id": m.get("group"), "case_id": m.get("case_id")}
            else:  # the compose runner's rows carry no ids: its mark says which line of rows.jsonl arrived
                i = m.get("row")
                row = rows[i - 1] if isinstance(i, int) and 0 < i <= len(rows) and rows[i - 1].get("status", "ok") == "ok" else None
                key = {"row_index": i}
            rec = row_energy(row, m["t"], session, idle_power(session, m.get("group"), m["t"])) if row else None
            if rec is not None:
                out.append(key | rec)
    return out


def attach_energy(results_dir: Path, run_id: str) -> list[dict]:
    """Compute the run's energy records and store them (energy.json beside the rows); [] without telemetry."""
    from toolbox.store.runs import read_rows, run_dir

    path = run_dir(Path(results_dir), run_id)
    if not store.telemetry_path(path).exists():
        return []
    records = compute(path, read_rows(path))
    store.write_energy(path, records)
    return records
