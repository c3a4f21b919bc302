"""Tasks: build, images (toolbox.build)."""

from __future__ import annotations

from toolbox.cli import flags as f
from toolbox.cli.common import console, settings


def _flavour(name: str) -> None:
    from toolbox.build.pins import load_pins

    load_pins(settings().pins_file).backend(name)


def _source(path: str) -> None:
    from pathlib import Path

    from toolbox.errors import ToolboxError

    if not Path(path).expanduser().exists():
        raise ToolboxError(f"{path} does not exist", "give a llama.cpp source directory or tarball")


@f.command(
    positional=("backend",),
    backend=f.Text(
        "rocm, vulkan, cpu (or rocm-debian: ROCm from Debian's packages, offline-capable)", placeholder="BACKEND", check=_flavour
    ),
    offline=f.Switch(
        "no registry, no git: base bootstrapped from Debian's archive, llama.cpp from --source or PyPI's llama-cpp-python sdist"
    ),
    source=f.Path("llama.cpp source: a directory or tarball (verified against the pinned tree hash)", check=_source),
    force=f.Switch("rebuild even if an image with the same inputs exists"),
    check=f.Switch("only configure with the pinned flags and compile a few units (the HIP check CI runs without a GPU)"),
)
def build(c, backend, offline=False, source=None, force=False, check=False):
    """Build the pinned llama.cpp image for one backend (answers 'up to date' if nothing changed)."""
    from toolbox.build.images import build as build_image

    r = build_image(settings(), backend, offline=offline or None, source=source, force=force, check=check)
    if check:
        print(f"{backend}: check passed in {r.seconds:.0f} s (configured with the pinned flags, compiled the representative units)")
        print(f"its output: {r.check_report}")
        return
    state = "up to date" if r.up_to_date else f"built in {r.seconds:.0f} s"
    print(
        f"{r.tag}: {state}, {r.size_bytes / 1e6:.0f} MB, llama.cpp {r.labels.get('org.strix-toolbox.llama-commit', '?')[:12]} "
        f"(b{r.labels.get('org.strix-toolbox.llama-build-number', '?')})"
    )


@f.command()
def images(c):
    """List the built toolbox images with their pins, installed versions, sizes and age."""
    from rich.table import Table

    from toolbox.build.images import list_images

    rows = list_images(settings())
    if not rows:
        print("no toolbox images yet: invoke build cpu (add --offline without a registry)")
        return
    table = Table(caption="*: built from the current pins (what invoke bench uses)")
    table.add_column("tag", no_wrap=True)
    for name in ("backend", "llama.cpp", "mesa", "rocm", "MB", "created"):
        table.add_column(name, overflow="fold")
    for r in rows:
        table.add_row(
            r["tag"] + (" *" if r["current"] else ""),
            r["backend"],
            f"{r['llama_commit'][:8]} b{r['build_number']}",
            r["mesa"] or "",
            r["rocm"] or "",
            str(r["size_mb"]),
            r["created"][:16].replace("T", " "),
        )
    console().print(table)
