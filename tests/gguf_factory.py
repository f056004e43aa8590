"""Tiny Code-Llama-shaped GGUF models for tests.

No small model with Code Llama's FIM tokens exists, so tests write their own: a 1-layer llama whose
32016-entry SentencePiece vocabulary is laid out like Code Llama's (ids 32007..32010 are
`▁<PRE>`, `▁<SUF>`, `▁<MID>`, `▁<EOT>`), and whose weights make it a pure bigram model so a test can
choose exactly what greedy decoding emits next.

Why a bigram model: with `attn_output` and `ffn_down` zeroed the residual stream is just the token
embedding, so the logits after a token depend on that token alone. Each "source" token of a bigram gets
its own one-hot embedding dimension (every other token shares dimension 0) and the `output` matrix maps
that dimension to the chosen next token.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from gguf import GGUFWriter

# The vocabulary is laid out by the benchmark's test model code (codecomplete.tools.testmodel), without the sized
# model's extra words; the names tests use are re-exported from here.
from codecomplete.tools.testmodel import (
    FIM_EOT,
    FIM_MID,
    FIM_PRE,
    FIM_SUF,
    SPACE,
    VOCAB_SIZE,
    codellama_vocab,
    piece_id,
    write_fim_metadata,
    write_vocab,
)

LAYOUTS = ("2023", "tidy")
# What the session fixtures answer after `▁<MID>`: a short middle, then `<EOT>`.
FIM_DEMO_BIGRAMS = {FIM_MID: f"{SPACE}return", f"{SPACE}return": f"{SPACE}x", f"{SPACE}x": FIM_EOT}
__all__ = ["FIM_DEMO_BIGRAMS", "FIM_EOT", "FIM_MID", "FIM_PRE", "FIM_SUF", "LAYOUTS", "SPACE", "VOCAB_SIZE",
           "make_codellama_gguf", "piece_id"]


def make_codellama_gguf(
    path: str | Path,
    *,
    layout: str = "2023",
    bigrams: Mapping[str, str] | None = None,
    default_next: str = "a",
    n_ctx_train: int = 4096,
) -> Path:
    """Write a tiny llama GGUF whose greedy continuation of token s is `bigrams.get(s, default_next)`.

    `layout="2023"`: the FIM pieces are NORMAL and the file has no FIM/EOT metadata, like the widely
    used 2023 conversions. `layout="tidy"`: they are CONTROL and named in the metadata, EOT included.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, not {layout!r}")
    bigrams = dict(bigrams or {})
    sources = [piece_id(s) for s in bigrams]
    targets = [piece_id(t) for t in bigrams.values()]
    default_id = piece_id(default_next)

    # One dimension per source plus the shared one; a multiple of 16 keeps heads of 4 and rope happy.
    n_embd = max(64, -(-(len(sources) + 1) // 16) * 16)
    n_head, n_ff = 4, 2 * n_embd
    embd = np.zeros((VOCAB_SIZE, n_embd), dtype=np.float16)
    embd[:, 0] = 1.0
    out = np.zeros((VOCAB_SIZE, n_embd), dtype=np.float16)
    out[default_id, 0] = 1.0
    for dim, (source, target) in enumerate(zip(sources, targets, strict=True), start=1):
        embd[source, 0], embd[source, dim] = 0.0, 1.0
        out[target, dim] = 1.0

    path = Path(path)
    writer = GGUFWriter(path, "llama")
    writer.add_name(f"codecomplete-test-codellama-{layout}")
    writer.add_context_length(n_ctx_train)
    writer.add_embedding_length(n_embd)
    writer.add_block_count(1)
    writer.add_feed_forward_length(n_ff)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_head)
    writer.add_rope_dimension_count(n_embd // n_head)
    writer.add_rope_freq_base(1e6)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(1)  # mostly F16

    write_vocab(writer, codellama_vocab(), fim_control=layout == "tidy")
    if layout == "tidy":
        write_fim_metadata(writer)

    ones = np.ones(n_embd, dtype=np.float32)
    square = np.zeros((n_embd, n_embd), dtype=np.float16)
    writer.add_tensor("token_embd.weight", embd)
    writer.add_tensor("output_norm.weight", ones)
    writer.add_tensor("output.weight", out)
    writer.add_tensor("blk.0.attn_norm.weight", ones)
    for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
        writer.add_tensor(f"blk.0.{name}.weight", square)
    writer.add_tensor("blk.0.ffn_norm.weight", ones)
    writer.add_tensor("blk.0.ffn_gate.weight", np.zeros((n_ff, n_embd), dtype=np.float16))
    writer.add_tensor("blk.0.ffn_up.weight", np.zeros((n_ff, n_embd), dtype=np.float16))
    writer.add_tensor("blk.0.ffn_down.weight", np.zeros((n_embd, n_ff), dtype=np.float16))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
