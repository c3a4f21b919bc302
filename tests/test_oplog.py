"""The optimization log: dated entries appended with what changed, key figures, ratios and run ids."""

from datetime import UTC, datetime
from pathlib import Path

import pytest
from helpers import KV, NEW_KV

from toolbox.analysis import compare as cmp
from toolbox.errors import ToolboxError
from toolbox.report import oplog


def test_entry_contents(results):
    cr = cmp.compare(results, KV, NEW_KV)
    text = oplog.entry(cr, "pin update to b11400", "rebuilt both images", when=datetime(2026, 11, 26, tzinfo=UTC))
    assert text.startswith("## 2026-11-26 — pin update to b11400\n")
    assert f"before: `{KV}`, after: `{NEW_KV}`" in text and "note: rebuilt both images" in text
    assert "llama.cpp: 0c1e5709 (b11312) → 9f3d2a71 (b11400)" in text
    assert "generation: geometric mean ratio **0.98" in text and "**10 regression(s)**" in text
    table = [ln for ln in text.splitlines() if ln.startswith("| ")][1:]
    assert len(table) == oplog.MAX_LINES
    # regressions are always among the key figures
    assert sum("SLOWER" in ln or "BROKEN" in ln for ln in table) == 10
    # a broken side says so, without a ratio
    broken = [ln for ln in table if "BROKEN" in ln]
    assert len(broken) == 4 and all("[not counted: broken]" in ln and "| — |" in ln for ln in broken)


def test_log_appends_with_header_once(results, tmp_path):
    path = tmp_path / "docs" / "optimization-log.md"
    oplog.log(results, "first", KV, NEW_KV, path=path)
    oplog.log(results, "second", KV, KV, note="noise check", path=path)
    text = path.read_text()
    assert text.count("# Optimization log") == 1
    assert text.index("— first") < text.index("— second")
    second = text.split("— second")[1]
    assert "nothing recorded in run.json differs" in second and "96 ~" in second


def test_log_needs_a_title_and_known_runs(results, tmp_path):
    with pytest.raises(ToolboxError, match="title"):
        oplog.log(results, "  ", KV, NEW_KV, path=tmp_path / "log.md")
    with pytest.raises(ToolboxError, match="did you mean"):
        oplog.log(results, "x", KV, "20261126T100000Z-c33c34", path=tmp_path / "log.md")
    assert not (tmp_path / "log.md").exists()


def test_repository_log_has_the_header():
    text = (Path(__file__).resolve().parent.parent / "docs" / "optimization-log.md").read_text()
    assert text.startswith(oplog.HEADER)
