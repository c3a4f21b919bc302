"""The answer a report leads with: per model and test, the fastest configuration that counts.

"Counts" is the quality gate's rule (quality.gate.not_counted): never a failed row, a row that ran on
another device than intended, or a configuration whose output is broken. The runner-up is the next
configuration that counts; the margin between them is judged with compare's own rule and test
(compare.judge_speed: Welch's t-test on the raw samples), so "faster" means the same here as in
`invoke compare`. Tokens per joule are shown when the rows carry them (telemetry).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath

from toolbox.analysis.identity import IDENTITY_FIELDS, SHAPE_FIELDS, Collected, Result, fmt_value, visible_fields

# What names a configuration in an answer: every identity field but the model and the test shape.
NOT_CONFIG = ("model", "model_file", *SHAPE_FIELDS)


@dataclass
class Answer:
    model: str | None
    test: str
    kind: str | None
    best: Result | None  # None when nothing counts
    runner_up: Result | None
    config: str  # the best configuration, named by what varies among the candidates
    runner_up_config: str = ""
    margin: float | None = None  # best / runner-up - 1 (means)
    margin_err: float | None = None  # 1-sigma uncertainty of the ratio
    p_value: float | None = None
    significant: bool | None = None  # None: no significance test possible (no raw samples, one candidate)
    candidates: int = 0  # configurations that count
    not_counted: int = 0  # configurations left out by the quality gate
    goal: str | None = None

    @property
    def verdict(self) -> str | None:
        return self.best.verdict if self.best else None

    @property
    def tokens_per_joule(self) -> float | None:
        return tokens_per_joule(self.best.row) if self.best else None

    @property
    def margin_text(self) -> str:
        """'+4.2% ± 1.1% (significant, p=0.003)', 'only configuration', ..."""
        if self.best is None:
            return "nothing counts"
        if self.runner_up is None:
            return "only configuration that counts"
        err = f" ± {self.margin_err:.1%}" if self.margin_err is not None else ""
        if self.significant is None:
            how = "untested: no raw samples"
        else:
            how = f"{'significant' if self.significant else 'not significant'}, p={self.p_value:.2g}"
        return f"{self.margin:+.1%}{err} ({how})"


def tokens_per_joule(row: dict) -> float | None:
    """Tokens per joule of a row, where telemetry recorded it (top level or under `telemetry` / `energy`)."""
    for where in (row, row.get("telemetry"), row.get("energy")):
        if isinstance(where, dict):
            for key in ("tokens_per_j", "tokens_per_joule"):
                v = where.get(key)
                if isinstance(v, (int, float)) and v > 0:
                    return float(v)
    return None


def config_label(r: Result, fields: list[str], multi_run: bool) -> str:
    """'backend=vulkan, K=q8_0, fa=1' (the fields given), with the run's 6-digit tail when several runs are answered."""
    words = [f"{IDENTITY_FIELDS[f]}={fmt_value(r.ident.get(f))}" for f in fields if r.ident.get(f) is not None]
    if multi_run:
        words.insert(0, f"run {r.run_id[-6:]}")
    return ", ".join(words) or "the only configuration"


def answers(col: Collected, *, alpha: float = 0.05, test: str = "welch") -> list[Answer]:
    """One Answer per model and test (pp512, tg128@d4096, ...), in the report's order."""
    from toolbox.analysis.compare import judge_speed

    groups: dict[tuple, list[Result]] = {}
    for r in col.results:
        if r.summary is None:
            continue
        groups.setdefault((r.ident.get("model"), r.ident.get("model_file"), r.test), []).append(r)
    multi_run = len({r.run_id for r in col.results}) > 1
    out = []
    for (model, model_file, name), rs in groups.items():
        counted = sorted((r for r in rs if not r.not_counted), key=lambda r: -r.summary.median)
        fields = [f for f in visible_fields([r.ident for r in rs])[0] if f not in NOT_CONFIG]
        a = Answer(
            model_file or model,
            name,
            rs[0].kind,
            counted[0] if counted else None,
            counted[1] if len(counted) > 1 else None,
            config_label(counted[0], fields, multi_run) if counted else "",
            candidates=len(counted),
            not_counted=len(rs) - len(counted),
        )
        if a.runner_up is not None:
            a.runner_up_config = config_label(a.runner_up, fields, multi_run)
            cmp_, _, _ = judge_speed(a.runner_up.summary, a.best.summary, threshold=0.0, alpha=alpha, test=test)
            a.margin, a.margin_err, a.p_value = cmp_.ratio - 1, cmp_.ratio_err, cmp_.p_value
            a.significant = None if cmp_.p_value is None else cmp_.p_value < alpha
        out.append(a)
    return out


@dataclass
class GoalAnswer:
    """What `invoke tune` answered for one goal (run.json's tune.answer), read as stored: tune did the measuring."""

    run_id: str
    goal: str
    depth: int | None
    model: str
    outcome: str
    config: str  # the recommended configuration, '' when nothing was recommended
    median: float | None = None
    margin: str = ""
    significant: bool | None = None
    verdict: str | None = None
    server_command: str = ""


def goal_answers(metas: list[dict]) -> list[GoalAnswer]:
    """One GoalAnswer per tune run among `metas` (kind 'tune' with a stored answer)."""
    out = []
    for meta in metas:
        tune = (meta or {}).get("tune") if (meta or {}).get("kind") == "tune" else None
        if not isinstance(tune, dict) or not isinstance(tune.get("answer"), dict):
            continue
        req, ans = tune.get("request") or {}, tune["answer"]
        rec = ans.get("recommended") or {}
        out.append(
            GoalAnswer(
                meta.get("run_id") or "?",
                str(req.get("goal") or "?"),
                req.get("depth"),
                PurePosixPath(str(req.get("model") or "?")).name,
                str(ans.get("outcome") or meta.get("status") or "?"),
                str(rec.get("label") or ""),
                (rec.get("score") or {}).get("median"),
                str(rec.get("margin") or ""),
                rec.get("significant"),
                (rec.get("quality") or {}).get("verdict"),
                str((rec.get("commands") or {}).get("llama_server") or ""),
            )
        )
    return out
