"""Distance to the physical limit: the memory bandwidth a tg result implies, the TFLOP/s of a pp result.

Token generation reads every weight once per token (batch 1), so it is bound by memory bandwidth:

    implied bandwidth [GB/s] = bytes of weights read per token x t/s / 1e9
    share of peak            = implied bandwidth / peak_bandwidth_gbs   (256 GB/s theoretical on Strix Halo)

Prompt processing multiplies every weight with every prompt token (one multiply + one add), so it
is bound by compute:

    TFLOP/s       = 2 x parameters x tokens / time / 1e12 = 2 x parameters x t/s / 1e12
    share of peak = TFLOP/s / peak_tflops

Bytes of weights = llama-bench's `model_size` (bytes of all tensors in the file); parameters =
`model_n_params`. For a mixture-of-experts model only the active experts count: the active share
comes, in this order, from an explicit hint (`active_params` / `active_bytes`, or a fraction), from
run.json's `models[].active_params` / `active_bytes`, or is estimated from llama.cpp's model type
("30B.A3B" -> 3/30 of the weights); estimated figures say so. Both figures are lower bounds of the
work done: KV-cache reads (which grow with context depth) and attention FLOPs are not counted, so
at depth the real share of the limit is higher than shown. Combined pp+tg tests get no figure.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import PurePosixPath

from toolbox import llamacpp

MOE_TYPE = re.compile(r"\b(\d+(?:\.\d+)?)B\.A(\d+(?:\.\d+)?)B\b")

FORMULAS = {
    "tg": "GB/s = bytes of weights read per token (model_size; MoE: active experts only) x t/s / 1e9; share = GB/s / peak bandwidth",
    "pp": "TFLOP/s = 2 x parameters (MoE: active only) x t/s / 1e12; share = TFLOP/s / peak TFLOP/s",
    "bounds": "lower bounds: KV-cache reads and attention FLOPs (growing with depth) are not counted",
}


@dataclass(frozen=True)
class Roofline:
    kind: str  # "tg" (bandwidth) or "pp" (compute)
    value: float  # GB/s for tg, TFLOP/s for pp
    unit: str  # "GB/s" or "TFLOP/s"
    peak: float
    share: float  # value / peak
    basis: str  # how it was computed, in words, with the numbers used
    estimated: bool = False  # True when the MoE active share was guessed from the model type

    def __str__(self) -> str:
        return f"{self.value:.1f} {self.unit} ({self.share:.0%}{'~' if self.estimated else ''})"


def _num(v) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) and f > 0 else None


def model_hint(row: dict, models: list[dict] | dict | None) -> dict:
    """run.json's entry for the row's model (matched by file name), or {}."""
    if not models:
        return {}
    entries = list(models.values()) if isinstance(models, dict) else list(models)
    fname = row.get("model_filename")
    base = PurePosixPath(str(fname)).name if fname else None
    for m in entries:
        if not isinstance(m, dict):
            continue
        names = {m.get("name"), PurePosixPath(str(m.get("path") or "")).name or None}
        if base and base in names:
            return m
        if m.get("sha256") and m.get("sha256") == row.get("model_sha256"):
            return m
    return entries[0] if len(entries) == 1 and isinstance(entries[0], dict) else {}


def active_fraction(row: dict, hint: dict | None = None) -> tuple[float, str, bool]:
    """(fraction of weights active per token, where it came from, estimated?). Dense models: 1.0."""
    hint = hint or {}
    size, params = _num(row.get("model_size")), _num(row.get("model_n_params"))
    if _num(hint.get("active_fraction")):
        f = min(float(hint["active_fraction"]), 1.0)
        return f, f"MoE: {f:.1%} of weights active (given)", False
    if _num(hint.get("active_params")) and params:
        f = min(float(hint["active_params"]) / params, 1.0)
        return f, f"MoE: {float(hint['active_params']) / 1e9:.2f} B of {params / 1e9:.2f} B parameters active", False
    if _num(hint.get("active_bytes")) and size:
        f = min(float(hint["active_bytes"]) / size, 1.0)
        return f, f"MoE: {float(hint['active_bytes']) / 1e9:.2f} GB of {size / 1e9:.2f} GB weights active", False
    m = MOE_TYPE.search(str(row.get("model_type") or ""))
    if m:
        total, active = float(m.group(1)), float(m.group(2))
        if 0 < active < total:
            return (
                active / total,
                f"MoE: ~{active:g}B of {total:g}B active, estimated from the model type (pass the exact active size for a precise figure)",
                True,
            )
    return 1.0, "dense: all weights", False


def test_kind(row: dict) -> str | None:
    """'pp' (prompt only), 'tg' (generation only), 'pp+tg', or None when the row does not say."""
    return llamacpp.test_kind(row.get("n_prompt"), row.get("n_gen"))


def roofline(row: dict, ts: float | None, *, peak_bandwidth_gbs: float, peak_tflops: float, hint: dict | None = None) -> Roofline | None:
    """The tg bandwidth or pp TFLOP/s figure for one result at `ts` tokens/s; None when it can't be computed."""
    ts = _num(ts)
    kind = test_kind(row)
    if ts is None or kind not in ("tg", "pp"):
        return None
    frac, why, est = active_fraction(row, hint)
    if kind == "tg":
        size = _num(row.get("model_size"))
        if size is None:
            return None
        bytes_tok = size * frac
        gbs = bytes_tok * ts / 1e9
        basis = f"{bytes_tok / 1e9:.3g} GB read per token ({why}) x {ts:.4g} t/s = {gbs:.4g} GB/s; peak {peak_bandwidth_gbs:g} GB/s"
        return Roofline("tg", gbs, "GB/s", peak_bandwidth_gbs, gbs / peak_bandwidth_gbs, basis, est)
    params = _num(row.get("model_n_params"))
    if params is None:
        return None
    act = params * frac
    tflops = 2 * act * ts / 1e12
    basis = f"2 x {act / 1e9:.4g} B parameters ({why}) x {ts:.4g} t/s = {tflops:.4g} TFLOP/s; peak {peak_tflops:g} TFLOP/s"
    return Roofline("pp", tflops, "TFLOP/s", peak_tflops, tflops / peak_tflops, basis, est)
