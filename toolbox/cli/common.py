"""What every task shares: one-line errors, the console, settings, and the help texts of shared flags."""

from __future__ import annotations

import functools

from invoke import Exit

from toolbox.errors import ToolboxError

# Help texts of flags several tasks take, written once.
HELP = {
    "backend": "rocm, vulkan, cpu, a comma list, or auto "
    "(rocm if /dev/kfd and its image exist, else vulkan with a GPU render node, else cpu)",
    "model": "GGUF file or directory of GGUF files (repeatable); default: the embedded tiny model",
    "allow_cpu_vulkan": "run the vulkan image on Mesa's software driver (lavapipe) when there is no GPU",
    "run_ids": "run id (repeatable); default: the latest run",
    "ignore": "identity keys left out of the match, comma list (e.g. backend to compare two images)",
    "json": "print the result as JSON",
}


def one_line_errors(fn):
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
