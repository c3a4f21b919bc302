"""RPC workers before and during a run: every worker checked before anything runs, and checked again per group.

check_workers() finds the container serving each worker (on this engine, or on the engine named after
its '@'), refuses a worker whose llama.cpp build differs from the client image's (builds of different
commits fail in confusing ways, or compute on silently), asks the worker itself what it is (protocol,
devices, memory) and times the link; the record goes into run.json. worker_down() is the quick
check before each group: a worker that stopped answering fails that group's cases with its name,
without starting a container.
"""

from __future__ import annotations

import socket

from toolbox.engine.client import docker_client
from toolbox.engine.container import find_containers, remove
from toolbox.engine.rpc import (
    DEFAULT_PORT,
    LABEL_PREFIX,
    WORKER_LABEL,
    Endpoint,
    RpcError,
    find_worker,
    parse_endpoint,
    probe_link,
    reachable_address,
    server_binary,
    server_devices,
    worker_network,
    worker_spec,
)
from toolbox.engine.rpc import start_worker as launch_worker
from toolbox.errors import ToolboxError
from toolbox.llamacpp import RPC_PROTO_VERSION

COMMIT, BUILD, BACKEND = f"{LABEL_PREFIX}.llama-commit", f"{LABEL_PREFIX}.llama-build-number", f"{LABEL_PREFIX}.backend"


def check_workers(client, workers: list[str], client_labels: dict[str, dict], *, probe_mib: int = 32) -> dict:
    """Check every worker before the run; return run.json's `rpc` record (workers, link figures, network).

    client_labels: backend -> labels of the client image (what its llama.cpp build is).
    """
    builds = {(lab.get(COMMIT), str(lab.get(BUILD))) for lab in client_labels.values()}
    engines: dict[str | None, object] = {None: client}
    record: dict = {"workers": {}, "network": None, "probe_from": socket.gethostname()}
    for text in dict.fromkeys(workers):
        ep = parse_endpoint(text)
        if ep.engine not in engines:
            engines[ep.engine] = docker_client(ep.engine, timeout=60)
        container = find_worker(engines[ep.engine], ep)
        if container is None:
            where = f"the Docker engine {ep.engine!r}" if ep.engine else "this machine's Docker engine"
            raise ToolboxError(
                f"RPC worker {ep.address}: no toolbox worker serves it on {where}, so its llama.cpp build cannot be checked",
                f"start it with `invoke rpc-worker` or compose (rpc-worker-BACKEND); elsewhere add its engine: {ep.address}@CONTEXT",
            )
        labels = container.labels
        worker_build = (labels.get(COMMIT), str(labels.get(BUILD)))
        if worker_build not in builds:
            mine = ", ".join(f"{c[:8] if c else '?'} (b{b})" for c, b in sorted(builds, key=str))
            raise ToolboxError(
                f"RPC worker {ep.address} runs llama.cpp {(worker_build[0] or '?')[:8]} (b{worker_build[1]}), the client {mine}",
                "start the worker from an image of the same pins (invoke build BACKEND there, then invoke rpc-worker)",
            )
        host, port = reachable_address(container, ep) if not ep.engine else (ep.host, ep.port)
        try:
            link = probe_link(host, port, mib=probe_mib)
        except (OSError, RpcError) as exc:
            raise ToolboxError(
                f"RPC worker {ep.address} does not answer as llama.cpp's RPC server ({exc})",
                "check the worker runs (docker logs) and that the port is open between the machines",
            ) from None
        if link["protocol"].split(".")[0] != str(RPC_PROTO_VERSION[0]):
            raise ToolboxError(
                f"RPC worker {ep.address} speaks RPC protocol {link['protocol']}, the client {'.'.join(map(str, RPC_PROTO_VERSION))}",
                "start the worker from an image of the same pins",
            )
        record["workers"][text] = {
            "address": ep.address,
            "engine": ep.engine,
            "container": container.name,
            "image": container.attrs.get("Config", {}).get("Image"),
            "image_id": container.attrs.get("Image"),
            "backend": labels.get(BACKEND),
            "llama_commit": worker_build[0],
            "llama_build_number": worker_build[1],
            "server_devices": server_devices(container.logs(stdout=True, stderr=False).decode(errors="replace")),
            "link": link,
            "reach": [host, port],
        }
        if not ep.engine:
            record["network"] = record["network"] or worker_network(container, ep)
    return record


def check_plan_workers(client, cases, images: dict[str, str]) -> dict | None:
    """check_workers() for every worker the cases use (None when they use none), against the images' builds."""
    workers = sorted({w for c in cases for w in c.rpc})
    return check_workers(client, workers, {b: client.images.get(t).labels for b, t in images.items()}) if workers else None


def worker_down(workers: tuple[str, ...], record: dict, timeout_s: float = 3) -> str | None:
    """The first worker that no longer accepts connections, as an error for the group's cases; None when all do."""
    for text in workers:
        ep: Endpoint = parse_endpoint(text)
        w = record.get("workers", {}).get(text, {})
        host, port = w.get("reach", (ep.host, ep.port))
        try:
            socket.create_connection((host, port), timeout=timeout_s).close()
        except OSError as exc:
            return f"RPC worker {ep.address} stopped answering ({exc.strerror or type(exc).__name__})"
    return None


def start_worker(
    settings,
    backend: str,
    *,
    port: int = DEFAULT_PORT,
    host: str = "0.0.0.0",
    threads: int | None = None,
    name: str | None = None,
    network: str | None = None,
    allow_cpu_vulkan: bool = False,
    build_missing: bool = False,
    client=None,
) -> dict:
    """`invoke rpc-worker`: the pinned image's RPC server in a container, through the one launcher; returns what to print."""
    from toolbox.build.images import find_images
    from toolbox.build.pins import load_pins
    from toolbox.engine.devices import device_setup

    client = client or docker_client()
    # an image runs on its backend's devices (rocm-debian on rocm, vulkan:mesa-sid on vulkan, cpu@<tree12> on cpu)
    setup = device_setup(load_pins(settings.pins_file).runs_on(backend), settings.host_root, allow_cpu_vulkan)
    image = find_images(settings, client, [backend], build_missing)[backend]
    name = name or f"strix-rpc-{backend.replace(':', '-').replace('@', '-')}-{port}"
    if any(c.name == name for c in find_containers(client, name=name)):
        raise ToolboxError(
            f"a container named {name} exists already", f"stop it (invoke rpc-worker --stop, or docker rm -f {name}) or give --container"
        )
    binary = server_binary(client, image)
    spec = worker_spec(
        image,
        binary,
        setup,
        port=port,
        host=host,
        name=name,
        network=network,
        threads=threads,
        publish=network is None,
        cache_dir=settings.cache_dir / "rpc-cache",
    )
    worker = launch_worker(client, spec)
    return {"name": name, "image": image, "binary": binary, "port": port, "network": network, "devices": worker.devices, "argv": spec.argv}


def stop_workers(client=None) -> list[str]:
    """Remove every RPC worker the toolbox started on this engine; their names."""
    client = client or docker_client()
    names = []
    for c in find_containers(client, label=WORKER_LABEL):
        names.append(c.name)
        remove(c)
    return names


__all__ = ["WORKER_LABEL", "check_plan_workers", "check_workers", "start_worker", "stop_workers", "worker_down"]
