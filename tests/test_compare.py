"""compare BASE NEW on the fixture runs (tests/data/runs): marks from a real test, broken never faster, exit code."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import DEPTH, FAILED, IMPORTED, KV, NEW_KV

from toolbox.analysis import compare as cmp
from toolbox.errors import ToolboxError
from toolbox.report import compare_view


def line(cr, backend, k, v, fa, test):
    return next(
        ln
        for ln in cr.lines
        if (ln.ident["backend"], ln.ident["type_k"], ln.ident["type_v"], ln.ident["flash_attn"], ln.test) == (backend, k, v, fa, test)
    )


def test_pin_update_marks(results):
    cr = cmp.compare(results, KV, NEW_KV)
    assert len(cr.lines) == 96 and not cr.only_base and not cr.only_new
    # vulkan tg with q4_0 K was made 12% slower: significant regressions
    slow = line(cr, "vulkan", "q4_0", "f16", "on", "tg128")
    assert slow.mark == "slower" and slow.regression and slow.p_value < 0.05 and slow.ratio == pytest.approx(0.88, abs=0.03)
    # cpu pp was made 8% faster
    assert line(cr, "cpu", "f16", "f16", "on", "pp512").mark == "faster"
    # unchanged configurations: no significant change
    assert line(cr, "vulkan", "f16", "f16", "on", "tg128").mark == "same"
    # 30% "faster" with wrong output is never called faster, and sets no ratio (quality.gate)
    broken = line(cr, "vulkan", "q4_0", "q4_0", "on", "pp512")
    assert broken.new.summary.median > 1.2 * broken.base.summary.median
    assert broken.ratio is None and broken.mark == "broken" and broken.regression
    # the verdict is the configuration's: every test of vulkan q4_0/q4_0 fa=on is broken
    broken_lines = [ln for ln in cr.lines if ln.new and ln.new.verdict == "broken"]
    assert len(broken_lines) == 4 and all(ln.mark == "broken" and ln.ratio is None for ln in broken_lines)
    assert len(cr.regressions) == 10
    assert ("llama.cpp", "0c1e5709 (b11312)", "9f3d2a71 (b11400)") in cr.differences


def test_same_run_has_no_change(results):
    cr = cmp.compare(results, KV, KV)
    assert {ln.mark for ln in cr.lines} == {"same"} and not cr.regressions


def test_threshold_option(results):
    loose = cmp.compare(results, KV, NEW_KV, threshold=0.15)
    assert not any(ln.mark == "slower" for ln in loose.lines)
    assert [ln.mark for ln in loose.regressions] == ["broken"] * 4


def test_mann_whitney_option(results):
    cr = cmp.compare(results, KV, NEW_KV, test="mannwhitney")
    assert cr.test == "mannwhitney"
    # with 3 samples per side the smallest two-sided Mann-Whitney p is 0.1: nothing can be significant
    tested = [ln.p_value for ln in cr.lines if ln.p_value is not None]
    assert len(tested) >= 90, "the runs have raw samples: every line must have been tested"
    assert min(tested) >= 0.1
    assert not any(ln.mark == "slower" for ln in cr.lines)


def test_run_against_imported_log_is_untested_not_guessed(results):
    cr = cmp.compare(results, IMPORTED, KV)
    assert len(cr.lines) == 6 and {ln.mark for ln in cr.lines} == {"untested"}
    assert all(ln.ratio is not None for ln in cr.lines)
    assert "backend" in cr.dropped and "n_batch" in cr.dropped
    assert len(cr.only_new) == 90


def test_nothing_in_common_says_what_differs(results):
    with pytest.raises(ToolboxError, match="no test in common") as exc:
        cmp.compare(results, FAILED, DEPTH)
    assert "type_v: q8_0 vs f16" in str(exc.value) and "flash_attn: off vs on" in str(exc.value)


def test_failed_in_new_is_a_regression(results):
    from toolbox.store import runs as store

    b = store.load_run(results.results_dir, DEPTH)
    meta, rows = store.load_run(results.results_dir, DEPTH)
    rows = [dict(r) for r in rows]
    victim = next(r for r in rows if r["backend"] == "vulkan" and r["n_gen"] == 128 and r["n_depth"] == 0)
    victim.update(status="failed", error="llama-bench exited 139 (segfault)", avg_ts=None, samples_ts=None)
    cr = cmp.compare_runs(b, ({**meta, "run_id": "NEWRUN"}, rows))
    failed = [ln for ln in cr.lines if ln.mark == "failed"]
    assert len(failed) == 1 and "segfault" in failed[0].note and failed[0].regression


def test_markdown_output(results):
    md = compare_view.render_markdown(cmp.compare(results, KV, NEW_KV))
    assert md.startswith(f"# compare {KV} (BASE) → {NEW_KV} (NEW)")
    assert "| SLOWER |" in md and "| BROKEN |" in md and "Welch" in md


def test_unknown_ignore_key_and_test(results):
    with pytest.raises(ToolboxError, match="not an identity key"):
        cmp.compare(results, KV, NEW_KV, ignore=["colour"])
    with pytest.raises(ToolboxError, match="unknown test"):
        cmp.compare(results, KV, NEW_KV, test="bayes")


def test_invoke_compare_exit_code_gates_on_regressions(results, tmp_path):
    env = {**os.environ, "TOOLBOX_RESULTS_DIR": str(results.results_dir)}
    repo = Path(__file__).resolve().parent.parent
    bad = subprocess.run(
        [sys.executable, "-m", "invoke", "compare", KV, NEW_KV, "--markdown", str(tmp_path / "c.md")],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 1, bad.stderr
    # the summary is printed once (not again as the exit message)
    assert bad.stdout.count("10 regression(s)") == 1 and not bad.stderr and (tmp_path / "c.md").exists()
    ok = subprocess.run([sys.executable, "-m", "invoke", "compare", KV, KV], cwd=repo, env=env, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    typo = subprocess.run(
        [sys.executable, "-m", "invoke", "compare", KV, "20261126T100000Z-c33c34"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
    )
    assert typo.returncode == 2 and "did you mean 20261126T100000Z-c33c33" in typo.stderr
