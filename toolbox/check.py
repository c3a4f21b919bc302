"""Quality check: does a backend / KV-cache configuration compute what the reference computes?

A build can post excellent t/s and compute wrong logits (llama.cpp issue 28211: perplexity about
1334 on ROCm on gfx1151 against about 6.8 on CPU and Vulkan); a quantized KV cache trades quality
for speed. The check runs llama-perplexity in its KL-divergence mode, in the same containers as the
benchmark, on a fixed text that ships with the toolbox (toolbox/data/check-text.txt):

1. base: the cpu image with f16 K and V (flash attention off) reads the text, and
   `--kl-divergence-base FILE` saves its next-token log-probabilities (the last half of each
   window of `ctx` tokens, `chunks` windows). Cached in
   cache_dir/kld-base/<model sha256>-<cpu image id>-c<ctx>-n<chunks>-t<text sha>.kld.
2. each configuration (image / backend, model, type_k, type_v, flash attention, environment) runs
   `llama-perplexity --kl-divergence --kl-divergence-base FILE` on the same tokens (they are stored
   in the base file) and prints perplexity, mean KL divergence to the base, its percentiles and
   "Same top p" (how often both pick the same most likely token).
3. `verdict()` turns mean KLD and top-1 agreement into same / degraded / broken (THRESHOLDS;
   docs/quality-check.md says why these numbers).

The embedded tiny model has random weights, but the same weights must give the same logits on every
backend within floating-point tolerance: that alone catches a broken build. Real models give
meaningful perplexity and KLD figures. `reference=` compares a model against another model's base
(e.g. a Q4_K_M file against its F16 original: the classic use of llama.cpp's KLD mode).

`attach_quality(settings, run_id)` checks every distinct configuration of a finished bench run and
appends the results to results/<run_id>/quality.jsonl; `merge_quality()` puts them into the rows'
`quality` field for readers.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import secrets
import shutil
import struct
import tempfile
import time
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path

from toolbox.errors import ToolboxError

# --- verdict -----------------------------------------------------------------

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

DEFAULT_CTX = 128       # tokens per window; the last half of each window is scored
DEFAULT_CHUNKS = 8      # windows: 8 x 63 = 504 scored tokens (llama-perplexity prints its statistics from 100 on)
KLD_DIR = "kld-base"
QUALITY_FILE = "quality.jsonl"
RETRIES = 2             # runs again when llama-perplexity's last output lines were lost (see parse_kld_output)
TEXT_MOUNT = "/check/text.txt"
KLD_MOUNT = "/kld"
QUANTIZED_NEED_FA = ("q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "iq4_nl")
_FA = {"on": 1, "1": 1, "true": 1, "enabled": 1, "off": 0, "0": 0, "false": 0, "disabled": 0, "auto": -1, "-1": -1}
_FA_FLAG = {1: "on", 0: "off", -1: "auto"}


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
_CHUNK_LINE = re.compile(rf"^\s*(\d+)\s+{_NUM}\s*±\s*{_NUM}\s+{_NUM}\s*±\s*{_NUM}\s+{_NUM}\s*±\s*{_NUM}\s+{_NUM}\s*±\s*{_NUM}\s*%\s+{_NUM}\s*±\s*{_NUM}\s*%\s*$",
                         re.M | re.I)


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
        running = dict(ppl=_f(last[1]), ppl_err=_f(last[2]), ln_ppl_ratio=_f(last[3]), kld_mean=_f(last[5]), kld_mean_err=_f(last[6]),
                       rms_dp=_f(last[7]), top1_agree=_f(last[9]), top1_agree_err=_f(last[10]))
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


# --- devices -----------------------------------------------------------------

# "llama_prepare_model_devices: using device Vulkan0 (llvmpipe (LLVM 19.1.7, 256 bits)) (unknown id) - 23074 MiB free"
# (an info line: the check runs llama-perplexity with -v). No such line: the model is on the CPU.
_DEVICE_RE = re.compile(r"using device (\S+) \((.*)\) \([^()]*\) - \d+ MiB free", re.M)
_OFFLOAD_RE = re.compile(r"offloaded (\d+/\d+) layers to GPU")
_FA_USED_RE = re.compile(r"Flash Attention (enabled|disabled)")


def devices_used(log: str) -> list[str]:
    """Devices llama.cpp says it put the model on ('Vulkan0 (llvmpipe (LLVM 19.1.7, 256 bits))'); [] = CPU only."""
    return list(dict.fromkeys(f"{name} ({desc.strip()})" for name, desc in _DEVICE_RE.findall(log)))


def device_ok(backend: str, target: str, devices: list[str]) -> bool:
    """Did the check run where it was meant to? (Vulkan without a usable device silently uses the CPU.)"""
    text = " ".join(devices).lower()
    if backend == "cpu":
        return True
    if target == "lavapipe":
        return "llvmpipe" in text
    if backend == "rocm":
        return "rocm" in text
    return bool(devices) and "llvmpipe" not in text


# --- helpers -----------------------------------------------------------------


def text_path() -> Path:
    """The fixed check text shipped with the toolbox."""
    return Path(str(resources.files("toolbox") / "data" / "check-text.txt"))


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def fa_value(fa) -> int | None:
    """Flash attention as rows store it: 1 on, 0 off, -1 auto (None stays None)."""
    if fa is None:
        return None
    if isinstance(fa, bool):
        return int(fa)
    s = str(fa).strip().lower()
    if s not in _FA:
        raise ToolboxError(f"unknown flash attention value {fa!r}", "use on, off or auto")
    return _FA[s]


def parse_kv(spec: str | None) -> list[tuple]:
    """'f16/f16,q8_0/q8_0,q4_0/q4_0/on' -> [(type_k, type_v) or (type_k, type_v, fa)]."""
    out = []
    for part in (spec or "f16/f16").split(","):
        part = part.strip()
        if not part:
            continue
        bits = [b.strip() for b in part.split("/")]
        if len(bits) == 1:
            bits = [bits[0], bits[0]]
        if len(bits) not in (2, 3) or not all(bits):
            raise ToolboxError(f"cannot read KV configuration {part!r}", "write TYPE_K/TYPE_V[/FA], e.g. q8_0/q8_0 or q4_0/q4_0/on")
        if len(bits) == 3:
            fa_value(bits[2])
        out.append(tuple(bits))
    return out


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _short_id(image_id: str) -> str:
    return image_id.split(":", 1)[-1][:12]


def _tail(text: str, n: int = 3) -> str:
    lines = [l for l in text.strip().splitlines() if l.strip()]
    bad = [l for l in lines if re.search(r"error|fail|abort|exception|unknown", l, re.I)]
    return " | ".join((bad or lines)[-n:])[:400]


def _run_tool(client, image: str, argv: list[str], *, mounts: dict, setup, env: dict | None, timeout_s: float, labels: dict) -> tuple[int | None, str, str, float]:
    """Run a llama.cpp tool in a fresh container: (exit code or None on timeout, stdout, stderr, seconds)."""
    from toolbox.runner import CONTAINER_LABEL, SHADER_CACHE_VOLUME

    environment = {k: v for k, v in (setup.env | (env or {})).items() if v != ""}
    volumes = {SHADER_CACHE_VOLUME: {"bind": "/cache", "mode": "rw"}, **mounts}
    t0 = time.monotonic()
    container = client.containers.run(
        image, argv, detach=True, environment=environment, devices=[f"{d}:{d}:rwm" for d in setup.devices],
        group_add=setup.group_add or None, security_opt=setup.security_opt or None, volumes=volumes,
        labels={CONTAINER_LABEL: "1", "org.strix-toolbox.check": "1", **labels}, ipc_mode="host" if setup.devices else None,
    )
    try:
        try:
            code = container.wait(timeout=timeout_s).get("StatusCode")
        except Exception:  # requests' ReadTimeout (and friends): the tool hangs
            code = None
            try:
                container.kill()
            except Exception:
                pass
        out = container.logs(stdout=True, stderr=False).decode(errors="replace")
        err = container.logs(stdout=False, stderr=True).decode(errors="replace")
    finally:
        try:
            container.remove(force=True)
        except Exception:
            pass
    return code, out, err, time.monotonic() - t0


# --- base logits ---------------------------------------------------------------


def base_path(settings, model_sha: str, image_id: str, ctx: int, chunks: int, text_sha: str) -> Path:
    return Path(settings.cache_dir) / KLD_DIR / f"{model_sha}-{_short_id(image_id)}-c{ctx}-n{chunks}-t{text_sha[:12]}.kld"


def ensure_base(settings, client, model: Path, *, cpu_image: str | None = None, ctx: int = DEFAULT_CTX,
                chunks: int = DEFAULT_CHUNKS, text: Path | None = None, model_sha: str | None = None) -> dict:
    """Base logits of `model` from the cpu image with f16 KV (flash attention off), cached; returns its description."""
    from toolbox.images import find_image
    from toolbox.model import model_identity
    from toolbox.runner import MODELS_MOUNT, device_setup

    model = Path(model).resolve()
    text = Path(text or text_path())
    cpu_image = cpu_image or find_image(settings, "cpu", client)
    if cpu_image is None:
        raise ToolboxError("no cpu image built from the current pins (the check's reference logits come from it)",
                           "run `invoke build cpu` (add --offline without a registry)")
    image_id = client.images.get(cpu_image).id
    model_sha = model_sha or model_identity(model, settings)["sha256"]
    text_sha = _sha256(text)
    path = base_path(settings, model_sha, image_id, ctx, chunks, text_sha)
    desc = {"path": str(path), "image": cpu_image, "image_id": image_id, "model": str(model), "model_sha256": model_sha,
            "type_k": "f16", "type_v": "f16", "flash_attn": 0, "ctx": ctx, "chunks": chunks, "text_sha256": text_sha}
    if path.exists():
        try:
            header = read_base_header(path)
            meta = _read_json(path.with_suffix(".json"))
            return desc | header | {"cached": True, "seconds": meta.get("seconds"), "created": meta.get("created")}
        except ToolboxError:
            path.unlink(missing_ok=True)  # damaged: write it again
    path.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".base-", dir=path.parent))
    try:
        os.chmod(work, 0o777)  # the container may run as another user
        argv = ["llama-perplexity", "-m", f"{MODELS_MOUNT}/{model.name}", "-f", TEXT_MOUNT, "-c", str(ctx), "--chunks", str(chunks),
                "-ctk", "f16", "-ctv", "f16", "-fa", "off", "--kl-divergence-base", f"{KLD_MOUNT}/base.kld"]
        mounts = {str(model.parent): {"bind": MODELS_MOUNT, "mode": "ro"}, str(text): {"bind": TEXT_MOUNT, "mode": "ro"},
                  str(work): {"bind": KLD_MOUNT, "mode": "rw"}}
        code, out, err, seconds = _run_tool(client, cpu_image, argv, mounts=mounts, setup=device_setup("cpu"), env=None,
                                            timeout_s=settings.group_timeout_s, labels={})
        produced = work / "base.kld"
        if code != 0 or not produced.exists():
            why = "timed out" if code is None else f"exited {code}"
            raise ToolboxError(f"writing the base logits of {model.name} with {cpu_image} failed: llama-perplexity {why}: {_tail(err + out)}",
                               "the model must hold at least 2 x ctx tokens of the check text; see the message")
        header = read_base_header(produced)
        if header["n_chunk"] < 1:
            raise ToolboxError(f"the check text gives no full window of {ctx} tokens for {model.name}", "use a smaller --ctx")
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        shutil.copyfile(produced, tmp)
        os.replace(tmp, path)
        created = _now()
        meta = desc | header | {"seconds": round(seconds, 3), "created": created, "ppl_line": _final_estimate(err + out)}
        _write_json(path.with_suffix(".json"), meta)
        return desc | header | {"cached": False, "seconds": round(seconds, 3), "created": created}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _final_estimate(text: str) -> str | None:
    m = re.search(r"Final estimate: PPL = .*", text)
    return m.group(0).strip() if m else None


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(Path(path).read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True, default=str))
    os.replace(tmp, path)


# --- one configuration ---------------------------------------------------------


def check_one(settings, client, *, backend: str, image: str, model: Path, base: dict, type_k: str = "f16", type_v: str = "f16",
              flash_attn=None, env: dict | None = None, allow_cpu_vulkan: bool = False, model_sha: str | None = None,
              log_dir: Path | None = None) -> dict:
    """Run one configuration against a base (see ensure_base); a failure is a result with `error`, not an exception."""
    from toolbox.model import model_identity
    from toolbox.runner import MODELS_MOUNT, device_setup

    model = Path(model).resolve()
    fa = fa_value(flash_attn if flash_attn is not None else "auto")
    setup = device_setup(backend, settings.host_root, allow_cpu_vulkan)
    try:
        image_id = client.images.get(image).id
    except Exception:
        image_id = None
    result = {
        "backend": backend, "image": image, "image_id": image_id, "model": str(model),
        "model_sha256": model_sha or model_identity(model, settings)["sha256"], "type_k": type_k, "type_v": type_v,
        "flash_attn": fa, "env": dict(env or {}), "target": setup.target, "ctx": base["ctx"], "chunks": base["n_chunk"],
        "scored_tokens": base["scored_tokens"], "ppl": None, "ppl_base": None, "ppl_ratio": None, "kld_mean": None,
        "kld_p99": None, "kld_max": None, "top1_agree": None, "rms_dp": None, "verdict": None, "thresholds": THRESHOLDS,
        "devices": [], "device_ok": None, "from_chunk_lines": False, "offloaded": None, "fa_used": None, "seconds": None, "error": None, "log": None,
        "checked_at": _now(),
        "base": {k: base.get(k) for k in ("path", "image", "image_id", "model", "model_sha256", "type_k", "type_v", "flash_attn",
                                          "ctx", "chunks", "text_sha256", "cached", "seconds")},
    }
    base_file = Path(base["path"])
    argv = ["llama-perplexity", "-v", "-m", f"{MODELS_MOUNT}/{model.name}", "-c", str(base["ctx"]), "-ctk", type_k, "-ctv", type_v,
            "-fa", _FA_FLAG[fa], "--kl-divergence", "--kl-divergence-base", f"{KLD_MOUNT}/{base_file.name}"]
    if backend != "cpu":
        argv += ["-ngl", "999"]
    mounts = {str(model.parent): {"bind": MODELS_MOUNT, "mode": "ro"}, str(base_file.parent): {"bind": KLD_MOUNT, "mode": "ro"}}
    for attempt in range(1 + RETRIES):
        code, out, err, seconds = _run_tool(client, image, argv, mounts=mounts, setup=setup, env=env, timeout_s=settings.group_timeout_s,
                                            labels={"org.strix-toolbox.backend": backend})
        figures = parse_kld_output(out + "\n" + err)
        complete = figures.get("kld_mean") is not None and figures.get("top1_agree") is not None and figures.get("chunks") == base["n_chunk"]
        if code != 0 or complete:
            break  # a failure is not retried; a run whose last lines were lost is (see parse_kld_output)
    result["seconds"] = round(seconds, 3)
    result["attempts"] = attempt + 1
    result.update({k: v for k, v in figures.items() if k != "chunks"})
    result["devices"] = devices_used(err + "\n" + out)
    result["device_ok"] = device_ok(backend, setup.target, result["devices"])
    offload = _OFFLOAD_RE.findall(err)
    result["offloaded"] = offload[-1] if offload else None
    fa_used = _FA_USED_RE.findall(err)
    result["fa_used"] = (fa_used[-1] == "enabled") if fa_used else None
    if log_dir is not None:
        log_dir = Path(log_dir)
        log_dir.mkdir(parents=True, exist_ok=True)
        log = log_dir / f"check-{backend}-{type_k}-{type_v}-fa{_FA_FLAG[fa]}-{result['model_sha256'][:8]}-{secrets.token_hex(2)}.log"
        log.write_text(" ".join(argv) + f"\nexit code: {code}\n\n--- stdout ---\n{out}\n--- stderr ---\n{err}", encoding="utf-8")
        result["log"] = str(log)
    if code != 0:
        result["error"] = ("timed out" if code is None else f"llama-perplexity exited {code}") + f": {_tail(err + out)}"
    elif result["kld_mean"] is None or result["top1_agree"] is None:
        result["error"] = f"llama-perplexity printed no KL divergence: {_tail(err + out)}"
    elif figures.get("chunks") != base["n_chunk"]:
        result["error"] = f"llama-perplexity's output ends after {figures.get('chunks') or 0} of {base['n_chunk']} chunks: {_tail(err + out)}"
    elif not result["device_ok"]:
        where = ", ".join(result["devices"]) or "the CPU"
        result["error"] = f"ran on {where}, not on the {setup.target} device the {backend} backend was meant for"
    else:
        result["verdict"] = verdict(result["kld_mean"], result["top1_agree"])
    return result


# --- public entry points -------------------------------------------------------


def _configs(kv) -> list[tuple[str, str, int]]:
    out = []
    for entry in kv:
        entry = tuple(entry)
        k, v = entry[0], entry[1]
        fa = fa_value(entry[2]) if len(entry) > 2 and entry[2] is not None else -1
        if v in QUANTIZED_NEED_FA and fa == 0:
            raise ToolboxError(f"quantized V cache ({v}) needs flash attention; the pinned llama.cpp fails to create the context with -fa off",
                               f"use {k}/{v}/on or {k}/{v}/auto")
        out.append((k, v, fa))
    return out


def run_check(settings, *, backends: list[str], models: list[Path], kv: list[tuple] = (("f16", "f16"),),
              allow_cpu_vulkan: bool = False, reference: Path | None = None, ctx: int = DEFAULT_CTX, chunks: int = DEFAULT_CHUNKS,
              images: dict | None = None, env: dict | None = None, on_result=None) -> list[dict]:
    """Check each backend x model x KV configuration against the cpu image's f16-KV logits.

    kv: (type_k, type_v) or (type_k, type_v, flash_attn) with flash_attn on/off/auto (default auto).
    reference: a model whose logits are the base for every model (default: each model its own).
    images: backend -> image tag (default: the image built from the current pins, as bench uses).
    Returns one dict per configuration (see check_one); `verdict` is None and `error` says why when
    a configuration could not be checked.
    """
    from toolbox.images import docker_client, find_image
    from toolbox.model import model_identity
    from toolbox.runner import device_setup

    client = docker_client()
    configs = _configs(kv)
    for b in backends:
        device_setup(b, settings.host_root, allow_cpu_vulkan)  # a missing device is an error before any container starts
    tags = {}
    for b in list(backends) + ["cpu"]:
        tag = (images or {}).get(b) or find_image(settings, b, client)
        if tag is None:
            raise ToolboxError(f"no {b} image built from the current pins" + (" (the check's reference logits come from the cpu image)" if b == "cpu" else ""),
                               f"run `invoke build {b}`" + (" (add --offline without a registry)" if b != "rocm" else ""))
        tags[b] = tag
    out = []
    ref_base = ensure_base(settings, client, reference, cpu_image=tags["cpu"], ctx=ctx, chunks=chunks) if reference else None
    for m in models:
        m = Path(m).resolve()
        sha = model_identity(m, settings)["sha256"]
        base = ref_base or ensure_base(settings, client, m, cpu_image=tags["cpu"], ctx=ctx, chunks=chunks, model_sha=sha)
        for b in backends:
            for k, v, fa in configs:
                r = check_one(settings, client, backend=b, image=tags[b], model=m, base=base, type_k=k, type_v=v, flash_attn=fa,
                              env=env, allow_cpu_vulkan=allow_cpu_vulkan, model_sha=sha,
                              log_dir=Path(settings.cache_dir) / "logs" / "check")
                out.append(r)
                if on_result:
                    on_result(r)
    return out


def quality_of(result: dict) -> dict:
    """The `quality` field of a results row, from a check result (docs/results-schema.md)."""
    keys = ("verdict", "ppl", "ppl_base", "kld_mean", "kld_p99", "top1_agree", "error", "image", "ctx", "chunks", "checked_at")
    q = {k: result.get(k) for k in keys}
    q["base_model_sha256"] = (result.get("base") or {}).get("model_sha256")
    return q


def quality_key(backend, model_sha256, type_k, type_v, flash_attn, env) -> str:
    """Identity a quality result shares with the bench rows it belongs to."""
    fa = None if flash_attn is None else fa_value(flash_attn)
    return json.dumps([backend, model_sha256, type_k, type_v, fa, {k: v for k, v in sorted((env or {}).items()) if v != ""}])


def _row_key(row: dict) -> str:
    return quality_key(row.get("backend"), row.get("model_sha256"), row.get("type_k"), row.get("type_v"), row.get("flash_attn"), row.get("env"))


def attach_quality(settings, run_id: str, *, ctx: int = DEFAULT_CTX, chunks: int = DEFAULT_CHUNKS, on_result=None) -> list[dict]:
    """Check every distinct (backend, model, type_k, type_v, flash_attn, env) of a finished run's ok rows.

    Uses the run's own images (by id) and models (by the recorded path, verified by sha256) and the
    run's --allow-cpu-vulkan; appends one line per configuration to results/<run_id>/quality.jsonl
    (never rewritten: a later line for the same key supersedes an earlier one in merge_quality).
    """
    from toolbox import results
    from toolbox.images import docker_client, find_image
    from toolbox.model import model_identity

    meta, rows = results.load_run(settings.results_dir, run_id)
    run_dir = Path(settings.results_dir) / run_id
    models = {m.get("sha256"): m for m in meta.get("models", [])}
    images = meta.get("images", {})
    allow_cpu_vulkan = bool(meta.get("allow_cpu_vulkan"))
    combos: dict[str, dict] = {}
    for r in rows:
        if r.get("status") != "ok" or not r.get("backend") or not r.get("model_sha256"):
            continue
        combos.setdefault(_row_key(r), r)
    if not combos:
        raise ToolboxError(f"run {run_id} has no measured rows to check", "check a run made by `invoke bench`")
    client = docker_client()
    cpu = (images.get("cpu") or {})
    cpu_image = cpu.get("id") if cpu.get("id") and _has_image(client, cpu.get("id")) else find_image(settings, "cpu", client)
    bases: dict[str, dict] = {}
    out = []
    for key, r in combos.items():
        sha, backend = r["model_sha256"], r["backend"]
        info = images.get(backend) or {}
        image = info.get("id") if info.get("id") and _has_image(client, info["id"]) else r.get("image")
        m = models.get(sha)
        fa = r.get("flash_attn")
        if m is None or not Path(m["path"]).is_file() or model_identity(Path(m["path"]), settings)["sha256"] != sha:
            res = {"backend": backend, "model_sha256": sha, "type_k": r.get("type_k"), "type_v": r.get("type_v"), "flash_attn": fa,
                   "env": r.get("env") or {}, "verdict": None, "thresholds": THRESHOLDS, "image": image, "checked_at": _now(),
                   "error": f"model {sha[:12]} is no longer at {m['path'] if m else '?'} (or changed)", "base": None}
        elif image is None or not _has_image(client, image):
            res = {"backend": backend, "model_sha256": sha, "type_k": r.get("type_k"), "type_v": r.get("type_v"), "flash_attn": fa,
                   "env": r.get("env") or {}, "verdict": None, "thresholds": THRESHOLDS, "image": image, "checked_at": _now(),
                   "error": f"the run's {backend} image is gone", "base": None}
        else:
            if sha not in bases:
                if cpu_image is None:
                    raise ToolboxError("no cpu image for the check's reference logits", "run `invoke build cpu` (add --offline without a registry)")
                bases[sha] = ensure_base(settings, client, Path(m["path"]), cpu_image=cpu_image, ctx=ctx, chunks=chunks, model_sha=sha)
            res = check_one(settings, client, backend=backend, image=image, model=Path(m["path"]), base=bases[sha],
                            type_k=r.get("type_k") or "f16", type_v=r.get("type_v") or "f16", flash_attn=-1 if fa is None else fa,
                            env=r.get("env") or {}, allow_cpu_vulkan=allow_cpu_vulkan, model_sha=sha, log_dir=run_dir / "logs")
            res["flash_attn"] = fa  # the row's value, so the key matches even for rows without one
        res["run_id"] = run_id
        res["key"] = key
        _append_jsonl(run_dir / QUALITY_FILE, res)
        out.append(res)
        if on_result:
            on_result(res)
    return out


def _has_image(client, ref: str) -> bool:
    try:
        client.images.get(ref)
        return True
    except Exception:
        return False


def _append_jsonl(path: Path, record: dict) -> None:
    line = json.dumps(record, ensure_ascii=False, default=str) + "\n"
    with open(path, "ab+") as f:
        f.seek(0, os.SEEK_END)
        if f.tell() > 0:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                f.write(b"\n")
        f.write(line.encode("utf-8"))
        f.flush()
        os.fsync(f.fileno())


def load_quality(run_dir: Path) -> dict[str, dict]:
    """key -> the latest check result in results/<run_id>/quality.jsonl (bad lines skipped)."""
    path = Path(run_dir) / QUALITY_FILE
    out: dict[str, dict] = {}
    if not path.exists():
        return out
    for line in path.read_bytes().split(b"\n"):
        if not line.strip():
            continue
        try:
            rec = json.loads(line.decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            continue
        if isinstance(rec, dict):
            key = rec.get("key") or quality_key(rec.get("backend"), rec.get("model_sha256"), rec.get("type_k"), rec.get("type_v"),
                                                rec.get("flash_attn"), rec.get("env"))
            out[key] = rec
    return out


def merge_quality(rows: list[dict], run_dir: Path) -> list[dict]:
    """Rows with `quality` filled from quality.jsonl where the row has none (same backend, model, K, V, FA, env)."""
    found = load_quality(run_dir)
    if not found:
        return rows
    out = []
    for r in rows:
        if r.get("quality") is None and r.get("status", "ok") == "ok":
            q = found.get(_row_key(r))
            if q is not None:
                r = dict(r, quality=quality_of(q))
        out.append(r)
    return out


# --- display -------------------------------------------------------------------

_STYLE = {"same": "green", "degraded": "yellow", "broken": "bold red"}


def _fmt(x, spec: str) -> str:
    if x is None:
        return ""
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    return format(x, spec)


def _kld(x) -> str:
    """KL divergence compactly: 0, 1.5e-05, 0.0306, 1.23 (llama-perplexity prints 6 decimals)."""
    if x is None:
        return ""
    if not math.isfinite(x):
        return str(x)
    if x == 0 or abs(x) >= 0.001:
        return f"{x:.3g}" if abs(x) < 100 else f"{x:.1f}"
    return f"{x:.1e}"


def render_table(results_: list[dict], title: str | None = None):
    """A rich table of check results: one line per configuration, verdict coloured (model column when several)."""
    from rich import box
    from rich.table import Table

    several = len({r.get("model_sha256") for r in results_}) > 1
    t = Table(title=title or "quality check: KL divergence to the cpu image's f16-KV logits", box=box.SIMPLE_HEAD, pad_edge=False)
    cols = ["backend", *(["model"] if several else []), "K/V", "fa", "PPL", "KLD", "p99", "top-1", "verdict"]
    for name in cols:
        t.add_column(name, justify="right" if name in ("PPL", "KLD", "p99", "top-1") else "left",
                     no_wrap=True)
    for r in results_:
        fa = {1: "on", 0: "off", -1: "auto"}.get(r.get("flash_attn"), str(r.get("flash_attn")))
        v = r.get("verdict")
        shown = f"[{_STYLE.get(v, '')}]{v}[/]" if v else "[red]not checked[/]"
        top1 = r.get("top1_agree")
        cells = [str(r.get("backend")), *([Path(str(r.get("model") or "")).name or str(r.get("model_sha256"))[:12]] if several else []),
                 f"{r.get('type_k')}/{r.get('type_v')}", fa, _fmt(r.get("ppl"), ".5g"), _kld(r.get("kld_mean")),
                 _kld(r.get("kld_p99")), "" if top1 is None else _fmt(100 * top1, ".1f") + "%", shown]
        t.add_row(*cells)
    return t


def describe_base(base: dict, ppl_base: float | None = None) -> str:
    """One line on the reference a set of results was measured against."""
    return (f"base: {base.get('image')} with f16 K and V, flash attention off, model {str(base.get('model_sha256'))[:12]}, "
            f"{base.get('chunks')} windows of {base.get('ctx')} tokens of toolbox/data/check-text.txt"
            + (f", PPL {ppl_base:.2f}" if ppl_base is not None else "") + (" (cached)" if base.get("cached") else ""))


def error_lines(results_: list[dict]) -> list[str]:
    """Why each configuration that has no verdict could not be checked."""
    return [f"{r.get('backend')} {r.get('type_k')}/{r.get('type_v')} on {Path(str(r.get('model') or r.get('model_sha256'))).name}: {r['error']}"
            + (f" (log: {r['log']})" if r.get("log") else "") for r in results_ if r.get("verdict") is None and r.get("error")]
