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
appends the results to results/<run_id>/quality.jsonl (toolbox.store.quality), which puts them into
the rows' `quality` field for readers. base.py makes the base logits, verdict.py parses and judges.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from toolbox.build.choose import build_hint
from toolbox.build.images import find_image
from toolbox.build.pins import load_pins
from toolbox.engine import devicelock
from toolbox.engine.client import docker_client, image_or_none
from toolbox.engine.container import ContainerSpec, in_container, model_mount, run_to_end, tail_line
from toolbox.engine.devices import device_setup, devices_in_log, log_device_ok
from toolbox.errors import ToolboxError
from toolbox.files import now_iso
from toolbox.llamacpp import FA_NAMES, fa_value, kv_reject_reason
from toolbox.model import model_identity
from toolbox.quality.base import CHECK_LABELS, DEFAULT_CHUNKS, DEFAULT_CTX, KLD_MOUNT, ensure_base
from toolbox.quality.verdict import THRESHOLDS, parse_kld_output, verdict
from toolbox.store import quality as quality_store
from toolbox.store.runs import load_run

RETRIES = 2  # runs again when llama-perplexity's last output lines were lost (see parse_kld_output)
_OFFLOAD_RE = re.compile(r"offloaded (\d+/\d+) layers to GPU")
_FA_USED_RE = re.compile(r"Flash Attention (enabled|disabled)")


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


@dataclass
class CheckConfig:
    """One configuration to check: the image of a backend, a model, the KV cache types, flash attention, environment."""

    backend: str
    image: str
    model: Path
    type_k: str = "f16"
    type_v: str = "f16"
    flash_attn: object = None  # on / off / auto in any spelling; None = auto
    env: dict = field(default_factory=dict)
    model_sha: str | None = None


def check_one(settings, client, config: CheckConfig, base: dict, *, allow_cpu_vulkan: bool = False, log_dir: Path | None = None) -> dict:
    """Run one configuration against a base (see ensure_base); a failure is a result with `error`, not an exception."""
    c = config
    model = Path(c.model).resolve()
    fa = fa_value(c.flash_attn if c.flash_attn is not None else "auto")
    setup = device_setup(runs_on(settings, c.backend), settings.host_root, allow_cpu_vulkan)
    found = image_or_none(client, c.image)
    result = {
        "backend": c.backend, "image": c.image, "image_id": found.id if found is not None else None, "model": str(model),
        "model_sha256": c.model_sha or model_identity(model, settings)["sha256"], "type_k": c.type_k, "type_v": c.type_v,
        "flash_attn": fa, "env": dict(c.env or {}), "target": setup.target, "ctx": base["ctx"], "chunks": base["n_chunk"],
        "scored_tokens": base["scored_tokens"], "ppl": None, "ppl_base": None, "ppl_ratio": None, "kld_mean": None,
        "kld_p99": None, "kld_max": None, "top1_agree": None, "rms_dp": None, "verdict": None, "thresholds": THRESHOLDS,
        "devices": [], "device_ok": None, "from_chunk_lines": False, "offloaded": None, "fa_used": None, "seconds": None,
        "error": None, "log": None, "checked_at": now_iso(),
        "base": {k: base.get(k) for k in ("path", "image", "image_id", "model", "model_sha256", "type_k", "type_v", "flash_attn",
                                          "ctx", "chunks", "text_sha256", "cached", "seconds")},
    }  # fmt: skip
    base_file = Path(base["path"])
    argv = [
        "llama-perplexity",
        "-v",
        "-m",
        in_container(model),
        "-c",
        str(base["ctx"]),
        "-ctk",
        c.type_k,
        "-ctv",
        c.type_v,
        "-fa",
        FA_NAMES[fa],
        "--kl-divergence",
        "--kl-divergence-base",
        f"{KLD_MOUNT}/{base_file.name}",
    ]
    if c.backend != "cpu":
        argv += ["-ngl", "999"]
    spec = ContainerSpec(
        c.image,
        argv,
        setup,
        dict(c.env or {}),
        model_mount(model) | {str(base_file.parent): (KLD_MOUNT, "ro")},
        CHECK_LABELS | {"org.strix-toolbox.backend": c.backend},
    )
    attempts = 0
    for _ in range(1 + RETRIES):
        attempts += 1
        done = run_to_end(client, spec, timeout_s=settings.group_timeout_s)
        code, out, err = done.exit_code, done.stdout, done.stderr
        figures = parse_kld_output(out + "\n" + err)
        complete = (
            figures.get("kld_mean") is not None and figures.get("top1_agree") is not None and figures.get("chunks") == base["n_chunk"]
        )
        if code != 0 or complete:
            break  # a failure is not retried; a run whose last lines were lost is (see parse_kld_output)
    result["seconds"] = round(done.seconds, 3)
    result["attempts"] = attempts
    result.update({k: v for k, v in figures.items() if k != "chunks"})
    result["devices"] = devices_in_log(err + "\n" + out)
    result["device_ok"] = log_device_ok(setup.backend, setup.target, result["devices"])  # cpu@<tree12> runs as cpu
    offload = _OFFLOAD_RE.findall(err)
    result["offloaded"] = offload[-1] if offload else None
    fa_used = _FA_USED_RE.findall(err)
    result["fa_used"] = (fa_used[-1] == "enabled") if fa_used else None
    if log_dir is not None:
        log_dir = Path(log_dir)
        log_dir.mkdir(parents=True, exist_ok=True)
        log = log_dir / f"check-{c.backend}-{c.type_k}-{c.type_v}-fa{FA_NAMES[fa]}-{result['model_sha256'][:8]}-{secrets.token_hex(2)}.log"
        log.write_text(" ".join(argv) + f"\nexit code: {code}\n\n--- stdout ---\n{out}\n--- stderr ---\n{err}", encoding="utf-8")
        result["log"] = str(log)
    why = tail_line(err + out)
    if code != 0:
        result["error"] = ("timed out" if code is None else f"llama-perplexity exited {code}") + f": {why}"
    elif result["kld_mean"] is None or result["top1_agree"] is None:
        result["error"] = f"llama-perplexity printed no KL divergence: {why}"
    elif figures.get("chunks") != base["n_chunk"]:
        result["error"] = f"llama-perplexity's output ends after {figures.get('chunks') or 0} of {base['n_chunk']} chunks: {why}"
    elif not result["device_ok"]:
        where = ", ".join(result["devices"]) or "the CPU"
        result["error"] = f"ran on {where}, not on the {setup.target} device the {c.backend} backend was meant for"
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
        if kv_reject_reason(v, fa):
            raise ToolboxError(
                f"quantized V cache ({v}) needs flash attention; the pinned llama.cpp fails to create the context with -fa off",
                f"use {k}/{v}/on or {k}/{v}/auto",
            )
        out.append((k, v, fa))
    return out


