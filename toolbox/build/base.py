"""Base images: the Debian base bootstrapped from the archive for offline builds (debootstrap, then
docker import), made once and reused."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

from toolbox.build.pins import LABEL_PREFIX, Pins
from toolbox.engine.client import image_or_none
from toolbox.errors import ToolboxError
from toolbox.settings import Settings

BASE_REPO = "strix-toolbox/base"


def from_registry(image: str | None, registry: str) -> str | None:
    """A pinned image name as the online path pulls it: from `registry` when one is set (a mirror, a local registry)."""
    if not image or not registry:
        return image
    return f"{registry.rstrip('/')}/{image}"


def online_source(settings: Settings, pins: Pins) -> tuple[str, bool]:
    """(the URL the build fetches llama.cpp's archive under, whether the build needs the host's network for it)."""
    url = (settings.llama_source_url or pins.llama_cpp.repo).rstrip("/")
    return url, _on_loopback(url)


def online_mirror(settings: Settings, pins: Pins) -> tuple[str, bool]:
    """(the Debian archive apt reads on the online path, whether the build needs the host's network for it):
    the dated snapshot in pins.toml, so a build from these pins still works after the next point release;
    the configured mirror when there is no snapshot or the setting is empty."""
    url = pins.debian.snapshot_mirror(settings.debian_snapshot_url) or pins.debian.mirror
    return url, _on_loopback(url)


def _on_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    return host in ("localhost", "::1") or host.startswith("127.")


def ensure_offline_base(settings: Settings, pins: Pins, client, echo=print) -> str:
    """The Debian base bootstrapped from the archive (debootstrap + docker import), made once and reused."""
    suite = pins.debian.suite
    tag = f"{BASE_REPO}:debian-{suite}"
    with build_lock(settings, tag):
        if image_or_none(client, tag) is None:
            _bootstrap_base(settings, pins, tag, echo)
    return tag


def _bootstrap_base(settings: Settings, pins: Pins, tag: str, echo) -> None:
    suite = pins.debian.suite
    if shutil.which("debootstrap") is None:
        raise ToolboxError(
            "debootstrap is not installed (needed for --offline base images)", "run ./setup.sh, or apt-get install debootstrap"
        )
    if os.geteuid() != 0:
        raise ToolboxError(
            "debootstrap needs root to create the offline base image",
            f"run `sudo invoke build <backend> --offline` once; {tag} is reused after that",
        )
    rootfs = Path(tempfile.mkdtemp(prefix=f"rootfs-{suite}-", dir=mkdir(settings.cache_dir / "rootfs")))
    echo(f"bootstrapping {tag} from {pins.debian.mirror} ({suite}, minbase): a few minutes, once")
    try:
        _run(["debootstrap", "--variant=minbase", suite, str(rootfs), pins.debian.mirror], "debootstrap", settings)
        when = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        changes = [
            "ENV LANG=C.UTF-8",
            'CMD ["bash"]',
            f'LABEL {LABEL_PREFIX}.base.suite="{suite}" {LABEL_PREFIX}.base.mirror="{pins.debian.mirror}" '
            f'{LABEL_PREFIX}.base.bootstrapped="{when}"',
        ]
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        cmd = ["docker", "import", *sum((["--change", c] for c in changes), []), "-", tag]
        imp = subprocess.run(cmd, stdin=tar.stdout, capture_output=True, text=True)
        tar.wait()
        if imp.returncode != 0 or tar.returncode != 0:
            raise ToolboxError(
                f"docker import of the bootstrapped base failed: {imp.stderr.strip()[:200]}", "check disk space and the Docker daemon"
            )
    finally:
        shutil.rmtree(rootfs, ignore_errors=True)


def mkdir(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


def _run(cmd: list[str], what: str, settings: Settings) -> None:
    log = mkdir(settings.cache_dir / "logs") / f"{what}.log"
    with open(log, "w") as out:
        rc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT).returncode
    if rc != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-1:] or [""]
        raise ToolboxError(f"{what} failed ({tail[0][:160]})", f"see {log}")


@contextlib.contextmanager
def build_lock(settings: Settings, tag: str):
    """One build of one tag at a time (a second one waits, then finds the image up to date)."""
    path = mkdir(settings.cache_dir / "locks") / (tag.replace("/", "_").replace(":", "_") + ".lock")
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
