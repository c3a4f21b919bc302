"""docker compose support: the matrix presets as llama-bench argument lines (the compose runner has
no Python), and the .env with the host's numeric device GIDs that the containers need."""

from __future__ import annotations

import hashlib
import os
import socket
from pathlib import Path

from toolbox.run.matrix import expand, load_matrix, presets
from toolbox.settings import REPO_ROOT, Settings

COMPOSE_DIR = REPO_ROOT / "containers" / "compose"
MODEL_PLACEHOLDER = "/models/MODEL"


def matrix_lines(name: str) -> list[str]:
    """One line per group: `[VAR=value ...] <llama-bench args without -m>`; the same plan `invoke bench` runs."""
    spec, source, text = load_matrix(name)
    plan = expand(spec, source, text, ["compose"], [MODEL_PLACEHOLDER])
    lines = []
    for g in plan.groups:
        argv = g.args(MODEL_PLACEHOLDER, plan.repetitions, plan.warmup)
        argv = argv[3:]  # drop "llama-bench -m MODEL"
        env = [f"{k}={v}" for k, v in g.env.items() if v]
        lines.append(" ".join(env + argv))
    return lines


def render_matrices() -> dict[str, str]:
    head = "# generated from toolbox/matrices/{name}.toml by `invoke compose-env --write-matrices`; do not edit\n"
    return {f"{name}.args": head.format(name=name) + "\n".join(matrix_lines(name)) + "\n" for name in sorted(presets())}


def write_matrices(dest: Path = COMPOSE_DIR / "matrices") -> list[Path]:
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for fname, text in render_matrices().items():
        (dest / fname).write_text(text)
        out.append(dest / fname)
    return out


def compose_env(settings: Settings) -> str:
    """The .env that compose.yaml reads: the user's UID/GID (results belong to them), numeric GIDs of the
    GPU device files, machine identity, models, results and shader-cache directories.

    The results and shader-cache directories are made here, by the user: a directory Docker makes
    for a bind mount belongs to root."""
    from toolbox.host.facts import device_gids

    gids = device_gids(settings.host_root)
    render = next((g for p, g in gids.items() if "renderD" in p or p.endswith("kfd")), None)
    video = next((g for p, g in gids.items() if "/card" in p), None)
    machine_id = settings.host_root / "etc" / "machine-id"
    host_id = hashlib.sha256(machine_id.read_bytes().strip()).hexdigest()[:16] if machine_id.is_file() else ""
    lines = ["# written by `invoke compose-env`: the host's numeric GIDs of /dev/kfd and /dev/dri/* (group names inside the image differ)"]
    if render is None:
        lines.append("# no /dev/kfd or /dev/dri/renderD* on this host: only the cpu profile can run here")
    else:
        lines.append(f"RENDER_GID={render}")
    if video is not None and video != render:
        lines.append(f"VIDEO_GID={video}")
    shader_cache, rpc_cache = settings.cache_dir / "shader-cache", settings.cache_dir / "rpc-cache"
    for d in (settings.results_dir, shader_cache, rpc_cache):
        d.mkdir(parents=True, exist_ok=True)
    lines += [
        "# the containers run as this user: the results they write are yours",
        f"TOOLBOX_UID={os.getuid()}",
        f"TOOLBOX_GID={os.getgid()}",
        f"HOST_NAME={socket.gethostname()}",
        f"HOST_ID={host_id}",
        f"MODELS_DIR={settings.cache_dir / 'models'}",
        f"RESULTS_DIR={settings.results_dir}",
        f"SHADER_CACHE_DIR={shader_cache}",
        f"RPC_CACHE_DIR={rpc_cache}",  # the rpc-worker services' tensor cache (docs/clusters.md)
        "MATRIX=default",
    ]
    return "\n".join(lines) + "\n"
