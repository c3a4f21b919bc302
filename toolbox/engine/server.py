"""A long-lived server container (llama-server): started by the one launcher, its port published on
127.0.0.1 only, ready when its /health answers 200, its log copied to a file, removed in every case.

A taken port, a server that exits or never becomes healthy: one line each, the second with the
lines of its log that say why. Nothing here knows about load or results: that is toolbox.run.serve.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from toolbox.engine.container import ContainerSpec, remove, start, tail_line
from toolbox.errors import ToolboxError


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_port_free(port: int) -> None:
    """A one-line error when `port` on 127.0.0.1 is taken (before any container starts)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            raise ToolboxError(
                f"port {port} on 127.0.0.1 is taken", "stop what listens there, or leave out --port (a free one is picked)"
            ) from None


@dataclass
class Server:
    """A running server container: its port on 127.0.0.1, its log file, how to stop it."""

    container: object
    port: int
    log_path: Path
    _copier: threading.Thread | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def status(self) -> tuple[bool, int | None]:
        """(running, exit code when it is not)."""
        try:
            self.container.reload()
        except Exception:  # noqa: BLE001 - removed behind our back (docker rm -f): it is gone
            return False, None
        state = self.container.attrs.get("State", {})
        return bool(state.get("Running")), (None if state.get("Running") else state.get("ExitCode"))

    def log_tail(self) -> str:
        """The lines of its log that say what went wrong, on one line."""
        try:
            return tail_line(self.log_path.read_text(errors="replace"))
        except OSError:
            return ""

    def stop(self) -> None:
        remove(self.container)
        if self._copier is not None:
            self._copier.join(timeout=5)


def start_server(client, spec: ContainerSpec, *, port: int, container_port: int, log_path: Path, ready_timeout_s: float) -> Server:
    """Start the container with container_port published on 127.0.0.1:port; return once GET /health answers 200.

    Raises ToolboxError (the container removed) when the port is taken, the server exits, or it is not
    healthy within ready_timeout_s.
    """
    import docker
    import httpx

    check_port_free(port)
    spec.ports = {container_port: port}
    if spec.network == "none":  # a benchmark container has no network; a server needs its port (127.0.0.1 only)
        spec.network = "bridge"
    try:
        container = start(client, spec)
    except docker.errors.APIError as exc:
        text = str(exc)
        if "port is already allocated" in text or "address already in use" in text:
            raise ToolboxError(f"port {port} on 127.0.0.1 is taken", "leave out --port (a free one is picked)") from None
        raise ToolboxError(f"the server container did not start ({text[:200]})", "check the image (invoke build) and docker info") from None
    log_path.parent.mkdir(parents=True, exist_ok=True)
    server = Server(container, port, log_path)
    server._copier = threading.Thread(target=_copy_logs, args=(container, log_path), daemon=True)
    server._copier.start()
    deadline = time.monotonic() + ready_timeout_s
    with httpx.Client(timeout=2.0) as http:
        while True:
            try:
                if http.get(f"{server.url}/health").status_code == 200:
                    return server
            except httpx.HTTPError:
                pass  # not listening yet, or loading the model (503)
            running, code = server.status()
            if not running or time.monotonic() > deadline:
                time.sleep(0.3)  # let the log copier catch the last lines
                why = f"exited with code {code}" if not running else f"not healthy after {ready_timeout_s:.0f} s"
                tail = server.log_tail()
                server.stop()
                raise ToolboxError(
                    f"llama-server {why}" + (f": {tail}" if tail else ""),
                    f"its whole log is {log_path}; check the server parameters and the model",
                )
            time.sleep(0.2)


def _copy_logs(container, path: Path) -> None:
    try:
        with open(path, "ab") as out:
            for chunk in container.logs(stream=True, follow=True, stdout=True, stderr=True):
                out.write(chunk)
                out.flush()
    except Exception:  # noqa: BLE001 - the container was removed: the log ends there
        pass
