"""A full disk (or any write error) mid-run ends the run cleanly (issue 18): the rows already on disk stay
readable, a half-written last line is cut back, run.json says failed with the reason, and the message
says how much space is needed. For real: the results directory is a small tmpfs that a filler file
fills while a real `invoke bench` runs (the test mounts it: it needs root)."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import time
import warnings
from pathlib import Path

import docker
import pytest

from toolbox.engine.container import find_containers
from toolbox.errors import ToolboxError
from toolbox.files import append_line
from toolbox.store import runs as results

REPO = Path(__file__).resolve().parent.parent
MATRIX = REPO / "tests" / "data" / "matrices" / "env-groups.toml"  # 16 cases in 4 groups


@pytest.fixture
def tiny_fs(tmp_path):
    """A 4 MB tmpfs mounted for this test."""
    if os.getuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if p.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {p.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(directory: Path) -> Path:
    """Write a filler file until the filesystem is full."""
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as f:
        chunk = b"\0" * 4096
        try:
            while True:
                f.write(chunk)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


@pytest.mark.container
def test_a_disk_that_fills_mid_run_ends_it_cleanly_and_resume_completes_it(cpu_image, tiny_fs):
    out = tiny_fs / "results"
    env = os.environ | {"TOOLBOX_RESULTS_DIR": str(out), "TOOLBOX_TELEMETRY": "0"}
    proc = subprocess.Popen(
        ["invoke", "bench", "--matrix", str(MATRIX)], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    t0 = time.monotonic()
    while time.monotonic() - t0 < 300:
        rows = list(out.glob("*/rows.jsonl"))
        if rows and len(rows[0].read_bytes().splitlines()) >= 2:
            break
        time.sleep(0.05)
    filler = _fill(tiny_fs)
    stdout, stderr = proc.communicate(timeout=300)
    run_dir = rows[0].parent
    run_id = run_dir.name

    assert proc.returncode == 1, stdout[-2000:] + stderr
    assert "Traceback" not in stderr and "Exception" not in stderr, stderr
    [line] = [ln for ln in stderr.splitlines() if ln.startswith("error:")]
    assert "No space left on device" in line and f"run {run_id}" in line
    assert "the run needs about" in line and "free at least" in line and f"invoke bench --resume {run_id}" in line

    data = rows[0].read_bytes()
    assert data.endswith(b"\n"), "the half-written line was cut back"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a half-written line would warn
        meta, kept = results.load_run(out, run_id)
    assert meta["status"] == "failed" and "No space left on device" in meta["error"]
    assert 2 <= len(kept) < 16 and all(r["status"] == "ok" for r in kept)
    assert not find_containers(docker.from_env(), label=f"org.strix-toolbox.run-id={run_id}")

    filler.unlink()
    p = subprocess.run(["invoke", "bench", "--resume", run_id], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    meta, rows_after = results.load_run(out, run_id)
    assert meta["status"] == "complete" and len({r["case_id"] for r in rows_after if r["status"] == "ok"}) == 16
    assert rows_after[: len(kept)] == kept
    assert json.loads((run_dir / "run.json").read_text())["summary"]["rows_ok"] == 16


def test_a_failed_append_is_cut_back_on_a_full_filesystem(tiny_fs):
    path = tiny_fs / "rows.jsonl"
    append_line(path, json.dumps({"n": 1}))
    _fill(tiny_fs)
    with pytest.raises(OSError) as exc:
        append_line(path, json.dumps({"n": 2, "pad": "x" * 20000}))
    assert exc.value.errno == errno.ENOSPC
    assert path.read_bytes() == b'{"n": 1}\n', "nothing of the failed line is left"


def test_the_run_writer_says_how_much_space_the_run_needs_and_still_writes_run_json(tiny_fs):
    w = results.RunWriter.create(tiny_fs / "results", {"kind": "bench"})
    w.append({"status": "ok", "pad": "x" * 3000})
    _fill(tiny_fs)
    with pytest.raises(results.ResultsWriteError) as exc:
        w.append({"status": "ok", "pad": "y" * 20000})
    assert isinstance(exc.value, ToolboxError)
    message = str(w.write_error(exc.value.os_error, exc.value.path, remaining_rows=300))  # 300 x 4 KB + 1 MB (logs, run.json)
    assert "No space left on device" in message and "for 300 rows" in message and "2.2 MB more" in message, message
    w.update(error=message)  # the space set aside at the start is given back for run.json's last word
    w.finish("failed")
    meta, rows = results.load_run(tiny_fs / "results", w.run_id)
    assert meta["status"] == "failed" and meta["error"] == message and len(rows) == 1
