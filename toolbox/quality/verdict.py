"""The quality verdict: same / degraded / broken from llama-perplexity's KL-divergence figures.

Parses what `llama-perplexity --kl-divergence` prints, reads the header of a base-logits file, and
turns mean KLD and top-1 agreement into a verdict (THRESHOLDS; docs/quality-check.md says why these
numbers). Nothing here starts a container.
"""

from __future__ import annotations

import math
import re
import struct
from pathlib import Path

from toolbox.errors import ToolboxError

# Mean KL divergence (nats per token) and top-1 agreement (fraction of tokens where both pick the
# same most likely token) against the cpu image's f16-KV logits. Calibration (llama.cpp
# tools/perplexity/README.md, LLaMA 3 8B on Wikitext-2, against FP16 logits): the 16-bit storage of
# the base logits alone gives KLD 0.00055; q8_0 weights 0.0014 (top-1 97.7 %, LLaMA 2 7B: 0.00037,
# 98.8 %); q6_K 0.0055; q4_K_M 0.031 (91.9 %); q2_K 0.45 (71.1 %); iq1_M 1.39. The broken ROCm build
# of issue 28211 (PPL 1334 instead of 6.8) is at least ln(1334 / 6.8) = 5.3 nats from the reference.
#
# Top-1 agreement alone misleads where the top two candidates are nearly tied: the random-weight tiny
# model's flat distributions flip about 2 % of their top tokens under a KLD of 1.5e-5 (lavapipe vs
# CPU), pure floating-point noise. Below `noise_kld_max` flips cannot be more than such ties (a
# divergence 5x below what the 16-bit base storage alone gives on a real model), so they do not count.
THRESHOLDS = {
    "same": {"kld_mean_max": 0.002, "top1_min": 0.97, "noise_kld_max": 0.0001},  # q8_0-weight level or closer
    "broken": {"kld_mean_min": 1.0, "top1_max": 0.5},  # past iq1_M, or the top token wrong more often than right
}
VERDICTS = ("same", "degraded", "broken")


def verdict(kld_mean: float | None, top1: float | None) -> str:
    """same / degraded / broken from mean KLD (nats) and top-1 agreement (0..1); NaN or inf = broken.

    broken:   kld_mean > 1.0 or top1 < 0.5  (not the reference model's output any more)
    same:     kld_mean <= 0.002 and (top1 >= 0.97 or kld_mean <= 0.0001)  (what backends and q8_0 differ by)
    degraded: everything between (a real, measurable loss: quantized KV cache, low-bit weights)
    """
    if kld_mean is None or top1 is None:
        raise ValueError("verdict needs kld_mean and top1")
    kld_mean, top1 = float(kld_mean), float(top1)
    if not (math.isfinite(kld_mean) and math.isfinite(top1)):
        return "broken"
    b, s = THRESHOLDS["broken"], THRESHOLDS["same"]
    if kld_mean > b["kld_mean_min"] or top1 < b["top1_max"]:
        return "broken"
    if kld_mean <= s["kld_mean_max"] and (top1 >= s["top1_min"] or kld_mean <= s["noise_kld_max"]):
        return "same"
    return "degraded"


# --- parsing llama-perplexity output -------------------------------------------

_NUM = r"([-+]?(?:\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|nan|inf|-nan|-inf))"
_SUMMARY = {
    "ppl": rf"Mean PPL\(Q\)\s*:\s*{_NUM}(?:\s*±\s*{_NUM})?",
    "ppl_base": rf"Mean PPL\(base\)\s*:\s*{_NUM}",
    "ln_ppl_ratio": rf"Mean ln\(PPL\(Q\)/PPL\(base\)\)\s*:\s*{_NUM}",
    "ppl_ratio": rf"Mean PPL\(Q\)/PPL\(base\)\s*:\s*{_NUM}",
    "kld_mean": rf"Mean\s+KLD:\s*{_NUM}(?:\s*±\s*{_NUM})?",
    "kld_max": rf"Maximum KLD:\s*{_NUM}",
    "kld_p99": rf"99\.0%\s+KLD:\s*{_NUM}",
    "kld_median": rf"Median\s+KLD:\s*{_NUM}",
    "rms_dp": rf"RMS Δp\s*:\s*{_NUM}",
    "top1_agree": rf"Same top p:\s*{_NUM}(?:\s*±\s*{_NUM})?",
}
_CHUNK_LINE = re.compile(
    rf"^\s*(\d+)\s+{_NUM}\s*±\s*{_NUM}\s+{_NUM}\s*±\s*{_NUM}\s+{_NUM}\s*±\s*{_NUM}\s+{_NUM}\s*±\s*{_NUM}\s*%\s+{_NUM}\s*±\s*{_NUM}\s*%\s*$",
    re.M | re.I,
)


