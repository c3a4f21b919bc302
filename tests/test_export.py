"""export: csv / parquet / jsonl round trips, and SQLite in llama-bench's own schema, read back by the
pinned llama.cpp's scripts/compare-llama-bench.py."""

import json
import re
import sqlite3
import subprocess
import sys

import pytest
from helpers import DEPTH, IMPORTED, KV, NEW_KV

from toolbox.errors import ToolboxError
from toolbox.quality.gate import row_not_counted
from toolbox.store import export as ex


@pytest.fixture(scope="module")
def llama_cpp_tree():
    """The pinned llama.cpp source (llama-cpp-python's sdist from PyPI, downloaded once and cached)."""
    from toolbox.build.pins import load_pins
    from toolbox.build.source import sdist_source
    from toolbox.settings import load_settings

    s = load_settings()
    try:
        return sdist_source(load_pins(s.pins_file), s.cache_dir)
    except ToolboxError as exc:  # offline and not cached
        pytest.skip(f"pinned llama.cpp source unavailable: {exc}")


def test_sqlite_columns_are_the_pinned_llama_bench_fields(llama_cpp_tree):
    src = (llama_cpp_tree / "tools" / "llama-bench" / "llama-bench.cpp").read_text()
    body = src[src.index("static const std::vector<std::string> & get_fields()") :]
    body = body[: body.index("};")]
    assert tuple(re.findall(r'"(\w+)"', body)) == ex.LLAMA_BENCH_FIELDS
    types = src[src.index("static field_type get_field_type") : src.index("std::vector<std::string> get_values()")]
    ints = set(re.findall(r'field == "(\w+)"', types.split("return INT;")[0]))
    bools = set(re.findall(r'field == "(\w+)"', types.split("return INT;")[1].split("return BOOL;")[0]))
    assert {f for f in ex.LLAMA_BENCH_FIELDS if ex.sql_type(f) == "INTEGER"} == (ints | bools) & set(ex.LLAMA_BENCH_FIELDS)
    assert {f for f in ex.LLAMA_BENCH_FIELDS if ex.sql_type(f) == "REAL"} == {"avg_ts", "stddev_ts"}


def test_sqlite_export_schema_and_values(results, tmp_path):
    path, n = ex.export(results, [DEPTH], "sqlite", out=tmp_path / "d.sqlite", not_counted=row_not_counted)
    assert n == 16  # 20 rows, 4 failed: llama-bench writes only finished tests
    con = sqlite3.connect(path)
    cols = [(r[1], r[2]) for r in con.execute("PRAGMA table_info(llama_bench)")]
    assert [c for c, _ in cols] == list(ex.LLAMA_BENCH_FIELDS)
    row = con.execute(
        "SELECT backends, flash_attn, cpu_strict, n_depth, avg_ts, build_commit FROM llama_bench "
        "WHERE backends='Vulkan' AND n_gen=128 AND n_depth=4096"
    ).fetchone()
    assert row[:4] == ("Vulkan", 1, 0, 4096) and row[5] == "0c1e5709"
    src = [json.loads(x) for x in (results.results_dir / DEPTH / "rows.jsonl").read_text().splitlines()]
    want = next(r for r in src if r["backend"] == "vulkan" and r["n_gen"] == 128 and r["n_depth"] == 4096)
    assert row[4] == pytest.approx(want["avg_ts"])
    # our fields and raw samples sit beside it, linked by rowid; failures too
    linked = con.execute(
        "SELECT t.samples_ts, t.backend FROM toolbox_rows t JOIN llama_bench l ON l.rowid = t.llama_bench_rowid "
        "WHERE l.n_gen=128 AND l.n_depth=4096 AND l.backends='Vulkan'"
    ).fetchone()
    assert json.loads(linked[0]) == want["samples_ts"] and linked[1] == "vulkan"
    assert con.execute("SELECT COUNT(*) FROM toolbox_rows WHERE status='failed' AND llama_bench_rowid IS NULL").fetchone()[0] == 4
    assert json.loads(con.execute("SELECT run_json FROM toolbox_runs").fetchone()[0])["run_id"] == DEPTH


def test_old_log_missing_fields_get_llama_bench_defaults_not_null(results, tmp_path):
    path, n = ex.export(results, [IMPORTED], "sqlite", out=tmp_path / "i.sqlite", not_counted=row_not_counted)
    con = sqlite3.connect(path)
    nulls = [
        f
        for f in ex.LLAMA_BENCH_FIELDS
        if f != "build_commit" and con.execute(f"SELECT COUNT(*) FROM llama_bench WHERE {f} IS NULL").fetchone()[0]
    ]
    assert n == 6 and nulls == []
    assert con.execute("SELECT DISTINCT n_batch, tensor_buft_overrides FROM llama_bench").fetchall() == [(2048, "none")]


