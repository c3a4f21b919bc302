"""Runner: one group of cases = one container running llama-bench, rows streamed out as they arrive.

Devices per backend with the host's numeric GIDs, models mounted read-only, Mesa's shader cache on
a named volume, labels on every container, a timeout per group, never privileged. stdout (jsonl)
is parsed line by line and handed to `on_row` at once, so a crash or a kill loses nothing measured.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from toolbox.errors import ToolboxError

CONTAINER_LABEL = "org.strix-toolbox.run"
SHADER_CACHE_VOLUME = "strix-toolbox-shader-cache"
MODELS_MOUNT = "/models"


@dataclass
class DeviceSetup:
    """What a container needs to reach the GPU: device nodes, their numeric groups, security options."""

    devices: list[str] = field(default_factory=list)
    group_add: list[int] = field(default_factory=list)
    security_opt: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    target: str = "cpu"  # what the rows should show they ran on: cpu, lavapipe, gpu


def device_setup(backend: str, host_root: Path = Path("/"), allow_cpu_vulkan: bool = False) -> DeviceSetup:
    """Devices for a backend, or a one-line error naming the fix before any container starts."""
    dri = sorted(str(p) for p in (host_root / "dev" / "dri").glob("renderD*")) if (host_root / "dev" / "dri").is_dir() else []
    kfd = host_root / "dev" / "kfd"
    if backend == "cpu":
        return DeviceSetup(target="cpu")
    if backend == "rocm":
        if not kfd.exists() or not dri:
            raise ToolboxError("no AMD GPU for the rocm backend (/dev/kfd or /dev/dri/renderD* missing)", "check amdgpu is loaded (invoke doctor), or use --backend vulkan / cpu")
        nodes = [str(kfd), *dri]
        return DeviceSetup(nodes, _gids(nodes), ["seccomp=unconfined"], target="gpu")
    if backend == "vulkan":
        if dri:
            return DeviceSetup(dri, _gids(dri), target="gpu")
        if allow_cpu_vulkan:
            # ggml ignores CPU-type Vulkan devices (lavapipe) unless they are named explicitly.
            return DeviceSetup(env={"GGML_VK_VISIBLE_DEVICES": "0"}, target="lavapipe")
        raise ToolboxError("no GPU render node for the vulkan backend (/dev/dri/renderD* missing)", "add --allow-cpu-vulkan to run on Mesa's software driver (lavapipe), or use --backend cpu")
    raise ToolboxError(f"unknown backend {backend!r}", "choose rocm, vulkan or cpu")


def _gids(nodes: list[str]) -> list[int]:
    """The host's numeric GIDs of the device files: group names inside the image often differ."""
    return sorted({os.stat(n).st_gid for n in nodes if os.path.exists(n)})


def device_ok(row: dict, target: str) -> bool | None:
    """Did this row run where it was meant to? llama-bench's backend string alone proves nothing."""
    devices = row.get("devices") or ""
    gpu = (row.get("gpu_info") or "") + ("" if devices in ("auto", "none") else " " + devices)
    backends = row.get("backends") or ""
    if target == "cpu":
        return "CPU" in backends or backends == ""
    if target == "lavapipe":
        return "Vulkan" in backends and "llvmpipe" in gpu.lower()
    if target == "gpu":
        if "llvmpipe" in gpu.lower() or not gpu.strip():
            return False
        return True
    return None


@dataclass
class GroupOutcome:
    rows: int
    exit_code: int | None
    error: str | None  # None when the group completed
    timed_out: bool
    seconds: float
    stderr_tail: str


def run_group(client, image: str, argv: list[str], *, model_dir: Path, setup: DeviceSetup, env: dict[str, str],
              labels: dict[str, str], timeout_s: float, stderr_path: Path, on_row, stop: threading.Event | None = None) -> GroupOutcome:
    """Run llama-bench in a fresh container; call on_row(dict) for each jsonl row the moment it arrives."""
    from toolbox.llama_bench import parse_jsonl_line

    environment = {k: v for k, v in (setup.env | env).items() if v != ""}  # "" = leave unset
    container = client.containers.run(
        image, argv, detach=True, environment=environment, devices=[f"{d}:{d}:rwm" for d in setup.devices],
        group_add=setup.group_add or None, security_opt=setup.security_opt or None,
        volumes={str(model_dir): {"bind": MODELS_MOUNT, "mode": "ro"}, SHADER_CACHE_VOLUME: {"bind": "/cache", "mode": "rw"}},
        labels={CONTAINER_LABEL: "1", **labels}, ipc_mode="host" if setup.devices else None,
    )
    t0 = time.monotonic()
    timed_out = threading.Event()

    def watchdog():
        while container_alive.is_set():
            if time.monotonic() - t0 > timeout_s:
                timed_out.set()
                _kill(container)
                return
            if stop is not None and stop.is_set():
                _kill(container)
                return
            time.sleep(0.2)

    container_alive = threading.Event()
    container_alive.set()
    stderr_thread = threading.Thread(target=_copy_stderr, args=(container, stderr_path), daemon=True)
    stderr_thread.start()
    threading.Thread(target=watchdog, daemon=True).start()
    n = 0
    buf = b""
    try:
        for chunk in container.logs(stream=True, follow=True, stdout=True, stderr=False):
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                row = parse_jsonl_line(line.decode(errors="replace"))
                if row is not None:
                    on_row(row)
                    n += 1
        try:
            code = container.wait(timeout=30).get("StatusCode")
        except Exception:
            code = None
    finally:
        container_alive.clear()
        stderr_thread.join(timeout=10)
        _remove(container)
    tail = _tail(stderr_path)
    error = None
    if timed_out.is_set():
        error = f"timeout after {timeout_s:.0f} s"
    elif stop is not None and stop.is_set():
        error = "interrupted"
    elif code != 0:
        error = f"llama-bench exited {code}" + (" (killed: out of memory?)" if code == 137 else "") + (f": {tail.splitlines()[-1]}" if tail else "")
    return GroupOutcome(n, code, error, timed_out.is_set(), time.monotonic() - t0, tail)


def _copy_stderr(container, path: Path) -> None:
    with open(path, "ab") as out:
        for chunk in container.logs(stream=True, follow=True, stdout=False, stderr=True):
            out.write(chunk)
            out.flush()


def _tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    interesting = [l for l in text if "error" in l.lower() or "fail" in l.lower() or "abort" in l.lower()]
    return "\n".join((interesting or text)[-lines:])


def _kill(container) -> None:
    try:
        container.kill()
    except Exception:
        pass


def _remove(container) -> None:
    try:
        container.remove(force=True)
    except Exception:
        pass


def llama_bench_help(client, image: str) -> str:
    """`llama-bench --help` of an image (flags the pinned llama-bench knows)."""
    out = client.containers.run(image, ["llama-bench", "--help"], remove=True, stdout=True, stderr=True, labels={CONTAINER_LABEL: "1"})
    return out.decode(errors="replace")


def remove_leftovers(client, run_id: str | None = None) -> int:
    """Remove containers a crashed or interrupted toolbox left behind (found by label; one run's, or all)."""
    n = 0
    label = f"org.strix-toolbox.run-id={run_id}" if run_id else CONTAINER_LABEL
    for c in client.containers.list(all=True, filters={"label": label}):
        _remove(c)
        n += 1
    return n
