"""The quality gate: which results count, and what a run's outcome means as an exit code.

One rule everywhere (bench --check, check, and whatever ranks configurations): a configuration whose
output is broken, or that could not be checked, has no speed worth reporting; degraded output (a
quantized KV cache) counts where the user accepts it.

Reports, plots, comparisons and the bench summary ask `not_counted()` of every result: a failed row,
a row that ran on another device than intended (`device_ok` false), a row whose flash attention took
llama.cpp's f16 detour for want of a compiled kernel (`fa_fallback` true: the number measures the
build, not the KV type it is labelled with), a row whose flash attention ran on the CPU because the GPU
backend has no kernel for its K/V types (`fa_on_cpu` true) and broken output are never the
best, never set a colour scale or a ratio, and are shown greyed with the reason it returns. A result
that was never checked still counts there (most runs are not checked; the check gate above is the
place that demands a verdict).
"""

from __future__ import annotations

COUNTS = ("same", "degraded")

# Why a result does not count, short (plot labels) and long (tables, warnings).
NOT_COUNTED = {
    "failed": "failed: no speed was measured",
    "off-device": "ran on another device than intended (device_ok false): the number is not the backend's",
    "broken": "output is wrong (quality check: broken): its speed means nothing",
    "fallback": (
        "no FlashAttention kernel was compiled for these K/V types (fa_fallback): llama.cpp converted K and V to f16"
        " first, so the number measures that detour, not the KV type (build with GGML_CUDA_FA_QUANTS=all)"
    ),
    "fa-on-cpu": (
        "the GPU backend has no FlashAttention kernel for these K/V types (fa_on_cpu): ggml ran flash attention on the CPU,"
        " so the number measures the CPU's part, not the KV type on the GPU"
    ),
    "cross-talk": "concurrent requests got other answers than the same prompts alone (cross-talk check): its speed means nothing",
}


def not_counted(
    status: str | None = "ok",
    device_ok: bool | None = None,
    verdict: str | None = None,
    fa_fallback: bool | None = None,
    crosstalk: str | None = None,
    fa_on_cpu: bool | None = None,
) -> str | None:
    """The reason a result is not a result, None when it counts: 'failed', 'broken', 'cross-talk', 'off-device',
    'fa-on-cpu' or 'fallback', the first that applies in that order (see NOT_COUNTED).

    crosstalk is a serving row's cross-talk verdict: 'differs' means concurrent answers were wrong.
    """
    if (status or "ok") != "ok":
        return "failed"
    if verdict == "broken":
        return "broken"
    if crosstalk == "differs":
        return "cross-talk"
    if device_ok is False:
        return "off-device"
    if fa_on_cpu:
        return "fa-on-cpu"
    if fa_fallback:
        return "fallback"
    return None


def row_not_counted(row: dict) -> str | None:
    """not_counted() of one stored row (status, device_ok, quality verdict, fa_fallback, cross-talk verdict, fa_on_cpu)."""
    q, ct = row.get("quality"), row.get("crosstalk")
    return not_counted(
        row.get("status"),
        row.get("device_ok"),
        q.get("verdict") if isinstance(q, dict) else None,
        row.get("fa_fallback"),
        ct.get("verdict") if isinstance(ct, dict) else None,
        row.get("fa_on_cpu"),
    )


def acceptable(verdict: str | None, *, allow_degraded: bool = True) -> bool:
    """May a configuration with this verdict be called fast? Never broken or unchecked; degraded only if allowed."""
    return verdict == "same" or (allow_degraded and verdict == "degraded")


def rejected(results: list[dict]) -> list[dict]:
    """Check results whose configuration computed wrong logits or could not be checked."""
    return [r for r in results if not acceptable(r.get("verdict"))]


def bench_exit(
    status: str, run_id: str | None, run_dir, failed: int, checked: list[dict] | None, error: str | None = None
) -> tuple[int, str] | None:
    """(exit code, message) for a finished `invoke bench`, None for success.

    130 interrupted (the rows are kept; --resume continues), 1 when the run failed as a whole (`error`:
    a full disk), when cases failed or the quality check rejected a configuration.
    """
    if error:
        return 1, f"error: {error}"
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


def serve_exit(status: str, run_id: str | None, stopped_at: dict | None, rows: list[dict]) -> tuple[int, str] | None:
    """(exit code, message) for a finished `invoke serve-bench`, None for success.

    130 interrupted, 1 when the server died mid-sweep (the finished levels are kept; --resume continues),
    a level failed, or a configuration's concurrent answers differ from the same prompts alone.
    """
    resume = f"continue with: invoke serve-bench --resume {run_id}"
    if status == "interrupted":
        return 130, f"interrupted: finished levels are kept; {resume}"
    if stopped_at:
        where = f"level {stopped_at.get('level')}" if stopped_at.get("level") else "the cross-talk references"
        return 1, (
            f"{stopped_at.get('reason')} during {where} of server {stopped_at.get('server')}: "
            f"the finished levels are kept; {resume}" + (f" (log: {stopped_at['log_tail']})" if stopped_at.get("log_tail") else "")
        )
    failed = [r for r in rows if r.get("status") != "ok"]
    if failed:
        return 1, f"{len(failed)} level(s) failed: {failed[0].get('error')}"
    bad = [r for r in rows if row_not_counted(r) == "cross-talk"]
    if bad:
        return 1, f"cross-talk at {len(bad)} level(s): concurrent answers differ from the same prompts alone; those speeds do not count"
    return None
