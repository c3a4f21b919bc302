"""How long `invoke site` takes over many runs: a full build, and incremental rebuilds.

N runs (default 1000) are generated from the fixture runs (tests/data/runs): copies with fresh run
ids a few hours apart, spread over 4 hosts, a new llama.cpp build every 100 runs, and every t/s
sample scaled by a small drift, so that trends have many points and a few regressions. Then:

1. full build (empty site directory): every run read, every page written;
2. incremental, nothing changed;
3. incremental, one run changed (a row appended, as `invoke bench --resume` does);
4. incremental, 10 new runs.

    python3 benchmarks/site_build.py [--runs 1000] [--keep DIR]

Not a test: a benchmark that prints figures (docs/reports.md quotes them).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from toolbox.settings import load_settings  # noqa: E402
from toolbox.site.build import build_site  # noqa: E402

FIXTURES = REPO / "tests" / "data" / "runs"
HOSTS = ("strix-a", "strix-b", "strix-c", "ci-runner")


def _sources() -> list[tuple[dict, list[str]]]:
    out = []
    for d in sorted(FIXTURES.iterdir()):
        if (d / "run.json").exists():
            out.append((json.loads((d / "run.json").read_text()), (d / "rows.jsonl").read_text().splitlines()))
    return out


def generate(results: Path, n: int, start: int = 0) -> list[str]:
    """n runs made from the fixture runs, numbered from `start`."""
    sources = _sources()
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    ids = []
    for i in range(start, start + n):
        meta, lines = sources[i % len(sources)]
        when = t0 + timedelta(hours=3 * i)
        rid = f"{when:%Y%m%dT%H%M%SZ}-{i:06x}"
        build = 11312 + 8 * (i // 100)
        drift = 1 + 0.04 * math.sin(i / 37) - (0.08 if (i // 100) % 5 == 3 else 0)  # one build in five is 8 % slower
        m = dict(meta, run_id=rid, started_at=when.isoformat().replace("+00:00", "Z"))
        if isinstance(m.get("host"), dict):
            m["host"] = json.loads(json.dumps(m["host"]))
            m.setdefault("host", {}).setdefault("machine", {})["hostname"] = HOSTS[i % len(HOSTS)]
        d = results / rid
        d.mkdir(parents=True)
        (d / "logs").mkdir()
        (d / "run.json").write_text(json.dumps(m))
        rows = []
        for line in lines:
            if not line.strip():
                continue
            r = json.loads(line)
            r["run_id"] = rid
            if r.get("build_commit"):
                r["build_number"] = build
                r["build_commit"] = f"{build:08x}"
            if r.get("samples_ts"):
                r["samples_ts"] = [s * drift for s in r["samples_ts"]]
                r["avg_ts"] = r["avg_ts"] * drift
            rows.append(json.dumps(r))
        (d / "rows.jsonl").write_text("\n".join(rows) + "\n")
        ids.append(rid)
    return ids


def timed(label: str, fn) -> float:
    t0 = time.perf_counter()
    res = fn()
    took = time.perf_counter() - t0
    print(f"{label:<44} {took:7.2f} s   ({len(res.rebuilt)} runs read, {res.kept} kept, {res.pages_written} files written)")
    return took


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--keep", type=Path, help="build here and keep it (default: a temporary directory)")
    args = ap.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="site-bench-"))
    try:
        results, out = root / "results", root / "site"
        t = time.perf_counter()
        ids = generate(results, args.runs)
        print(f"generated {len(ids)} runs from the fixtures in {time.perf_counter() - t:.1f} s")
        s = load_settings(results_dir=results)
        timed(f"full build, {len(ids)} runs", lambda: build_site(s, out))
        timed("incremental, nothing changed", lambda: build_site(s, out))
        rows = results / ids[len(ids) // 2] / "rows.jsonl"
        rows.write_text(rows.read_text() + "\n")
        timed("incremental, one run changed", lambda: build_site(s, out))
        generate(results, 10, start=args.runs)
        timed("incremental, 10 new runs", lambda: build_site(s, out))
        pages = sum(1 for _ in out.rglob("*.html"))
        size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
        print(f"site: {pages} pages, {size / 1e6:.1f} MB (manifest {(out / 'manifest.json').stat().st_size / 1e6:.1f} MB)")
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
