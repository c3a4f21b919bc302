"""Measuring for the search: batches of cases through bench's own runner, samples read back, time and budget.

Every measurement goes through toolbox.run.bench (grouping into exact cross products, one container
and one model load per group, rows written as they arrive, a dying group re-run case by case); a
case measured again later adds rows with the same case_id, whose samples pool (analysis.identity
does the same for reports). The budget is machine time: wall seconds spent by tune, across resumes.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field, replace

from toolbox.analysis import stats
from toolbox.errors import ToolboxError
from toolbox.quality import gate
from toolbox.run.bench import BenchResult, run_group
from toolbox.run.context import RunContext, Stopped
from toolbox.run.matrix import Case, Plan, group_cases
from toolbox.tune.goals import Goal, scores
from toolbox.tune.space import Candidate

# A container start, model load and exit on top of the measured tests; the bare `docker run` of
# llama-bench costs 0.87 s on the CI machine (README, benchmarks/task_overhead.py): a floor for estimates.
GROUP_OVERHEAD_S = 1.0
_BUDGET = re.compile(r"^\s*(?:(\d+(?:\.\d+)?)\s*h)?\s*(?:(\d+(?:\.\d+)?)\s*m(?:in)?)?\s*(?:(\d+(?:\.\d+)?)\s*s)?\s*$")


def parse_budget(text: str) -> float:
    """'30m', '90s', '1h30m', '2h', or a plain number of minutes -> seconds (> 0)."""
    t = str(text).strip().lower()
    try:
        seconds = float(t) * 60
    except ValueError:
        m = _BUDGET.match(t)
        if not t or not m or not any(m.groups()):
            raise ToolboxError(f"cannot read budget {text!r}", "write minutes or a duration: 30m, 90s, 1h30m") from None
        h, mi, s = (float(g) if g else 0.0 for g in m.groups())
        seconds = h * 3600 + mi * 60 + s
    if not math.isfinite(seconds) or seconds <= 0:
        raise ToolboxError(f"budget {text!r} is not a positive duration", "write e.g. --budget 30m")
    return seconds


def fmt_duration(seconds: float) -> str:
    seconds = max(0.0, float(seconds))
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


@dataclass
class Clock:
    """Machine time tune has spent (earlier sessions of a resumed run included) against its budget."""

    budget_s: float
    before_s: float = 0.0
    t0: float = field(default_factory=time.monotonic)

    @property
    def spent(self) -> float:
        return self.before_s + time.monotonic() - self.t0

    @property
    def left(self) -> float:
        return self.budget_s - self.spent


@dataclass
class Measurer:
    """Runs batches of cases into one run (bench's context and runner) and reads their samples back."""

    ctx: RunContext
    result: BenchResult
    rows: list[dict]  # every row of the run: earlier sessions' and this one's
    timings: list[tuple[float, int, float]] = field(default_factory=list)  # (wall s, groups, measured s) per batch

    def samples(self, case: Case) -> list[float]:
        return [s for r in self.rows if r.get("case_id") == case.case_id and r.get("status") == "ok" for s in r.get("samples_ts") or []]

    def have(self, case: Case) -> int:
        return len(self.samples(case))

    def problem(self, cand: Candidate, stage: str) -> str | None:
        """Why a candidate's measurements do not count (bench's failure, quality.gate's reasons), None if they do."""
        for case in getattr(cand, stage):
            rows = [r for r in self.rows if r.get("case_id") == case.case_id]
            ok = [r for r in rows if r.get("status") == "ok"]
            for r in ok:
                why = gate.row_not_counted(r)
                if why:
                    return f"{case.test}: {gate.NOT_COUNTED[why]}"
            if rows and not ok:
                bad = rows[-1]
                return f"{case.test} failed: {bad.get('error') or bad.get('status')}"
        return None

    def score(self, cand: Candidate, stage: str, goal: Goal, unstable_spread: float) -> stats.Summary | None:
        """The goal's score over a candidate's samples in one stage (screen or confirm)."""
        cases = getattr(cand, stage)
        pp = next((self.samples(c) for c in cases if c.p.get("n_prompt") and not c.p.get("n_gen")), [])
        tg = next((self.samples(c) for c in cases if c.p.get("n_gen") and not c.p.get("n_prompt")), [])
        return stats.summarize(scores(goal, pp, tg), unstable_spread=unstable_spread)

    def figures(self, cand: Candidate, stage: str) -> dict:
        """Median pp and tg t/s of a candidate in one stage, and tokens per joule where telemetry recorded them."""
        from toolbox.analysis.answer import tokens_per_joule

        out: dict = {}
        for case in getattr(cand, stage):
            s = stats.summarize(self.samples(case))
            kind = "pp" if case.p.get("n_prompt") else "tg"
            out[kind] = round(s.median, 3) if s else None
            per_j = [tokens_per_joule(r) for r in self.rows if r.get("case_id") == case.case_id and r.get("status") == "ok"]
            per_j = [x for x in per_j if x]
            if per_j:
                out[f"{kind}_tokens_per_j"] = round(sorted(per_j)[len(per_j) // 2], 4)
        return out

    def measure(self, plan: Plan, need: dict[Case, int], on_group=None) -> None:
        """Run each case for its number of extra repetitions (cases needing the same number share groups)."""
        by_reps: dict[int, list[Case]] = {}
        for case, n in need.items():
            if n > 0:
                by_reps.setdefault(n, []).append(case)
        for reps, cases in sorted(by_reps.items()):
            self.ctx.plan = replace(plan, repetitions=reps)
            groups = group_cases(cases)
            t0, before = time.monotonic(), len(self.result.rows)
            for g in groups:
                if self.ctx.stop.is_set():
                    raise Stopped
                if self.ctx.telemetry is not None:
                    self.ctx.telemetry.idle(self.ctx.stop, g.group_id)
                run_group(self.ctx, self.result, g)
                self.rows.extend(self.result.rows[before:])
                before = len(self.result.rows)
                if on_group:
                    on_group()
            measured = sum(float(r.get("avg_ns") or 0) * (reps + (1 if plan.warmup else 0)) / 1e9 for r in self.rows[-len(cases) :])
            self.timings.append((time.monotonic() - t0, len(groups), measured))

    def overhead_s(self) -> float:
        """Seconds per group beyond the measured tests, from the batches so far (GROUP_OVERHEAD_S at least)."""
        walls = [(w - m) / g for w, g, m in self.timings if g]
        return max(GROUP_OVERHEAD_S, sum(walls) / len(walls)) if walls else GROUP_OVERHEAD_S

    def estimate(self, plan: Plan, need: dict[Case, int], twin=None) -> float:
        """Seconds a batch would take: each case's measured time per repetition plus the per-group overhead.

        twin(case) -> (screening case, size factor) for a case not measured yet: its time is the twin's
        times the factor (the ratio of the tokens the two tests process)."""
        total = 0.0
        todo = [c for c, n in need.items() if n > 0]
        for case in todo:
            total += self.seconds_per_rep(case, twin) * (need[case] + (1 if plan.warmup else 0))
        return total + (len(group_cases(todo)) if todo else 0) * self.overhead_s()

    def seconds_per_rep(self, case: Case, twin=None) -> float:
        own = [float(r["avg_ns"]) / 1e9 for r in self.rows if r.get("case_id") == case.case_id and r.get("avg_ns")]
        if own:
            return sum(own) / len(own)
        other, factor = twin(case) if twin else (None, 1.0)
        return self.seconds_per_rep(other) * factor if other is not None and other != case else 0.0
