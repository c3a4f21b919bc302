"""What a serving level means: prompts, the SLO, per-level percentiles and goodput, the server's own
counts beside the client's, and the cross-talk verdict.

- Latencies are summarised as p50 / p90 / p99 in milliseconds: time to first token (ttft), the gaps
  between streamed tokens pooled over every request (itl), a request's mean gap (tpot, time per output
  token after the first) and end to end (e2e).
- Goodput is the rate of requests that succeeded and met every bound of the SLO (`ttft<2s,itl<100ms`:
  itl bounds a request's mean gap between tokens, as vLLM's tpot does; e2e bounds the whole request).
- Cross-talk: N distinct prompts sent together at temperature 0 must each return exactly what the same
  prompt returns alone (llama.cpp issue 25992: with -np 4 --kv-unified on ROCm, one request received
  another request's reply). The verdict names the first request that differs and where.
"""

from __future__ import annotations

import random
import re
import statistics

from toolbox.errors import ToolboxError

SLO_KEYS = ("ttft", "itl", "e2e")
_SLO_ITEM = re.compile(r"^\s*(ttft|itl|e2e)\s*<=?\s*([0-9]*\.?[0-9]+)\s*(ms|s)\s*$")
_LETTERS = "abcdefghijklmnopqrstuvwxyz"


def parse_slo(text: str | None) -> dict[str, float]:
    """'ttft<2s,itl<100ms' -> {'ttft': 2000.0, 'itl': 100.0} (milliseconds); anything else is a one-line error."""
    if not text or not text.strip():
        return {}
    out: dict[str, float] = {}
    for item in text.split(","):
        m = _SLO_ITEM.match(item)
        if not m:
            raise ToolboxError(
                f"cannot read the SLO item {item.strip()!r}",
                'write bounds as KEY<NUMBER UNIT, comma separated, KEY one of ttft, itl, e2e, UNIT ms or s: --slo "ttft<2s,itl<100ms"',
            )
        key, number, unit = m.groups()
        if key in out:
            raise ToolboxError(f"the SLO bounds {key} twice", 'give each of ttft, itl, e2e at most once: --slo "ttft<2s,itl<100ms"')
        out[key] = float(number) * (1000.0 if unit == "s" else 1.0)
    return out


def slo_text(slo: dict[str, float]) -> str:
    """{'ttft': 2000.0, 'itl': 100.0} -> 'ttft<2000ms,itl<100ms' (how reports show it)."""
    return ",".join(f"{k}<{v:g}ms" for k, v in slo.items())


def prompt_words(rng: random.Random, n: int) -> list[str]:
    """n short lowercase words: with most tokenizers about one token each (the embedded model: exactly one)."""
    return ["".join(rng.choice(_LETTERS) for _ in range(2)) for _ in range(n)]


def make_prompts(n: int, tokens: int | list[int], *, seed: int, salt: str, shared_prefix: int = 0) -> list[str]:
    """n distinct prompts of about `tokens` words each (or tokens[i] for the i-th), the first `shared_prefix`
    words the same in every prompt (to exercise the server's prompt cache). Seeded: the same every run."""
    common = prompt_words(random.Random(f"{seed}-prefix"), shared_prefix)
    out = []
    for i in range(n):
        rng = random.Random(f"{seed}-{salt}-{i}")
        length = tokens[i] if isinstance(tokens, list) else tokens
        out.append(" ".join(common + [f"n{i}"] + prompt_words(rng, max(0, length - shared_prefix - 1))))
    return out


def draw_lengths(spec, n: int, seed: int, salt: str) -> list[int]:
    """Lengths for n requests: a number (fixed) or {low, high} (uniform, seeded)."""
    if isinstance(spec, dict):
        rng = random.Random(f"{seed}-{salt}-lengths")
        return [rng.randint(int(spec["low"]), int(spec["high"])) for _ in range(n)]
    return [int(spec)] * n


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return round(values[0] * 1000.0, 3)
    return round(statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] * 1000.0, 3)


