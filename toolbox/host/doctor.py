"""`invoke doctor`: is this host ready for llama.cpp on Strix Halo, and what to fix.

The host checks (toolbox.host.checks) judge a snapshot of sysfs / procfs; Docker, the buildx plugin
and the newest ROCm image's labels are read live here. docs/doctor.md explains every check.
"""

from __future__ import annotations

import os
import re
import subprocess

from toolbox.host import facts as host
from toolbox.host.checks import host_checks
from toolbox.host.verdicts import SRC, Check

BACKEND_LABEL = "org.strix-toolbox.backend"


# --- Docker (live) -------------------------------------------------------------------


def docker_checks(client=None) -> list[Check]:
    """Daemon reachable and usable by this user, engine version, buildx plugin."""
    import docker  # imported here: host checks must work without a Docker SDK import cost

    try:
        client = client or docker.from_env()
        client.ping()
        version = client.version()
    except docker.errors.DockerException as exc:
        denied = "permission denied" in str(exc).lower()
        return [
            Check(
                "docker daemon",
                "FAIL",
                "permission denied on the Docker socket" if denied else f"Docker daemon not reachable ({str(exc)[:120]})",
                "sudo usermod -aG docker $USER, then log in again"
                if denied
                else "install Docker Engine and start it: sudo systemctl enable --now docker",
                SRC["docker_group"],
            )
        ]
    checks = [Check("docker daemon", "OK", f"reachable as uid {os.getuid()}")]
    server = version.get("Version", "?")
    major = int(m[1]) if (m := re.match(r"(\d+)\.", server)) else 0
    if major >= 23:
        checks.append(Check("docker version", "OK", f"Engine {server}"))
    else:
        checks.append(
            Check(
                "docker version",
                "WARN",
                f"Engine {server}: BuildKit is not the default builder before 23.0",
                "upgrade Docker Engine, or build with DOCKER_BUILDKIT=1 (the toolbox does)",
                SRC["docker_buildkit"],
            )
        )
    try:
        out = subprocess.run(["docker", "buildx", "version"], capture_output=True, text=True, timeout=20)
        buildx = out.stdout.strip() if out.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired):
        buildx = None
    if buildx:
        checks.append(Check("docker buildx", "OK", buildx.splitlines()[0]))
    else:
        checks.append(
            Check(
                "docker buildx",
                "WARN",
                "the buildx plugin is missing",
                "install docker-buildx-plugin (Docker's repo) or docker-buildx (Debian); `DOCKER_BUILDKIT=1 docker build` works meanwhile",
                SRC["docker_buildkit"],
            )
        )
    return checks


def newest_image_labels(client, backend: str = "rocm") -> dict | None:
    """Labels of the newest local image labelled org.strix-toolbox.backend=<backend>, or None."""
    images = client.images.list(filters={"label": f"{BACKEND_LABEL}={backend}"})
    if not images:
        return None
    newest = max(images, key=lambda im: im.attrs.get("Created", ""))
    return dict(newest.labels or {})


def run_checks(settings, docker_client=None, image_labels: dict | None = None) -> list[Check]:
    """All checks for the host under settings.host_root: Docker first, then GPU, memory, versions, tuning."""
    snap = host.snapshot(settings.host_root)
    return docker_checks(docker_client) + host_checks(snap, image_labels=image_labels) + [sensors_check(settings.host_root, snap)]


def sensors_check(root, snap: dict) -> Check:
    """Which power / clock / temperature sensors telemetry will sample here (none is a valid answer, off a Strix Halo)."""
    from toolbox.host.checks import has_strix_halo
    from toolbox.host.sensors import discover

    found = discover(root)
    names = found.names()
    power = [n for n in names if n.endswith("_w") or n.endswith("energy_uj")]
    versions = found.facts.get("gpu_metrics_version") or {}
    detail = (
        f"{len(names)} sensors" + (f", power from {power[0]}" if power else ", no power sensor")
        if names
        else "no power, clock or temperature sensor readable here"
    )
    detail += "".join(f"; {card} gpu_metrics v{v}" for card, v in versions.items() if v)
    detail += "".join(f"; skipped {w}" for w in found.warnings[:3])
    if has_strix_halo(snap) and not any(n.startswith("gpu") and n.endswith("_w") for n in names):
        return Check(
            "telemetry sensors",
            "WARN",
            detail + ": no amdgpu package power, so no APU watts or tokens per joule for this Strix Halo's runs",
            "check that amdgpu is bound and /sys/class/drm/card*/device/hwmon/hwmon*/power1_average is readable (docs/energy.md)",
            SRC["doc"],
        )
    return Check("telemetry sensors", "INFO", detail)


STYLE = {"OK": "bold green", "WARN": "bold yellow", "FAIL": "bold red", "INFO": "bold blue"}


def render(checks: list[Check], machine: dict | None = None):
    """One screen: a table of verdicts with the fix and its source, then a one-line summary."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    title = "invoke doctor" + (f": {machine.get('hostname')} ({machine.get('machine_id')})" if machine else "")
    table = Table(title=title, show_lines=False, expand=True)
    table.add_column("", no_wrap=True)
    table.add_column("check", no_wrap=True)
    table.add_column("finding", ratio=3)
    table.add_column("fix / source", ratio=3, style="dim")
    for c in checks:
        label = re.sub(r"\s*<[^>]+>", "", c.source)
        fix = c.fix + (f" [{label}]" if label and c.status in ("WARN", "FAIL") else "")
        table.add_row(Text(c.status, style=STYLE.get(c.status, "")), c.name, c.detail, Text(fix))
    counts = {s: sum(c.status == s for c in checks) for s in ("FAIL", "WARN", "OK", "INFO")}
    summary = Text(
        "  ".join(f"{n} {s}" for s, n in counts.items()),
        style="bold red" if counts["FAIL"] else ("bold yellow" if counts["WARN"] else "bold green"),
    )
    return Group(table, summary)


def client_and_labels(backend: str = "rocm"):
    """(docker client, labels of the newest image of `backend`), or (None, None) when Docker is not usable:
    docker_checks then reports the daemon problem itself."""
    import docker

    try:
        client = docker.from_env()
        return client, newest_image_labels(client, backend)
    except docker.errors.DockerException:
        return None, None
