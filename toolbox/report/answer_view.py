"""The answer at the top of every report (terminal, Markdown, HTML): per model and test, the fastest
configuration that counts, its margin over the runner-up and whether that margin is significant."""

from __future__ import annotations

import html

from toolbox.analysis.answer import Answer, GoalAnswer
from toolbox.report.tables import fmt_ts, html_table, md_table

INTRO = (
    "The fastest configuration that counts (never failed, off-device or broken), per test; the margin is its mean "
    "t/s over the next fastest one that counts, ± 1 sigma, with Welch's t-test on the raw samples."
)


def answer_table(answers: list[Answer]) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the answer table (a model column when the answers span several models, tokens/J when known)."""
    models = len({a.model for a in answers}) > 1
    quality = any(a.verdict for a in answers)
    energy = any(a.tokens_per_joule for a in answers)
    header = (["model"] if models else []) + ["test", "fastest configuration", "t/s", "margin over the next", "next fastest"]
    header += (["quality"] if quality else []) + (["tokens/J"] if energy else []) + ["notes"]
    cells = []
    for a in answers:
        row = ([a.model or "—"] if models else []) + [a.test]
        if a.best is None:
            row += ["nothing counts", "—", "—", "—"]
        else:
            row += [a.config, fmt_ts(a.best.summary), a.margin_text, a.runner_up_config or "—"]
        if quality:
            row.append(a.verdict or "—")
        if energy:
            row.append(f"{a.tokens_per_joule:.3g}" if a.tokens_per_joule else "—")
        notes = [f"{a.candidates} configuration{'s' if a.candidates != 1 else ''} counted"]
        if a.not_counted:
            notes.append(f"{a.not_counted} not counted")
        row.append(", ".join(notes) if a.best else "not counted: every configuration failed, ran off-device or is broken")
        cells.append(row)
    return header, cells


GOALS_INTRO = "What invoke tune recommends per goal: the configuration, its score, its margin over the runner-up and how to run it."


def goal_table(goals: list[GoalAnswer]) -> tuple[list[str], list[list[str]]]:
    header = ["goal", "depth", "model", "recommended", "score t/s", "margin", "quality", "llama-server", "notes"]
    cells = []
    for g in goals:
        notes = f"tune {g.outcome}" if g.config else f"not counted: nothing recommended ({g.outcome})"
        cells.append(
            [
                g.goal,
                "—" if g.depth is None else str(g.depth),
                g.model,
                g.config or "—",
                "—" if g.median is None else f"{g.median:.4g}",
                g.margin or "—",
                g.verdict or "—",
                g.server_command or "—",
                notes,
            ]
        )
    return header, cells


def render_markdown(answers: list[Answer], goals: list[GoalAnswer] = ()) -> list[str]:
    if not answers and not goals:
        return []
    out = ["## The answer", ""]
    if goals:
        out += [GOALS_INTRO, "", md_table(*goal_table(goals)), ""]
    if answers:
        out += [INTRO, "", md_table(*answer_table(answers)), ""]
    return out


def render_html(answers: list[Answer], goals: list[GoalAnswer] = ()) -> str:
    if not answers and not goals:
        return ""
    parts = ["<section class='answer'><h2>The answer</h2>"]
    if goals:
        parts.append(f"<p>{html.escape(GOALS_INTRO)}</p><div class='table'>{html_table(*goal_table(goals))}</div>")
    if answers:
        parts.append(f"<p>{html.escape(INTRO)}</p><div class='table'>{html_table(*answer_table(answers))}</div>")
    return "".join(parts) + "</section>"


def render_console(answers: list[Answer], console, goals: list[GoalAnswer] = ()) -> None:
    from toolbox.report.tables import rich_table

    if goals:
        console.print(rich_table(*goal_table(goals), "The answer per goal (invoke tune)"))
    if answers:
        console.print(rich_table(*answer_table(answers), "The answer: fastest configuration that counts, per test"))
