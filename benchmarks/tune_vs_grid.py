"""Does `invoke tune` find the grid's answer in a third of the grid's time? Prints figures.

On each backend, the same space and goal are searched twice, each into its own run: `--search grid`
(every candidate at full size and full repetitions, then the same quality gate) and the default
search (screening, successive halving, the gate, confirmation). Printed: the grid's best, tune's
choice, whether they agree or are within noise of each other (Welch's t-test on the grid's own
samples of both configurations, as tune judges its runner-up), and the machine time each spent.

    python3 benchmarks/tune_vs_grid.py [--backends cpu,vulkan] [--model GGUF] [--goal chat] [--space FILE]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from toolbox.analysis.compare import judge_speed  # noqa: E402
from toolbox.settings import load_settings  # noqa: E402
from toolbox.tune.driver import tune  # noqa: E402
from toolbox.tune.search import ALPHA  # noqa: E402


def race(settings, backend: str, search: str, args):
    return tune(
        settings,
        model=args.model,
        backend=backend,
        space=args.space,
        goal=args.goal,
        depth=args.depth,
        budget=args.budget,
        search=search,
        allow_cpu_vulkan=backend == "vulkan",
        allow_degraded=args.allow_degraded,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backends", default="cpu,vulkan")
    ap.add_argument("--model", default=None, help="a GGUF file (default: the embedded tiny model)")
    ap.add_argument("--goal", default="chat")
    ap.add_argument("--depth", type=int, default=None)
    ap.add_argument("--space", default=str(REPO / "benchmarks" / "matrices" / "tune-bench.toml"))
    ap.add_argument("--budget", default="2h")
    ap.add_argument("--allow-degraded", action="store_true")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(results_dir=Path(tmp) / "results", offline=True)
        print(f"goal {args.goal}, space {Path(args.space).name}, a 2-core CI machine without a GPU (lavapipe = Mesa's software Vulkan)")
        for backend in [b.strip() for b in args.backends.split(",") if b.strip()]:
            grid = race(settings, backend, "grid", args)
            fast = race(settings, backend, "halving", args)
            g, t = grid.race.winner, fast.race.winner
            if g is None or t is None:
                print(f"{backend:8} nothing recommended (grid: {grid.race.outcome}, tune: {fast.race.outcome})")
                continue
            other = grid.race.standings[t.cand.key].confirm  # tune's choice as the grid measured it
            if g.cand.key == t.cand.key:
                verdict = "yes: the same configuration"
            elif other is None:
                verdict = "differs (the grid has no confirmed figure for tune's choice)"
            else:
                # the test tune uses against its runner-up, on the grid's own samples of both configurations
                c, mark, _ = judge_speed(other, g.confirm, alpha=ALPHA)
                same = "within noise" if mark in ("same", "untested") else "differs"
                p = f"p={c.p_value:.2g}" if c.p_value is not None else "untested"
                verdict = f"{same}: the grid measured tune's choice at {other.median:.1f} t/s (best/choice x{c.ratio:.2f}, {p})"
            gs, ts = grid.spent_s, fast.spent_s
            met = "met" if ts <= gs / 3 else "NOT met"
            print(f"{backend}: {len(grid.race.standings)} candidates, goal {args.goal}")
            print(f"  grid's best:   {grid.race.name(g)}: {g.confirm.median:.1f} t/s (median of {g.confirm.n})")
            print(f"  tune's choice: {fast.race.name(t)}: {t.confirm.median:.1f} t/s in its own run")
            print(f"  agree: {verdict}")
            print(f"  machine time: grid {gs:.0f} s, tune {ts:.0f} s, ratio {ts / gs:.2f} (target <= 0.33: {met})")


if __name__ == "__main__":
    main()