def _image_for(settings, client, backend: str, images: dict | None) -> str:
    tag = (images or {}).get(backend) or find_image(settings, backend, client)
    if tag is None:
        raise ToolboxError(
            f"no {backend} image built from the current pins"
            + (" (the check's reference logits come from the cpu image)" if backend == "cpu" else ""),
            build_hint(backend, build_flag=False),
        )
    return tag


def run_check(
    settings,
    *,
    backends: list[str],
    models: list[Path],
    kv: list[tuple] = (("f16", "f16"),),
    allow_cpu_vulkan: bool = False,
    reference: Path | None = None,
    ctx: int = DEFAULT_CTX,
    chunks: int = DEFAULT_CHUNKS,
    images: dict | None = None,
    env: dict | None = None,
    on_result=None,
    wait: bool = True,
) -> list[dict]:
    """Check each backend x model x KV configuration against the cpu image's f16-KV logits.

    Holds the devices it computes on (engine.devicelock): waits for a benchmark on them, or fails at once without `wait`.

    kv: (type_k, type_v) or (type_k, type_v, flash_attn) with flash_attn on/off/auto (default auto).
    reference: a model whose logits are the base for every model (default: each model its own).
    images: backend -> image tag (default: the image built from the current pins, as bench uses).
    Returns one dict per configuration (see check_one); `verdict` is None and `error` says why when
    a configuration could not be checked.
    """
    client = docker_client()
    configs = _configs(kv)
    # a missing device is an error before any container starts
    setups = [device_setup(runs_on(settings, b), settings.host_root, allow_cpu_vulkan) for b in backends] + [device_setup("cpu")]
    tags = {b: _image_for(settings, client, b, images) for b in [*backends, "cpu"]}
    out = []
    with devicelock.hold(settings.lock_dir, setups, what="invoke check", wait=wait):
        ref_base = ensure_base(settings, client, reference, cpu_image=tags["cpu"], ctx=ctx, chunks=chunks) if reference else None
        for m in models:
            m = Path(m).resolve()
            sha = model_identity(m, settings)["sha256"]
            base = ref_base or ensure_base(settings, client, m, cpu_image=tags["cpu"], ctx=ctx, chunks=chunks, model_sha=sha)
            for b in backends:
                for k, v, fa in configs:
                    r = check_one(
                        settings,
                        client,
                        CheckConfig(b, tags[b], m, k, v, fa, dict(env or {}), sha),
                        base,
                        allow_cpu_vulkan=allow_cpu_vulkan,
                        log_dir=Path(settings.cache_dir) / "logs" / "check",
                    )
                    out.append(r)
                    if on_result:
                        on_result(r)
    return out


