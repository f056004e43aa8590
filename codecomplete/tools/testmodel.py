"""Code-Llama-shaped GGUF models with random weights: the benchmark's speed model and the tests' tiny fixtures.

Why: no small model with Code Llama's FIM tokens exists, and llama-server's ``/infill`` refuses a model without
them, so the benchmark that compares us with llama-server needs one we make ourselves. A transformer's speed does
not depend on its weights, only on its shape, so random weights at a real model's shape time like the real thing.

``codellama-sized-random`` (``ensure_test_model``) has SmolLM2-135M's shape (hidden 576, 30 layers, 9 heads, 3 KV
heads, FFN 1536, trained context 8192, tied embeddings) with Code Llama's 32016-entry vocabulary: ids 32007-32010
are ``▁<PRE>``, ``▁<SUF>``, ``▁<MID>``, ``▁<EOT>``, CONTROL-typed and named in the FIM metadata keys. It is
written with ``gguf.GGUFWriter`` as F16 (norms F32), quantized to Q4_0 with llama.cpp's own
``llama_model_quantize`` and cached in the user cache dir (``$CODECOMPLETE_TEST_MODEL_DIR`` overrides it).

The vocabulary is laid out like Code Llama's (the same ids for the special, byte and FIM pieces). The ordinary
pieces are ours: code words with every prefix (llama.cpp's SentencePiece tokenizer only merges two adjacent pieces
into one that exists). The tests' fixtures (``tests/gguf_factory.py``) use a small fixed word list; the sized
model adds the most frequent words of a few standard library modules, so that code tokenizes at about the density
of the real vocabulary (≈3 characters per token instead of ≈1.8) and a window of N tokens covers as many lines.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import re
import string
import sysconfig
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from codecomplete.errors import UserError

VOCAB_SIZE = 32016
N_BYTE_TOKENS = 256
FIRST_BYTE_ID = 3
SPACE = "\u2581"  # SentencePiece's visible space, `▁`
SPACE_ID = 29871  # where the real Llama vocab keeps a lone `▁`
MAX_SPACE_RUN = 16

# Code Llama's 16 extra pieces (ids 32000..32015), copied from its tokenizer: the merge-path prefixes
# of the FIM markers, the four markers themselves, then runs of `<EOT>`.
CODELLAMA_EXTRA = [SPACE + p for p in ("<SU", "<SUF", "<PRE", "<M", "<MID", "<E", "<EOT")]
CODELLAMA_EXTRA += [SPACE + p for p in ("<PRE>", "<SUF>", "<MID>", "<EOT>")]
CODELLAMA_EXTRA += [SPACE + "<EOT>" * n for n in range(2, 7)]
FIM_PRE, FIM_SUF, FIM_MID, FIM_EOT = (f"{SPACE}<{name}>" for name in ("PRE", "SUF", "MID", "EOT"))

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
CODE_WORDS = tuple(word for line in _WORD_LINES for word in line.split())

# Where the sized model's extra words come from: long standard library modules (present on every machine) that
# the benchmark does not retype.
CORPUS_MODULES = ("typing.py", "argparse.py", "inspect.py", "_pydecimal.py", "subprocess.py", "logging/__init__.py",
                  "pathlib.py", "dataclasses.py", "ast.py", "tarfile.py")
CORPUS_MIN_COUNT = 3
# Whitespace runs: Llama's vocabulary has pieces for indentation, which code is full of.
_INDENT_PIECES = tuple(SPACE * n for n in range(2, MAX_SPACE_RUN + 1))

Vocab = tuple[tuple[str, ...], tuple[float, ...], tuple[int, ...]]

# gguf's TokenType values (written as plain ints, so this module does not need gguf until it writes a file)
NORMAL, UNKNOWN, CONTROL, BYTE = 1, 2, 3, 6


def _pieces_of(words: Iterable[str]) -> list[str]:
    """Ordinary pieces in score order (earlier = merged first), each after all its prefixes."""
    pieces: list[str] = []
    seen: set[str] = set()
    for word in words:
        for form in (SPACE + word, word):
            for end in range(2, len(form) + 1):
                if form[:end] not in seen:
                    seen.add(form[:end])
                    pieces.append(form[:end])
    return pieces


@cache
def codellama_vocab(extra_words: tuple[str, ...] = ()) -> Vocab:
    """Token texts, scores and types of a Code-Llama-layout vocabulary: `CODE_WORDS`, then `extra_words` (in
    order, as long as free ids last), then filler that no text merges into."""
    texts: list[str | None] = [None] * VOCAB_SIZE
    scores = [0.0] * VOCAB_SIZE
    types = [NORMAL] * VOCAB_SIZE

    def put(token_id: int, text: str, score: float, kind: int = NORMAL) -> None:
        texts[token_id], scores[token_id], types[token_id] = text, score, kind

    put(0, "<unk>", 0.0, UNKNOWN)
    put(1, "<s>", 0.0, CONTROL)
    put(2, "</s>", 0.0, CONTROL)
    for byte in range(N_BYTE_TOKENS):
        put(FIRST_BYTE_ID + byte, f"<0x{byte:02X}>", 0.0, BYTE)
    # Code Llama's extras: we assume score 0 (they win every merge), real scores unknown.
    for offset, text in enumerate(CODELLAMA_EXTRA):
        put(VOCAB_SIZE - len(CODELLAMA_EXTRA) + offset, text, 0.0)
    put(SPACE_ID, SPACE, -1000.0)

    # Single characters are never produced by a merge, so their scores do not matter.
    known = {t for t in texts if t is not None}
    singles = [c for c in [*string.printable, "☺"] if c.isprintable() and c != " " and c not in known]
    free = [i for i in range(VOCAB_SIZE) if texts[i] is None]
    merged = [p for p in _pieces_of((*CODE_WORDS, *extra_words)) if p not in known]
    spaces = [p for p in _INDENT_PIECES if p not in known]
    # Words fill what the single characters and whitespace runs leave; each piece comes after its prefixes, so any
    # cut keeps every kept word reachable by merges.
    merged = merged[: len(free) - len(singles) - len(spaces)]
    # Whitespace runs score below every word: `"    return"` becomes `▁▁▁` + `▁return`, as in Llama.
    floor = min(-10000.0, -2.0 - len(merged))
    ordinary = [(c, -2000.0 - i) for i, c in enumerate(singles)]
    ordinary += [(p, -1.0 - i) for i, p in enumerate(merged)]
    ordinary += [(p, floor - i) for i, p in enumerate(spaces)]
    slots = iter(free)
    for text, score in ordinary:
        put(next(slots), text, score)
    # Filler that no text can merge into (no piece is a prefix of it).
    for token_id in slots:
        put(token_id, f"<dummy{token_id:05d}>", -1e6)
    return tuple(t for t in texts if t is not None), tuple(scores), tuple(types)


@cache
def _piece_ids(extra_words: tuple[str, ...] = ()) -> dict[str, int]:
    return {text: i for i, text in enumerate(codellama_vocab(extra_words)[0])}


def piece_id(piece: str, extra_words: tuple[str, ...] = ()) -> int:
    """Id of `piece` (SentencePiece text, `▁` for space) in the vocabulary with these extra words."""
    try:
        return _piece_ids(extra_words)[piece]
    except KeyError:
        raise KeyError(f"piece {piece!r} is not in the fixture vocab") from None


@cache
def corpus_words(limit: int = 6000) -> tuple[str, ...]:
    """The most frequent identifiers and operator runs of `CORPUS_MODULES`, most frequent first (ties by text)."""
    counts: Counter[str] = Counter()
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for relative in CORPUS_MODULES:
        with contextlib.suppress(OSError, UnicodeDecodeError):
            text = (stdlib / relative).read_text(encoding="utf-8")
            counts.update(re.findall(r"[A-Za-z_][A-Za-z0-9_]*|[^\sA-Za-z0-9_]{2,3}", text))
    ranked = sorted((w for w, n in counts.items() if n >= CORPUS_MIN_COUNT and len(w) > 1),
                    key=lambda w: (-counts[w], w))
    return tuple(ranked[:limit])


def write_fim_metadata(writer: object, extra_words: tuple[str, ...] = ()) -> None:
    """The FIM and EOT keys llama.cpp reads (`tokenizer.ggml.fim_*`, the older `prefix/suffix/middle` names)."""
    pre, suf, mid, eot = (piece_id(p, extra_words) for p in (FIM_PRE, FIM_SUF, FIM_MID, FIM_EOT))
    for key, value in (("fim_pre", pre), ("fim_suf", suf), ("fim_mid", mid), ("prefix", pre), ("suffix", suf),
                       ("middle", mid)):
        writer.add_uint32(f"tokenizer.ggml.{key}_token_id", value)  # type: ignore[attr-defined]
    writer.add_eot_token_id(eot)  # type: ignore[attr-defined]


def write_vocab(writer: object, vocab: Vocab, *, fim_control: bool) -> None:
    """The tokenizer keys of a Llama SentencePiece vocabulary; `fim_control` types the FIM pieces CONTROL (the
    2023 conversions left them NORMAL)."""
    texts, scores, types = vocab
    types_list = list(types)
    if fim_control:
        index = {t: i for i, t in enumerate(texts)}
        for piece in (FIM_PRE, FIM_SUF, FIM_MID, FIM_EOT):
            types_list[index[piece]] = CONTROL
    w = writer
    w.add_tokenizer_model("llama")  # type: ignore[attr-defined]
    w.add_token_list(list(texts))  # type: ignore[attr-defined]
    w.add_token_scores(list(scores))  # type: ignore[attr-defined]
    w.add_token_types(types_list)  # type: ignore[attr-defined]
    w.add_unk_token_id(0)  # type: ignore[attr-defined]
    w.add_bos_token_id(1)  # type: ignore[attr-defined]
    w.add_eos_token_id(2)  # type: ignore[attr-defined]
    w.add_add_bos_token(True)  # type: ignore[attr-defined]
    w.add_add_eos_token(False)  # type: ignore[attr-defined]


# --- the sized model -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    """A Llama's dimensions."""

    n_embd: int
    n_layer: int
    n_head: int
    n_head_kv: int
    n_ff: int
    n_ctx_train: int


