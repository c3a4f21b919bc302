"""What every task shares: the console, settings, and the flags several tasks take, declared once."""

from __future__ import annotations

import functools

from invoke import Exit

from toolbox.cli import flags as f


def _backend_names(text: str) -> None:
    from toolbox.build.pins import load_pins
    from toolbox.build.side import split_name
    from toolbox.errors import ToolboxError
    from toolbox.llamacpp import BACKENDS

    images = [n for n in load_pins(settings().pins_file).image_names() if n not in BACKENDS]  # variants: vulkan:mesa-sid, rocm-debian
    for b in comma_list(text):
        if split_name(b)[0] not in (*BACKENDS, *images) and b != "auto":  # IMAGE@<tree12>: a side variant of one
            images_text = f"an image ({', '.join(images)}), a side variant IMAGE@TREE"
            raise ToolboxError(f"unknown backend {b!r}", f"choose {', '.join(BACKENDS)}, {images_text}, a list, or auto")


def _model(path: str) -> None:
    from pathlib import Path

    from toolbox.model import resolve_models

    resolve_models([Path(path)], settings())


def _run_id(ref: str) -> None:
    from toolbox.store.runs import resolve_run_id

    resolve_run_id(settings().results_dir, ref)


def _writable(path: str) -> None:
    from toolbox.files import check_writable

    check_writable(path)


# Flags several tasks take, declared once.
FLAGS = {
    "backend": f.Text(
        "rocm, vulkan, cpu, an image of containers/pins.toml (rocm-debian, vulkan:mesa-sid), a side variant (cpu@<tree12>), "
        "a comma list, or auto (rocm if "
        "/dev/kfd and a ROCm image exist, else vulkan with a GPU render node, else cpu); rocm uses the rocm image, else rocm-debian",
        placeholder="BACKEND",
        check=_backend_names,
    ),
    "model": f.Path(
        "GGUF file or directory of GGUF files; default: the embedded tiny model", placeholder="GGUF", repeatable=True, check=_model
    ),
    "allow_cpu_vulkan": f.Switch("run the vulkan image on Mesa's software driver (lavapipe) when there is no GPU"),
    "run_ids": f.Text(
        "run ids: the whole id, a unique prefix or its 6-digit tail (c33c33), or latest; default: the latest run",
        placeholder="RUN",
        variadic=True,
        check=_run_id,
    ),
    "ignore": f.Text("identity keys left out of the match, comma list (e.g. backend to compare two images)", placeholder="KEY[,KEY]"),
    "json": f.Switch("print the result as JSON"),
    "no_wait": f.Switch("fail at once (exit 2) when another benchmark holds the device, instead of waiting for it"),
}


def one_line_errors(fn):
    """For a task declared with plain invoke.task: ToolboxError -> one line, exit 2; warnings one line (flags.user_errors)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with f.user_errors():
            return fn(*args, **kwargs)

    return wrapper


def console():
    """rich console; when output is not a terminal (a pipe, a log file, CI) use a wide page instead of 80 columns."""
    from rich.console import Console

    c = Console()
    return c if c.is_terminal else Console(width=160)


def settings(**overrides):
    from toolbox.settings import load_settings

    return load_settings(**overrides)


def comma_list(text: str | None) -> list[str]:
    """'a, b,,c' -> ['a', 'b', 'c']."""
    return [k.strip() for k in (text or "").split(",") if k.strip()]


def exit_with(outcome: tuple[int, str] | None) -> None:
    """Raise invoke's Exit for an (exit code, message) decided by the package; None is success."""
    if outcome is not None:
        raise Exit(outcome[1], code=outcome[0])
