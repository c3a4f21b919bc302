"""invoke tasks: read flags, call one function of the toolbox package, print the result.

`invoke --list` shows the tasks; `invoke --help <task>` explains every flag.
"""

from __future__ import annotations

import functools
import sys

from invoke import Collection, Exit, task

from toolbox.errors import ToolboxError


def _one_line_errors(fn):
    """Turn a ToolboxError into `invoke.Exit(message, 2)`: one line, no traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ToolboxError as exc:
            raise Exit(f"error: {exc}", code=2) from None
        except KeyboardInterrupt:
            raise Exit("interrupted", code=130) from None

    return wrapper


def _settings(**overrides):
    from toolbox.settings import load_settings

    return load_settings(**overrides)


# --- images (toolbox.images) -------------------------------------------------


@task(
    help={
        "backend": "rocm, vulkan, cpu (or rocm-debian: ROCm from Debian's packages, offline-capable)",
        "offline": "no registry, no git: base bootstrapped from Debian's archive, llama.cpp from --source or PyPI's llama-cpp-python sdist",
        "source": "llama.cpp source: a directory or tarball (verified against the pinned tree hash)",
        "force": "rebuild even if an image with the same inputs exists",
    },
)
@_one_line_errors
def build(c, backend, offline=False, source=None, force=False):
    """Build the pinned llama.cpp image for one backend (answers 'up to date' if nothing changed)."""
    from toolbox.images import build as build_image

    r = build_image(_settings(), backend, offline=offline or None, source=source, force=force)
    state = "up to date" if r.up_to_date else f"built in {r.seconds:.0f} s"
    print(f"{r.tag}: {state}, {r.size_bytes / 1e6:.0f} MB, llama.cpp {r.labels.get('org.strix-toolbox.llama-commit', '?')[:12]} (b{r.labels.get('org.strix-toolbox.llama-build-number', '?')})")


@task
@_one_line_errors
def images(c):
    """List the built toolbox images with their pins, installed versions, sizes and age."""
    from rich.console import Console
    from rich.table import Table

    from toolbox.images import list_images

    rows = list_images(_settings())
    if not rows:
        print("no toolbox images yet: invoke build cpu (add --offline without a registry)")
        return
    table = Table("tag", "backend", "llama.cpp", "build", "mesa", "rocm", "size MB", "created")
    for r in rows:
        table.add_row(r["tag"], r["backend"], r["llama_commit"], str(r["build_number"]), r["mesa"] or "", r["rocm"] or "", str(r["size_mb"]), r["created"])
    Console().print(table)


# --- bench (toolbox.bench) ---------------------------------------------------


@task(
    help={
        "matrix": "preset name (invoke bench --list) or a TOML file; default: default",
        "backend": "rocm, vulkan, cpu, a comma list, or auto (rocm if /dev/kfd and its image exist, else vulkan with a GPU render node, else cpu)",
        "model": "GGUF file or directory of GGUF files (repeatable); default: the embedded tiny model",
        "allow_cpu_vulkan": "run the vulkan image on Mesa's software driver (lavapipe) when there is no GPU",
        "dry_run": "print the plan and the exact llama-bench command lines, run nothing",
        "resume": "RUN_ID: run only the cases missing from that run",
        "build": "build missing images first",
        "list": "list the matrix presets",
        "repetitions": "override the matrix's repetitions (-r)",
        "cooldown": "seconds to wait between groups (thermals)",
        "shuffle": "shuffle the group order (seeded, recorded) to spread thermal drift",
        "seed": "seed for --shuffle",
    },
    iterable=["model"],
)
@_one_line_errors
def bench(c, matrix="default", backend="auto", model=None, allow_cpu_vulkan=False, dry_run=False, resume=None,
          build=False, list=False, repetitions=None, cooldown=None, shuffle=False, seed=None):
    """Run a llama-bench matrix in the pinned containers; results go to results/<run_id>/."""
    from rich.console import Console

    from toolbox import bench as bench_mod
    from toolbox.matrix import preset_descriptions

    console = Console()
    if list:
        for name, desc in preset_descriptions().items():
            console.print(f"[bold]{name:10}[/bold] {desc}")
        return
    r = bench_mod.bench(
        _settings(), matrix=matrix, backend=backend, models=model, allow_cpu_vulkan=allow_cpu_vulkan, dry_run=dry_run,
        resume=resume, build_missing=build, repetitions=int(repetitions) if repetitions else None,
        cooldown_s=float(cooldown) if cooldown else None, shuffle=shuffle or None, seed=int(seed) if seed else None,
        argv=sys.argv, console=console,
    )
    if dry_run:
        return
    for table in bench_mod.summary_tables(r.rows):
        console.print(table)
    console.print(f"run {r.run_id}: {r.status}, {r.ok} rows ok, {r.failed} failed" + (f", {r.skipped_done} already done" if r.skipped_done else ""))
    console.print(f"results: {r.run_dir}/rows.jsonl (run.json: provenance; logs/: llama-bench stderr)")
    if r.status == "interrupted":
        raise Exit(f"interrupted: finished rows are kept; continue with: invoke bench --resume {r.run_id}", code=130)
    if r.failed:
        raise Exit(f"{r.failed} cases failed: see {r.run_dir}/logs/", code=1)


# --- results (toolbox.results) -----------------------------------------------


# --- report / compare / export / log (toolbox.report, toolbox.compare, ...) ---


# --- doctor / compose (toolbox.doctor, toolbox.compose) ----------------------


@task(help={"root": "read sysfs/procfs under this directory instead of / (e.g. a recorded tree in tests/data/hosts/)",
            "json": "print the checks and the host snapshot as JSON instead of a table"})
@_one_line_errors
def doctor(c, root=None, json=False):
    """Is this host ready for llama.cpp on Strix Halo? OK / WARN / FAIL per check, with the fix. Exit 1 on any FAIL."""
    import json as json_module

    import docker
    from rich.console import Console

    from toolbox import doctor as dr
    from toolbox.host import snapshot

    settings = _settings(host_root=root)
    try:
        client = docker.from_env()
        labels = dr.newest_image_labels(client, "rocm")
    except docker.errors.DockerException:
        client, labels = None, None  # docker_checks reports the daemon problem itself
    checks = dr.run_checks(settings, docker_client=client, image_labels=labels)
    snap = snapshot(settings.host_root)
    if json:
        print(json_module.dumps({"host": snap, "checks": [ch.to_dict() for ch in checks]}, indent=2))
    else:
        Console().print(dr.render(checks, snap["machine"]))
    if any(ch.status == "FAIL" for ch in checks):
        raise Exit(code=1)


@task(help={"write_matrices": "regenerate containers/compose/matrices/*.args from the matrix presets"})
@_one_line_errors
def compose_env(c, write_matrices=False):
    """Print the .env compose.yaml needs (numeric device GIDs, machine identity): invoke compose-env > .env"""
    from toolbox import compose

    if write_matrices:
        for path in compose.write_matrices():
            print(f"wrote {path}", file=sys.stderr)
    print(compose.compose_env(_settings()), end="")


# --- check (toolbox.check) ---------------------------------------------------


ns = Collection.from_module(sys.modules[__name__])
