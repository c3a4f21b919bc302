"""The one container launcher: every container the toolbox starts (llama-bench, llama-perplexity, servers,
RPC workers, `--help` probes) starts here.

A ContainerSpec says what to run; start() applies the backend's devices with the host's numeric
GIDs and security options, the mounts (models read-only), Mesa's shader cache (a directory in the
user's cache), the environment and labels (every container carries CONTAINER_LABEL, so leftovers
can be found). Every container can do only what it must: no network (unless the spec names one, e.g.
an RPC run's own network), all capabilities dropped, no-new-privileges, a read-only root filesystem
with a tmpfs at /tmp (HOME points there), never `privileged`, and the invoking user's uid:gid (the
device files' numeric GIDs added), or nobody when the toolbox itself runs as root: never root inside.

run_streaming() hands each stdout line to a callback the moment it arrives (a crash or a kill
loses nothing measured) and kills the container on timeout or when asked to stop; run_to_end()
waits and returns both streams. Containers are always removed afterwards.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from toolbox.engine.devices import DeviceSetup
from toolbox.errors import ToolboxError
from toolbox.files import write_json_atomic

CONTAINER_LABEL = "org.strix-toolbox.run"
RUN_ID_LABEL = "org.strix-toolbox.run-id"
MODELS_MOUNT = "/models"
CACHE_MOUNT = "/cache"  # Mesa's shader cache (the images set MESA_SHADER_CACHE_DIR=/cache/mesa)
NOBODY = 65534  # the user containers run as when the toolbox runs as root
TMPFS = {"/tmp": "rw,nosuid,nodev,size=512m,mode=1777"}  # the only writable place besides the mounts


@dataclass
class ContainerSpec:
    """One container: image, command, devices, environment, mounts and labels."""

    image: str
    argv: list[str]
    setup: DeviceSetup = field(default_factory=DeviceSetup)
    env: dict[str, str] = field(default_factory=dict)
    mounts: dict[str, tuple[str, str]] = field(default_factory=dict)  # host path or volume -> (container path, "ro"/"rw")
    labels: dict[str, str] = field(default_factory=dict)
    network: str = "none"  # no network; an RPC run names its own network here
    shader_cache: Path | None = None  # host directory for Mesa's shader cache; None: <cache_dir>/shader-cache
    ports: dict[int, int] = field(default_factory=dict)  # container port -> host port, published on 127.0.0.1 only
    name: str | None = None
    bind: str = "127.0.0.1"  # where ports are published: loopback, or "0.0.0.0" for an RPC worker other machines reach

    def environment(self) -> dict[str, str]:
        """The backend's variables overlaid with the spec's; "" means: leave the variable unset."""
        return {k: v for k, v in ({"HOME": "/tmp"} | self.setup.env | self.env).items() if v != ""}


def container_user() -> tuple[int, int]:
    """uid, gid a container runs as: the invoking user's, or nobody's when the toolbox runs as root."""
    uid, gid = os.getuid(), os.getgid()
    return (uid, gid) if uid != 0 else (NOBODY, NOBODY)


def writable_dir(path: Path) -> Path:
    """A host directory the container user can write (made if missing; handed to nobody when we are root)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if os.getuid() == 0 and path.stat().st_uid != NOBODY:
        os.chown(path, NOBODY, NOBODY)
    return path


def _shader_cache(spec: ContainerSpec) -> Path:
    if spec.shader_cache is not None:
        return writable_dir(spec.shader_cache)
    from toolbox.settings import load_settings

    return writable_dir(load_settings().cache_dir / "shader-cache")


def in_container(model: str | Path) -> str:
    """Where a model file is seen inside the container (its directory is mounted read-only at MODELS_MOUNT)."""
    return f"{MODELS_MOUNT}/{Path(model).name}"


def model_mount(model: str | Path) -> dict[str, tuple[str, str]]:
    """The read-only mount of a model's directory; a model the container user cannot read is a one-line error."""
    model = Path(model)
    if os.getuid() == 0 and model.exists():
        # the container runs as nobody: it needs "others" to be able to read the file and enter its directory
        if model.stat().st_mode & 0o004 == 0 or model.parent.stat().st_mode & 0o001 == 0:
            raise ToolboxError(
                f"{model} cannot be read inside the container: invoke runs as root, so its containers run as nobody",
                f"make it readable (chmod o+r {model}; chmod o+x {model.parent}), or run invoke as your own user",
            )
    return {str(model.parent): (MODELS_MOUNT, "ro")}


def start(client, spec: ContainerSpec):
    """Create and start the container, detached, with only what it must have (see the module's docstring)."""
    volumes = {str(_shader_cache(spec)): {"bind": CACHE_MOUNT, "mode": "rw"}}
    volumes.update({src: {"bind": dst, "mode": mode} for src, (dst, mode) in spec.mounts.items()})
    s = spec.setup
    uid, gid = container_user()
    return client.containers.run(
        spec.image,
        spec.argv,
        detach=True,
        environment=spec.environment(),
        devices=[f"{d}:{d}:rwm" for d in s.devices],
        group_add=[str(g) for g in s.group_add] or None,
        security_opt=[*s.security_opt, "no-new-privileges"],
        cap_drop=["ALL"],
        privileged=False,
        read_only=True,
        tmpfs=TMPFS,
        user=f"{uid}:{gid}",
        network_mode=spec.network,
        volumes=volumes,
        labels={CONTAINER_LABEL: "1", **spec.labels},
        ipc_mode="host" if any(d.endswith("/kfd") for d in s.devices) else None,  # ROCm's HIP runtime; Vulkan needs none
        ports={f"{c}/tcp": (spec.bind, h) for c, h in spec.ports.items()} or None,
        name=spec.name,
    )


