"""One benchmark per device at a time, on the whole host.

Two runs measuring on one GPU (or on the CPU) at once both give wrong numbers and nothing says so.
Every task that measures (bench, check; tune, serve and others call hold() the same way) holds an
exclusive lock per device it uses: the GPU's render nodes and /dev/kfd, or "cpu" for the cpu
backend and for Vulkan on lavapipe (which computes on the CPU). The locks are fcntl locks (flock) on
files in settings.lock_dir, a directory every user of the host shares: the kernel drops them when the
process ends, however it ends, so a killed run never leaves a stale lock. A second run waits with a
one-line message naming the run that holds the device, or fails at once (wait=False: --no-wait).

busy_at_start() is what a run records about the rest of the host when it starts: the GPU's
gpu_busy_percent from sysfs where the kernel has it ("unknown" otherwise) and the toolbox runs
holding other devices.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from toolbox.engine.devices import DeviceSetup
from toolbox.errors import ToolboxError
from toolbox.files import now_iso, write_json_atomic

POLL_S = 0.5


def device_keys(setups: Iterable[DeviceSetup]) -> list[str]:
    """The lock names of the devices the setups compute on: 'cpu', 'dev-kfd', 'dev-dri-renderD128', ... (sorted)."""
    keys = set()
    for s in setups:
        if s.target in ("cpu", "lavapipe") or not s.devices:
            keys.add("cpu")
        keys |= {d.strip("/").replace("/", "-") for d in s.devices}
    return sorted(keys)


def _lock_dir(path: Path) -> Path:
    path = Path(path)
    if not path.is_dir():
        try:
            path.mkdir(parents=True, exist_ok=True)
            os.chmod(path, 0o1777)  # shared by every user of the host, like /tmp
        except OSError as exc:
            raise ToolboxError(
                f"cannot make the device lock directory {path} ({exc.strerror})", "set TOOLBOX_LOCK_DIR to a writable directory"
            ) from None
    return path


def _open(path: Path) -> int:
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        with contextlib.suppress(OSError):
            os.fchmod(fd, 0o666)  # another user's runs must be able to take it too
        return fd
    except PermissionError:
        return os.open(path, os.O_RDONLY)  # flock works on a read-only descriptor


def holder(lock_dir: Path, key: str) -> dict:
    """Who holds (or last held) a device: run, pid, command, since."""
    try:
        data = json.loads((Path(lock_dir) / f"{key}.holder.json").read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _describe(info: dict) -> str:
    what = info.get("what") or "a toolbox run"
    pid = f" (pid {info['pid']} on {info.get('host', '?')})" if info.get("pid") else ""
    since = f" since {info['since']}" if info.get("since") else ""
    return f"{what}{pid}{since}"


@contextlib.contextmanager
def hold(
    lock_dir: Path,
    setups: Iterable[DeviceSetup],
    *,
    what: str,
    wait: bool = True,
    timeout_s: float | None = None,
    say: Callable[[str], None] | None = None,
    stop=None,
) -> Iterator[dict]:
    """Hold the devices of `setups` for the duration of the block; yields {key: seconds waited}.

    Busy: with wait, say one line and wait (until timeout_s, or `stop` is set: ToolboxError); without,
    a one-line ToolboxError at once (exit 2). Locks are taken in sorted order (no deadlock between two
    runs that need overlapping devices)."""
    say = say or (lambda line: print(line, file=sys.stderr, flush=True))
    directory = _lock_dir(lock_dir)
    keys = device_keys(setups)
    held: list[int] = []
    waited: dict[str, float] = {}
    me = {"what": what, "pid": os.getpid(), "host": socket.gethostname()}
    try:
        for key in keys:
            fd = _open(directory / f"{key}.lock")
            held.append(fd)
            t0 = time.monotonic()
            told = False
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    other = _describe(holder(directory, key))
                    if not wait:
                        raise ToolboxError(
                            f"device {key} is busy: {other}",
                            "wait for it to finish, or run without --no-wait to wait for it",
                        ) from None
                    if not told:
                        say(f"waiting: device {key} is busy with {other} (one benchmark per device at a time; --no-wait fails instead)")
                        told = True
                    if (timeout_s is not None and time.monotonic() - t0 > timeout_s) or (stop is not None and stop.is_set()):
                        raise ToolboxError(f"gave up waiting for device {key} ({other})", "try again when it is free") from None
                    time.sleep(POLL_S)
            waited[key] = round(time.monotonic() - t0, 3)
            with contextlib.suppress(OSError):
                write_json_atomic(directory / f"{key}.holder.json", me | {"since": now_iso()})
        yield waited
    finally:
        for fd in held:
            os.close(fd)  # closing the descriptor releases the lock


def busy_keys(lock_dir: Path) -> dict[str, dict]:
    """Devices some process holds right now (probed without waiting), with who holds them."""
    directory = Path(lock_dir)
    out = {}
    if not directory.is_dir():
        return out
    for path in sorted(directory.glob("*.lock")):
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            out[path.stem] = holder(directory, path.stem)
        finally:
            os.close(fd)
    return out


def gpu_busy_percent(host_root: Path = Path("/")) -> dict[str, int] | str:
    """{card: percent} from /sys/class/drm/card*/device/gpu_busy_percent, or "unknown" where no card has it."""
    found = {}
    for p in sorted((Path(host_root) / "sys" / "class" / "drm").glob("card*/device/gpu_busy_percent")):
        try:
            found[p.parent.parent.name] = int(p.read_text().strip())
        except (OSError, ValueError):
            continue
    return found or "unknown"


def busy_at_start(lock_dir: Path, host_root: Path, own: Iterable[str] = ()) -> dict:
    """What else was busy when a run started: gpu_busy_percent and other toolbox runs' devices."""
    others = {k: v for k, v in busy_keys(lock_dir).items() if k not in set(own)}
    return {"gpu_busy_percent": gpu_busy_percent(host_root), "other_toolbox_runs": others}
