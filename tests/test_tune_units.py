"""invoke tune without containers: goals and their formula, budgets, the space and its removals, command lines."""

from __future__ import annotations

from pathlib import Path

import pytest

from toolbox.engine.devices import DeviceSetup
from toolbox.errors import ToolboxError
from toolbox.tune import goals
from toolbox.tune.answer import commands, context_size, interval, tool_args
from toolbox.tune.measure import parse_budget
from toolbox.tune.space import build_space, label, varying

SPACES = Path(__file__).resolve().parent / "data" / "tune"


def test_goal_score_is_the_request_throughput():
    chat = goals.make_goal("chat")
    # 512 tokens at 1000 t/s (0.512 s) + 128 at 10 t/s (12.8 s): 640 tokens in 13.312 s
    assert goals.score(chat, 1000.0, 10.0) == pytest.approx(640 / 13.312)
    assert goals.score(goals.make_goal("prefill"), 1000.0, None) == 1000.0
    assert goals.score(goals.make_goal("generate"), None, 12.5) == 12.5
    assert goals.score(chat, None, 10.0) is None
    assert goals.scores(chat, [1000.0, 2000.0], [10.0, 10.0, 11.0]) == pytest.approx([640 / 13.312, 640 / 13.056])


def test_goal_depth_and_weights_replace_the_presets():
    g = goals.make_goal("long-context", depth=2048, weights="pp=100,tg=0")
    assert (g.n_prompt, g.n_gen, g.depth) == (100, 0, 2048) and "pp t/s at depth 2048" in g.formula
    assert goals.make_goal("mixed").depth == 4096 and goals.screen_gen(goals.make_goal("mixed")) == goals.SCREEN_MAX_GEN
    with pytest.raises(ToolboxError, match="unknown goal 'chatt'.*did you mean 'chat'"):
        goals.make_goal("chatt")
    for bad in ("pp=x", "pp=0,tg=0", "qq=5", "pp"):
        with pytest.raises(ToolboxError):
            goals.parse_weights(bad)


@pytest.mark.parametrize("text,seconds", [("30m", 1800), ("90s", 90), ("1h30m", 5400), ("2h", 7200), ("5", 300), ("1.5m", 90)])
def test_budget_durations(text, seconds):
    assert parse_budget(text) == seconds


@pytest.mark.parametrize("text", ["soon", "0m", "-5", "", "m"])
def test_bad_budgets(text):
    with pytest.raises(ToolboxError):
        parse_budget(text)


def test_space_removes_what_llama_cpp_rejects_and_adds_backend_dimensions():
    sp = build_space(str(SPACES / "small.toml"), goals.make_goal("chat"), ["cpu", "vulkan"], "/m/tiny.gguf")
    # fa on: 2 ubatch x 2 KV pairs; fa off: q4_0 V removed -> 2 ubatch x f16; per backend
    assert len(sp.candidates) == 2 * (4 + 2)
    assert all(c.params.get("n_threads") == 1 for c in sp.candidates if c.backend == "cpu")
    assert not any("n_threads" in c.params for c in sp.candidates if c.backend == "vulkan")
    assert all(len(c.screen) == 2 and len(c.confirm) == 2 for c in sp.candidates)
    tg_screen = [c for cand in sp.candidates for c in cand.screen if c.p["n_gen"]]
    assert {c.p["n_gen"] for c in tg_screen} == {32} and {c.p["n_gen"] for cand in sp.candidates for c in cand.confirm} >= {128}
    assert all(len(g.cases) > 1 for g in sp.screen.groups), "screening shares processes (one model load per group)"
    assert {"backend", "flash_attn", "n_ubatch", "type_k"} <= set(varying(sp.candidates))
    assert "n_ubatch=128" in label(sp.candidates[0])


def test_goal_shape_wins_over_the_space_file():
    sp = build_space(str(SPACES / "small.toml"), goals.make_goal("prefill", depth=64), ["cpu"], "/m/tiny.gguf")
    assert all(len(c.confirm) == 1 and c.confirm[0].p["n_prompt"] == 2048 and c.confirm[0].p["n_depth"] == 64 for c in sp.candidates)


def test_an_empty_space_is_one_line():
    with pytest.raises(ToolboxError, match="empty.*needs flash attention"):
        build_space(str(SPACES / "empty.toml"), goals.make_goal("chat"), ["cpu"], "/m/tiny.gguf")


def test_the_preset_space_is_valid_on_every_backend():
    for b, n in (("cpu", 96), ("vulkan", 32), ("rocm", 64)):
        sp = build_space("tune", goals.make_goal("chat"), [b], "/m/x.gguf")
        assert len(sp.candidates) == n, b


def test_command_lines_carry_every_setting():
    sp = build_space(str(SPACES / "small.toml"), goals.make_goal("chat", depth=8000), ["cpu"], "/m/tiny.gguf")
    cand = next(c for c in sp.candidates if c.params["type_k"] == "q4_0")
    args, left = tool_args(cand.params, 9216)
    assert args[args.index("-ctk") + 1] == "q4_0" and args[args.index("-fa") + 1] == "on" and args[-2:] == ["-c", "9216"]
    assert not left
    assert context_size(goals.make_goal("chat", depth=8000)) == 9216

    class FakeRace:  # only what commands() reads
        goal = goals.make_goal("chat")

    class S:
        pass

    s = S()
    s.cand = cand
    setup = DeviceSetup(["/dev/kfd", "/dev/dri/renderD128"], [44, 992], ["seccomp=unconfined"], target="gpu")
    cand.env = {"ROCBLAS_USE_HIPBLASLT": "1"}
    out = commands(s, FakeRace(), "strix-toolbox/llama-rocm:x", setup, "/home/u/models/m.gguf")
    assert out["llama_server"].startswith("llama-server -m /models/m.gguf") and "--port 8080" in out["llama_server"]
    assert "--device /dev/kfd" in out["docker_run"] and "--group-add 992" in out["docker_run"]
    assert "-e ROCBLAS_USE_HIPBLASLT=1" in out["docker_run"] and "/home/u/models:/models:ro" in out["docker_run"]
    assert '"ROCBLAS_USE_HIPBLASLT": "1"' in out["compose"] and out["env"] == "ROCBLAS_USE_HIPBLASLT=1"