SMOLLM2_135M = Shape(n_embd=576, n_layer=30, n_head=9, n_head_kv=3, n_ff=1536, n_ctx_train=8192)


@dataclass(frozen=True)
class GeneratedModel:
    """A generated model the benchmark can name with `--model`."""

    name: str
    shape: Shape
    quant: str  # llama.cpp file type after quantization
    seed: int = 0
    init_std: float = 0.02  # the usual transformer init: activations stay finite through 30 layers


TEST_MODELS = {m.name: m for m in (GeneratedModel("codellama-sized-random", SMOLLM2_135M, "Q4_0"),)}
TEST_MODEL_DIR_ENV = "CODECOMPLETE_TEST_MODEL_DIR"
GENERATOR_VERSION = 1  # bump when the file written for the same name changes
_QUANT_FTYPES = {"Q4_0": 2, "Q8_0": 7, "F16": 1}  # llama_ftype values
Progress = Callable[[str], None]


def generated_models_dir() -> Path:
    override = os.environ.get(TEST_MODEL_DIR_ENV)
    if override:
        return Path(override).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("codecomplete")) / "test-models"


def _fingerprint(model: GeneratedModel, words: tuple[str, ...]) -> str:
    """What decides the file's bytes: its recipe and vocabulary (different stdlibs give different words)."""
    recipe = repr((GENERATOR_VERSION, model, words)).encode("utf-8")
    return hashlib.sha256(recipe).hexdigest()[:12]


