"""llama.cpp RPC workers: the server an image ships, a worker container, and what a worker answers on the wire.

A worker is llama.cpp's RPC server (`ggml-rpc-server` in the pinned tree, `rpc-server` in older
ones) in one of the toolbox's images, started through the one launcher with the backend's devices,
a port and its tensor cache (`-c`, under LLAMA_CACHE) on a named volume. The RPC protocol carries
a protocol version but no llama.cpp build, so a worker's build is read from the labels of the
container that serves the endpoint, found on the Docker engine it runs on (find_worker).
probe_link() speaks the worker's own protocol from this process: HELLO (protocol version), the
device count and memory, round-trip time, and the throughput of tensor uploads (SET_TENSOR, what
model loading does) and downloads (GET_TENSOR) over the same link llama.cpp will use.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import statistics
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path

from toolbox.engine.container import ContainerSpec, find_containers, run_to_end, start, writable_dir
from toolbox.engine.devices import DeviceSetup
from toolbox.errors import ToolboxError
from toolbox.llamacpp import RPC_PROTO_VERSION, RPC_SERVER_NAMES

WORKER_LABEL = "org.strix-toolbox.rpc-worker"  # value: the port the server listens on inside the container
CACHE_DIR = "/rpc-cache"  # LLAMA_CACHE: the server keeps its tensor cache in CACHE_DIR/rpc
DEFAULT_PORT = 50052
LABEL_PREFIX = "org.strix-toolbox"

_ENDPOINT = re.compile(r"^(?P<host>\[[0-9a-fA-F:]+\]|[A-Za-z0-9_.-]+):(?P<port>\d{1,5})(?:@(?P<engine>\S+))?$")


@dataclass(frozen=True)
class Endpoint:
    """host:port of a worker, and optionally the Docker engine (context name or URL) it runs on."""

    host: str
    port: int
    engine: str | None = None

    @property
    def address(self) -> str:
        """What llama.cpp's --rpc takes."""
        return f"{self.host}:{self.port}"

    def __str__(self) -> str:
        return self.address + (f"@{self.engine}" if self.engine else "")


def parse_endpoint(text: str) -> Endpoint:
    """'host:port' or 'host:port@CONTEXT' -> Endpoint, or a one-line error."""
    m = _ENDPOINT.match(text.strip())
    port = int(m.group("port")) if m else 0
    if not m or not 0 < port < 65536:
        raise ToolboxError(
            f"{text.strip()!r} is not an RPC worker address", "give HOST:PORT (e.g. 192.168.1.12:50052), optionally @DOCKER_CONTEXT"
        )
    return Endpoint(m.group("host"), port, m.group("engine"))


def parse_workers(text: str) -> list[Endpoint]:
    """A comma list of workers ('a:50052,b:50052'); 'none' or 'local' is the one-node case (no workers)."""
    words = [w.strip() for w in str(text).split(",") if w.strip()]
    if words in ([], ["none"], ["local"]):
        return []
    out = [parse_endpoint(w) for w in words]
    if len({e.address for e in out}) != len(out):
        raise ToolboxError(f"a worker appears twice in {text!r}", "name each worker once")
    return out


# --- the server binary and the worker container --------------------------------------------------


def server_binary(client, image: str) -> str:
    """The RPC server the image ships: ggml-rpc-server (the pinned tree's name) or rpc-server (older trees)."""
    probe = " || ".join(f"command -v {n}" for n in RPC_SERVER_NAMES)
    done = run_to_end(client, ContainerSpec(image, ["sh", "-c", probe]), timeout_s=120)
    lines = done.stdout.strip().splitlines()
    if done.exit_code != 0 or not lines:
        raise ToolboxError(
            f"the image {image} has no llama.cpp RPC server ({' or '.join(RPC_SERVER_NAMES)})",
            "rebuild it from the current pins (invoke build BACKEND): they build with -DGGML_RPC=ON",
        )
    return lines[-1].rsplit("/", 1)[-1]


def worker_argv(binary: str, *, host: str, port: int, threads: int | None = None, devices: str | None = None) -> list[str]:
    """The server's command line: bind address, port, the tensor cache on (-c), threads and devices if given."""
    argv = [binary, "-H", host, "-p", str(port), "-c"]
    if threads:
        argv += ["-t", str(threads)]
    if devices:
        argv += ["-d", devices]
    return argv


def worker_spec(
    image: str,
    binary: str,
    setup: DeviceSetup,
    *,
    port: int = DEFAULT_PORT,
    host: str = "0.0.0.0",
    publish: bool = True,
    name: str | None = None,
    network: str | None = None,
    threads: int | None = None,
    devices: str | None = None,
    labels: dict[str, str] | None = None,
    cache_dir: Path | None = None,
) -> ContainerSpec:
    """A worker container: the backend's devices, the port (published on the host when asked, on the engine's bridge:
    the only network a worker has), its tensor cache in cache_dir (default: <cache_dir setting>/rpc-cache)."""
    if cache_dir is None:
        from toolbox.settings import load_settings

        cache_dir = load_settings().cache_dir / "rpc-cache"
    return ContainerSpec(
        image,
        worker_argv(binary, host=host, port=port, threads=threads, devices=devices),
        setup,
        {"LLAMA_CACHE": CACHE_DIR},
        {str(writable_dir(cache_dir)): (CACHE_DIR, "rw")},
        {WORKER_LABEL: str(port), **(labels or {})},
        name=name,
        network=network or "bridge",
        ports={port: port} if publish else {},
        bind="0.0.0.0",
    )


