"""Tasks: build, images (toolbox.build)."""

from __future__ import annotations

from toolbox.cli import flags as f
from toolbox.cli.common import console, settings


def _flavour(name: str) -> None:
    from toolbox.build.pins import load_pins
    from toolbox.build.side import side_hint, split_name
    from toolbox.errors import ToolboxError

    load_pins(settings().pins_file).backend(name)
    if split_name(name)[1]:
        raise ToolboxError(f"{name!r} is the name of a side variant", side_hint(name))


def _variant(name: str) -> None:
    from toolbox.build.pins import load_pins
    from toolbox.errors import ToolboxError

    pins = load_pins(settings().pins_file)
    if not any(name in b.variants for b in pins.backends.values()):
        variants = [n for n in pins.image_names() if ":" in n]
        raise ToolboxError(f"no image variant {name!r} in containers/pins.toml", f"variants: {', '.join(variants) or 'none'}")


def _pins_action(action: str) -> None:
    from toolbox.errors import ToolboxError

    if action not in ("check", "bump"):
        raise ToolboxError(f"{action!r} is not an action of invoke pins", "use check or bump")


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
    variant=f.Text(
        "a named variant of the backend from containers/pins.toml (vulkan: mesa-sid); invoke images lists them",
        placeholder="NAME",
        check=_variant,
    ),
    offline=f.Switch(
        "no registry, no git: base bootstrapped from Debian's archive, llama.cpp from --source or PyPI's llama-cpp-python sdist"
    ),
    source=f.Path(
        "llama.cpp source: a directory, tarball or sdist; the pinned tree builds the pinned image, any other tree a side "
        "variant named IMAGE@<tree hash> (docs/pins.md)",
        check=_source,
    ),
    force=f.Switch("rebuild even if an image with the same inputs exists"),
    check=f.Switch("only configure with the pinned flags and compile a few units (the HIP check CI runs without a GPU)"),
)
def build(c, backend, variant=None, offline=False, source=None, force=False, check=False):
    """Build the pinned llama.cpp image for one backend or variant (answers 'up to date' if nothing changed)."""
    from toolbox.build.images import build as build_image
    from toolbox.build.pins import load_pins
    from toolbox.llamacpp import build_text

    if variant:
        backend = f"{backend}:{variant}"
        load_pins(settings().pins_file).backend(backend)  # an unknown variant: one line naming the known ones
    r = build_image(settings(), backend, offline=offline or None, source=source, force=force, check=check)
    if check:
        print(f"{backend}: check passed in {r.seconds:.0f} s (configured with the pinned flags, compiled the representative units)")
        print(f"its output: {r.check_report}")
        return
    state = "up to date" if r.up_to_date else f"built in {r.seconds:.0f} s"
    labels = r.labels
    llama = build_text(labels.get("org.strix-toolbox.llama-commit", "?"), labels.get("org.strix-toolbox.llama-build-number", "?"))
    print(f"{r.tag}: {state}, {r.size_bytes / 1e6:.0f} MB, llama.cpp {llama}")
    if labels.get("org.strix-toolbox.llama-source") == "side":
        print(f"a side variant: use it as {r.backend} (a matrix's images = [...], or --backend {r.backend})")


@f.command()
def images(c):
    """List the images the pins describe (backends and variants) and the built ones with their versions, sizes and age."""
    from rich.table import Table

    from toolbox.build.listing import list_images, pinned_images
    from toolbox.llamacpp import build_text

    pinned = Table(title="pinned images (invoke build BACKEND [--variant NAME]; a matrix's images = [...])")
    for name in ("image", "runs on", "mesa", "rocm", "offline", "built as", "what"):
        pinned.add_column(name, overflow="fold")
    for p in pinned_images(settings()):
        pinned.add_row(
            p["image"],
            p["runs_as"],
            p["mesa"] or "",
            p["rocm"] or "",
            "yes" if p["offline"] else "no",
            p["built"] or "not built",
            p["description"],
        )
    console().print(pinned)
    rows = list_images(settings())
    if not rows:
        print("no toolbox images yet: invoke build cpu (it builds offline by itself when no registry answers)")
        return
    table = Table(caption="*: built from the current pins (what invoke bench uses); IMAGE@TREE: a side variant (invoke build --source)")
    table.add_column("tag", no_wrap=True)
    for name in ("image", "llama.cpp", "mesa", "rocm", "MB", "created"):
        table.add_column(name, overflow="fold")
    for r in rows:
        table.add_row(
            r["tag"] + (" *" if r["current"] else ""),
            r["image"] or r["backend"],
            build_text(r["llama_commit"], r["build_number"]),
            r["mesa"] or "",
            r["rocm"] or "",
            str(r["size_mb"]),
            r["created"][:16].replace("T", " "),
        )
    console().print(table)