def generated_model_path(name: str) -> Path:
    """Where `ensure_test_model(name)` keeps the file (it may not exist yet)."""
    model = TEST_MODELS[name]
    return generated_models_dir() / f"{name}-{model.quant}-{_fingerprint(model, corpus_words())}.gguf"


def ensure_test_model(name: str = "codellama-sized-random", progress: Progress = print) -> Path:
    """The generated model's path; written (about 20 s) and quantized on first use, then cached."""
    if name not in TEST_MODELS:
        raise UserError(f"unknown test model {name!r} (known: {', '.join(TEST_MODELS)})")
    path = generated_model_path(name)
    if path.is_file():
        return path
    import filelock

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create {path.parent}: {exc.strerror}") from None
    with filelock.FileLock(str(path) + ".lock", timeout=600):
        if path.is_file():  # another process wrote it meanwhile
            return path
        started = time.monotonic()
        model = TEST_MODELS[name]
        progress(f"{name}: writing a random-weight model of {model.shape} (once; cached in {path.parent})")
        with tempfile.TemporaryDirectory(prefix=".write-", dir=path.parent) as tmp:
            f16 = Path(tmp) / "f16.gguf"
            write_random_llama(f16, model, corpus_words())
            out = Path(tmp) / "quantized.gguf"
            quantize(f16, out, model.quant)
            os.replace(out, path)
        progress(f"{name}: {path.stat().st_size / 2**20:.0f} MiB {model.quant} in {time.monotonic() - started:.0f} s")
    return path


