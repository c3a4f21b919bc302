"""Goals: what "fastest" means for the way a model is used, as one number per measurement.

A goal is a request shape: P prompt tokens processed and G tokens generated on top of a context of
`depth` tokens already in the KV cache. Its figure of merit is the request's throughput

    score = (P + G) / (P / pp + G / tg)        [tokens per second]

where pp and tg are llama-bench's prompt and generation t/s measured at that depth: the time the
request takes is P / pp + G / tg seconds, so this is the time-weighted harmonic mean of pp and tg,
weighted by the tokens each phase handles. A goal with G = 0 is pure prompt processing (score = pp),
P = 0 pure generation (score = tg). docs/tune.md explains the choice of each goal's numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from difflib import get_close_matches

from toolbox.errors import ToolboxError


@dataclass(frozen=True)
class Goal:
    """A request shape: `n_prompt` tokens in, `n_gen` out, at `depth` tokens of context already cached."""

    name: str
    n_prompt: int
    n_gen: int
    depth: int
    description: str = ""

    @property
    def formula(self) -> str:
        if self.n_prompt and self.n_gen:
            return f"({self.n_prompt} + {self.n_gen}) / ({self.n_prompt}/pp + {self.n_gen}/tg) at depth {self.depth}"
        return f"{'pp' if self.n_prompt else 'tg'} t/s at depth {self.depth}"

    def to_json(self) -> dict:
        return {"name": self.name, "n_prompt": self.n_prompt, "n_gen": self.n_gen, "depth": self.depth, "formula": self.formula}


GOALS: dict[str, Goal] = {
    "chat": Goal("chat", 512, 128, 0, "a chat turn: a short prompt, a 128-token answer"),
    "prefill": Goal("prefill", 2048, 0, 0, "reading documents (RAG, summaries): prompt processing only"),
    "generate": Goal("generate", 0, 128, 0, "writing: token generation only"),
    "long-context": Goal("long-context", 512, 128, 16384, "a chat turn deep in a long conversation (16k tokens cached)"),
    "mixed": Goal("mixed", 2048, 256, 4096, "an agent or coding turn: a long prompt on a 4k context, a 256-token answer"),
}
SCREEN_MAX_GEN = 32  # screening measures generation on at most this many tokens (t/s per token does not depend on it)


def parse_weights(text: str) -> tuple[int, int]:
    """'pp=1024,tg=256' -> (1024, 256): the tokens each phase handles per request; a phase left out is 0."""
    out = {"pp": 0, "tg": 0}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        key, _, value = part.partition("=")
        key = key.strip().lower()
        if key not in out or not value.strip().isdigit():
            raise ToolboxError(f"cannot read weight {part.strip()!r}", "write pp=TOKENS,tg=TOKENS, e.g. --weights pp=1024,tg=256")
        out[key] = int(value)
    if not out["pp"] and not out["tg"]:
        raise ToolboxError("the weights give no tokens to either phase", "write pp=TOKENS,tg=TOKENS with at least one above 0")
    return out["pp"], out["tg"]


def check_goal(name: str) -> None:
    """An unknown goal is a one-line error naming the known ones."""
    if name not in GOALS:
        close = get_close_matches(name, GOALS, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ToolboxError(f"unknown goal {name!r}", f"{hint}choose {', '.join(GOALS)} (or --weights pp=N,tg=M)")


def make_goal(name: str = "chat", depth: int | None = None, weights: str | None = None) -> Goal:
    """The goal a user asked for: a named one, its depth replaced by --depth, its tokens by --weights."""
    check_goal(name)
    goal = GOALS[name]
    if depth is not None:
        goal = replace(goal, depth=int(depth))
    if weights:
        p, g = parse_weights(weights)
        goal = replace(goal, name=f"{name} (weights pp={p},tg={g})", n_prompt=p, n_gen=g)
    return goal


def screen_gen(goal: Goal) -> int:
    """Tokens generated per screening test: fewer than the goal's (the t/s, not the count, decides)."""
    return min(goal.n_gen, SCREEN_MAX_GEN) if goal.n_gen else 0


def scores(goal: Goal, pp_ts: list[float], tg_ts: list[float]) -> list[float]:
    """Per-repetition scores from per-repetition pp and tg t/s (paired in order; the shorter list decides)."""
    if goal.n_prompt and goal.n_gen:
        return [score(goal, p, g) for p, g in zip(pp_ts, tg_ts, strict=False)]
    return [float(x) for x in (pp_ts if goal.n_prompt else tg_ts) if x and math.isfinite(float(x))]


def score(goal: Goal, pp: float | None, tg: float | None) -> float | None:
    """The goal's throughput for one pair of t/s figures (None when a needed one is missing or zero)."""
    if (goal.n_prompt and not pp) or (goal.n_gen and not tg):
        return None
    seconds = (goal.n_prompt / pp if goal.n_prompt else 0.0) + (goal.n_gen / tg if goal.n_gen else 0.0)
    return (goal.n_prompt + goal.n_gen) / seconds
