"""Does the harness add anything measurable to llama-bench?

Runs the same matrix on the embedded model (a) through `invoke bench` and (b) as the minimal set of
`docker run ... llama-bench` calls that give the same rows (the plan's own command lines), and prints
both wall times and their ratio. Not a test: a benchmark that prints figures.

    python3 benchmarks/harness_overhead.py [--matrix kv] [--backend cpu] [--repetitions 1]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from toolbox.build.images import find_image  # noqa: E402
from toolbox.model import resolve_models  # noqa: E402
from toolbox.run.bench import make_plan  # noqa: E402
from toolbox.settings import load_settings  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--matrix", default="kv")
    ap.add_argument("--backend", default="cpu")
    ap.add_argument("--repetitions", type=int, default=1)
    args = ap.parse_args()

    settings = load_settings()
    image = find_image(settings, args.backend)
    if image is None:
        sys.exit(f"no {args.backend} image: invoke build {args.backend} --offline")
    model = resolve_models(None, settings)[0]
    plan = make_plan(settings, args.matrix, [args.backend], [model], {"repetitions": args.repetitions})
    extra = ["-e", "GGML_VK_VISIBLE_DEVICES=0"] if args.backend == "vulkan" else []

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.monotonic()
        p = subprocess.run(
            ["invoke", "bench", "--matrix", args.matrix, "--backend", args.backend, "--repetitions", str(args.repetitions)]
            + (["--allow-cpu-vulkan"] if args.backend == "vulkan" else []),
            cwd=REPO,
            env=os.environ | {"TOOLBOX_RESULTS_DIR": tmp},
            capture_output=True,
            text=True,
        )
        harness = time.monotonic() - t0
        if p.returncode != 0:
            sys.exit(p.stderr)

    t0 = time.monotonic()
    rows = 0
    for group in plan.groups:
        argv = group.args(f"/models/{model.name}", plan.repetitions, plan.warmup)
        env = [a for k, v in group.env.items() if v for a in ("-e", f"{k}={v}")]
        out = subprocess.run(
            ["docker", "run", "--rm", *extra, *env, "-v", f"{model.parent}:/models:ro", image, *argv],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        rows += sum(1 for line in out.splitlines() if line.startswith("{"))
    bare = time.monotonic() - t0

    print(f"matrix {args.matrix} on {args.backend} ({image}), {len(plan.cases)} cases in {len(plan.groups)} groups, {rows} rows")
    print(f"(a) invoke bench (plan, checks, host snapshot, streaming, rows.jsonl): {harness:7.2f} s")
    print(f"(b) bare docker run ... llama-bench, one per group:                    {bare:7.2f} s")
    print(f"ratio a/b: {harness / bare:.3f}  (overhead {harness - bare:+.2f} s)")


if __name__ == "__main__":
    main()
