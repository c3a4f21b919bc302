"""Models: the embedded tiny llama, a large synthetic one, model identity (sha256, cached) and discovery.

The embedded default model is a small llama with random weights written with the `gguf` package, so
`invoke bench` works on a fresh machine without a download. It is deterministic: the same seed and
shape give the same bytes on every machine (so its sha256 is stable and every backend computes the
same logits from the same weights). What it contains, checked against llama.cpp at the pinned commit
(src/llama-model.cpp load_hparams / llama_model_llama::load_arch_tensors, src/llama-vocab.cpp):

- general.architecture = "llama" with context_length, embedding_length, block_count,
  feed_forward_length, attention.head_count(_kv), attention.layer_norm_rms_epsilon,
  rope.dimension_count (must equal the head dimension for llama), rope.freq_base, vocab_size.
- A SentencePiece-style ("llama") vocabulary with scores and token types: <unk>, <s>, </s>, the 256
  byte tokens <0x00>..<0xFF> (byte fallback, so any text tokenizes and "\\n" has a token), then
  unique pieces. llama.cpp aborts on duplicate token strings, so uniqueness is asserted.
- Tensors: token_embd, output_norm, output, and per layer attn_norm, attn_q, attn_k, attn_v,
  attn_output, ffn_norm, ffn_gate, ffn_up, ffn_down. Matrices are F16 (CPU, Vulkan and ROCm all
  have F16 matmul, get_rows and flash-attention paths), norm weights F32, as in converted models.
- Head dimension 64 (a multiple of 32, the q8_0 / q4_0 block size, so quantized KV cache types
  apply), grouped-query attention (4 query heads, 2 KV heads).
- context_length = 32768 (DEFAULT_CONTEXT_LENGTH): depth tests up to 32768 - n_prompt - n_gen
  are within the trained context. The KV cache costs 4 KiB per token at f16 (4 layers x 2 x
  2 KV heads x 64 x 2 bytes), 128 MiB at the full 32768.

Weights are drawn from numpy's PCG64 bit generator (uniform, scaled to the wanted standard
deviation): its raw stream is fixed by numpy's compatibility policy, unlike the distribution
samplers. Each tensor has its own stream (seed, tensor index), so tensors can be generated one at a
time and written streaming: memory use is one tensor, which is what lets write_synthetic_model
write a model of about 1 GB (the same architecture scaled up) for the model-load benchmark.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from toolbox.errors import ToolboxError

GGUF_MAGIC = b"GGUF"
GENERATOR_VERSION = 1  # bump when the bytes written for the same arguments change
DEFAULT_MODEL_NAME = f"toolbox-tiny-llama-v{GENERATOR_VERSION}.gguf"
# sha256 of write_tiny_llama() with its defaults: the same on every machine (a test keeps it true)
DEFAULT_MODEL_SHA256 = "cba5e9e1c53e0f771896db0bdfc14ea66a7ecd74003736f72cf746525a6447d1"
DEFAULT_CONTEXT_LENGTH = 32768
DEFAULT_N_VOCAB = 2048
SYNTHETIC_TARGET_BYTES = 1 << 30

_SPLIT_RE = re.compile(r"^(?P<stem>.*)-(?P<part>\d{5})-of-(?P<total>\d{5})\.gguf$")

# llama.cpp token types (LLAMA_TOKEN_TYPE_*): the values gguf stores in tokenizer.ggml.token_type
_TT_NORMAL, _TT_UNKNOWN, _TT_CONTROL, _TT_BYTE = 1, 2, 3, 6


# --------------------------------------------------------------------------------------------------
# vocabulary


def build_vocab(n_vocab: int = DEFAULT_N_VOCAB) -> tuple[list[str], list[float], list[int]]:
    """A SentencePiece-style vocabulary of exactly n_vocab unique tokens: (tokens, scores, types).

    Ids 0, 1, 2 are <unk>, <s>, </s>; then the 256 byte tokens; then "▁" (the SPM space), the
    printable ASCII characters, "▁" + letter/digit, letter bigrams, "▁" + bigram and letter
    trigrams, as many as fit. Scores fall with the id, so SPM merges prefer the earlier pieces.
    """
    special = ["<unk>", "<s>", "</s>"]
    byte_tokens = [f"<0x{b:02X}>" for b in range(256)]
    if n_vocab < len(special) + len(byte_tokens) + 1:
        raise ValueError(f"n_vocab must be at least {len(special) + len(byte_tokens) + 1}, got {n_vocab}")
    lower = "abcdefghijklmnopqrstuvwxyz"
    alnum = lower + lower.upper() + "0123456789"

    def pieces():
        yield "\u2581"
        yield from (chr(c) for c in range(33, 127))
        yield from ("\u2581" + c for c in alnum)
        bigrams = [a + b for a in lower for b in lower]
        yield from bigrams
        yield from ("\u2581" + bg for bg in bigrams)
        yield from (bg + c for bg in bigrams for c in lower)

    tokens = special + byte_tokens
    types = [_TT_UNKNOWN, _TT_CONTROL, _TT_CONTROL] + [_TT_BYTE] * 256
    scores = [0.0] * len(tokens)
    gen = pieces()
    while len(tokens) < n_vocab:
        piece = next(gen, None)
        if piece is None:
            raise ValueError(f"n_vocab {n_vocab} is larger than this vocabulary builder supports")
        tokens.append(piece)
        types.append(_TT_NORMAL)
        scores.append(-float(len(tokens)))
    if len(set(tokens)) != len(tokens):  # llama.cpp asserts id_to_token.size() == token_to_id.size()
        raise AssertionError("duplicate token strings in the generated vocabulary")
    return tokens, scores, types


# --------------------------------------------------------------------------------------------------
# writing


@dataclass(frozen=True)
class LlamaShape:
    n_layer: int = 4
    n_embd: int = 256
    n_head: int = 4
    n_head_kv: int = 2
    n_ff: int = 768
    n_vocab: int = DEFAULT_N_VOCAB
    context_length: int = DEFAULT_CONTEXT_LENGTH

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    def validate(self) -> None:
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd {self.n_embd} is not a multiple of n_head {self.n_head}")
        if self.head_dim % 32:
            raise ValueError(f"head dimension {self.head_dim} is not a multiple of 32 (q8_0 / q4_0 KV cache need it)")
        if self.n_head % self.n_head_kv:
            raise ValueError(f"n_head {self.n_head} is not a multiple of n_head_kv {self.n_head_kv}")
        if min(self.n_layer, self.n_ff, self.context_length) < 1:
            raise ValueError("n_layer, n_ff and context_length must be positive")

    def tensors(self) -> list[tuple[str, tuple[int, ...], type, float]]:
        """(name, numpy shape (rows, cols), dtype, init std; 0 = ones) in file order.

        numpy shape (n_out, n_in) is ggml's {n_in, n_out}: gguf reverses it when writing.
        """
        e, kv, v, ff, L = self.n_embd, self.n_head_kv * self.head_dim, self.n_vocab, self.n_ff, self.n_layer
        out_std = 1.0 / np.sqrt(2.0 * max(L, 1))  # residual branches scaled down with depth
        ts: list[tuple[str, tuple[int, ...], type, float]] = [("token_embd.weight", (v, e), np.float16, 0.5)]
        for i in range(L):
            b = f"blk.{i}."
            ts += [
                (b + "attn_norm.weight", (e,), np.float32, 0.0),
                (b + "attn_q.weight", (e, e), np.float16, 1 / np.sqrt(e)),
                (b + "attn_k.weight", (kv, e), np.float16, 1 / np.sqrt(e)),
                (b + "attn_v.weight", (kv, e), np.float16, 1 / np.sqrt(e)),
                (b + "attn_output.weight", (e, e), np.float16, out_std / np.sqrt(e)),
                (b + "ffn_norm.weight", (e,), np.float32, 0.0),
                (b + "ffn_gate.weight", (ff, e), np.float16, 1 / np.sqrt(e)),
                (b + "ffn_up.weight", (ff, e), np.float16, 1 / np.sqrt(e)),
                (b + "ffn_down.weight", (e, ff), np.float16, out_std / np.sqrt(ff)),
            ]
        ts += [("output_norm.weight", (e,), np.float32, 0.0), ("output.weight", (v, e), np.float16, 1 / np.sqrt(e))]
        return ts

    def nbytes(self) -> int:
        return sum(int(np.prod(s)) * np.dtype(d).itemsize for _, s, d, _ in self.tensors())


def _tensor_data(seed: int, index: int, shape: tuple[int, ...], dtype: type, std: float) -> np.ndarray:
    """Deterministic weights: uniform on [-std*sqrt(3), std*sqrt(3)) from PCG64(seed, index); std 0 = ones."""
    if std == 0.0:
        return np.ones(shape, dtype=dtype)
    rng = np.random.Generator(np.random.PCG64([seed, index]))
    a = np.float32(std * np.sqrt(3.0))
    x = rng.random(shape, dtype=np.float32)
    x *= np.float32(2.0) * a
    x -= a
    return x.astype(dtype, copy=False)


def _write_llama(path: Path, shape: LlamaShape, seed: int, name: str, description: str) -> Path:
    """Write a llama GGUF to path atomically (temporary file, then rename), one tensor in memory at a time."""
    import gguf  # imported here: only model writing needs it

    shape.validate()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tokens, scores, types = build_vocab(shape.n_vocab)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    w = gguf.GGUFWriter(tmp, "llama")
    try:
        w.add_name(name)
        w.add_description(description)
        w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
        w.add_context_length(shape.context_length)
        w.add_embedding_length(shape.n_embd)
        w.add_block_count(shape.n_layer)
        w.add_feed_forward_length(shape.n_ff)
        w.add_head_count(shape.n_head)
        w.add_head_count_kv(shape.n_head_kv)
        w.add_layer_norm_rms_eps(1e-5)
        w.add_rope_dimension_count(shape.head_dim)
        w.add_rope_freq_base(10000.0)
        w.add_vocab_size(shape.n_vocab)
        w.add_tokenizer_model("llama")
        w.add_token_list(tokens)
        w.add_token_scores(scores)
        w.add_token_types(types)
        w.add_bos_token_id(1)
        w.add_eos_token_id(2)
        w.add_unk_token_id(0)
        w.add_add_bos_token(True)
        w.add_add_eos_token(False)
        specs = shape.tensors()
        for tname, tshape, dtype, _ in specs:
            w.add_tensor_info(tname, tshape, np.dtype(dtype), int(np.prod(tshape)) * np.dtype(dtype).itemsize)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        for index, (_, tshape, dtype, std) in enumerate(specs):
            w.write_tensor_data(_tensor_data(seed, index, tshape, dtype, std))
        w.close()
        os.replace(tmp, path)
    finally:
        w.close()
        tmp.unlink(missing_ok=True)
    return path


def write_tiny_llama(path: Path, *, seed: int = 0, n_layer: int = 4, n_embd: int = 256, n_head: int = 4,
                     n_head_kv: int = 2, n_ff: int = 768, n_vocab: int = DEFAULT_N_VOCAB,
                     context_length: int = DEFAULT_CONTEXT_LENGTH) -> Path:
    """Write the tiny random-weight llama (defaults: the embedded default model, about 8.6 MB)."""
    shape = LlamaShape(n_layer, n_embd, n_head, n_head_kv, n_ff, n_vocab, context_length)
    return _write_llama(path, shape, seed, "toolbox tiny llama (random weights)",
                        f"Random-weight llama written by strix-halo-toolbox model.py v{GENERATOR_VERSION}, seed {seed}: "
                        "for checking that the toolchain runs, not for output quality")


def synthetic_shape(target_bytes: int) -> LlamaShape:
    """The tiny model's architecture scaled up so that the file is about target_bytes.

    The widest n_embd (256..8192, head dimension 64 up to 256 wide then 128) that still gets at
    least 8 layers; then as many layers as fit. Below one layer of the smallest width: 1 layer.
    """
    best = None
    for e in (256, 512, 1024, 2048, 4096, 8192):
        head_dim = 64 if e <= 256 else 128
        probe = LlamaShape(n_layer=1, n_embd=e, n_head=e // head_dim, n_head_kv=max(1, e // head_dim // 2), n_ff=3 * e)
        fixed = replace(probe, n_layer=0).nbytes()
        per_layer = probe.nbytes() - fixed
        n_layer = max(1, round((target_bytes - fixed) / per_layer))
        if best is None or n_layer >= 8:
            best = replace(probe, n_layer=n_layer)
    return best


def write_synthetic_model(path: Path, target_bytes: int, seed: int = 0) -> Path:
    """Write a random-weight llama of about target_bytes (default use: ~1 GB for the model-load benchmark).

    Streaming: one tensor in memory at a time (the largest at 1 GB is about 50 MB of float32).
    """
    shape = synthetic_shape(int(target_bytes))
    return _write_llama(path, shape, seed, f"toolbox synthetic llama ({shape.n_layer}x{shape.n_embd}, random weights)",
                        f"Random-weight llama written by strix-halo-toolbox model.py v{GENERATOR_VERSION}, seed {seed}, "
                        f"target {target_bytes} bytes: for measuring model-load cost, not for output quality")


def models_dir(settings) -> Path:
    return Path(settings.cache_dir) / "models"


def ensure_default_model(settings) -> Path:
    """The embedded default model in settings.cache_dir/models, written on first use."""
    path = models_dir(settings) / DEFAULT_MODEL_NAME
    if not _is_gguf(path):
        write_tiny_llama(path)
    return path


def ensure_synthetic_model(settings, target_bytes: int = SYNTHETIC_TARGET_BYTES) -> Path:
    """A cached synthetic model of about target_bytes in settings.cache_dir/models, written on first use."""
    path = models_dir(settings) / f"toolbox-synthetic-llama-{target_bytes}-v{GENERATOR_VERSION}.gguf"
    if not _is_gguf(path):
        write_synthetic_model(path, target_bytes)
    return path


# --------------------------------------------------------------------------------------------------
# reference forward pass


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


# --------------------------------------------------------------------------------------------------
# identity


def _sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _cached_sha256(path: Path, settings) -> str:
    """sha256 of a file, cached in cache_dir/hashes.json under its absolute path with size and mtime_ns."""
    path = Path(path).resolve()
    st = path.stat()
    cache_file = Path(settings.cache_dir) / "hashes.json"
    try:
        cache = json.loads(cache_file.read_text())
        if not isinstance(cache, dict):
            cache = {}
    except (OSError, ValueError):
        cache = {}
    hit = cache.get(str(path))
    if isinstance(hit, dict) and hit.get("size") == st.st_size and hit.get("mtime_ns") == st.st_mtime_ns and hit.get("sha256"):
        return hit["sha256"]
    digest = _sha256_file(path)
    # re-read before writing: another process may have added entries meanwhile
    try:
        fresh = json.loads(cache_file.read_text())
        cache = fresh if isinstance(fresh, dict) else cache
    except (OSError, ValueError):
        pass
    cache[str(path)] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest}
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache_file.with_name(f".hashes.json.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(cache, indent=1, sort_keys=True))
    os.replace(tmp, cache_file)
    return digest


def split_parts(path: Path) -> list[Path]:
    """All parts of a split model (name-0000k-of-0000N.gguf) given its first part; [path] otherwise."""
    path = Path(path)
    m = _SPLIT_RE.match(path.name)
    if not m:
        return [path]
    total = int(m["total"])
    return [path.with_name(f"{m['stem']}-{k:05d}-of-{total:05d}.gguf") for k in range(1, total + 1)]


def model_identity(path: Path, settings) -> dict:
    """{path, name, size, sha256} of a model; sha256 cached (see _cached_sha256).

    For a split model (path = first part) size is the sum of all parts, sha256 the first part's
    (it holds the metadata and every tensor's shape and offset), and `parts` lists each part.
    """
    path = Path(path).resolve()
    parts = split_parts(path)
    ident = {"path": str(path), "name": path.name, "size": path.stat().st_size, "sha256": _cached_sha256(path, settings)}
    if len(parts) > 1:
        missing = [p.name for p in parts if not p.is_file()]
        if missing:
            raise ToolboxError(f"split model {path.name} is missing parts {', '.join(missing)}",
                               "put all parts in the same directory")
        ident["parts"] = [{"name": p.name, "size": p.stat().st_size, "sha256": _cached_sha256(p, settings)} for p in parts]
        ident["size"] = sum(p["size"] for p in ident["parts"])
    return ident


# --------------------------------------------------------------------------------------------------
# discovery


def _is_gguf(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == GGUF_MAGIC
    except OSError:
        return False


def _check_file(path: Path) -> Path:
    if not _is_gguf(path):
        raise ToolboxError(f"not a GGUF file: {path}", "pass a .gguf model")
    m = _SPLIT_RE.match(path.name)
    if m and int(m["part"]) != 1:
        first = split_parts(path)[0]
        if not _is_gguf(first):
            raise ToolboxError(f"{path} is part {int(m['part'])} of a split model whose first part {first.name} is missing",
                               "pass the -00001-of- file, with all parts in the same directory")
        return first
    return path


def resolve_models(paths, settings) -> list[Path]:
    """Model files to benchmark: None/empty -> the embedded default; files checked; directories expanded.

    A directory gives every *.gguf in it (sorted, not recursive), split models by their first part
    only. A later part of a split model given as a file stands for its first part. Paths come back
    absolute (symlinks resolved, so the model's directory is the one mounted into containers),
    without duplicates, in the order given.
    """
    if not paths:
        return [ensure_default_model(settings).resolve()]
    out: list[Path] = []
    for p in paths:
        p = Path(p).expanduser()
        if p.is_dir():
            found = [f for f in sorted(p.glob("*.gguf")) if f.is_file()]
            if not found:
                raise ToolboxError(f"no GGUF files in directory {p}", "pass a directory containing .gguf models, or a .gguf file")
            files = [_check_file(f) for f in found]  # later split parts map to their first part
        elif p.exists():
            files = [_check_file(p)]
        else:
            raise ToolboxError(f"model not found: {p}", "pass an existing .gguf file or a directory of them")
        for f in files:
            f = f.resolve()
            if f not in out:
                out.append(f)
    return out
