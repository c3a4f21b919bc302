"""Base logits: what the cpu image with f16 K and V (flash attention off) computes on the check text.

`llama-perplexity --kl-divergence-base FILE` saves the next-token log-probabilities of the last half
of each window of `ctx` tokens (`chunks` windows) of toolbox/data/check-text.txt. Every configuration
is compared with them. Cached in cache_dir/kld-base/<model sha256>-<cpu image id>-c<ctx>-n<chunks>-t<text sha>.kld
with a .json beside it (how and when it was made).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import tempfile
from importlib import resources
from pathlib import Path

from toolbox.build.images import find_image
from toolbox.engine.container import ContainerSpec, in_container, model_mount, run_to_end, tail_line
from toolbox.errors import ToolboxError
from toolbox.files import now_iso, sha256_file, write_json_atomic
from toolbox.model import model_identity
from toolbox.quality.verdict import final_estimate, read_base_header

DEFAULT_CTX = 128  # tokens per window; the last half of each window is scored
DEFAULT_CHUNKS = 8  # windows: 8 x 63 = 504 scored tokens (llama-perplexity prints its statistics from 100 on)
KLD_DIR = "kld-base"
TEXT_MOUNT = "/check/text.txt"
KLD_MOUNT = "/kld"
CHECK_LABELS = {"org.strix-toolbox.check": "1"}


def text_path() -> Path:
    """The fixed check text shipped with the toolbox."""
    return Path(str(resources.files("toolbox") / "data" / "check-text.txt"))


def _short_id(image_id: str) -> str:
    return image_id.split(":", 1)[-1][:12]


def base_path(settings, model_sha: str, image_id: str, ctx: int, chunks: int, text_sha: str) -> Path:
    return Path(settings.cache_dir) / KLD_DIR / f"{model_sha}-{_short_id(image_id)}-c{ctx}-n{chunks}-t{text_sha[:12]}.kld"


def ensure_base(
    settings,
    client,
    model: Path,
    *,
    cpu_image: str | None = None,
    ctx: int = DEFAULT_CTX,
    chunks: int = DEFAULT_CHUNKS,
    text: Path | None = None,
    model_sha: str | None = None,
) -> dict:
    """Base logits of `model` from the cpu image with f16 KV (flash attention off), cached; returns its description."""
    model = Path(model).resolve()
    text = Path(text or text_path())
    cpu_image = cpu_image or find_image(settings, "cpu", client)
    if cpu_image is None:
        raise ToolboxError(
            "no cpu image built from the current pins (the check's reference logits come from it)",
            "run `invoke build cpu` (it builds offline by itself when no registry answers)",
        )
    image_id = client.images.get(cpu_image).id
    model_sha = model_sha or model_identity(model, settings)["sha256"]
    text_sha = sha256_file(text)
    path = base_path(settings, model_sha, image_id, ctx, chunks, text_sha)
    desc = {
        "path": str(path),
        "image": cpu_image,
        "image_id": image_id,
        "model": str(model),
        "model_sha256": model_sha,
        "type_k": "f16",
        "type_v": "f16",
        "flash_attn": 0,
        "ctx": ctx,
        "chunks": chunks,
        "text_sha256": text_sha,
    }
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
        argv = [
            "llama-perplexity",
            "-m",
            in_container(model),
            "-f",
            TEXT_MOUNT,
            "-c",
            str(ctx),
            "--chunks",
            str(chunks),
            "-ctk",
            "f16",
            "-ctv",
            "f16",
            "-fa",
            "off",
            "--kl-divergence-base",
            f"{KLD_MOUNT}/base.kld",
        ]
        mounts = model_mount(model) | {str(text): (TEXT_MOUNT, "ro"), str(work): (KLD_MOUNT, "rw")}
        done = run_to_end(client, ContainerSpec(cpu_image, argv, mounts=mounts, labels=CHECK_LABELS), timeout_s=settings.group_timeout_s)
        code, out, err, seconds = done.exit_code, done.stdout, done.stderr, done.seconds
        produced = work / "base.kld"
        if code != 0 or not produced.exists():
            why = "timed out" if code is None else f"exited {code}"
            raise ToolboxError(
                f"writing the base logits of {model.name} with {cpu_image} failed: llama-perplexity {why}: {tail_line(err + out)}",
                "the model must hold at least 2 x ctx tokens of the check text; see the message",
            )
        header = read_base_header(produced)
        if header["n_chunk"] < 1:
            raise ToolboxError(f"the check text gives no full window of {ctx} tokens for {model.name}", "use a smaller --ctx")
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        shutil.copyfile(produced, tmp)
        os.replace(tmp, path)
        created = now_iso()
        meta = desc | header | {"seconds": round(seconds, 3), "created": created, "ppl_line": final_estimate(err + out)}
        write_json_atomic(path.with_suffix(".json"), meta, indent=None)
        return desc | header | {"cached": False, "seconds": round(seconds, 3), "created": created}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(Path(path).read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}
