"""What a failed image build's log says, turned into one line of what went wrong and what to do."""

from __future__ import annotations

from pathlib import Path

from toolbox.errors import ToolboxError

_OFFLINE_BY_ITSELF = "it builds offline by itself when no registry answers; add --offline to make sure"

# What a build log says -> what the user should do. First match wins.
BUILD_FAILURES = (
    ("no space left on device", "the disk filled up during the build", "free space (docker system prune, df -h) and build again"),
    (
        "was not found",
        "a pinned package version is gone from the archive",
        "update the version in containers/pins.toml (apt-cache policy <package> in the base image)",
    ),
    ("Unable to locate package", "a pinned package is not in the archive", "fix the package name in containers/pins.toml"),
    (
        "CMake did not use some of the pinned flags",
        "CMake ignores a pinned flag",
        "remove or fix it in cmake_flags in containers/pins.toml",
    ),
    ("does not match tree_sha256", "the fetched llama.cpp tree does not match the pin", "fix commit / tree_sha256 in containers/pins.toml"),
    ("failed to resolve source metadata", "the base image can't be pulled (no registry reachable?)", _OFFLINE_BY_ITSELF),
    ("pull access denied", "the base image can't be pulled", "docker login, or add --offline"),
    ("dial tcp", "the network is not reachable from the build", _OFFLINE_BY_ITSELF),
    ("Could not resolve", "the network is not reachable from the build", _OFFLINE_BY_ITSELF),
)


def build_error(log: Path, backend: str, mirror: str | None = None) -> ToolboxError:
    """The first known failure in the log; `mirror` is the Debian archive apt read (the online path: the dated
    snapshot), so that an archive apt cannot reach is not taken for pinned versions gone from it."""
    text = log.read_text(errors="replace")
    if mirror and f"Failed to fetch {mirror.rstrip('/')}/" in text:
        return ToolboxError(
            f"building the {backend} image failed: apt cannot read Debian's archive at {mirror}",
            "the online path reads the dated snapshot in pins.toml: check the network, or set TOOLBOX_DEBIAN_SNAPSHOT_URL= "
            f"(empty) to read the mirror instead, or build with --offline; full log: {log}",
        )
    for needle, what, fix in BUILD_FAILURES:
        if needle in text:
            return ToolboxError(f"building the {backend} image failed: {what}", f"{fix}; full log: {log}")
    return ToolboxError(f"building the {backend} image failed", f"see the log: {log}")