def test_interval_needs_two_samples():
    from toolbox.analysis.stats import summarize

    lo, hi = interval(summarize([10.0, 11.0, 12.0]))
    assert lo < 11.0 < hi and hi - lo == pytest.approx(2 * 4.302653 * 1 / 3**0.5, rel=1e-4)
    assert interval(summarize([10.0])) is None


def _race(allow_degraded=False, verdicts=None):
    """A race over the small space whose standings are set by hand (the gate and the decision only)."""
    from toolbox.analysis.stats import summarize
    from toolbox.tune.measure import Clock
    from toolbox.tune.search import Race

    sp = build_space(str(SPACES / "small.toml"), goals.make_goal("chat"), ["cpu"], "/m/tiny.gguf")
    checked = []

    def quality_of(cand):
        checked.append(cand.key)
        return {"verdict": verdicts(cand), "kld_mean": 0.5, "top1_agree": 0.9}

    race = Race(sp, goals.make_goal("chat"), None, Clock(600), quality_of, allow_degraded=allow_degraded)
    # q4_0 fastest, then f16 by micro-batch: a realistic order
    for i, s in enumerate(sorted(race.standings.values(), key=lambda s: (s.cand.params["type_v"] != "q4_0", s.cand.key))):
        s.screen = summarize([100.0 - i])
        s.rung = 1
    return race, checked


def test_the_gate_walks_past_degraded_and_broken_configurations():
    race, checked = _race(verdicts=lambda c: "degraded" if c.params["type_v"] == "q4_0" else "same")
    race._gate(race._ranked(), 3, stage="screen")
    assert len(race.finalists) == 3 and all(s.cand.params["type_v"] == "f16" for s in race.finalists)
    q4 = [s for s in race.standings.values() if s.cand.params["type_v"] == "q4_0"]
    assert all(s.status == "dropped" and "--allow-degraded" in s.why for s in q4)
    assert len(checked) == 5, "checked down the ranking until three passed"

    race, _ = _race(allow_degraded=True, verdicts=lambda c: "degraded" if c.params["type_v"] == "q4_0" else "same")
    race._gate(race._ranked(), 3, stage="screen")
    assert [s.cand.params["type_v"] for s in race.finalists] == ["q4_0", "q4_0", "f16"]


def test_all_broken_recommends_nothing():
    from toolbox.tune.driver import TuneResult, tune_exit

    race, _ = _race(allow_degraded=True, verdicts=lambda c: "broken")
    race._gate(race._ranked(), 3, stage="screen")
    race._decide()
    assert race.outcome == "all-broken" and race.winner is None and not race.finalists
    assert all("never recommended" in s.why for s in race.standings.values())
    code, msg = tune_exit(TuneResult("r", Path("/r"), "complete", race, {}))
    assert code == 1 and "broken" in msg


def test_the_winner_is_tested_against_the_runner_up():
    from toolbox.analysis.stats import summarize

    race, _ = _race(verdicts=lambda c: "same")
    race._gate(race._ranked(), 3, stage="screen")
    for s, base in zip(race.finalists, (100.0, 99.9, 80.0)):
        s.confirm = summarize([base, base + 0.2, base - 0.2])
    race._decide()
    assert race.outcome == "recommended" and race.winner.confirm.median == 100.0
    assert race.runner_up.confirm.median == 99.9 and not race.significant(), "0.1 % apart with 0.2 % noise: within noise"
    assert "within noise" in race.margin_text()
    assert race.finalists[2].status == "dropped" and "confirmed slower" in race.finalists[2].why


@pytest.mark.parametrize(
    "flags, reason",
    [({"fa_fallback": True}, "fallback"), ({"fa_on_cpu": True}, "fa-on-cpu"), ({"device_ok": False}, "off-device"), ({}, None)],
)
def test_a_candidate_measured_off_its_kernels_does_not_count(flags, reason):
    """The tuner asks the one quality gate: a row that took the f16 detour or ran flash attention on the
    CPU is never the recommended configuration."""
    from toolbox.quality.gate import NOT_COUNTED
    from toolbox.run.matrix import Case
    from toolbox.tune.measure import Measurer
    from toolbox.tune.space import Candidate

    case = Case("vulkan", "m.gguf", (), (("n_prompt", 0), ("n_gen", 32), ("type_k", "bf16"), ("type_v", "f16")))
    row = {"case_id": case.case_id, "status": "ok", "device_ok": True, "samples_ts": [10.0]} | flags
    cand = Candidate("k", "vulkan", "m.gguf", {}, {}, screen=[case])
    why = Measurer(ctx=None, result=None, rows=[row]).problem(cand, "screen")
    assert why == (None if reason is None else f"{case.test}: {NOT_COUNTED[reason]}")