def write_random_llama(path: Path, model: GeneratedModel, extra_words: tuple[str, ...]) -> Path:
    """A Llama GGUF of `model.shape` with random weights (F16; norms F32) and the Code Llama vocabulary."""
    from gguf import GGUFWriter

    s = model.shape
    rng = np.random.default_rng(model.seed)
    head_dim = s.n_embd // s.n_head

    def normal(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape, dtype=np.float32) * model.init_std).astype(np.float16)

    writer = GGUFWriter(path, "llama")
    writer.add_name(f"codecomplete-{model.name}")
    writer.add_context_length(s.n_ctx_train)
    writer.add_embedding_length(s.n_embd)
    writer.add_block_count(s.n_layer)
    writer.add_feed_forward_length(s.n_ff)
    writer.add_head_count(s.n_head)
    writer.add_head_count_kv(s.n_head_kv)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(100000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(1)  # mostly F16
    write_vocab(writer, codellama_vocab(extra_words), fim_control=True)
    write_fim_metadata(writer, extra_words)

    ones = np.ones(s.n_embd, dtype=np.float32)
    kv = s.n_head_kv * head_dim
    writer.add_tensor("token_embd.weight", normal(VOCAB_SIZE, s.n_embd))  # tied: also the output matrix
    writer.add_tensor("output_norm.weight", ones)
    for i in range(s.n_layer):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", ones)
        writer.add_tensor(f"blk.{i}.attn_q.weight", normal(s.n_embd, s.n_embd))
        writer.add_tensor(f"blk.{i}.attn_k.weight", normal(kv, s.n_embd))
        writer.add_tensor(f"blk.{i}.attn_v.weight", normal(kv, s.n_embd))
        writer.add_tensor(f"blk.{i}.attn_output.weight", normal(s.n_embd, s.n_embd))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", ones)
        writer.add_tensor(f"blk.{i}.ffn_gate.weight", normal(s.n_ff, s.n_embd))
        writer.add_tensor(f"blk.{i}.ffn_up.weight", normal(s.n_ff, s.n_embd))
        writer.add_tensor(f"blk.{i}.ffn_down.weight", normal(s.n_embd, s.n_ff))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def quantize(source: Path, dest: Path, quant: str, threads: int | None = None) -> None:
    """llama.cpp's own quantizer (`llama_model_quantize`), as `llama-quantize` would run it."""
    import llama_cpp

    import codecomplete.engines.llama  # noqa: F401 - routes llama.cpp's log to Python logging (errors only)

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = _QUANT_FTYPES[quant]
    params.nthread = threads or max(1, os.cpu_count() or 1)
    status = llama_cpp.llama_model_quantize(str(source).encode(), str(dest).encode(), ctypes.byref(params))
    if status != 0 or not dest.is_file():
        raise UserError(f"llama.cpp could not quantize {source.name} to {quant} (status {status})")


def resolve_model_option(name: str | None, progress: Progress = print) -> str | None:
    """`--model` values that name a generated test model become its path; anything else is left to the server."""
    if name in TEST_MODELS:
        return str(ensure_test_model(name, progress))
    return name


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m codecomplete.tools.testmodel [NAME]`: write (if needed) and print the model's path."""
    import sys

    from codecomplete.tools.llama_server import print_made_path

    args = list(sys.argv[1:] if argv is None else argv)
    name = args[0] if args else "codellama-sized-random"
    return print_made_path(lambda progress: ensure_test_model(name, progress=progress))


if __name__ == "__main__":
    raise SystemExit(main())
