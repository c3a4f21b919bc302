"""The answer of a tune run: the recommendation with its evidence, the command lines that reproduce it,
and every candidate with why it was dropped. Stored in run.json under `tune` (docs/tune.md); report
and compare read the run's rows like any other run's.
"""

from __future__ import annotations

import json
import math
import shlex
from pathlib import Path

from toolbox.analysis import stats
from toolbox.llamacpp import SERVER_FLAGS, fa_name
from toolbox.tune.search import ALPHA, Race, Standing

SERVER_PORT = 8080


def interval(s: stats.Summary | None, level: float = 0.95) -> tuple[float, float] | None:
    """The confidence interval of the mean score (Student's t over the samples); None with fewer than 2 samples."""
    if s is None or s.sem is None or not s.n or s.n < 2:
        return None
    from scipy import stats as sps

    half = float(sps.t.ppf(0.5 + level / 2, s.n - 1)) * s.sem
    return (s.mean - half, s.mean + half)


def _summary(s: stats.Summary | None) -> dict | None:
    if s is None:
        return None
    ci = interval(s)
    return {
        "median": round(s.median, 4),
        "mean": round(s.mean, 4),
        "n": s.n,
        "spread": None if s.spread is None else round(s.spread, 5),
        "ci95": None if ci is None else [round(ci[0], 4), round(ci[1], 4)],
        "samples": [round(x, 4) for x in s.samples],
    }


def tool_args(params: dict, goal_ctx: int) -> tuple[list[str], list[str]]:
    """llama-server / llama-cli flags for a candidate's llama-bench parameters, and the parameters that have none."""
    args, left = [], []
    for k, v in sorted(params.items()):
        flag = SERVER_FLAGS.get(k)
        if flag is None:
            left.append(k)
            continue
        if k == "no_kv_offload":  # a switch for the tools, a value for llama-bench
            args += [flag] if str(v).lower() in ("1", "true") else []
        else:
            args += [flag, fa_name(v) if k == "flash_attn" else str(v)]
    return args + ["-c", str(goal_ctx)], left


def context_size(goal) -> int:
    """A context that holds the goal's request on top of its depth, rounded up to 1024 tokens (4096 at least)."""
    return max(4096, int(math.ceil((goal.depth + goal.n_prompt + goal.n_gen) / 1024) * 1024))


def commands(s: Standing, race: Race, image: str, setup, model: str) -> dict:
    """Exact llama-server and llama-cli command lines, a docker run line and a compose service for a candidate."""
    model_path = Path(model)
    in_ctr = f"/models/{model_path.name}"
    flags, left = tool_args(s.cand.params, context_size(race.goal))
    server = ["llama-server", "-m", in_ctr, *flags, "--host", "0.0.0.0", "--port", str(SERVER_PORT)]
    cli = ["llama-cli", "-m", in_ctr, *flags]
    env = {k: v for k, v in {**(setup.env or {}), **s.cand.env}.items() if v != ""}
    docker = ["docker", "run", "--rm", "-p", f"{SERVER_PORT}:{SERVER_PORT}", "-v", f"{model_path.parent}:/models:ro"]
    for d in setup.devices:
        docker += ["--device", d]
    for g in setup.group_add:
        docker += ["--group-add", str(g)]
    for o in setup.security_opt:
        docker += ["--security-opt", o]
    for k, v in sorted(env.items()):
        docker += ["-e", f"{k}={v}"]
    docker += [image, *server]
    service = {
        "image": image,
        "command": server,
        "environment": env,
        "devices": list(setup.devices),
        "group_add": [str(g) for g in setup.group_add],
        "security_opt": list(setup.security_opt),
        "volumes": [f"{model_path.parent}:/models:ro"],
        "ports": [f"{SERVER_PORT}:{SERVER_PORT}"],
    }
    lines = ["services:", "  llama-server:"]
    for k, v in service.items():
        if v:
            lines.append(f"    {k}: {json.dumps(v)}")  # JSON flow style is valid YAML
    return {
        "llama_server": shlex.join(server),
        "llama_cli": shlex.join(cli),
        "docker_run": shlex.join(docker),
        "compose": "\n".join(lines),
        "env": "\n".join(f"{k}={v}" for k, v in sorted(env.items())),
        "not_expressible": left,
    }


def quality_brief(q: dict | None) -> dict | None:
    if not q:
        return None
    return {k: q.get(k) for k in ("verdict", "kld_mean", "top1_agree", "ppl", "ppl_base", "error", "image")}


def build_answer(race: Race, images: dict, setups: dict, model: str) -> dict:
    """What run.json stores under tune.answer: recommendation, evidence, commands, every candidate."""
    table = []
    for s in sorted(race.standings.values(), key=_order):
        table.append(
            {
                "key": s.cand.key,
                "label": race.name(s),
                "backend": s.cand.backend,
                "params": s.cand.params,
                "env": s.cand.env,
                "status": s.status,
                "why": s.why,
                "rung": s.rung,
                "screen": _summary(s.screen),
                "confirm": _summary(s.confirm),
                "figures": race.m.figures(s.cand, "confirm" if s.confirm else "screen"),
                "quality": quality_brief(s.quality),
            }
        )
    out = {"outcome": race.outcome, "candidates": table, "log": race.log, "shown": race.shown, "recommended": None}
    w = race.winner
    if w is not None:
        c = race.comparison
        out["recommended"] = {
            "key": w.cand.key,
            "label": race.name(w),
            "backend": w.cand.backend,
            "params": w.cand.params,
            "env": w.cand.env,
            "score": _summary(w.confirm),
            "figures": race.m.figures(w.cand, "confirm"),
            "quality": quality_brief(w.quality),
            "runner_up": None if race.runner_up is None else {"key": race.runner_up.cand.key, "label": race.name(race.runner_up),
                                                              "score": _summary(race.runner_up.confirm)},
            "ratio": None if c is None else c.ratio,
            "ratio_err": None if c is None else c.ratio_err,
            "p_value": None if c is None else c.p_value,
            "significant": race.significant(),
            "alpha": ALPHA,
            "margin": race.margin_text(),
            "image": images.get(w.cand.backend),
            "commands": commands(w, race, images.get(w.cand.backend), setups[w.cand.backend], model),
        }  # fmt: skip
    return out


def _order(s: Standing) -> tuple:
    rank = {"recommended": 0, "runner-up": 1, "finalist": 2, "confirmed": 3, "screening": 4, "dropped": 5}
    best = s.best.median if s.best else -1.0
    return (rank.get(s.status, 6), -(s.confirm is not None), -s.rung, -best)
