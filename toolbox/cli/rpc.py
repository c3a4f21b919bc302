"""Task: rpc-worker (toolbox.run.rpc): llama.cpp's RPC server in the pinned image, for clusters of Strix Halos."""

from __future__ import annotations

from toolbox.cli import flags as f
from toolbox.cli.common import FLAGS, console, settings


def _one_image(text: str) -> None:
    from toolbox.build.pins import load_pins

    load_pins(settings().pins_file).check_image_names([text])  # a backend, a variant or a side variant IMAGE@TREE


def _bind(text: str) -> None:
    import ipaddress

    from toolbox.errors import ToolboxError

    try:
        ipaddress.ip_address(text)
    except ValueError:
        raise ToolboxError(
            f"{text!r} is not an IP address to bind to", "e.g. 0.0.0.0 (every interface) or this machine's LAN address"
        ) from None


def _docker_name(text: str) -> None:
    import re

    from toolbox.errors import ToolboxError

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", text):
        raise ToolboxError(f"{text!r} is not a Docker name", "letters, digits, _ . - (not first), e.g. strix-rpc")


@f.command(
    backend=f.Text(
        "the image the worker runs: rocm, vulkan, cpu, a variant (rocm-debian, vulkan:mesa-sid) or a side variant (cpu@<tree12>)",
        placeholder="BACKEND",
        check=_one_image,
    ),
    port=f.Int("the port the worker listens on (and publishes on this machine)", low=1, high=65535),
    host=f.Text("the address the server binds to inside the container", placeholder="IP", check=_bind),
    threads=f.Int("CPU threads of the worker's CPU device (llama.cpp's default when not given)", low=1),
    container=f.Text("the container's name; default strix-rpc-BACKEND-PORT (: and @ as -)", placeholder="NAME", check=_docker_name),
    network=f.Text(
        "join this Docker network instead of publishing the port (clients on that network use NAME:PORT)",
        placeholder="NETWORK",
        check=_docker_name,
    ),
    allow_cpu_vulkan=FLAGS["allow_cpu_vulkan"],
    build=f.Switch("build the image first when it is missing"),
    stop=f.Switch("remove every RPC worker the toolbox started on this machine, and start none"),
)
def rpc_worker(
    c,
    backend="vulkan",
    port=50052,
    host="0.0.0.0",
    threads=None,
    container=None,
    network=None,
    allow_cpu_vulkan=False,
    build=False,
    stop=False,
):
    """Start llama.cpp's RPC server (a worker of a cluster) in the pinned image, detached; clients use --rpc HOST:PORT."""
    from toolbox.run import rpc

    out = console()
    if stop:
        names = rpc.stop_workers()
        out.print(f"removed {len(names)} RPC worker(s)" + (f": {', '.join(names)}" if names else ""), markup=False)
        return
    w = rpc.start_worker(
        settings(),
        backend,
        port=port,
        host=host,
        threads=threads,
        name=container,
        network=network,
        allow_cpu_vulkan=allow_cpu_vulkan,
        build_missing=build,
    )
    out.print(f"RPC worker {w['name']} ({w['binary']}, image {w['image']}) listens on port {w['port']}", markup=False)
    for d in w["devices"]:
        out.print(f"  device {d}", markup=False)
    where = f"{w['name']}:{w['port']} from containers on the network {w['network']}" if w["network"] else f"THIS_HOST:{w['port']}"
    out.print(f"clients: invoke bench --rpc {where}; stop it: invoke rpc-worker --stop (or docker rm -f {w['name']})", markup=False)
    out.print("llama.cpp's RPC server has no authentication: expose it only on a network you trust", style="yellow", markup=False)
