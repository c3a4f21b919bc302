"""The command line as a user types it: one convention for flags and positionals, one line for every bad input.

Every task and every flag that takes a value is walked with wrong-typed and out-of-range values
(in-process through invoke's own Program, as the `invoke` command runs it): exit 2, at most a few
lines, no traceback, the flag named. A flag added without a bad value here fails the walk.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import DATA, FIXTURE_RUNS, KV, NEW_KV

REPO = Path(__file__).resolve().parent.parent


def contexts():
    """Every task's parser context, as invoke builds them from tasks.py."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("toolbox_tasks", REPO / "tasks.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.ns.to_contexts()


def walk_cases():
    """(task, flag, argv, name the error must carry) for every flag that takes a value."""
    from toolbox.cli.flags import Arg

    blocker = "/etc/hostname/sub"  # under a regular file: can never be created
    free = {  # wrong values for flags whose type alone cannot be wrong: the package's own rules
        ("bench", "matrix"): ["nonsense"],
        ("bench", "backend"): ["nonsense", "cpu,nonsense", "cpu@nothex", "metal@3f2a9c1b7d40"],
        ("bench", "model"): ["/nonexistent.gguf"],
        ("bench", "resume"): ["nonexistent"],
        ("check", "backend"): ["nonsense"],
        ("check", "model"): ["/nonexistent.gguf"],
        ("check", "kv"): ["bogus/x/y/z", "q8_0/q8_0/sometimes"],
        ("check", "reference"): ["/nonexistent.gguf"],
        ("build", "backend"): ["nonsense", "cpu@3f2a9c1b7d40"],  # a side variant is built from its tree (--source)
        ("build", "source"): ["/nonexistent"],
        ("build", "variant"): ["nonsense"],
        ("pins", "source"): ["/nonexistent"],
        ("pins", "action"): ["nonsense"],
        ("import", "paths"): ["/nonexistent.md"],
        ("export", "run_ids"): ["nonexistent", "2026"],  # unknown; a prefix of several runs
        ("export", "out"): [blocker],
        ("report", "run_ids"): ["nonexistent"],
        ("report", "out"): [blocker],
        ("compare", "base"): ["nonexistent"],
        ("compare", "new"): ["nonexistent"],
        ("compare", "ignore"): ["colour"],
        ("compare", "markdown"): [blocker],
        ("log", "before"): ["nonexistent"],
        ("log", "after"): ["nonexistent"],
        ("log", "title"): [" "],
        ("log", "ignore"): ["colour"],
        ("log", "file"): [blocker],
        ("doctor", "root"): ["/nonexistent"],
        ("site", "out"): [blocker],
        ("tune", "model"): ["/nonexistent.gguf"],
        ("tune", "goal"): ["speed", "chatt"],
        ("tune", "weights"): ["pp=x", "pp=0,tg=0", "qq=5"],
        ("tune", "budget"): ["soon", "0m", "-5"],
        ("tune", "backend"): ["nonsense"],
        ("tune", "space"): ["nonsense"],
        ("tune", "resume"): ["nonexistent"],
        ("tune", "search"): ["random"],
        ("serve-bench", "matrix"): ["nonsense"],
        ("serve-bench", "backend"): ["nonsense"],
        ("serve-bench", "model"): ["/nonexistent.gguf"],
        ("serve-bench", "concurrency"): ["0", "1,two", "1.5", ","],
        ("serve-bench", "rate"): ["-1", "fast", "0"],
        ("serve-bench", "slo"): ["ttft<2", "fast", "ttft<2s,ttft<1s"],
        ("serve-bench", "resume"): ["nonexistent"],
        ("bench", "rpc"): ["10.0.0.2", "a:1,a:1", "host:99999"],
        ("rpc-worker", "backend"): ["nonsense", "cpu,vulkan", "cpu@nothex", "metal@3f2a9c1b7d40"],
        ("rpc-worker", "host"): ["my-laptop"],
        ("rpc-worker", "container"): ["no spaces"],
        ("rpc-worker", "network"): ["-bad"],
        ("bench", "host"): ["no-such-context-anywhere"],
        ("report", "campaign"): ["c-nonexistent"],
    }
    anything_goes = {("log", "note"): "free text"}
    # what a task needs besides the flag under test (its positionals, a required flag)
    base_argv = {"compare": [KV, NEW_KV], "log": [KV, NEW_KV, "--title", "t"], "build": ["cpu"], "pins": ["bump"]}
    cases, unchecked = [], []
    for ctx in contexts():
        for arg in ctx.args.values():
            if not isinstance(arg, Arg) or arg.spec.kind == "bool":
                continue
            spec, key = arg.spec, (ctx.name, arg.name)
            values = list(free.get(key, []))
            if spec.kind in ("int", "number"):
                values.append("abc")
                low = spec.low if spec.low is not None else spec.above
                if low is not None:
                    values.append(str(low - 1 if spec.low is not None else low))
                if spec.high is not None:
                    values.append(str(spec.high + 1))
            if spec.choices:
                values.append("nonsense")
            if not values:
                if key not in anything_goes:
                    unchecked.append(key)
                continue
            for v in values:
                if arg.positional:
                    argv = ["invoke", ctx.name, *replace_positional(ctx, arg, v, base_argv.get(ctx.name, []))]
                    named = spec.placeholder
                else:
                    given = base_argv.get(ctx.name, [])
                    if f"--{arg.names[0]}" in given:  # the required flag under test: given once, wrong
                        i = given.index(f"--{arg.names[0]}")
                        given = given[:i] + given[i + 2 :]
                    argv = ["invoke", ctx.name, *given, f"--{arg.names[0]}", v]
                    named = f"--{arg.names[0]}"
                cases.append(pytest.param(argv, named, id=" ".join(argv[1:])))
    return cases, unchecked


