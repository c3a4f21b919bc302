"""Shared test helpers: the fixture runs' ids, and a numpy reference forward pass of the tiny llama."""

from __future__ import annotations

from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parent / "data"
# Runs written by tests/data/runs/generate.py (realistic numbers, made up; see its README).
FIXTURE_RUNS = DATA / "runs"
KV, DEPTH, NEW_KV, IMPORTED, FAILED = (
    "20261126T090000Z-a11a11",
    "20261126T093000Z-b22b22",
    "20261126T100000Z-c33c33",
    "20261120T080000Z-d44d44",
    "20261126T110000Z-e55e55",
)


def _rms_norm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def _rope_norm(x: np.ndarray, pos: np.ndarray, base: float) -> np.ndarray:
    """llama.cpp's rope type NORM (the llama one): rotates adjacent pairs. x: (tokens, heads, head_dim)."""
    d = x.shape[-1]
    theta = pos[:, None] * base ** (-np.arange(0, d, 2) / d)
    c, s = np.cos(theta)[:, None, :], np.sin(theta)[:, None, :]
    a, b = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2], out[..., 1::2] = a * c - b * s, a * s + b * c
    return out


def reference_logits(path: Path, token_ids: list[int]) -> np.ndarray:
    """Logits (tokens x n_vocab) of a llama GGUF with F16/F32 weights, computed in float64 numpy.

    A plain reading of llama.cpp's llama graph (RMS norm, rope NORM, grouped-query causal attention,
    SwiGLU feed-forward, no rope scaling): the ground truth a backend's output is checked against.
    Meant for the tiny model (whole weights in memory as float64).
    """
    import gguf

    r = gguf.GGUFReader(path)

    def kv(key):
        return r.fields[key].contents()

    w = {t.name: np.asarray(t.data, dtype=np.float64) for t in r.tensors}
    e, n_layer = kv("llama.embedding_length"), kv("llama.block_count")
    nh, nkv = kv("llama.attention.head_count"), kv("llama.attention.head_count_kv")
    eps, base = kv("llama.attention.layer_norm_rms_epsilon"), kv("llama.rope.freq_base")
    hd, n = e // nh, len(token_ids)
    pos = np.arange(n, dtype=np.float64)
    x = w["token_embd.weight"][list(token_ids)]
    mask = np.triu(np.full((n, n), -np.inf), 1)
    for i in range(n_layer):
        p = f"blk.{i}."
        h = _rms_norm(x, w[p + "attn_norm.weight"], eps)
        q = _rope_norm((h @ w[p + "attn_q.weight"].T).reshape(n, nh, hd), pos, base)
        k = _rope_norm((h @ w[p + "attn_k.weight"].T).reshape(n, nkv, hd), pos, base)
        v = (h @ w[p + "attn_v.weight"].T).reshape(n, nkv, hd)
        k, v = np.repeat(k, nh // nkv, axis=1), np.repeat(v, nh // nkv, axis=1)
        att = np.einsum("qhd,khd->hqk", q, k) / np.sqrt(hd) + mask
        att = np.exp(att - att.max(-1, keepdims=True))
        att /= att.sum(-1, keepdims=True)
        x = x + np.einsum("hqk,khd->qhd", att, v).reshape(n, e) @ w[p + "attn_output.weight"].T
        h = _rms_norm(x, w[p + "ffn_norm.weight"], eps)
        g = h @ w[p + "ffn_gate.weight"].T
        x = x + ((g / (1.0 + np.exp(-g))) * (h @ w[p + "ffn_up.weight"].T)) @ w[p + "ffn_down.weight"].T
    return _rms_norm(x, w["output_norm.weight"], eps) @ w["output.weight"].T


def log_softmax(logits: np.ndarray) -> np.ndarray:
    m = logits.max(axis=-1, keepdims=True)
    return logits - m - np.log(np.exp(logits - m).sum(axis=-1, keepdims=True))


def relabelled_copy(results: Path, run_id: str, new_id: str, *, model_type: str, model_file: str, host: str, started_at: str) -> Path:
    """A copy of a fixture run as if measured on another model and host (public figures exist for real models only)."""
    import json
    import shutil

    dst = results / new_id
    shutil.copytree(results / run_id, dst)
    meta = json.loads((dst / "run.json").read_text())
    meta.update(run_id=new_id, started_at=started_at)
    meta["host"]["machine"]["hostname"] = host
    (dst / "run.json").write_text(json.dumps(meta))
    rows = [json.loads(line) for line in (dst / "rows.jsonl").read_text().splitlines() if line.strip()]
    for r in rows:
        r.update(run_id=new_id, model_type=model_type, model_filename=model_file)
    (dst / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return dst
