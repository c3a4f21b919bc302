"""How many model loads does a matrix cost, grouped (one llama-bench process per group) against one
process per case? Uses a synthetic ~1 GB model so that load time matters. Prints figures.

    python3 benchmarks/model_loads.py [--size-gb 1.0] [--matrix kv] [--repetitions 1]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from toolbox.build.images import find_image  # noqa: E402
from toolbox.model.tiny import write_synthetic_model  # noqa: E402
from toolbox.run.bench import make_plan  # noqa: E402
from toolbox.run.matrix import Group  # noqa: E402
from toolbox.settings import load_settings  # noqa: E402


def run(image: str, model: Path, groups: list[Group], reps: int, warmup: bool) -> tuple[float, int]:
    t0 = time.monotonic()
    rows = 0
    for g in groups:
        argv = g.args(f"/models/{model.name}", reps, warmup)
        out = subprocess.run(
            ["docker", "run", "--rm", "-v", f"{model.parent}:/models:ro", image, *argv],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        rows += sum(1 for line in out.splitlines() if line.startswith("{"))
    return time.monotonic() - t0, rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-gb", type=float, default=1.0)
    ap.add_argument("--matrix", default="kv")
    ap.add_argument("--repetitions", type=int, default=1)
    args = ap.parse_args()

    settings = load_settings()
    image = find_image(settings, "cpu")
    if image is None:
        sys.exit("no cpu image: invoke build cpu --offline")
    model = settings.cache_dir / "models" / f"synthetic-{args.size_gb:g}gb.gguf"
    if not model.exists():
        t0 = time.monotonic()
        write_synthetic_model(model, int(args.size_gb * 1e9))
        print(f"wrote {model} ({model.stat().st_size / 1e9:.2f} GB) in {time.monotonic() - t0:.1f} s")
    plan = make_plan(settings, args.matrix, ["cpu"], [model], {"repetitions": args.repetitions})
    singles = [
        Group(c.case_id, g.backend, g.model, g.env, {k: [v] for k, v in c.params if k not in ("n_prompt", "n_gen", "n_depth")}, [c])
        for g in plan.groups
        for c in g.cases
    ]

    grouped_s, grouped_rows = run(image, model, plan.groups, plan.repetitions, plan.warmup)
    single_s, single_rows = run(image, model, singles, plan.repetitions, plan.warmup)
    print(f"matrix {args.matrix}, {len(plan.cases)} cases, model {model.stat().st_size / 1e9:.2f} GB, cpu image {image}")
    print(f"grouped:          {len(plan.groups):3d} model loads, {grouped_s:8.1f} s, {grouped_rows} rows")
    print(f"one per case:     {len(singles):3d} model loads, {single_s:8.1f} s, {single_rows} rows")
    print(f"saved: {len(singles) - len(plan.groups)} loads, {single_s - grouped_s:.1f} s ({single_s / grouped_s:.2f}x)")


if __name__ == "__main__":
    main()
