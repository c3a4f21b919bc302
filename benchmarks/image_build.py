"""What an image build costs after the first one: the rebuild time after a one-file change, and how
big the build stage is beside the runtime image.

For one backend whose pinned image is already built here (offline path):

1. the runtime image's size (the pinned image);
2. the build stage (`--target build`: compilers, dev packages, sources, objects), built from the
   BuildKit cache and tagged <tag>-build for the measurement, then removed;
3. a one-file change: the pinned tree copied, one line of code appended to one source file (default: a
   file of the backend's own code, e.g. ggml-cuda/fattn.cu for the HIP images), built as a side
   variant (`invoke build IMAGE --source TREE`), timed, then removed. ccache serves every unit
   but the changed one, if the compiler goes through it (the HIP units do since ccache became the
   HIP compiler launcher); the log's ccache summary is printed (cumulative for this machine's cache).

    python3 benchmarks/image_build.py rocm-debian [--file ggml/src/ggml-cuda/fattn.cu] [--keep]

Not a test: a benchmark that prints figures (docs/pins.md quotes them).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from toolbox.build.images import build, find_image  # noqa: E402
from toolbox.build.pins import LABEL_PREFIX, load_pins  # noqa: E402
from toolbox.build.source import sdist_source  # noqa: E402
from toolbox.engine.client import docker_client  # noqa: E402
from toolbox.errors import ToolboxError  # noqa: E402
from toolbox.settings import load_settings  # noqa: E402

CHANGED_FILE = {
    "cpu": "ggml/src/ggml-cpu/ggml-cpu.c",
    "vulkan": "ggml/src/ggml-vulkan/ggml-vulkan.cpp",
    "rocm": "ggml/src/ggml-cuda/fattn.cu",  # rocm-debian too: runs_on(rocm-debian) is rocm
}
CCACHE_LINES = re.compile(r"^#\d+ [\d.]+ (\s*(?:Cacheable calls|Hits|Misses|Uncacheable calls):.*)$", re.M)


def mb(n: int) -> str:
    return f"{n / 1e6:,.0f} MB"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("backend", nargs="?", default="cpu")
    ap.add_argument("--file", help="the source file to change (relative to the llama.cpp tree)")
    ap.add_argument("--keep", action="store_true", help="keep the side variant and the build-stage image")
    a = ap.parse_args()
    settings = load_settings(offline=True)
    pins = load_pins(settings.pins_file)
    client = docker_client()
    tag = find_image(settings, a.backend, client)
    if tag is None:
        print(f"no {a.backend} image built from the current pins: invoke build {a.backend} --offline", file=sys.stderr)
        return 2
    image = client.images.get(tag)
    runtime = image.attrs["Size"]
    commit = image.labels.get(f"{LABEL_PREFIX}.llama-commit", "?")[:12]
    print(f"{a.backend}: {tag} ({image.id[:19]}), llama.cpp {commit}; {os.cpu_count()} cores, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    print(f"  runtime image            {mb(runtime)}")

    stage = build(settings, a.backend, offline=True, stage="build")
    print(f"  build stage              {mb(stage.size_bytes)}  (from the BuildKit cache in {stage.seconds:.0f} s)")

    rel = a.file or CHANGED_FILE[pins.runs_on(a.backend)]
    with tempfile.TemporaryDirectory(prefix="one-file-") as tmp:
        tree = Path(tmp) / "llama.cpp"
        shutil.copytree(sdist_source(pins, settings.cache_dir), tree, symlinks=True)
        when = datetime.now(UTC).isoformat(timespec="seconds")
        # New code each run (a comment alone is a ccache hit: its preprocessor mode strips comments).
        with open(tree / rel, "a") as f:
            f.write(f'\nstatic const char strix_one_file_change[] __attribute__((unused)) = "{when}";\n')
        t0 = time.monotonic()
        side = build(settings, a.backend, offline=True, source=tree)
        seconds = time.monotonic() - t0
    print(f"  one-file change ({rel}): rebuilt as {side.backend} in {seconds:.0f} s ({seconds / 60:.1f} min), {mb(side.size_bytes)}")
    for line in dict.fromkeys(CCACHE_LINES.findall(side.log.read_text() if side.log else "")):  # totals, then local storage: the same
        print(f"    ccache {line.strip()}")
    if not a.keep:
        for ref in (stage.tag, side.tag):
            client.images.remove(ref, noprune=False)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ToolboxError as exc:  # an unknown backend, a failed build: one line, as the tasks say it
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