def test_sqlite_says_which_rows_do_not_count_and_appends_to_an_older_file(tmp_path):
    """toolbox_rows carries fa_fallback, fa_on_cpu and the gate's reason; a file written before those
    columns existed (15 columns) takes an --append and gains them."""
    from toolbox.store.rows import make_row

    lb = {"n_prompt": 0, "n_gen": 32, "avg_ts": 80.0, "samples_ts": [80.0], "type_k": "f16", "type_v": "f16"}
    rows = [
        make_row(lb, case_id="a", device_ok=True, fa_on_cpu=False),
        make_row(lb | {"type_k": "bf16", "avg_ts": 9.8}, case_id="b", device_ok=True, fa_on_cpu=True),
        make_row(lb | {"type_k": "q8_0"}, case_id="c", device_ok=True, fa_fallback=True),
        make_row(lb, case_id="d", device_ok=False),
    ]
    path = tmp_path / "old.sqlite"
    con = sqlite3.connect(path)
    con.execute(
        "CREATE TABLE toolbox_rows (llama_bench_rowid INTEGER, run_id TEXT, case_id TEXT, group_id TEXT, status TEXT, error TEXT, "
        "backend TEXT, image TEXT, image_digest TEXT, env TEXT, model_sha256 TEXT, device_ok INTEGER, quality TEXT, "
        "samples_ns TEXT, samples_ts TEXT)"
    )
    con.execute("INSERT INTO toolbox_rows (run_id, case_id, status) VALUES ('old', 'z', 'ok')")
    con.commit()
    con.close()
    assert ex.write_sqlite([({"run_id": "new"}, rows)], path, append=True, not_counted=row_not_counted) == 4
    con = sqlite3.connect(path)
    got = con.execute("SELECT case_id, fa_on_cpu, fa_fallback, not_counted FROM toolbox_rows ORDER BY case_id").fetchall()
    assert got == [
        ("a", 0, None, None),
        ("b", 1, None, "fa-on-cpu"),
        ("c", None, 1, "fallback"),
        ("d", None, None, "off-device"),
        ("z", None, None, None),  # the older file's row, kept
    ]
    counted = "SELECT l.avg_ts FROM llama_bench l JOIN toolbox_rows t ON l.rowid = t.llama_bench_rowid WHERE t.not_counted IS NULL"
    assert [r[0] for r in con.execute(counted)] == [80.0]
    import pandas as pd

    csv, _ = ex.export_runs([({"run_id": "new"}, rows)], "csv", tmp_path / "x.csv", not_counted=row_not_counted)
    assert pd.read_csv(csv)["not_counted"].fillna("").tolist() == ["", "fa-on-cpu", "fallback", "off-device"]


@pytest.mark.parametrize("fmt", ["csv", "parquet", "jsonl"])
def test_tabular_and_jsonl_round_trip(results, tmp_path, fmt):
    import pandas as pd

    path, n = ex.export(results, [KV, IMPORTED], fmt, out=tmp_path / f"x.{fmt}", not_counted=row_not_counted)
    assert n == 102
    if fmt == "jsonl":
        rows = [json.loads(x) for x in path.read_text().splitlines()]
        assert rows[0] == json.loads((results.results_dir / KV / "rows.jsonl").read_text().splitlines()[0])
        return
    df = pd.read_csv(path) if fmt == "csv" else pd.read_parquet(path)
    assert len(df) == 102 and set(df.run_id) == {KV, IMPORTED}
    first = df[df.run_id == KV].iloc[0]
    samples = json.loads(first.samples_ts) if fmt == "csv" else list(first.samples_ts)
    src = json.loads((results.results_dir / KV / "rows.jsonl").read_text().splitlines()[0])
    assert samples == pytest.approx(src["samples_ts"])
    assert json.loads(df[df.run_id == IMPORTED].iloc[0].raw)["t/s"].startswith("880.40")


def test_default_path_beside_the_run_and_bad_format(results):
    path, _ = ex.export(results, [KV], "sqlite", not_counted=row_not_counted)
    assert path == results.results_dir / KV / f"{KV}.sqlite"
    with pytest.raises(ToolboxError, match="choose one of csv, parquet, sqlite, jsonl"):
        ex.export(results, [KV], "xlsx", not_counted=row_not_counted)


def test_compare_llama_bench_reads_the_export(results, tmp_path, llama_cpp_tree):
    pytest.importorskip("tabulate", reason="compare-llama-bench.py needs tabulate")
    pytest.importorskip("git", reason="compare-llama-bench.py needs GitPython")
    db = tmp_path / "llama-bench.sqlite"
    ex.export(results, [KV], "sqlite", out=db, not_counted=row_not_counted)
    ex.export(results, [NEW_KV], "sqlite", out=db, append=True, not_counted=row_not_counted)
    script = llama_cpp_tree / "scripts" / "compare-llama-bench.py"
    r = subprocess.run(
        [sys.executable, str(script), "-i", str(db), "-b", "0c1e5709", "-c", "9f3d2a71"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("|") and "---" not in ln]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header[-4:] == ["Test", "t/s 0c1e5709", "t/s 9f3d2a71", "Speedup"]
    table = [dict(zip(header, (c.strip() for c in ln.strip("|").split("|")))) for ln in lines[1:]]
    assert len(table) == 96  # every test of both runs joined on llama-bench's key properties
    # the pin update made cpu pp about 8% faster and vulkan tg with q4_0 K about 12% slower
    cpu_pp = [float(t["Speedup"]) for t in table if t["Backends"] == "CPU" and t["Test"].startswith("pp")]
    vk_tg = [float(t["Speedup"]) for t in table if t["Backends"] == "Vulkan" and t["Test"].startswith("tg") and t["K type"] == "q4_0"]
    assert 1.04 < sum(cpu_pp) / len(cpu_pp) < 1.12 and all(0.85 < s < 0.91 for s in vk_tg)
