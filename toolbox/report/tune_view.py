"""What a tune run shows: the live race while it runs, and the answer (from run.json's `tune`) after it.

The answer is read from the stored run only, so `invoke tune` at its end and `invoke report RUN`
later print the same thing.
"""

from __future__ import annotations

from rich.table import Table
from rich.text import Text


def _score(s: dict | None) -> str:
    if not s:
        return "—"
    ci = s.get("ci95")
    return f"{s['median']:.4g}" + (f" [{ci[0]:.4g}, {ci[1]:.4g}]" if ci else "") + f" (n={s.get('n')})"


class LiveView:
    """The race as it runs (rich Live): stage, candidates left, current leader, budget spent."""

    def __init__(self, console):
        self.console = console
        self.live = None  # started by the first update: an error before anything runs prints nothing here

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.live is not None:
            self.live.stop()
            if not self.console.is_terminal:
                self.console.line()  # a stopped Live leaves the cursor after its last line on a pipe
        return False

    def update(self, race) -> None:
        from toolbox.tune.measure import fmt_duration

        alive = race.alive()
        leader = race.leader()
        lines = [
            f"tune {race.goal.name}: {race.goal.formula}",
            f"candidates left: {len(alive)} of {len(race.standings)}   "
            f"budget: {fmt_duration(race.clock.spent)} of {fmt_duration(race.clock.budget_s)}",
            "leader: " + (f"{race.name(leader)}  {leader.best.median:.4g} t/s ({'confirmed' if leader.confirm else 'screening'})"
                          if leader else "—"),
        ]  # fmt: skip
        lines += [f"  {x}" for x in race.log[-3:]]
        if self.live is None:
            from rich.live import Live

            self.live = Live(console=self.console, refresh_per_second=4, transient=False)
            self.live.start()
        self.live.update(Text("\n".join(lines)))


def candidates_table(answer: dict, title: str = "every candidate, best first") -> Table:
    shown = answer.get("shown") or []
    t = Table(title=title, title_justify="left")
    t.add_column("candidate")
    t.add_column("status")
    t.add_column("score t/s [95% CI] (confirmed)", justify="right")
    t.add_column("screening t/s", justify="right")
    t.add_column("pp / tg t/s", justify="right")
    t.add_column("quality")
    t.add_column("why dropped / margin", overflow="fold")
    for c in answer.get("candidates") or []:
        f = c.get("figures") or {}
        q = c.get("quality") or {}
        qtext = (q.get("verdict") or ("error" if q.get("error") else "")) + (
            f" KLD {q['kld_mean']:.2g}" if q.get("kld_mean") is not None else ""
        )
        pptg = " / ".join(f"{f[k]:.4g}" if f.get(k) else "—" for k in ("pp", "tg"))
        style = "dim" if c["status"] == "dropped" else ("bold green" if c["status"] == "recommended" else None)
        screen = c.get("screen") or {}
        t.add_row(
            c["label"] if shown else c["backend"],
            c["status"],
            _score(c.get("confirm")),
            f"{screen['median']:.4g} (n={screen.get('n')})" if screen else "—",
            pptg,
            qtext or "—",
            c.get("why") or "",
            style=style,
        )
    return t


def answer_lines(tune: dict) -> list[str]:
    """The recommendation and its evidence as plain lines (no markup)."""
    a = tune.get("answer") or {}
    goal = tune.get("goal") or {}
    out = [f"goal {goal.get('name')}: {goal.get('formula')}"]
    r = a.get("recommended")
    if not r:
        out.append(f"nothing recommended ({a.get('outcome')})")
        return out
    s = r["score"] or {}
    ci = s.get("ci95")
    f = r.get("figures") or {}
    out.append(f"recommended: {r['label']}")
    out.append(
        f"  score {s.get('median'):.4g} t/s" + (f", 95% interval {ci[0]:.4g}-{ci[1]:.4g}" if ci else "") + f" over {s.get('n')} samples"
        + "".join(f"; {k} {f[k]:.4g} t/s" for k in ("pp", "tg") if f.get(k))
    )  # fmt: skip
    energy = [f"{k} {f[f'{k}_tokens_per_j']:.3g} tokens/J" for k in ("pp", "tg") if f.get(f"{k}_tokens_per_j")]
    if energy:
        out.append("  energy (telemetry): " + ", ".join(energy))
    if r.get("runner_up"):
        out.append(f"  runner-up: {r['runner_up']['label']}: {r['margin']}")
    else:
        out.append(f"  {r['margin']}")
    q = r.get("quality") or {}
    kld = f", KLD {q['kld_mean']:.3g}" if q.get("kld_mean") is not None else ""
    out.append(f"  quality: {q.get('verdict')}{kld} (KL divergence to the cpu image's f16-KV logits)")
    cmd = r.get("commands") or {}
    out += ["", "llama-server:", "  " + cmd.get("llama_server", ""), "llama-cli:", "  " + cmd.get("llama_cli", "")]
    out += ["docker:", "  " + cmd.get("docker_run", ""), "compose:", *("  " + x for x in cmd.get("compose", "").splitlines())]
    if cmd.get("env"):
        out += ["env:", *("  " + x for x in cmd["env"].splitlines())]
    if cmd.get("not_expressible"):
        out.append("  (no llama-server flag for: " + ", ".join(cmd["not_expressible"]) + ")")
    return out


def print_answer(console, meta: dict) -> None:
    """The stored answer of a tune run: the table of every candidate, then the recommendation and its command lines."""
    tune = meta.get("tune") or {}
    a = tune.get("answer") or {}
    console.print(candidates_table(a))
    for line in answer_lines(tune):
        console.print(line, markup=False, soft_wrap=True)