def _f(s: str | None) -> float | None:
    if s is None:
        return None
    try:
        return float(s)
    except ValueError:
        return float("nan")


def parse_kld_output(text: str) -> dict:
    """The figures `llama-perplexity --kl-divergence` prints (fractions, not percent); {} if none.

    The final statistics block is printed only from 100 scored tokens on; with fewer, the last
    per-chunk line (PPL, ln ratio, KLD, RMS Δp, same top p, each ± its uncertainty) is used.
    """
    out: dict = {}
    for key, pat in _SUMMARY.items():
        m = re.search(pat, text, re.I)
        if m:
            out[key] = _f(m.group(1))
            if key in ("kld_mean", "top1_agree", "ppl") and m.lastindex and m.lastindex >= 2 and m.group(2):
                out[key + "_err"] = _f(m.group(2))
    chunks = _CHUNK_LINE.findall(text)
    if chunks:
        # running totals after the last chunk: the same figures with fewer decimals. Used when the
        # statistics block is missing (fewer than 100 tokens, or lost: the pinned llama.cpp's logger
        # thread is not flushed at exit, common/log.cpp, so the last lines of a run can go missing).
        last = chunks[-1]
        out["chunks"] = int(last[0])
        running = dict(
            ppl=_f(last[1]),
            ppl_err=_f(last[2]),
            ln_ppl_ratio=_f(last[3]),
            kld_mean=_f(last[5]),
            kld_mean_err=_f(last[6]),
            rms_dp=_f(last[7]),
            top1_agree=_f(last[9]),
            top1_agree_err=_f(last[10]),
        )
        missing = [k for k in running if k not in out]
        if "kld_mean" in missing or "top1_agree" in missing:
            out["from_chunk_lines"] = True
        for k in missing:
            out[k] = running[k]
    for key in ("top1_agree", "top1_agree_err", "rms_dp"):
        if out.get(key) is not None:
            out[key] = out[key] / 100.0
    return out


def read_base_header(path: Path) -> dict:
    """n_ctx, n_vocab, n_chunk of a --kl-divergence-base file, checked against its size.

    Layout (tools/perplexity/perplexity.cpp at the pinned commit): "_logits_", uint32 n_ctx, int32
    n_vocab, int32 n_chunk, int32 tokens[n_ctx * n_chunk], then per chunk (n_ctx - 1 - n_ctx/2) rows
    of nv = 2*((n_vocab+1)/2) + 4 uint16 (scale and offset as 2 floats, then quantized log-probs).
    """
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(20)
    if len(head) < 20 or head[:8] != b"_logits_":
        raise ToolboxError(f"{path} is not a llama-perplexity logits file", "delete it; the check writes it again")
    n_ctx, n_vocab, n_chunk = struct.unpack("<Iii", head[8:20])
    nv = 2 * ((n_vocab + 1) // 2) + 4
    expected = 20 + 4 * n_ctx * n_chunk + 2 * n_chunk * (n_ctx - 1 - n_ctx // 2) * nv
    size = path.stat().st_size
    if size != expected:
        raise ToolboxError(f"{path} is truncated or damaged ({size} bytes, expected {expected})", "delete it; the check writes it again")
    return {"n_ctx": n_ctx, "n_vocab": n_vocab, "n_chunk": n_chunk, "scored_tokens": n_chunk * (n_ctx - 1 - n_ctx // 2)}


def final_estimate(text: str) -> str | None:
    m = re.search(r"Final estimate: PPL = .*", text)
    return m.group(0).strip() if m else None