def meets_slo(rec, slo: dict[str, float]) -> bool:
    """Did a request succeed within every bound of the SLO (milliseconds)?"""
    if rec.error or rec.ttft is None:
        return False
    got = {"ttft": rec.ttft * 1000.0, "e2e": (rec.e2e or 0.0) * 1000.0, "itl": (statistics.fmean(rec.itl) * 1000.0) if rec.itl else 0.0}
    return all(got[k] < bound for k, bound in slo.items())


def summarize_level(records: list, wall_s: float, slo: dict[str, float]) -> dict:
    """Per-level figures: counts, throughput, p50/p90/p99 of ttft, itl, tpot and e2e (ms), goodput under the SLO."""
    ok = [r for r in records if not r.error]
    ttft = [r.ttft for r in ok if r.ttft is not None]
    itl = [g for r in ok for g in r.itl]
    tpot = [statistics.fmean(r.itl) for r in ok if r.itl]
    e2e = [r.e2e for r in ok if r.e2e is not None]
    tokens_out = sum(r.tokens_out for r in ok)
    tokens_in = sum(r.tokens_in or 0 for r in ok)
    wall = max(wall_s, 1e-9)
    errors = [r.error for r in records if r.error]
    out = {
        "n_requests": len(records),
        "n_ok": len(ok),
        "n_errors": len(errors),
        "first_error": errors[0] if errors else None,
        "tokens_in": tokens_in,
        "tokens_out": tokens_out,
        "wall_s": round(wall_s, 4),
        "req_per_s": round(len(ok) / wall, 4),
        "output_tps": round(tokens_out / wall, 3),
        "total_tps": round((tokens_out + tokens_in) / wall, 3),
    }
    for name, values in (("ttft", ttft), ("itl", itl), ("tpot", tpot), ("e2e", e2e)):
        for q in (50, 90, 99):
            out[f"{name}_ms_p{q}"] = _pct(values, q)
    if slo:
        good = sum(meets_slo(r, slo) for r in records)
        out.update(goodput_rps=round(good / wall, 4), goodput_share=round(good / len(records), 4) if records else None)
    else:
        out.update(goodput_rps=None, goodput_share=None)
    return out


def server_check(records: list, before: dict[str, float], after: dict[str, float]) -> dict:
    """The client's token counts beside llama-server's: its per-request `timings` and its /metrics counters."""
    ok = [r for r in records if not r.error]
    client_out = sum(r.tokens_out for r in ok)
    timings_out = sum((r.timings or {}).get("predicted_n", 0) for r in ok) if all(r.timings for r in ok) else None
    metrics_out = after.get("tokens_predicted_total", 0) - before.get("tokens_predicted_total", 0) if before and after else None
    metrics_prompt = None
    if before and after:
        metrics_prompt = sum(after.get(k, 0) - before.get(k, 0) for k in ("prompt_tokens_total", "prompt_tokens_cached_total"))
    client_in = sum(r.tokens_in or 0 for r in ok)
    agree = timings_out in (None, client_out) and (
        metrics_out is None or not records or len(ok) < len(records) or metrics_out == client_out
    )
    return {
        "client_tokens_out": client_out,
        "timings_tokens_out": timings_out,
        "metrics_tokens_out": metrics_out,
        "client_tokens_in": client_in,
        "metrics_tokens_in": metrics_prompt,
        "agree": bool(agree),
    }


def crosstalk_verdict(prompts: list[str], alone: list, together: list) -> dict:
    """Compare each concurrent answer with the same prompt's answer alone: 'same', 'differs' (the first
    differing request, where, and both texts around it) or 'error' (a request failed)."""
    for i, (a, t) in enumerate(zip(alone, together, strict=True)):
        if a.error or t.error:
            return {"verdict": "error", "n": len(prompts), "request": i, "error": a.error or t.error}
        if a.text != t.text:
            at = next((k for k, (x, y) in enumerate(zip(a.text, t.text)) if x != y), min(len(a.text), len(t.text)))
            return {
                "verdict": "differs",
                "n": len(prompts),
                "request": i,
                "at_char": at,
                "prompt": prompts[i][:80],
                "alone": a.text[max(0, at - 20) : at + 40],
                "concurrent": t.text[max(0, at - 20) : at + 40],
            }
    return {"verdict": "same", "n": len(prompts)}