@f.command(
    positional=("action",),
    action=f.Text(
        "check: which pinned Debian versions the archive no longer has (exit 1 if any); "
        "bump: set every pin to the newest version its suite has, and say what changed",
        placeholder="ACTION",
        check=_pins_action,
    ),
    source=f.Path("bump: a new llama.cpp source (directory, tarball or sdist): its tree hash goes into pins.toml", check=_source),
    dry_run=f.Switch("bump: say what would change, write nothing"),
    snapshot=f.Switch("read the package lists of the dated snapshot in pins.toml [debian] instead of the mirror"),
)
def pins(c, action, source=None, dry_run=False, snapshot=False):
    """Pins that never rot: check them against Debian's package lists, or bump them to the newest versions."""
    from invoke import Exit

    from toolbox.build import archive
    from toolbox.build.pins import load_pins

    s = settings()
    p = load_pins(s.pins_file)
    if snapshot and not p.debian.snapshot:
        raise Exit("pins.toml [debian] has no snapshot timestamp: add one (docs/pins.md)", 2)
    states, sources = archive.check_pins(p, s.cache_dir, p.debian.snapshot_mirror(s.debian_snapshot_url) if snapshot else None)
    for src in sources:
        print(f"read {src}")
    gone = [st for st in states if st.suite is None]
    if action == "check":
        for st in gone:
            print(f"{st.image}: {st.package} {st.pinned} is gone from the archive (newest there: {st.newest or 'none'})")
        if gone:
            raise Exit(f"{len(gone)} pinned version(s) gone: run `invoke pins bump`, or build from the snapshot (docs/pins.md)", 1)
        print(f"all {len(states)} pinned Debian versions of {len({st.image for st in states})} images are in the archive")
        return
    changes = archive.proposed_bumps(states)
    text = s.pins_file.read_text()
    new_text = archive.bump_text(text, changes)
    for (package, old), new in sorted(changes.items()):
        print(f"{package}: {old} -> {new}")
    if changes:
        new_text, when = archive.bump_snapshot_text(new_text, p.debian.snapshot)
        if when:
            print(
                f"debian snapshot: {p.debian.snapshot} -> {when} (the bumped versions are in today's archive; "
                "snapshot.debian.org has them within hours: `invoke pins check --snapshot`)"
            )
    new_hash = p.llama_cpp.tree_sha256
    if source:
        from toolbox.build.source import source_tree, tree_hash

        new_hash = tree_hash(source_tree(source, s.cache_dir))
        if new_hash != p.llama_cpp.tree_sha256:
            print(f"llama.cpp tree_sha256: {p.llama_cpp.tree_sha256[:12]} -> {new_hash[:12]} (set commit, short_commit, build_number)")
            new_text = new_text.replace(p.llama_cpp.tree_sha256, new_hash)
    if new_text == text:
        print("nothing to change: every pin is the newest its suite has")
        return
    if dry_run:
        print("(dry run: nothing written)")
        return
    s.pins_file.write_text(new_text)
    compose = s.pins_file.parent.parent / "compose.yaml"
    if compose.exists():
        compose.write_text(archive.bump_compose_text(compose.read_text(), changes).replace(p.llama_cpp.tree_sha256, new_hash))
    print(f"wrote {s.pins_file}" + (f" and {compose}" if compose.exists() else "") + ": rebuild the images and compare (docs/pins.md)")
