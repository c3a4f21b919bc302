"""Tasks: doctor, compose-env (toolbox.host, toolbox.run.compose)."""

from __future__ import annotations

import sys

from invoke import Exit

from toolbox.cli import flags as f
from toolbox.cli.common import console, settings


def _directory(path: str) -> None:
    from pathlib import Path

    from toolbox.errors import ToolboxError

    if not Path(path).expanduser().is_dir():
        raise ToolboxError(f"{path} is not a directory", "give the root of a host tree (/ or a recorded tree in tests/data/hosts/)")


@f.command(
    root=f.Path(
        "read sysfs/procfs under this directory instead of / (e.g. a recorded tree in tests/data/hosts/)",
        placeholder="DIR",
        check=_directory,
    ),
    json=f.Switch("print the checks and the host snapshot as JSON instead of a table"),
)
def doctor(c, root=None, json=False):
    """Is this host ready for llama.cpp on Strix Halo? OK / WARN / FAIL per check, with the fix. Exit 1 on any FAIL."""
    import json as json_module

    from toolbox.host import doctor as dr
    from toolbox.host.facts import snapshot

    s = settings(host_root=root)
    client, labels = dr.client_and_labels()
    checks = dr.run_checks(s, docker_client=client, image_labels=labels)
    snap = snapshot(s.host_root)
    if json:
        print(json_module.dumps({"host": snap, "checks": [ch.to_dict() for ch in checks]}, indent=2))
    else:
        console().print(dr.render(checks, snap["machine"]))
    if any(ch.status == "FAIL" for ch in checks):
        raise Exit(code=1)


@f.command(write_matrices=f.Switch("regenerate containers/compose/matrices/*.args from the matrix presets"))
def compose_env(c, write_matrices=False):
    """Print the .env compose.yaml needs (numeric device GIDs, machine identity): invoke compose-env > .env"""
    from toolbox.run import compose

    if write_matrices:
        for path in compose.write_matrices():
            print(f"wrote {path}", file=sys.stderr)
    print(compose.compose_env(settings()), end="")
