"""The results store: run ids, append-only rows, power cuts, corrupt runs, migrations, import, `invoke results`."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from toolbox.errors import ToolboxError
from toolbox.parse import parse, parse_jsonl_line
from toolbox.store import importer
from toolbox.store import rows as row_store
from toolbox.store import runs as run_store

DATA = Path(__file__).parent / "data" / "llama-bench"
REPO = Path(__file__).resolve().parent.parent
JSONL = (DATA / "lhl-llama32-1b-default-hip.jsonl").read_text(encoding="utf-8").splitlines()


def writer(tmp_path, **meta):
    return run_store.RunWriter.create(tmp_path / "results", {"argv": ["test"], **meta})


def test_run_ids_sort_by_time_and_do_not_collide():
    t = datetime(2026, 11, 26, 9, 15, 2, tzinfo=UTC)
    ids = {run_store.new_run_id(t) for _ in range(200)}
    assert len(ids) == 200 and all(i.startswith("20261126T091502Z-") and run_store.RUN_ID_RE.match(i) for i in ids)
    assert run_store.new_run_id(datetime(2026, 11, 26, 9, 15, 3, tzinfo=UTC)) > max(ids)


def test_create_writes_run_json_and_never_reuses_a_directory(tmp_path):
    a, b = writer(tmp_path, kind="bench"), writer(tmp_path)
    assert a.path != b.path and a.logs_dir.is_dir()
    meta = json.loads((a.path / "run.json").read_text())
    assert meta["schema_version"] == 1 and meta["run_id"] == a.run_id and meta["status"] == "running"
    assert meta["started_at"] and meta["ended_at"] is None and meta["argv"] == ["test"]
    assert set(meta["toolbox"]) == {"version", "git_commit", "git_dirty"}


def test_append_read_update_finish(tmp_path):
    w = writer(tmp_path)
    stored = w.append(row_store.make_row(parse_jsonl_line(JSONL[0]), case_id="c1", backend="rocm"))
    w.update(images={"rocm": {"id": "sha256:abc"}})
    w.finish("complete")
    meta, rows = run_store.load_run(tmp_path / "results", w.run_id)
    assert rows == [stored] and rows[0]["run_id"] == w.run_id and rows[0]["schema_version"] == 1
    assert meta["status"] == "complete" and meta["ended_at"] and meta["images"]["rocm"]["id"] == "sha256:abc"
    with pytest.raises(ValueError):
        w.finish("done")
    again = run_store.RunWriter.open(tmp_path / "results", w.run_id)  # --resume appends to the same run
    again.append(row_store.make_row(parse_jsonl_line(JSONL[1])))
    assert len(run_store.read_rows(w.path)) == 2


def test_make_row_keeps_raw_and_normalizes():
    row = row_store.make_row(parse_jsonl_line(JSONL[2]), case_id="x", group_id="g", env={"ROCBLAS_USE_HIPBLASLT": "1"})
    assert row["raw"] == json.loads(JSONL[2])
    assert row["flash_attn"] == 1 and row["use_mmap"] == 0 and row["n_depth"] == 1024 and row["status"] == "ok"
    assert row["test"] == "pp512@d1024" and row["n_samples"] == 1 and row["median_ts"] == 4076.03
    assert row["load_mode"] is None and row["env"] == {"ROCBLAS_USE_HIPBLASLT": "1"}
    failed = row_store.make_row({"n_prompt": 512, "n_gen": 0, "type_k": "q8_0", "flash_attn": "off"}, status="failed", error="exit 1")
    assert failed["flash_attn"] == 0 and failed["avg_ts"] is None and failed["test"] == "pp512"
    with pytest.raises(ValueError):
        row_store.make_row({}, status="great")
    with pytest.raises(TypeError):
        row_store.make_row({}, colour="blue")


def test_half_written_last_line_is_skipped_and_later_appends_still_work(tmp_path):
    w = writer(tmp_path)
    w.append(row_store.make_row(parse_jsonl_line(JSONL[0])))
    full = json.dumps(row_store.make_row(parse_jsonl_line(JSONL[1])))
    with open(w.path / "rows.jsonl", "ab") as f:  # the power went off mid-write
        f.write(full[: len(full) // 2].encode())
    with pytest.warns(run_store.ResultsWarning, match="half-written last line"):
        assert len(run_store.read_rows(w.path)) == 1
    w.append(row_store.make_row(parse_jsonl_line(JSONL[3])))
    with pytest.warns(run_store.ResultsWarning, match="line 2"):
        rows = run_store.read_rows(w.path)
    assert [r["n_depth"] for r in rows] == [0, 1024]


def test_schema_versions(tmp_path):
    w = writer(tmp_path)
    with open(w.path / "rows.jsonl", "a") as f:
        f.write(json.dumps({"n_prompt": 512, "avg_ts": 1.0}) + "\n")  # version 0: no schema_version, no raw
    row = run_store.read_rows(w.path)[0]
    assert row["schema_version"] == 1 and row["raw"] == {"n_prompt": 512, "avg_ts": 1.0} and row["status"] == "ok"
    with open(w.path / "rows.jsonl", "a") as f:
        f.write(json.dumps({"schema_version": 99}) + "\n")
    with pytest.raises(ToolboxError, match="update the toolbox"):
        run_store.read_rows(w.path)


def test_unknown_run_id_names_the_closest(tmp_path):
    w = writer(tmp_path)
    with pytest.raises(ToolboxError) as exc:
        run_store.load_run(tmp_path / "results", w.run_id[:-1] + "z")
    assert w.run_id in str(exc.value)
    with pytest.raises(ToolboxError, match="no runs"):
        run_store.latest_run_id(tmp_path / "empty")


def test_a_corrupt_run_does_not_stop_the_others(tmp_path):
    runs = []
    for line in JSONL[:3]:
        w = writer(tmp_path)
        w.append(row_store.make_row(parse_jsonl_line(line)))
        w.finish("complete")
        runs.append(w)
    (runs[1].path / "run.json").write_bytes(b'{"schema_version": 1, "run_id": "trunc')
    with pytest.warns(run_store.ResultsWarning, match="run.json is corrupt"):
        df = run_store.load_rows(tmp_path / "results")
    assert sorted(df["run_id"]) == sorted([runs[0].run_id, runs[2].run_id]) and len(df) == 2
    listed = {r["run_id"]: r for r in run_store.list_runs(tmp_path / "results")}
    assert listed[runs[1].run_id]["status"] == "corrupt" and "run.json is corrupt" in listed[runs[1].run_id]["error"]
    assert listed[runs[0].run_id]["rows_ok"] == 1 and listed[runs[0].run_id]["backends"] == ["ROCm"]
    assert run_store.latest_run_id(tmp_path / "results") == max(r.run_id for r in runs)
    with pytest.raises(ToolboxError, match="corrupt"):
        run_store.load_run(tmp_path / "results", runs[1].run_id)


def test_import_a_folder_of_mixed_logs_gives_one_run_with_every_row(tmp_path):
    expected = sum(len(parse(p.read_bytes().decode("utf-8", "replace"))) for p in DATA.iterdir() if p.is_file())
    (tmp_path / "junk.bin").write_bytes(os.urandom(5000))
    run_id = importer.import_files([DATA, tmp_path / "junk.bin"], tmp_path / "results", argv=["invoke", "import"]).run_id
    meta, rows = run_store.load_run(tmp_path / "results", run_id)
    assert len(rows) == expected > 60 and meta["kind"] == "imported" and meta["status"] == "complete"
    by_path = {Path(s["path"]).name: s for s in meta["sources"]}
    src = by_path["llamacpp-readme-2023-09.sql"]
    assert src["format"] == "sql" and src["rows"] == 2
    assert src["sha256"] == hashlib.sha256((DATA / "llamacpp-readme-2023-09.sql").read_bytes()).hexdigest()
    assert by_path["junk.bin"]["rows"] == 0 and "binary" in by_path["junk.bin"]["errors"][0]
    assert {r["source"]["format"] for r in rows} >= {"md", "csv", "json", "jsonl", "sql"}
    assert len(list((tmp_path / "results" / run_id / "logs" / "sources").iterdir())) == len(meta["sources"])
    assert all(r["status"] == "ok" and r["raw"] for r in rows)


def test_import_of_nothing_useful_is_a_clear_error(tmp_path):
    (tmp_path / "empty.log").write_text("")
    with pytest.raises(ToolboxError, match="no llama-bench results"):
        importer.import_files([tmp_path / "empty.log", DATA / "kyuz0-kimi-dev-72b-rocm7rc-hblt0-failed.log"], tmp_path / "results")
    with pytest.raises(ToolboxError, match="does not exist"):
        importer.import_files([tmp_path / "nope"], tmp_path / "results")
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").iterdir())


def test_invoke_import_and_results(tmp_path):
    env = {**os.environ, "TOOLBOX_RESULTS_DIR": str(tmp_path / "results"), "COLUMNS": "200"}

    def invoke(*args):
        return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)

    r = invoke("import", str(DATA / "geerlingguy-framework-desktop-rocm-rpc.md"), str(DATA / "llamacpp-readme-2023-09.csv"))
    assert r.returncode == 0, r.stderr
    assert "5 rows imported" in r.stdout
    runs = json.loads(invoke("results", "--json").stdout)
    assert len(runs) == 1 and runs[0]["kind"] == "imported" and runs[0]["rows_ok"] == 5
    assert runs[0]["backends"] == ["CUDA", "ROCm,RPC"]  # a list: 'ROCm,RPC' is one backend string, never split
    r = invoke("results")
    assert r.returncode == 0 and runs[0]["run_id"] in r.stdout and "imported" in r.stdout
    r = invoke("import", str(tmp_path / "missing.md"))
    assert r.returncode == 2 and r.stderr.strip().startswith("error:") and len(r.stderr.strip().splitlines()) == 1


def test_import_refuses_content_already_imported_and_says_where(tmp_path):
    md, csv = DATA / "llamacpp-readme-2023-09.md", DATA / "llamacpp-readme-2023-09.csv"
    first = importer.import_files([md], tmp_path / "results")
    copy = tmp_path / "renamed.md"
    copy.write_bytes(md.read_bytes())  # the same content under another name is the same content
    with pytest.raises(ToolboxError, match=f"already imported as {first.run_id}"):
        importer.import_files([copy], tmp_path / "results")
    # new content beside old: only the new is imported, the old is named
    second = importer.import_files([md, csv], tmp_path / "results")
    assert second.already == [(str(md), first.run_id)] and second.rows == 2
    assert [Path(s["path"]).name for s in second.sources] == [csv.name]
    assert len(run_store.run_ids(tmp_path / "results")) == 2


def test_a_file_without_rows_gives_its_own_reason(tmp_path):
    with pytest.raises(ToolboxError) as exc:
        importer.import_files([DATA / "llamacpp-readme-b11312.csv"], tmp_path / "results")
    assert "41 values for 42 columns" in str(exc.value) and "\n" not in str(exc.value)


def test_jsonl_with_null_or_text_samples_imports_without_samples(tmp_path):
    row = json.loads((DATA / "llamacpp-readme-b11312.jsonl").read_text().splitlines()[0])
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(json.dumps(dict(row, samples_ts=s)) for s in ([None, 1.0], ["fast", 2.0])) + "\n")
    r = importer.import_files([bad], tmp_path / "results")
    meta, rows = run_store.load_run(tmp_path / "results", r.run_id)
    assert len(rows) == 2 and all(x["samples_ts"] is None and x["avg_ts"] == row["avg_ts"] for x in rows)
    assert any("samples_ts holds values that are not numbers" in w for w in meta["sources"][0]["warnings"])


def test_invoke_import_takes_several_files_as_a_user_types_them(tmp_path):
    env = {**os.environ, "TOOLBOX_RESULTS_DIR": str(tmp_path / "results"), "COLUMNS": "200"}
    for name in ("a.md", "b.json", "c.csv"):
        src = {"a.md": "llamacpp-readme-2023-09.md", "b.json": "llamacpp-readme-2023-09.json", "c.csv": "llamacpp-readme-b11312.csv"}[name]
        (tmp_path / name).write_bytes((DATA / src).read_bytes())
    # a shell glob, as a user types it: the shell gives invoke three words
    r = subprocess.run(
        f"invoke import {tmp_path}/*.* && invoke import {tmp_path}/a.md",
        shell=True,
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "8 rows imported" in r.stdout and "41 values for 42 columns" in r.stdout
    assert r.returncode == 2 and r.stderr.startswith(f"error: {tmp_path}/a.md is already imported as ") and r.stderr.count("\n") == 1
