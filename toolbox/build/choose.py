"""Which image a backend runs on: `rocm` means ROCm, from whichever ROCm image is built.

Two images give ROCm rows: `rocm` (AMD's ROCm base image, needs a registry) and `rocm-debian`
(ROCm from Debian's packages, buildable offline). A user with either one gets ROCm rows from
`--backend rocm`, told which image that is; `--backend rocm-debian` asks for that image only.
"""

from __future__ import annotations

from collections.abc import Callable

ROCM_CHOICES = ("rocm", "rocm-debian")  # in order of preference


def pick_backends(backends: list[str], built: Callable[[str], str | None]) -> tuple[list[str], list[str]]:
    """(backends with `rocm` replaced by the ROCm image that is built, notes saying so).

    built(backend) -> the image tag built from the current pins, or None. When neither ROCm image is
    built, `rocm` stays (the missing image is reported as usual, naming both)."""
    out, notes = [], []
    for b in backends:
        if b == "rocm" and built("rocm") is None:
            other = next((c for c in ROCM_CHOICES[1:] if built(c) is not None), None)
            if other is not None:
                notes.append(f"rocm: no rocm image is built; using the {other} image ({built(other)})")
                b = other
        if b not in out:
            out.append(b)
    return out, notes


def build_hint(backend: str, build_flag: bool = True) -> str:
    """How to get a missing image: one command (it builds offline by itself when no registry answers)."""
    from toolbox.build.side import side_hint, split_name

    if split_name(backend)[1]:
        return side_hint(backend)
    command = "invoke build " + backend.replace(":", " --variant ")
    also = ", or add --build" if build_flag else ""
    if backend == "rocm":
        return f"run `{command}` (or `invoke build rocm-debian`: ROCm from Debian's packages, no registry needed){also}"
    return f"run `{command}`{also}"


def registry_host(image: str) -> str:
    """The registry an image reference is pulled from (Docker Hub's for `debian:trixie-slim`)."""
    first = image.split("/", 1)[0]
    if "/" in image and ("." in first or ":" in first or first == "localhost"):
        return first
    return "registry-1.docker.io"


def registry_answers(image: str, timeout_s: float = 3.0) -> bool:
    """Does the registry of `image` answer at all (any HTTP reply to /v2/, 401 included) within timeout_s?"""
    import urllib.error
    import urllib.request

    host = registry_host(image)
    scheme = "http" if host.startswith(("localhost", "127.")) else "https"
    try:
        urllib.request.urlopen(f"{scheme}://{host}/v2/", timeout=timeout_s)  # noqa: S310 - a fixed scheme
        return True
    except urllib.error.HTTPError:
        return True  # it answered (401 Unauthorized is the usual answer)
    except (OSError, ValueError):
        return False