def replace_positional(ctx, arg, value, given):
    """The task's positional words with `value` in arg's place."""
    words = [w for w in given]
    i = ctx.positional_args.index(arg)
    if i < len(words) and not words[i].startswith("-"):
        words[i] = value
    else:
        words.insert(i, value)
    return words


CASES, UNCHECKED = walk_cases()


def test_every_flag_that_takes_a_value_is_walked():
    assert not UNCHECKED, f"add wrong values for {UNCHECKED} to walk_cases (or say why anything goes)"
    tasks = {c.values[0][1] for c in CASES}
    assert tasks >= {"bench", "check", "build", "import", "export", "report", "compare", "log", "doctor", "serve-bench"}
    assert len(CASES) > 40


@pytest.fixture
def in_results(tmp_path, monkeypatch):
    """The fixture runs as the results directory of an in-process `invoke`."""
    shutil.copytree(FIXTURE_RUNS, tmp_path / "results", ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    monkeypatch.setenv("TOOLBOX_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.chdir(REPO)
    return tmp_path / "results"


def run_invoke(argv, monkeypatch, capsys) -> tuple[int, str]:
    """`invoke ...` in this process (invoke's own Program, sys.argv as the shell gives it): exit code and all output."""
    from invoke.main import program

    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exc:
        program.run(argv)
    out = capsys.readouterr()
    return exc.value.code, out.out + out.err


@pytest.mark.parametrize("argv,named", CASES)
def test_every_bad_value_is_one_line_exit_2_naming_the_flag(argv, named, in_results, monkeypatch, capsys):
    code, out = run_invoke(argv, monkeypatch, capsys)
    lines = out.strip().splitlines()
    assert code == 2, out
    assert "Traceback" not in out and len(lines) <= 3, out
    assert lines[-1].startswith("error: ") and named in lines[-1], out


def test_no_docker_and_no_container_started_by_a_bad_value(in_results, monkeypatch, capsys):
    """The values are checked before the task starts: a bad --repetitions never reaches the planner."""
    import toolbox.run.bench as run_bench

    monkeypatch.setattr(run_bench, "bench", lambda *a, **k: pytest.fail("bench started"))
    assert run_invoke(["invoke", "bench", "--repetitions", "many"], monkeypatch, capsys)[0] == 2


def test_help_shows_placeholder_and_type_of_number_and_repeatable_flags():
    def help_of(task):
        return " ".join(subprocess.run(["invoke", "--help", task], cwd=REPO, capture_output=True, text=True).stdout.split())

    out = help_of("compare")
    assert re.search(r"--threshold=FRACTION smallest change", out) and "[number, 0 to 1]" in out
    assert "--alpha=P" in out and "[number > 0 and <= 1]" in out and "[one of: welch, mannwhitney]" in out
    out = help_of("bench")
    assert "-m GGUF, --model=GGUF" in out and "[repeatable]" in out
    assert "-r INT, --repetitions=INT" in out and "[whole number >= 1]" in out and "--cooldown=SECONDS" in out


def test_a_short_flag_means_one_thing_in_every_task():
    from toolbox.cli.flags import SHORT

    meaning: dict[str, set[str]] = {}
    for ctx in contexts():
        for arg in ctx.args.values():
            for n in arg.nicknames:
                meaning.setdefault(n, set()).add(arg.name)
                assert SHORT.get(arg.name) == n, f"{ctx.name}: -{n} for --{arg.name} is not in SHORT"
    assert all(len(v) == 1 for v in meaning.values()), meaning
    assert meaning["b"] == {"backend"} and meaning["m"] == {"model"}


# --- positionals as a user types them -------------------------------------------------------------


def invoke(*args, results: Path, **kw):
    env = {**os.environ, "TOOLBOX_RESULTS_DIR": str(results), "COLUMNS": "200"}
    return subprocess.run(["invoke", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120, **kw)


def test_run_ids_are_positional_several_prefixes_tails_and_latest(results):
    r = invoke("report", "c33c33", "20261126T09000", "--no-files", results=results.results_dir)
    assert r.returncode == 0, r.stderr
    assert f"run: {NEW_KV}" in r.stdout and f"run: {KV}" in r.stdout
    r = invoke("report", "latest", "--no-files", results=results.results_dir)
    assert r.returncode == 0 and "run: 20261126T110000Z-e55e55" in r.stdout
    out = results.results_dir / "both.jsonl"
    r = invoke("export", "--format", "jsonl", "a11a11", "c33c33", "--out", str(out), results=results.results_dir)
    assert r.returncode == 0, r.stderr
    assert len(out.read_text().splitlines()) == 192
    # a flag value is never taken for a run id, and the next task name ends the list
    r = invoke("report", "--out", str(results.results_dir / "r"), "c33c33", "results", results=results.results_dir)
    assert r.returncode == 0 and (results.results_dir / "r" / "report.md").exists() and "imported" in r.stdout


def test_compare_with_files_creates_no_run(settings):
    from toolbox.analysis import compare as cmp
    from toolbox.store.runs import run_ids

    # the same 2023 results in two formats: the same tests (depth 0 in both), no change
    cr = cmp.compare(
        settings,
        str(DATA / "llama-bench" / "llamacpp-readme-2023-09.json"),
        str(DATA / "llama-bench" / "llamacpp-readme-2023-jsonl-no-depth.jsonl"),
    )
    assert len(cr.lines) == 2 and {ln.mark for ln in cr.lines} == {"same"}
    assert run_ids(settings.results_dir) == []


def test_compare_sorts_regressions_first_then_by_change_and_warns_on_itself(results):
    from toolbox.analysis import compare as cmp

    cr = cmp.compare(results, KV, NEW_KV)
    n_bad = len(cr.regressions)
    assert [ln.regression for ln in cr.lines[:n_bad]] == [True] * n_bad and not any(ln.regression for ln in cr.lines[n_bad:])
    ratios = [ln.ratio for ln in cr.lines[n_bad:] if ln.ratio is not None]
    assert ratios == sorted(ratios) and not cr.warnings
    assert "same run" in cmp.compare(results, KV, "a11a11").warnings[0]
    r = invoke("compare", KV, NEW_KV, results=results.results_dir)
    header = next(line for line in r.stdout.splitlines() if "BASE t/s" in line)
    assert "NEW t/s" in header and r.stdout.count("regression(s)") == 1


def test_log_writes_to_the_users_log_never_the_repositorys(results, tmp_path):
    from toolbox.report import oplog
    from toolbox.settings import load_settings

    tracked = REPO / "docs" / "optimization-log.md"
    before = tracked.read_bytes()
    path, _, _ = oplog.log(results, "try", KV, NEW_KV)
    assert path == results.results_dir / "optimization-log.md" and path.read_text().startswith("# Optimization log")
    mine = tmp_path / "mine" / "log.md"
    assert oplog.log(load_settings(results_dir=results.results_dir, oplog_file=mine), "again", KV, NEW_KV)[0] == mine
    r = invoke("log", KV, NEW_KV, "--title", "cli", "--file", str(tmp_path / "other.md"), results=results.results_dir)
    assert r.returncode == 0 and "— cli" in (tmp_path / "other.md").read_text()
    assert tracked.read_bytes() == before


# --- warnings and pipes -----------------------------------------------------------------------------


def test_a_corrupt_rows_file_is_one_warning_line(results):
    rows = results.results_dir / KV / "rows.jsonl"
    rows.write_text(rows.read_text() + '{"schema_version": 1, "run_id": "cut off he\n')
    r = invoke("report", KV, "--no-files", results=results.results_dir)
    assert r.returncode == 0
    warnings = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(warnings) == 1 and warnings[0].startswith("warning: ") and "half-written last line" in warnings[0], r.stderr
    assert "ResultsWarning" not in r.stderr and "warnings.warn" not in r.stderr


def test_a_closed_pipe_ends_quietly(results):
    p = subprocess.Popen(["invoke", "doctor", "--json"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()  # `| head` that has read enough
    err = p.stderr.read().decode()
    assert p.wait() in (0, 1) and "Traceback" not in err and "BrokenPipe" not in err, err


def test_a_bad_setting_is_one_line_naming_it(results):
    r = subprocess.run(
        ["invoke", "report", "--no-files"], cwd=REPO, env={**os.environ, "TOOLBOX_PEAK_TFLOPS": "fast"}, capture_output=True, text=True
    )
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "peak_tflops (TOOLBOX_PEAK_TFLOPS" in r.stderr


def test_export_append_onto_a_file_that_is_not_sqlite(results, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes, not a database\n")
    r = invoke("export", KV, "--format", "sqlite", "--append", "--out", str(notes), results=results.results_dir)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and r.stderr.startswith("error: --append: ") and "Traceback" not in r.stderr
    assert notes.read_text() == "my notes, not a database\n"
    r = invoke("export", KV, "--format", "csv", "--append", results=results.results_dir)
    assert r.returncode == 2 and "--append" in r.stderr
