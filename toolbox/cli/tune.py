"""Task: tune (toolbox.tune): the fastest correct configuration of one model for a goal, within a budget."""

from __future__ import annotations

import sys

from toolbox.cli import flags as f
from toolbox.cli.common import FLAGS, console, exit_with, settings


def _goal(name: str) -> None:
    from toolbox.tune.goals import check_goal

    check_goal(name)


def _weights(text: str) -> None:
    from toolbox.tune.goals import parse_weights

    parse_weights(text)


def _budget(text: str) -> None:
    from toolbox.tune.measure import parse_budget

    parse_budget(text)


def _space(name: str) -> None:
    from toolbox.run.matrix import load_matrix
    from toolbox.tune.space import check_spec

    spec, source, _ = load_matrix(name)
    check_spec(spec, source)


@f.command(
    model=f.Path("the GGUF file to tune for; default: the embedded tiny model", placeholder="GGUF", check=FLAGS["model"].check),
    goal=f.Text(
        "chat (pp512 + tg128), prefill (pp2048), generate (tg128), long-context (chat at depth 16384), "
        "mixed (pp2048 + tg256 at depth 4096); default chat",
        placeholder="GOAL",
        check=_goal,
    ),
    depth=f.Int("tokens already in the context (replaces the goal's depth)", low=0),
    weights=f.Text("your own request shape: prompt and generated tokens, e.g. pp=1024,tg=256", placeholder="pp=N,tg=M", check=_weights),
    budget=f.Text("machine time the search may spend: 30m (default), 90s, 1h30m", placeholder="DURATION", check=_budget),
    backend=FLAGS["backend"],
    space=f.Text("the search space: preset name or TOML file (docs/tune.md); default: tune", placeholder="SPACE", check=_space),
    allow_cpu_vulkan=FLAGS["allow_cpu_vulkan"],
    allow_degraded=f.Switch("a configuration whose output is degraded (quantized KV cache) may be recommended, its KLD beside it"),
    resume=f.Text("continue an interrupted tune run (an id as in invoke report)", placeholder="RUN", check=FLAGS["run_ids"].check),
    search=f.Text("halving (default: screen, halve, confirm) or grid (every candidate fully: the reference)", choices=("halving", "grid")),
    build=f.Switch("build missing images first"),
    json=FLAGS["json"],
)
def tune(
    c,
    model=None,
    goal="chat",
    depth=None,
    weights=None,
    budget=None,
    backend="auto",
    space="tune",
    allow_cpu_vulkan=False,
    allow_degraded=False,
    resume=None,
    search="halving",
    build=False,
    json=False,
):
    """How should I run this model? A budgeted search for the fastest configuration whose output is right.

    Prints the recommendation with its evidence and the llama-server / llama-cli command lines; the run
    (kind tune) is stored like any other. Exit 1 when nothing passes the quality check, 130 when interrupted.
    """
    import json as json_module

    from toolbox.report.tune_view import LiveView, print_answer
    from toolbox.store.runs import load_run
    from toolbox.tune.driver import tune as run_tune
    from toolbox.tune.driver import tune_exit

    s = settings()
    out = console()
    with LiveView(out) as view:
        r = run_tune(
            s,
            model=model,
            goal=goal,
            depth=depth,
            weights=weights,
            budget=budget,
            backend=backend,
            space=space,
            allow_cpu_vulkan=allow_cpu_vulkan,
            allow_degraded=allow_degraded,
            resume=resume,
            search=search,
            build_missing=build,
            argv=sys.argv,
            on_update=None if json else view.update,
        )
    meta, _ = load_run(s.results_dir, r.run_id)
    if json:
        print(json_module.dumps(meta["tune"], indent=2, default=str))
    else:
        print_answer(out, meta)
        out.print(f"run {r.run_id}: {r.status}; results: {r.run_dir} (invoke report {r.run_id[-6:]})", markup=False)
    exit_with(tune_exit(r))
