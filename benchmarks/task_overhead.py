"""The fixed cost of a task: what `invoke bench` adds around llama-bench, and how fast `invoke results` lists runs.

1. Paired runs (default 7): `invoke bench` on the default matrix with the cpu image, against the
   same llama-bench command as a bare `docker run --rm` (the plan's own command line). Both are
   timed from the shell; the difference of the medians is the harness's fixed cost per invocation.
2. `invoke --list`: Python and invoke starting, the floor under any task.
3. `invoke results` over a results directory of N runs (default 100, copies of the fixture runs
   with fresh ids, finished as the toolbox finishes them), median of 5; and `invoke report RUN
   --no-files` on one of them (a kv run, 96 results: the tables without plots), median of 5.

    python3 benchmarks/task_overhead.py [--pairs 7] [--runs 100]     (--pairs 0: skip the bench pairs)

Not a test: a benchmark that prints figures (docs/architecture.md quotes them).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from toolbox.build.images import find_image  # noqa: E402
from toolbox.engine.container import in_container  # noqa: E402
from toolbox.model import resolve_models  # noqa: E402
from toolbox.run.bench import make_plan  # noqa: E402
from toolbox.settings import load_settings  # noqa: E402
from toolbox.store.runs import RunWriter, read_meta, read_rows  # noqa: E402


def timed(cmd: list[str], env: dict | None = None) -> float:
    t0 = time.monotonic()
    p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    took = time.monotonic() - t0
    if p.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{p.stdout}\n{p.stderr}")
    return took


def bench_pairs(pairs: int) -> None:
    settings = load_settings()
    image = find_image(settings, "cpu")
    if image is None:
        sys.exit("no cpu image: invoke build cpu --offline")
    model = resolve_models(None, settings)[0]
    plan = make_plan(settings, "default", ["cpu"], [model], {})
    (group,) = plan.groups
    argv = group.args(in_container(model), plan.repetitions, plan.warmup)
    docker = ["docker", "run", "--rm", "-v", f"{model.parent}:/models:ro", image, *argv]
    harness, bare = [], []
    with tempfile.TemporaryDirectory() as tmp:
        env = os.environ | {"TOOLBOX_RESULTS_DIR": tmp}
        timed(["invoke", "bench"], env)  # warm: help cache, page cache
        timed(docker)
        for _ in range(pairs):
            harness.append(timed(["invoke", "bench"], env))
            bare.append(timed(docker))
    h, b = statistics.median(harness), statistics.median(bare)
    print(f"invoke bench (default matrix, cpu image), median of {pairs}: {h:.2f} s")
    print(f"the same llama-bench as `docker run --rm`, median of {pairs}: {b:.2f} s")
    print(f"fixed cost of the harness per invocation: {h - b:.2f} s")


def results_listing(n: int) -> None:
    fixtures = REPO / "tests" / "data" / "runs"
    sources = [p for p in sorted(fixtures.iterdir()) if (p / "run.json").exists()]
    with tempfile.TemporaryDirectory() as tmp:
        results = Path(tmp) / "results"
        for i in range(n):
            src = sources[i % len(sources)]
            meta = read_meta(src)
            meta = {k: v for k, v in meta.items() if k not in ("run_id", "schema_version", "summary")}
            w = RunWriter.create(results, meta)
            shutil.copyfile(src / "rows.jsonl", w.rows_path)
            w.finish(meta.get("status") or "complete")
        rows = sum(len(read_rows(p)) for p in results.iterdir())
        env = os.environ | {"TOOLBOX_RESULTS_DIR": str(results)}
        floor = statistics.median(timed(["invoke", "--list"], env) for _ in range(5))
        listing = statistics.median(timed(["invoke", "results"], env) for _ in range(5))
        kv = next(p.name for p in sorted(results.iterdir()) if (read_meta(p).get("matrix") or {}).get("name") == "kv")
        report = statistics.median(timed(["invoke", "report", kv, "--no-files"], env) for _ in range(5))
        as_json = json.loads(subprocess.run(["invoke", "results", "--json"], cwd=REPO, env=env, capture_output=True, text=True).stdout)
    print(f"invoke --list (Python + invoke start-up), median of 5: {floor:.2f} s")
    print(f"invoke results over {len(as_json)} runs ({rows} rows), median of 5: {listing:.2f} s")
    print(f"invoke report {kv} --no-files (96 results, tables only), median of 5: {report:.2f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=7)
    ap.add_argument("--runs", type=int, default=100)
    args = ap.parse_args()
    results_listing(args.runs)
    if args.pairs:
        bench_pairs(args.pairs)


if __name__ == "__main__":
    main()