@dataclass
class Worker:
    container: object
    log: str
    devices: list[str] = field(default_factory=list)


def start_worker(client, spec: ContainerSpec, *, ready_timeout_s: float = 60) -> Worker:
    """Start a worker and wait until its server accepts connections, or a one-line error."""
    container = start(client, spec)
    t0 = time.monotonic()
    port = int(spec.labels[WORKER_LABEL])
    while True:
        container.reload()
        if container.status == "running" and _listening(container, port):
            # the server's stdout is block-buffered until a client connects: now it holds the device list
            time.sleep(0.3)
            log = container.logs(stdout=True, stderr=True).decode(errors="replace")
            return Worker(container, log, server_devices(log))
        log = container.logs(stdout=True, stderr=True).decode(errors="replace")
        if container.status in ("exited", "dead"):
            tail = " | ".join(log.strip().splitlines()[-3:])
            container.remove(force=True)
            raise ToolboxError(
                f"the RPC worker exited at start: {tail[:300]}", "check the port is free and the devices exist (invoke doctor)"
            )
        if time.monotonic() - t0 > ready_timeout_s:
            container.remove(force=True)
            raise ToolboxError(
                "the RPC worker did not start listening within a minute", "look at `docker logs` of a worker started by hand"
            )
        time.sleep(0.2)


def _listening(container, port: int) -> bool:
    """Does the server accept connections yet (tried on the container's addresses; none known: assume so)?"""
    ips = [n["IPAddress"] for n in (container.attrs.get("NetworkSettings", {}).get("Networks", {}) or {}).values() if n.get("IPAddress")]
    for ip in ips:
        try:
            socket.create_connection((ip, port), timeout=1).close()  # the server takes the next client: this one leaves at once
            return True
        except OSError:
            continue
    return not ips


_DEVICE_LINE = re.compile(r"^\s+(\S+): (.*) \((\d+) MiB, (\d+) MiB free\)\s*$", re.M)


def server_devices(log: str) -> list[str]:
    """The devices the server announced at start ('CPU: AMD Ryzen AI MAX+ 395 (128000 MiB)')."""
    return [f"{name}: {desc} ({total} MiB)" for name, desc, total, _ in _DEVICE_LINE.findall(log)]


def find_worker(client, ep: Endpoint):
    """The toolbox worker container that serves `ep` on this Docker engine, or None.

    It answers there when the endpoint's host is the container's name, id, network alias or address on
    one of its networks and the port is its server's port, or when the host is this machine and the
    port is the one the container publishes.
    """
    local = _is_this_machine(ep.host)
    for c in find_containers(client, running=True, label=WORKER_LABEL):
        inner = int(c.labels.get(WORKER_LABEL) or 0)
        nets = c.attrs.get("NetworkSettings", {}).get("Networks", {}) or {}
        names = {c.name, c.id[:12], c.id}
        for n in nets.values():
            names |= set(n.get("Aliases") or []) | ({n["IPAddress"]} if n.get("IPAddress") else set())
        if ep.host in names and ep.port == inner:
            return c
        if local:
            for binding in (c.ports or {}).get(f"{inner}/tcp") or []:
                if int(binding.get("HostPort") or 0) == ep.port:
                    return c
    return None


def worker_network(container, ep: Endpoint) -> str | None:
    """The user-defined network on which `ep` names the container (the client must join it), else None."""
    nets = container.attrs.get("NetworkSettings", {}).get("Networks", {}) or {}
    for name, n in nets.items():
        if name in ("bridge", "host", "none"):
            continue
        if ep.host in {container.name, *(n.get("Aliases") or []), n.get("IPAddress")}:
            return name
    return None


def reachable_address(container, ep: Endpoint) -> tuple[str, int]:
    """Where this process reaches the worker: the endpoint itself, or, for a name on a Docker network
    (which only containers resolve), the container's address on that network."""
    try:
        socket.getaddrinfo(ep.host, ep.port)
        return ep.host, ep.port
    except OSError:
        pass
    if container is not None:
        for n in (container.attrs.get("NetworkSettings", {}).get("Networks", {}) or {}).values():
            if n.get("IPAddress"):
                return n["IPAddress"], ep.port
    return ep.host, ep.port


def _is_this_machine(host: str) -> bool:
    if host in ("localhost", "host.docker.internal", socket.gethostname()):
        return True
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    if ip.is_loopback:
        return True
    try:  # an address of this machine is one a socket can bind to
        with socket.socket(socket.AF_INET6 if ip.version == 6 else socket.AF_INET) as s:
            s.bind((str(ip), 0))
        return True
    except OSError:
        return False


# --- the wire: llama.cpp's RPC protocol (ggml/src/ggml-rpc/ggml-rpc.cpp at the pinned commit) --------

