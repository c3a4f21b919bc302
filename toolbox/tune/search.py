"""The search: screen every candidate cheaply, halve, gate on correctness, confirm the finalists.

Successive halving rather than a bandit: a tune space has tens of arms, not thousands, and a pull is
not one cheap sample but a container with a model load; halving measures in rungs, so every rung
is one batch of grouped llama-bench processes (one model load per group), while a bandit's
one-arm-at-a-time pulls would each pay a load. Rung k gives every surviving candidate k + 1
screening samples (at most SCREEN_REPS; fewer generated tokens than the goal, one repetition at
first) and keeps the best third (ETA), never fewer than FINALISTS; the candidates left go through
the quality check (toolbox.quality.check; broken never passes, degraded only with allow_degraded),
and the best FINALISTS that pass are measured at the goal's full test size with the space's
repetitions. The winner's margin over the runner-up is tested on the raw samples (analysis.stats,
Welch's t-test). `grid` measures every candidate fully instead: the reference tune is judged by
(benchmarks/tune_vs_grid.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from toolbox.analysis import stats
from toolbox.errors import ToolboxError
from toolbox.tune.goals import Goal
from toolbox.tune.measure import Clock, Measurer, fmt_duration
from toolbox.tune.space import Candidate, Space, label, varying

ETA = 3
FINALISTS = 3
SCREEN_REPS = 3
ALPHA = 0.05
SEARCHES = ("halving", "grid")


@dataclass
class Standing:
    """A candidate's place in the race."""

    cand: Candidate
    rung: int = 0
    screen: stats.Summary | None = None
    confirm: stats.Summary | None = None
    status: str = "screening"  # screening, finalist, recommended, runner-up, confirmed, dropped
    why: str = ""
    quality: dict | None = None

    @property
    def best(self) -> stats.Summary | None:
        return self.confirm or self.screen


