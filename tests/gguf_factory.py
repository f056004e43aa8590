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

import string
from collections.abc import Mapping
from functools import cache
from pathlib import Path

import numpy as np
from gguf import GGUFWriter, TokenType

VOCAB_SIZE = 32016
N_BYTE_TOKENS = 256
FIRST_BYTE_ID = 3
SPACE = "\u2581"  # SentencePiece's visible space, `▁`
SPACE_ID = 29871  # where the real Llama vocab keeps a lone `▁`
MAX_SPACE_RUN = 16
LAYOUTS = ("2023", "tidy")

# Code Llama's 16 extra pieces (ids 32000..32015), copied from its tokenizer: the merge-path prefixes
# of the FIM markers, the four markers themselves, then runs of `<EOT>`.
CODELLAMA_EXTRA = [SPACE + p for p in ("<SU", "<SUF", "<PRE", "<M", "<MID", "<E", "<EOT")]
CODELLAMA_EXTRA += [SPACE + p for p in ("<PRE>", "<SUF>", "<MID>", "<EOT>")]
CODELLAMA_EXTRA += [SPACE + "<EOT>" * n for n in range(2, 7)]
FIM_PRE, FIM_SUF, FIM_MID, FIM_EOT = (f"{SPACE}<{name}>" for name in ("PRE", "SUF", "MID", "EOT"))
# What the session fixtures answer after `▁<MID>`: a short middle, then `<EOT>`.
FIM_DEMO_BIGRAMS = {FIM_MID: f"{SPACE}return", f"{SPACE}return": f"{SPACE}x", f"{SPACE}x": FIM_EOT}

# Words that code is made of. Each goes in with and without a leading `▁`, together with every prefix,
# because llama.cpp's SPM tokenizer only builds a piece by merging two adjacent pieces that exist.
_WORD_LINES = (
    "def return if else elif for while in import from class self print None True False pass break",
    "continue lambda with as try except finally raise yield async await not and or is global assert del",
    "len range str int float list dict set tuple open super init main name args kwargs x y z i j k n s",
    "a b c foo bar baz hello world result value key item data text line count total index path file",
    "function const let var new this null undefined typeof export default console log fn pub mut impl",
    "struct enum match use mod func package type interface string void char include define static",
    "public private protected final err nil fmt Println std vec Vec Some Ok Err unwrap Self __init__",
    "__name__ __main__ append join PRE SU ID OT",
    "< > ( ) [ ] { } = == != <= >= += -= *= /= -> => ** // /* */ && || :: () (): ): ); }; }, ), ], [] {}",
    "... ''' \"\"\" # ! . , : ; ? + - * / % & | ^ ~ @ ' \"",
)
_WORDS = [word for line in _WORD_LINES for word in line.split()]


def _code_pieces() -> list[str]:
    """Ordinary pieces in score order (earlier = merged first), each after all its prefixes."""
    pieces: list[str] = []
    seen: set[str] = set()
    for word in _WORDS:
        for form in (SPACE + word, word):
            for end in range(2, len(form) + 1):
                if form[:end] not in seen:
                    seen.add(form[:end])
                    pieces.append(form[:end])
    return pieces


@cache
def _vocab() -> tuple[tuple[str, ...], tuple[float, ...], tuple[int, ...]]:
    """Token texts, scores and types; identical for every generated file."""
    texts: list[str | None] = [None] * VOCAB_SIZE
    scores = [0.0] * VOCAB_SIZE
    types = [int(TokenType.NORMAL)] * VOCAB_SIZE

    def put(token_id: int, text: str, score: float, kind: TokenType = TokenType.NORMAL) -> None:
        texts[token_id], scores[token_id], types[token_id] = text, score, int(kind)

    put(0, "<unk>", 0.0, TokenType.UNKNOWN)
    put(1, "<s>", 0.0, TokenType.CONTROL)
    put(2, "</s>", 0.0, TokenType.CONTROL)
    for byte in range(N_BYTE_TOKENS):
        put(FIRST_BYTE_ID + byte, f"<0x{byte:02X}>", 0.0, TokenType.BYTE)
    # Code Llama's extras: we assume score 0 (they win every merge), real scores unknown.
    for offset, text in enumerate(CODELLAMA_EXTRA):
        put(VOCAB_SIZE - len(CODELLAMA_EXTRA) + offset, text, 0.0)
    put(SPACE_ID, SPACE, -1000.0)

    # Single characters are never produced by a merge, so their scores do not matter.
    singles = [c for c in string.printable if c.isprintable() and c != " "] + ["☺"]
    merged = _code_pieces()
    # Whitespace runs score below every word: `"    return"` becomes `▁▁▁` + `▁return`, as in Llama.
    spaces = [SPACE * n for n in range(2, MAX_SPACE_RUN + 1)]
    ordinary = [(c, -2000.0 - i) for i, c in enumerate(singles)]
    ordinary += [(p, -1.0 - i) for i, p in enumerate(merged)]
    ordinary += [(p, -10000.0 - i) for i, p in enumerate(spaces)]

    free = (i for i in range(VOCAB_SIZE) if texts[i] is None)
    known = {t for t in texts if t is not None}
    for text, score in ordinary:
        if text not in known:
            known.add(text)
            put(next(free), text, score)
    # Filler that no text can merge into (no piece is a prefix of it).
    for token_id in free:
        put(token_id, f"<dummy{token_id:05d}>", -1e6)
    return tuple(t for t in texts if t is not None), tuple(scores), tuple(types)


@cache
def _piece_ids() -> dict[str, int]:
    return {text: i for i, text in enumerate(_vocab()[0])}


def piece_id(piece: str) -> int:
    """Id of `piece` (SentencePiece text, `▁` for space) in the fixture vocab; same in every file."""
    try:
        return _piece_ids()[piece]
    except KeyError:
        raise KeyError(f"piece {piece!r} is not in the fixture vocab") from None


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
    texts, scores, types = _vocab()

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

    types = list(types)
    if layout == "tidy":
        for piece in (FIM_PRE, FIM_SUF, FIM_MID, FIM_EOT):
            types[piece_id(piece)] = int(TokenType.CONTROL)

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

    writer.add_tokenizer_model("llama")
    writer.add_token_list(list(texts))
    writer.add_token_scores(list(scores))
    writer.add_token_types(types)
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    if layout == "tidy":
        pre, suf, mid, eot = (piece_id(p) for p in (FIM_PRE, FIM_SUF, FIM_MID, FIM_EOT))
        writer.add_uint32("tokenizer.ggml.fim_pre_token_id", pre)
        writer.add_uint32("tokenizer.ggml.fim_suf_token_id", suf)
        writer.add_uint32("tokenizer.ggml.fim_mid_token_id", mid)
        writer.add_uint32("tokenizer.ggml.prefix_token_id", pre)
        writer.add_uint32("tokenizer.ggml.suffix_token_id", suf)
        writer.add_uint32("tokenizer.ggml.middle_token_id", mid)
        writer.add_eot_token_id(eot)

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