@dataclass
class Streamed:
    """How a streamed container ended."""

    exit_code: int | None
    timed_out: bool
    stopped: bool
    seconds: float
    stderr_tail: str


def run_streaming(
    client, spec: ContainerSpec, *, timeout_s: float, stderr_path: Path, on_line, stop: threading.Event | None = None
) -> Streamed:
    """Run the container; call on_line(str) for each stdout line as it arrives; stderr goes to stderr_path.

    The container is killed after timeout_s, or as soon as `stop` is set, and removed in every case.
    """
    container = start(client, spec)
    t0 = time.monotonic()
    alive = threading.Event()
    alive.set()
    timed_out = threading.Event()

    def watchdog():
        while alive.is_set():
            if time.monotonic() - t0 > timeout_s:
                timed_out.set()
                kill(container)
                return
            if stop is not None and stop.is_set():
                kill(container)
                return
            time.sleep(0.2)

    stderr_thread = threading.Thread(target=_copy_stderr, args=(container, stderr_path), daemon=True)
    stderr_thread.start()
    threading.Thread(target=watchdog, daemon=True).start()
    buf = b""
    try:
        for chunk in container.logs(stream=True, follow=True, stdout=True, stderr=False):
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                on_line(line.decode(errors="replace"))
        if buf.strip():
            on_line(buf.decode(errors="replace"))
        try:
            code = container.wait(timeout=30).get("StatusCode")
        except Exception:  # noqa: BLE001 - requests' timeouts and docker's errors: the exit code is unknown
            code = None
    finally:
        alive.clear()
        stderr_thread.join(timeout=10)
        remove(container)
    return Streamed(code, timed_out.is_set(), stop is not None and stop.is_set(), time.monotonic() - t0, tail(read_log(stderr_path)))


@dataclass
class Finished:
    """A container run to its end: exit code (None on timeout), both streams, wall time."""

    exit_code: int | None
    stdout: str
    stderr: str
    seconds: float


def run_to_end(client, spec: ContainerSpec, *, timeout_s: float) -> Finished:
    """Run the container to its end (killed after timeout_s: exit code None) and return both streams."""
    t0 = time.monotonic()
    container = start(client, spec)
    try:
        try:
            code = container.wait(timeout=timeout_s).get("StatusCode")
        except Exception:  # noqa: BLE001 - requests' ReadTimeout (and friends): the tool hangs
            code = None
            kill(container)
        out = container.logs(stdout=True, stderr=False).decode(errors="replace")
        err = container.logs(stdout=False, stderr=True).decode(errors="replace")
    finally:
        remove(container)
    return Finished(code, out, err, time.monotonic() - t0)


def _copy_stderr(container, path: Path) -> None:
    """Copy the container's stderr to a log file; a log that cannot be written (disk full) stops quietly:
    the rows are what must not be lost, and their writer reports the full disk."""
    try:
        with open(path, "ab") as out:
            for chunk in container.logs(stream=True, follow=True, stdout=False, stderr=True):
                out.write(chunk)
                out.flush()
    except OSError:
        return


def read_log(path: Path) -> str:
    """A log file written so far (empty when it is not there yet)."""
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


_BAD_LINE = re.compile(r"error|fail|abort|exception|unknown", re.I)


def tail(text: str, lines: int = 5) -> str:
    """The last lines of a tool's output that say what went wrong (error, fail, abort, ...), else its last lines."""
    all_lines = [ln for ln in (text or "").strip().splitlines() if ln.strip()]
    bad = [ln for ln in all_lines if _BAD_LINE.search(ln)]
    return "\n".join((bad or all_lines)[-lines:])


def tail_line(text: str, lines: int = 3) -> str:
    """tail() on one line (' | ' between the lines), at most 400 characters: for one-line error messages."""
    return tail(text, lines).replace("\n", " | ")[:400]


def kill(container) -> None:
    try:
        container.kill()
    except Exception:  # noqa: BLE001 - already gone
        pass


def remove(container) -> None:
    try:
        container.remove(force=True)
    except Exception:  # noqa: BLE001 - already gone
        pass


def find_containers(client, *, running: bool = False, **filters) -> list:
    """The containers matching Docker's `filters` (every state, or only running ones).

    A container that goes while the list is read (one whose removal a killed toolbox had already
    asked for) is left out: docker-py would raise NotFound when it inspects it.
    """
    return client.containers.list(all=not running, filters=filters, ignore_removed=True)


def remove_leftovers(client, run_id: str | None = None) -> int:
    """Remove containers a crashed or interrupted toolbox left behind (found by label; one run's, or all)."""
    label = f"{RUN_ID_LABEL}={run_id}" if run_id else CONTAINER_LABEL
    n = 0
    for c in find_containers(client, label=label):
        remove(c)
        n += 1
    return n


def tool_help(client, image: str, tool: str = "llama-bench", cache_dir: Path | None = None) -> str:
    """`<tool> --help` of an image (the flags its pinned build knows), cached by image id in cache_dir/help/."""
    image_id = client.images.get(image).id
    path = None
    if cache_dir is not None:
        key = hashlib.sha256(f"{image_id} {tool}".encode()).hexdigest()[:24]
        path = Path(cache_dir) / "help" / f"{key}.json"
        try:
            return json.loads(path.read_text())["help"]
        except (OSError, ValueError, KeyError):
            pass
    done = run_to_end(client, ContainerSpec(image_id, [tool, "--help"]), timeout_s=120)
    text = done.stdout + done.stderr
    if path is not None and done.exit_code == 0:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(path, {"image": image, "image_id": image_id, "tool": tool, "help": text})
        except OSError:
            pass  # a cache that cannot be written costs a container next time, nothing else
    return text
