"""The quality gate: which results count, and what a run's outcome means as an exit code.

One rule everywhere (bench --check, check, and whatever ranks configurations): a configuration whose
output is broken, or that could not be checked, has no speed worth reporting; degraded output (a
quantized KV cache) counts where the user accepts it.
"""

from __future__ import annotations

COUNTS = ("same", "degraded")


def acceptable(verdict: str | None, *, allow_degraded: bool = True) -> bool:
    """May a configuration with this verdict be called fast? Never broken or unchecked; degraded only if allowed."""
    return verdict == "same" or (allow_degraded and verdict == "degraded")


def rejected(results: list[dict]) -> list[dict]:
    """Check results whose configuration computed wrong logits or could not be checked."""
    return [r for r in results if not acceptable(r.get("verdict"))]


def bench_exit(status: str, run_id: str | None, run_dir, failed: int, checked: list[dict] | None) -> tuple[int, str] | None:
    """(exit code, message) for a finished `invoke bench`, None for success.

    130 interrupted (the rows are kept; --resume continues), 1 when cases failed or the quality
    check rejected a configuration.
    """
    if status == "interrupted":
        return 130, f"interrupted: finished rows are kept; continue with: invoke bench --resume {run_id}"
    if failed:
        return 1, f"{failed} cases failed: see {run_dir}/logs/"
    bad = rejected(checked or [])
    if bad:
        return 1, f"{len(bad)} configurations computed wrong logits or could not be checked: their speed is not a result"
    return None


def check_exit(results: list[dict]) -> tuple[int, str] | None:
    """(exit code, message) for `invoke check`, None when every configuration is same or degraded."""
    bad = rejected(results)
    return (1, f"{len(bad)} configuration(s) broken or not checked") if bad else None