def _not_checked(r: dict, image, error: str) -> dict:
    return {
        "backend": r["backend"],
        "model_sha256": r["model_sha256"],
        "type_k": r.get("type_k"),
        "type_v": r.get("type_v"),
        "flash_attn": r.get("flash_attn"),
        "env": r.get("env") or {},
        "verdict": None,
        "thresholds": THRESHOLDS,
        "image": image,
        "checked_at": now_iso(),
        "error": error,
        "base": None,
    }


def attach_quality(
    settings, run_id: str, *, ctx: int = DEFAULT_CTX, chunks: int = DEFAULT_CHUNKS, on_result=None, wait: bool = True
) -> list[dict]:
    """Check every distinct (backend, model, type_k, type_v, flash_attn, env) of a finished run's ok rows.

    Uses the run's own images (by id) and models (by the recorded path, verified by sha256) and the
    run's --allow-cpu-vulkan; appends one line per configuration to results/<run_id>/quality.jsonl
    (never rewritten: a later line for the same key supersedes an earlier one).
    """
    meta, rows = load_run(settings.results_dir, run_id)
    run_dir = Path(settings.results_dir) / run_id
    models = {m.get("sha256"): m for m in meta.get("models", [])}
    images = meta.get("images", {})
    allow_cpu_vulkan = bool(meta.get("allow_cpu_vulkan"))
    combos: dict[str, dict] = {}
    for r in rows:
        if r.get("status") == "ok" and r.get("backend") and r.get("model_sha256"):
            combos.setdefault(quality_store.row_key(r), r)
    if not combos:
        raise ToolboxError(f"run {run_id} has no measured rows to check", "check a run made by `invoke bench`")
    client = docker_client()

    def present(ref):
        return bool(ref) and image_or_none(client, ref) is not None

    cpu_id = (images.get("cpu") or {}).get("id")
    cpu_image = cpu_id if present(cpu_id) else find_image(settings, "cpu", client)
    bases: dict[str, dict] = {}
    out = []
    used = {r["backend"] for r in combos.values()} | {"cpu"}
    setups = [device_setup(runs_on(settings, b), settings.host_root, allow_cpu_vulkan) for b in used]
    with devicelock.hold(settings.lock_dir, setups, what=f"invoke check of run {run_id}", wait=wait):
        for key, r in combos.items():
            sha, backend = r["model_sha256"], r["backend"]
            image_id = (images.get(backend) or {}).get("id")
            image = image_id if present(image_id) else r.get("image")
            m = models.get(sha)
            fa = r.get("flash_attn")
            if m is None or not Path(m["path"]).is_file() or model_identity(Path(m["path"]), settings)["sha256"] != sha:
                res = _not_checked(r, image, f"model {sha[:12]} is no longer at {m['path'] if m else '?'} (or changed)")
            elif not present(image):
                res = _not_checked(r, image, f"the run's {backend} image is gone")
            else:
                if sha not in bases:
                    if cpu_image is None:
                        raise ToolboxError(
                            "no cpu image for the check's reference logits",
                            build_hint("cpu", build_flag=False),
                        )
                    bases[sha] = ensure_base(settings, client, Path(m["path"]), cpu_image=cpu_image, ctx=ctx, chunks=chunks, model_sha=sha)
                config = CheckConfig(
                    backend,
                    image,
                    Path(m["path"]),
                    r.get("type_k") or "f16",
                    r.get("type_v") or "f16",
                    -1 if fa is None else fa,
                    r.get("env") or {},
                    sha,
                )
                res = check_one(settings, client, config, bases[sha], allow_cpu_vulkan=allow_cpu_vulkan, log_dir=run_dir / "logs")
                res["flash_attn"] = fa  # the row's value, so the key matches even for rows without one
            res["run_id"] = run_id
            res["key"] = key
            quality_store.append(run_dir, res)
            out.append(res)
            if on_result:
                on_result(res)
    return out


def runs_on(settings, backend: str) -> str:
    """The backend whose devices an image uses (rocm-debian -> rocm, vulkan:mesa-sid -> vulkan)."""
    try:
        return load_pins(settings.pins_file).runs_on(backend)
    except ToolboxError:
        return backend.partition(":")[0]
