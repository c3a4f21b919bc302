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

import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from toolbox.model.names import DEFAULT_MODEL_NAME, GENERATOR_VERSION  # noqa: F401 (re-exported)

# sha256 of write_tiny_llama() with its defaults: the same on every machine (a test keeps it true)
DEFAULT_MODEL_SHA256 = "cba5e9e1c53e0f771896db0bdfc14ea66a7ecd74003736f72cf746525a6447d1"
DEFAULT_CONTEXT_LENGTH = 32768
DEFAULT_N_VOCAB = 2048
SYNTHETIC_TARGET_BYTES = 1 << 30

# llama.cpp token types (LLAMA_TOKEN_TYPE_*): the values gguf stores in tokenizer.ggml.token_type
_TT_NORMAL, _TT_UNKNOWN, _TT_CONTROL, _TT_BYTE = 1, 2, 3, 6


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


def write_tiny_llama(
    path: Path,
    *,
    seed: int = 0,
    n_layer: int = 4,
    n_embd: int = 256,
    n_head: int = 4,
    n_head_kv: int = 2,
    n_ff: int = 768,
    n_vocab: int = DEFAULT_N_VOCAB,
    context_length: int = DEFAULT_CONTEXT_LENGTH,
) -> Path:
    """Write the tiny random-weight llama (defaults: the embedded default model, about 8.6 MB)."""
    shape = LlamaShape(n_layer, n_embd, n_head, n_head_kv, n_ff, n_vocab, context_length)
    return _write_llama(
        path,
        shape,
        seed,
        "toolbox tiny llama (random weights)",
        f"Random-weight llama written by strix-halo-toolbox model.py v{GENERATOR_VERSION}, seed {seed}: "
        "for checking that the toolchain runs, not for output quality",
    )


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
    return _write_llama(
        path,
        shape,
        seed,
        f"toolbox synthetic llama ({shape.n_layer}x{shape.n_embd}, random weights)",
        f"Random-weight llama written by strix-halo-toolbox model.py v{GENERATOR_VERSION}, seed {seed}, "
        f"target {target_bytes} bytes: for measuring model-load cost, not for output quality",
    )
