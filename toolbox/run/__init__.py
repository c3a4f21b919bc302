"""Running benchmarks: matrices and plans, the per-run context, bench, and the compose helpers."""
