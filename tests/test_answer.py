"""The answer a report leads with: the fastest configuration that counts, its margin and whether it is significant."""

import json

import pytest
from helpers import DEPTH, FAILED, FIXTURE_RUNS, IMPORTED, NEW_KV

from toolbox.analysis.answer import answers, tokens_per_joule
from toolbox.analysis.compare import compare_runs
from toolbox.analysis.identity import collect
from toolbox.report import render
from toolbox.store.runs import load_run


def _vulkan_only(run_id):
    meta, rows = load_run(FIXTURE_RUNS, run_id)
    return meta, [r for r in rows if r.get("backend") == "vulkan"]


def test_a_broken_configuration_is_never_the_answer_even_when_it_is_fastest():
    col = collect([_vulkan_only(NEW_KV)])
    broken = [r for r in col.results if r.test == "pp512" and r.verdict == "broken"]
    fastest = max((r for r in col.results if r.test == "pp512"), key=lambda r: r.summary.median)
    assert broken and fastest is broken[0]  # the trap: the broken one is the fastest of all
    a = next(a for a in answers(col) if a.test == "pp512")
    assert a.best is not fastest and a.best.not_counted is None
    assert a.best.summary.median == max(r.summary.median for r in col.results if r.test == "pp512" and not r.not_counted)
    assert a.not_counted == 1 and a.candidates == len([r for r in col.results if r.test == "pp512"]) - 1


def test_margin_and_significance_are_compares_own_figures():
    """Across backends in the depth run: the margin is compare's ratio of the same two results, its p the same test."""
    col = collect([load_run(FIXTURE_RUNS, DEPTH)])
    a = next(a for a in answers(col) if a.test == "tg128@d4096")
    assert "backend=cpu" in a.config and "backend=vulkan" in a.runner_up_config
    meta, rows = load_run(FIXTURE_RUNS, DEPTH)
    cpu = (meta, [r for r in rows if r.get("backend") == "cpu"])
    vk = (meta, [r for r in rows if r.get("backend") == "vulkan"])
    line = next(ln for ln in compare_runs(vk, cpu, ignore=["backend", "backends"]).lines if ln.test == "tg128@d4096")
    assert a.margin == pytest.approx(line.ratio - 1) and a.p_value == pytest.approx(line.p_value)
    assert a.significant is True and a.margin > 1  # cpu is 2.8x lavapipe here
    assert "significant, p=" in a.margin_text and a.margin_text.startswith("+")


def test_without_raw_samples_the_margin_is_untested_and_a_run_of_failures_has_no_answer():
    imported = answers(collect([load_run(FIXTURE_RUNS, IMPORTED)]))
    assert imported and all(a.significant is None and "untested" in a.margin_text for a in imported if a.runner_up)
    assert answers(collect([load_run(FIXTURE_RUNS, FAILED)])) == []


def test_only_not_counted_configurations_say_nothing_counts():
    meta, rows = load_run(FIXTURE_RUNS, NEW_KV)
    rows = [dict(r, device_ok=False) for r in rows if r.get("test") == "tg128"]
    (a,) = answers(collect([(meta, rows)]))
    assert a.best is None and a.margin_text == "nothing counts" and a.not_counted == len(rows)


def test_tokens_per_joule_is_shown_when_rows_carry_it():
    assert tokens_per_joule({"tokens_per_j": 3.5}) == 3.5
    assert tokens_per_joule({"telemetry": {"tokens_per_joule": 0.5}}) == 0.5
    assert tokens_per_joule({"tokens_per_j": None}) is None
    meta, rows = load_run(FIXTURE_RUNS, DEPTH)
    rows = [dict(r, tokens_per_j=1.25) for r in rows]
    rep = render.build_report([(meta, rows)], with_plots=False)
    md = render.render_markdown(rep)
    assert "tokens/J" in md.split("## What ran")[0] and "| 1.25 |" in md


def test_every_report_leads_with_the_answer(results, tmp_path):
    rep = render.report(results, [NEW_KV], out_dir=tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert md.index("## The answer") < md.index("## What ran") < md.index("**run**")
    answer_part = md.split("## What ran")[0]
    assert answer_part.count("\n| pp512 |") == 1 and "| tg128@d4096 |" in answer_part
    page = (tmp_path / "report.html").read_text()
    assert page.index("<section class='answer'>") < page.index("<dl class='prov'>")
    assert len(rep.answers) == 4 and all(a.best and not a.best.not_counted for a in rep.answers)


def test_console_report_prints_the_answer_first(results):
    from rich.console import Console

    rep = render.report(results, [DEPTH], write=False)
    con = Console(width=200, record=True)
    render.render_console(rep, con)
    text = con.export_text()
    assert text.index("The answer") < text.index("run: ") and "backend=cpu" in text.split("run: ")[0]
    json.dumps([a.margin for a in rep.answers])  # plain floats


def test_a_tune_run_leads_with_its_answer_per_goal():
    """run.json of a tune run as toolbox/tune/answer.py stores it (tune.request, tune.answer.recommended)."""
    meta, rows = load_run(FIXTURE_RUNS, NEW_KV)
    tune_meta = dict(meta, kind="tune")
    tune_meta["tune"] = {
        "request": {"model": "/models/toolbox-tiny-llama-v1.gguf", "goal": "chat", "depth": 4096},
        "answer": {
            "outcome": "recommended",
            "recommended": {
                "label": "cpu K=f16 V=f16 fa=on",
                "score": {"median": 431.05},
                "margin": "the recommendation is 1.03 ± 0.01 times as fast (p = 0.004, significant at 0.05)",
                "significant": True,
                "quality": {"verdict": "same"},
                "commands": {"llama_server": "llama-server -m /models/toolbox-tiny-llama-v1.gguf -fa on -c 8192"},
            },
        },
    }
    rep = render.build_report([(tune_meta, rows)], with_plots=False)
    (goal,) = rep.goals
    assert goal.goal == "chat" and goal.depth == 4096 and goal.config == "cpu K=f16 V=f16 fa=on"
    md = render.render_markdown(rep)
    top = md.split("## What ran")[0]
    assert "| chat | 4096 | toolbox-tiny-llama-v1.gguf | cpu K=f16 V=f16 fa=on | 431.1 |" in top
    assert "llama-server -m /models/toolbox-tiny-llama-v1.gguf" in top and top.index("invoke tune") < top.index("| pp512 |")
    nothing = dict(tune_meta, tune={**tune_meta["tune"], "answer": {"outcome": "all broken", "recommended": None}})
    (g,) = render.build_report([(nothing, rows)], with_plots=False).goals
    assert g.config == "" and "nothing recommended (all broken)" in render.render_markdown(
        render.build_report([(nothing, rows)], with_plots=False)
    )
    assert render.build_report([(meta, rows)], with_plots=False).goals == []  # a bench run has no goal
