"""Another machine's Docker engine as a place to run a bench: its identity, the image, its devices, the models.

A fleet runs the same plan through each host's engine (a Docker context or an ssh:// URL) from this
machine; the rows land in this machine's results/. Before the first container on a host: the pinned
image is there or is sent with `docker save` / `docker load` over the engine's own transport (the
run records which), the host's device nodes and their numeric GIDs are read there by a probe container
(group ids differ between machines), and every model must be at the same path there with the same
sha256 (checked there), else that host fails with one line and the others go on.
"""

from __future__ import annotations

from toolbox.engine.container import ContainerSpec, in_container, model_mount, run_to_end
from toolbox.engine.devices import DeviceSetup, device_setup
from toolbox.errors import ToolboxError


def engine_snapshot(client, engine: str) -> dict:
    """What run.json's `host` records about a host reached through its engine (docker info: no sysfs read there)."""
    info = client.info()
    return {
        "engine": engine,
        "machine": {"hostname": info.get("Name"), "engine_id": info.get("ID"), "architecture": info.get("Architecture")},
        "kernel": {"release": info.get("KernelVersion")},
        "os": info.get("OperatingSystem"),
        "cpu": {"count": info.get("NCPU")},
        "memory": {"total_kb": (info.get("MemTotal") or 0) // 1024 or None},
        "docker": {"version": info.get("ServerVersion"), "runtimes": sorted(info.get("Runtimes") or {})},
        "labels": info.get("Labels") or [],
    }


def ensure_image(local, remote, tag: str) -> str:
    """The pinned image on the host: 'present', or 'sent with docker save/load' from this machine."""
    import docker

    try:
        remote_id = remote.images.get(tag).id
    except docker.errors.ImageNotFound:
        remote_id = None
    local_image = local.images.get(tag)
    if remote_id == local_image.id:
        return "present"
    # the same tag and id: the same bytes. Streamed: an image is hundreds of MB to GBs.
    remote.images.load(local_image.save(named=True))
    if remote.images.get(tag).id != local_image.id:
        raise ToolboxError(f"{tag} sent with docker save/load arrived with another id", "check the host's disk space and retry")
    return "sent with docker save/load"


def place(local, remote, images: dict[str, str], allow_cpu_vulkan: bool, runs_on, host_root) -> tuple[dict, dict[str, DeviceSetup]]:
    """(how each image got to the host, devices per backend): this machine's devices when remote is None, else the
    host's, with the image sent there if it lacks it."""
    if remote is None:
        return {}, {b: device_setup(runs_on(b), host_root, allow_cpu_vulkan) for b in images}
    transfer = {b: ensure_image(local, remote, t) for b, t in images.items()}
    return transfer, remote_setups(remote, images, allow_cpu_vulkan, runs_on)


PROBE = 'for f in /host-dev/kfd /host-dev/dri/renderD*; do [ -e "$f" ] && stat -c "%n %g" "$f"; done; true'


def remote_setups(client, images: dict[str, str], allow_cpu_vulkan: bool, runs_on=lambda b: b) -> dict[str, DeviceSetup]:
    """Devices per backend as the host has them (node paths and their numeric GIDs read there); runs_on: an image
    variant's backend (pins.runs_on)."""
    setups = {}
    for backend, image in images.items():
        if runs_on(backend) == "cpu":
            setups[backend] = device_setup("cpu")
            continue
        done = run_to_end(client, ContainerSpec(image, ["sh", "-c", PROBE], mounts={"/dev": ("/host-dev", "ro")}), timeout_s=120)
        found = {}
        for line in done.stdout.splitlines():
            path, _, gid = line.rpartition(" ")
            if path.startswith("/host-dev/") and gid.isdigit():
                found["/dev/" + path.removeprefix("/host-dev/")] = int(gid)
        setups[backend] = device_setup(runs_on(backend), allow_cpu_vulkan=allow_cpu_vulkan, found=found)
    return setups


def check_models(client, images: dict[str, str], models: list[dict], host: str | None) -> list[dict]:
    """The models; on a fleet's host every one must be at the same path, with the same sha256 (computed there)."""
    image = next(iter(images.values()))
    for m in models if host else ():
        done = run_to_end(
            client, ContainerSpec(image, ["sha256sum", in_container(m["path"])], mounts=model_mount(m["path"])), timeout_s=1800
        )
        got = done.stdout.split()[0] if done.exit_code == 0 and done.stdout.strip() else None
        if got != m["sha256"]:
            what = "is not" if got is None else "differs"
            raise ToolboxError(
                f"the model {m['path']} {what} at that path on this host", "copy the same file to the same path there (or a shared mount)"
            )
    return models
