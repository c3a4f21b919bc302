"""Runs whose process vanished (SIGKILL, an OOM kill, a power cut) are recognised and closed.

A run in progress records its process (host, boot id, pid, the process's start time in clock ticks)
in run.json and in a small marker, results/.running/<run_id>.json, removed when the run ends. The
next command that touches results/ looks at the markers (a directory listing: cheap with a thousand
runs): a run on this host whose process is gone (another boot, no such pid, or a pid reused by a
younger process) is marked interrupted with the reason, its labelled containers are removed, and a
one-line warning says how to complete it. A run on another host (a shared results directory) is
never judged from here.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import warnings
from pathlib import Path

from toolbox.files import now_iso, write_json_atomic

MARKERS = ".running"


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def _start_ticks(pid: int) -> int | None:
    """The process's start time after boot, in clock ticks (/proc/PID/stat field 22): tells a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def process_identity(pid: int | None = None) -> dict:
    """Who is running a run: host, boot id, pid and the process's start time."""
    pid = pid or os.getpid()
    return {"host": socket.gethostname(), "boot_id": _boot_id(), "pid": pid, "start_ticks": _start_ticks(pid)}


def process_gone(identity: dict) -> bool | None:
    """True when the recorded process no longer runs; None when it cannot be told from here (another host)."""
    if not identity or identity.get("host") != socket.gethostname() or not identity.get("pid"):
        return None
    if identity.get("boot_id") and _boot_id() and identity["boot_id"] != _boot_id():
        return True
    pid = int(identity["pid"])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # another user's process: it exists
    ticks = _start_ticks(pid)
    return ticks is not None and identity.get("start_ticks") is not None and ticks != identity["start_ticks"]


def mark_running(run_dir: Path, identity: dict) -> None:
    d = Path(run_dir).parent / MARKERS
    d.mkdir(exist_ok=True)
    write_json_atomic(d / f"{Path(run_dir).name}.json", identity)


def unmark(run_dir: Path) -> None:
    with contextlib.suppress(OSError):
        (Path(run_dir).parent / MARKERS / f"{Path(run_dir).name}.json").unlink()


def close_vanished(results_dir: Path) -> list[str]:
    """Mark every run whose process vanished as interrupted and remove its containers; returns their ids."""
    d = Path(results_dir) / MARKERS
    if not d.is_dir():
        return []
    closed = []
    for marker in sorted(d.glob("*.json")):
        run_id = marker.name[: -len(".json")]
        try:
            identity = json.loads(marker.read_text())
        except (OSError, ValueError):
            continue
        if not process_gone(identity):
            continue
        run_json = Path(results_dir) / run_id / "run.json"
        try:
            meta = json.loads(run_json.read_text())
        except (OSError, ValueError):
            meta = None
        if isinstance(meta, dict) and meta.get("status") == "running":
            reason = f"its process vanished (pid {identity.get('pid')} on {identity.get('host')}: killed, out of memory or a power cut)"
            meta.update(
                status="interrupted", interrupted_by="vanished", interrupted_reason=reason, ended_at=meta.get("ended_at") or now_iso()
            )
            try:
                write_json_atomic(run_json, meta)
            except OSError:
                continue  # not ours to change (another user's results): leave it as it is
            removed = _remove_containers(run_id)
            warnings.warn(
                f"run {run_id} was left running: {reason}; marked interrupted"
                + (f", removed {removed} of its containers" if removed else "")
                + f"; `invoke bench --resume {run_id}` completes it",
                stacklevel=2,
            )
            closed.append(run_id)
        unmark(run_json.parent)
    return closed


def _remove_containers(run_id: str) -> int:
    try:
        from toolbox.engine.client import docker_client
        from toolbox.engine.container import remove_leftovers

        return remove_leftovers(docker_client(), run_id)
    except Exception:  # noqa: BLE001 - no Docker here: the run is still closed, its containers are docker's to show
        return 0