@dataclass
class Race:
    space: Space
    goal: Goal
    m: Measurer
    clock: Clock
    quality_of: object  # callable(Candidate) -> check result dict (cached per configuration)
    allow_degraded: bool = False
    search: str = "halving"
    unstable_spread: float = 0.05
    on_update: object = None  # callable(Race) for the live view
    standings: dict[str, Standing] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)
    finalists: list[Standing] = field(default_factory=list)
    winner: Standing | None = None
    runner_up: Standing | None = None
    comparison: stats.Comparison | None = None
    outcome: str = "running"  # running, recommended, all-broken, none-acceptable, failed
    mark: str | None = None  # compare's judgement of the winner against the runner-up: faster, same, untested

    def __post_init__(self):
        self.standings = {c.key: Standing(c) for c in self.space.candidates}
        self.shown = varying(self.space.candidates)

    # --- the live view's facts -------------------------------------------------------------------

    def alive(self) -> list[Standing]:
        return [s for s in self.standings.values() if s.status != "dropped"]

    def leader(self) -> Standing | None:
        scored = [s for s in self.alive() if s.best]
        return max(scored, key=lambda s: s.best.median) if scored else None

    def name(self, s: Standing) -> str:
        return label(s.cand, self.shown)

    def _note(self, text: str) -> None:
        self.log.append(text)
        self._update()

    def _update(self) -> None:
        if self.on_update:
            self.on_update(self)

    # --- stages ----------------------------------------------------------------------------------

    def run(self) -> Race:
        if self.search == "grid":
            self._confirm([s for s in self.standings.values()], self.space.repetitions, stage_note="grid: every candidate")
            self._gate(self._ranked(), FINALISTS, stage="confirm")
        else:
            self._halve()
            self._gate(self._ranked(), FINALISTS, stage="screen")
            if self.finalists:
                self._confirm(self.finalists, self._affordable_reps(self.finalists), stage_note="confirmation")
        self._decide()
        return self

    def _halve(self) -> None:
        alive = [s for s in self.standings.values() if s.status != "dropped"]
        rung = 0
        while True:
            target = min(rung + 1, SCREEN_REPS)
            need = {c: target - self.m.have(c) for s in alive for c in s.cand.screen}
            if any(n > 0 for n in need.values()):
                cost = self.m.estimate(self.space.screen, need)
                reserve = self._confirm_cost(alive[:FINALISTS], 2) if rung else 0.0
                if rung and cost + reserve > self.clock.left:
                    self._note(f"rung {rung}: stopped halving, {fmt_duration(cost)} more would not leave the confirmation its time")
                    break
                self.m.measure(self.space.screen, need, on_group=self._update)
            for s in alive:
                s.rung = rung
                why = self.m.problem(s.cand, "screen")
                s.screen = self.m.score(s.cand, "screen", self.goal, self.unstable_spread)
                if why or s.screen is None:
                    s.status, s.why = "dropped", f"screening: {why or 'no t/s'}"
            alive = sorted([s for s in alive if s.status != "dropped"], key=lambda s: -s.screen.median)
            self._update()
            if len(alive) <= FINALISTS:
                break
            keep = max(FINALISTS, math.ceil(len(alive) / ETA))
            cut = alive[keep - 1].screen.median
            for s in alive[keep:]:
                s.status = "dropped"
                s.why = f"screening rung {rung + 1}: {s.screen.median:.4g} < {cut:.4g} of the last kept ({target} sample(s))"
            self._note(f"rung {rung + 1}: kept {keep} of {len(alive)} candidates ({target} sample(s) each)")
            alive = alive[:keep]
            rung += 1

    def _ranked(self) -> list[Standing]:
        """Every candidate that was measured without a problem, best first: later rungs before earlier ones."""
        scored = [s for s in self.standings.values() if s.best is not None and not s.why.startswith(("screening:", "confirm"))]
        return sorted(scored, key=lambda s: (-(s.confirm is not None), -s.rung, -s.best.median))

    def _gate(self, ranking: list[Standing], n: int, stage: str) -> None:
        """Walk the ranking, checking each configuration's output, until n acceptable ones are found."""
        from toolbox.quality.gate import acceptable

        for s in ranking:
            q = self.quality_of(s.cand)
            s.quality = q
            v = q.get("verdict")
            if acceptable(v, allow_degraded=self.allow_degraded):
                s.status = "finalist"
                s.why = ""
                self.finalists.append(s)
            else:
                s.status = "dropped"
                if v == "degraded":
                    s.why = f"degraded output (KLD {q.get('kld_mean'):.3g}): --allow-degraded to accept it"
                elif v == "broken":
                    s.why = f"broken output (KLD {q.get('kld_mean'):.3g}, top-1 {q.get('top1_agree') or 0:.1%}): never recommended"
                else:
                    s.why = f"not checked: {q.get('error') or 'no verdict'}"
            self._update()
            if len(self.finalists) >= n:
                break
        for s in ranking:
            if s.status not in ("finalist", "dropped"):
                s.status, s.why = "dropped", f"not among the {n} best that pass the quality check"
        if stage == "screen":
            self._note(f"quality gate: {len(self.finalists)} finalist(s)")

    def _confirm_cost(self, standings: list[Standing], reps: int) -> float:
        need = {c: reps - self.m.have(c) for s in standings for c in s.cand.confirm}
        return self.m.estimate(self.space.confirm, need, twin=self._twin)

    def _twin(self, case):
        """A confirmation case's screening twin and the ratio of their test sizes (for time estimates)."""
        for s in self.standings.values():
            if case in s.cand.confirm:
                kind = bool(case.p.get("n_prompt"))
                other = next((c for c in s.cand.screen if bool(c.p.get("n_prompt")) == kind), None)
                if other is None:
                    return None, 1.0
                size = (case.p.get("n_prompt") or case.p.get("n_gen") or 1) / (other.p.get("n_prompt") or other.p.get("n_gen") or 1)
                return other, size
        return None, 1.0

    def _affordable_reps(self, finalists: list[Standing]) -> int:
        """The space's repetitions, or fewer (at least 2, a significance test needs two per side) when the budget says so."""
        for reps in range(self.space.repetitions, 1, -1):
            if self._confirm_cost(finalists, reps) <= self.clock.left:
                if reps < self.space.repetitions:
                    self._note(f"confirmation with {reps} repetitions instead of {self.space.repetitions}: the budget is short")
                return reps
        while len(finalists) > 2 and self._confirm_cost(finalists, 2) > self.clock.left:
            dropped = finalists.pop()
            dropped.status, dropped.why = "dropped", "finalist left out: the budget could not confirm it"
        need = self._confirm_cost(finalists, 2)
        if need > self.clock.left:
            raise BudgetSpent(
                f"the budget ({fmt_duration(self.clock.budget_s)}) is spent before the confirmation: it screened "
                f"{len(self.space.candidates)} candidates in {fmt_duration(self.clock.spent)}; confirming {len(finalists)} "
                f"finalists needs about {fmt_duration(need)} more",
                f"continue with a larger budget: --resume RUN --budget {fmt_duration(self.clock.spent + need * 1.5).replace(' ', '')}",
            )
        return 2

    def _confirm(self, standings: list[Standing], reps: int, stage_note: str) -> None:
        need = {c: reps - self.m.have(c) for s in standings for c in s.cand.confirm}
        self._note(
            f"{stage_note}: {len(standings)} candidate(s) x {reps} repetitions, about {fmt_duration(self._confirm_cost(standings, reps))}"
        )
        self.m.measure(self.space.confirm, need, on_group=self._update)
        for s in standings:
            why = self.m.problem(s.cand, "confirm")
            s.confirm = self.m.score(s.cand, "confirm", self.goal, self.unstable_spread)
            if why or s.confirm is None:
                s.status, s.why = "dropped", f"confirmation: {why or 'no t/s'}"
            elif self.search == "grid":
                s.status = "confirmed"
        self._update()

    def _decide(self) -> None:
        passed = sorted([s for s in self.finalists if s.status == "finalist" and s.confirm], key=lambda s: -s.confirm.median)
        if not passed:
            verdicts = [s.quality.get("verdict") for s in self.standings.values() if s.quality]
            if self.finalists or not verdicts:
                self.outcome = "failed"  # measuring failed (every candidate, or every finalist's confirmation)
            elif verdicts and all(v == "broken" for v in verdicts):
                self.outcome = "all-broken"
            else:
                self.outcome = "none-acceptable"
            return
        self.winner = passed[0]
        self.winner.status = "recommended"
        if len(passed) > 1:
            self.runner_up = passed[1]
            self.runner_up.status = "runner-up"
            from toolbox.analysis.compare import judge_speed

            self.comparison, self.mark, _ = judge_speed(self.runner_up.confirm, self.winner.confirm, alpha=ALPHA)
            for s in passed[2:]:
                s.status, s.why = "dropped", f"confirmed slower: {s.confirm.median:.4g} against {self.winner.confirm.median:.4g}"
            self.runner_up.why = self.margin_text()
        self.outcome = "recommended"
        self._update()

    def significant(self) -> bool | None:
        """Is the winner faster than the runner-up by compare's rule (significant and above its threshold)?"""
        c = self.comparison
        return None if c is None or c.p_value is None else self.mark == "faster"

    def margin_text(self) -> str:
        c = self.comparison
        if c is None:
            return "no runner-up to compare with"
        err = f" ± {c.ratio_err:.2f}" if c.ratio_err is not None else ""
        if c.p_value is None:
            return f"the recommendation is {c.ratio:.2f}{err} times as fast (untested: too few samples)"
        how = "faster" if self.mark == "faster" else "within noise: either will do"
        return f"the recommendation is {c.ratio:.2f}{err} times as fast (p = {c.p_value:.3g}, {how}; Welch's t-test as invoke compare)"


class BudgetSpent(ToolboxError):
    """The budget ran out before anything could be confirmed (the rows measured so far are kept)."""