# rpc_cmd values; RPC_CMD_HELLO is 14 in every protocol version
CMD_ALLOC_BUFFER, CMD_GET_ALIGNMENT, CMD_BUFFER_GET_BASE, CMD_FREE_BUFFER = 0, 1, 3, 4
CMD_SET_TENSOR, CMD_GET_TENSOR, CMD_GET_DEVICE_MEMORY, CMD_HELLO, CMD_DEVICE_COUNT = 6, 8, 11, 14, 15
CONN_CAPS_SIZE = 24
GGML_TYPE_F32 = 0
# rpc_tensor, packed: id, type, buffer, ne[4], nb[4], op, op_params[16], flags, src[10], view_src, view_offs, data, name[64], use_count
_TENSOR = struct.Struct("<QIQ4I4II16ii10QQQQ64si")
assert _TENSOR.size == 296


class RpcError(Exception):
    """The worker did not answer as llama.cpp's RPC server does."""


class _Conn:
    def __init__(self, host: str, port: int, timeout_s: float):
        self.sock = socket.create_connection((host, port), timeout=timeout_s)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def send(self, cmd: int, payload: bytes = b"") -> None:
        self.sock.sendall(struct.pack("<BQ", cmd, len(payload)) + payload)

    def recv(self, size: int) -> bytes:
        n = struct.unpack("<Q", self._exact(8))[0]
        if n != size:
            raise RpcError(f"answer of {n} bytes where {size} were expected")
        return self._exact(size)

    def call(self, cmd: int, payload: bytes, size: int) -> bytes:
        self.send(cmd, payload)
        return self.recv(size)

    def _exact(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(min(n - len(buf), 1 << 20))
            if not chunk:
                raise RpcError("the worker closed the connection")
            buf += chunk
        return bytes(buf)

    def close(self) -> None:
        self.sock.close()


def _tensor(buffer: int, data: int, n_floats: int) -> bytes:
    ne = (n_floats, 1, 1, 1)
    nb = (4, 4 * n_floats, 4 * n_floats, 4 * n_floats)
    return _TENSOR.pack(1, GGML_TYPE_F32, buffer, *ne, *nb, 0, *([0] * 16), 0, *([0] * 10), 0, 0, data, b"probe", 0)


def probe_link(host: str, port: int, *, mib: int = 32, rounds: int = 2, timeout_s: float = 10) -> dict:
    """Ask a worker what it is and time the link: protocol, devices and memory, round trip, MB/s both ways.

    Raises OSError when nothing answers and RpcError when something else answers.
    """
    conn = _Conn(host, port, timeout_s)
    try:
        hello = conn.call(CMD_HELLO, bytes(CONN_CAPS_SIZE), 4 + CONN_CAPS_SIZE)
        version = ".".join(str(b) for b in hello[:3])
        out: dict = {"protocol": version}
        if hello[0] != RPC_PROTO_VERSION[0]:
            return out  # another protocol: nothing below is safe to ask
        count = struct.unpack("<I", conn.call(CMD_DEVICE_COUNT, b"", 4))[0]
        memory = []
        for d in range(count):
            free, total = struct.unpack("<QQ", conn.call(CMD_GET_DEVICE_MEMORY, struct.pack("<I", d), 16))
            memory.append({"device": d, "free_mib": free >> 20, "total_mib": total >> 20})
        rtts = []
        for _ in range(7):
            t0 = time.perf_counter()
            conn.call(CMD_DEVICE_COUNT, b"", 4)
            rtts.append(time.perf_counter() - t0)
        out |= {"devices": count, "memory": memory, "rtt_ms": round(statistics.median(rtts) * 1e3, 3)}
        size = mib << 20
        remote, got = struct.unpack("<QQ", conn.call(CMD_ALLOC_BUFFER, struct.pack("<IQ", 0, size), 16))
        if not remote or got < size:
            return out | {"probe_error": f"the worker could not allocate {mib} MiB"}
        base = struct.unpack("<Q", conn.call(CMD_BUFFER_GET_BASE, struct.pack("<Q", remote), 8))[0]
        tensor = _tensor(remote, base, size // 4)
        data = bytes(size)
        t0 = time.perf_counter()
        for _ in range(rounds):  # SET_TENSOR has no answer: a GET_ALIGNMENT after them waits for all of them
            conn.send(CMD_SET_TENSOR, tensor + b"\0" + struct.pack("<Q", 0) + data)
        conn.call(CMD_GET_ALIGNMENT, struct.pack("<I", 0), 8)
        up = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _ in range(rounds):
            conn.call(CMD_GET_TENSOR, tensor + struct.pack("<QQ", 0, size), size)
        down = time.perf_counter() - t0
        conn.send(CMD_FREE_BUFFER, struct.pack("<Q", remote))
        conn.call(CMD_DEVICE_COUNT, b"", 4)
        mb = rounds * size / 1e6
        return out | {"probe_mib": mib * rounds, "upload_mbs": round(mb / up, 1), "download_mbs": round(mb / down, 1)}
    finally:
        conn.close()
