"""The generated Code Llama fixtures load in llama.cpp and behave like the real files where it matters."""

from __future__ import annotations

import ctypes
import string
import time
from pathlib import Path

import llama_cpp
import numpy as np
import pytest
from gguf_factory import (
    FIM_EOT,
    FIM_MID,
    FIM_PRE,
    FIM_SUF,
    SPACE,
    VOCAB_SIZE,
    make_codellama_gguf,
    piece_id,
)

pytestmark = pytest.mark.slow  # loads a model or starts processes

PRE, SUF, MID, EOT = 32007, 32008, 32009, 32010
BOS, EOS = 1, 2
ATTR_BYTE = 32  # llama_token_attr: LLAMA_TOKEN_ATTR_BYTE


def _load(path: Path) -> llama_cpp.Llama:
    return llama_cpp.Llama(model_path=str(path), n_ctx=512, verbose=False)


@pytest.fixture(scope="module")
def both(codellama_2023_gguf: Path, codellama_tidy_gguf: Path) -> dict[str, llama_cpp.Llama]:
    """Both session fixtures, loaded once for the module."""
    return {"2023": _load(codellama_2023_gguf), "tidy": _load(codellama_tidy_gguf)}


@pytest.fixture(scope="module")
def old(both: dict[str, llama_cpp.Llama]) -> llama_cpp.Llama:
    return both["2023"]


def _vocab(llm: llama_cpp.Llama) -> llama_cpp.llama_vocab_p:
    return llama_cpp.llama_model_get_vocab(llm.model)


def _texts(llm: llama_cpp.Llama, ids: list[int]) -> list[str]:
    return [llama_cpp.llama_vocab_get_text(_vocab(llm), i).decode() for i in ids]


def _greedy(llm: llama_cpp.Llama, prompt: list[int], n: int) -> list[int]:
    """The first n greedy tokens, ignoring end-of-generation (the engine decides when to stop)."""
    out: list[int] = []
    for token in llm.generate(prompt, temp=0.0, top_k=1, reset=True):
        out.append(token)
        if len(out) == n:
            return out
    raise AssertionError("generate() ended by itself")


def _prompt(llm: llama_cpp.Llama, prefix: str, suffix: str) -> list[int]:
    def ids(text: str) -> list[int]:
        return llm.tokenize(text.encode(), add_bos=False)

    return [BOS, PRE, *ids(prefix), SUF, *ids(suffix), MID]


def test_piece_ids_follow_code_llama_layout() -> None:
    specials = ("<unk>", "<s>", "</s>", "<0x00>", "<0x0A>", "<0xFF>")
    assert [piece_id(p) for p in specials] == [0, 1, 2, 3, 13, 258]
    assert [piece_id(p) for p in (FIM_PRE, FIM_SUF, FIM_MID, FIM_EOT)] == [PRE, SUF, MID, EOT]
    assert FIM_PRE == "\u2581<PRE>"
    assert piece_id(SPACE) == 29871
    with pytest.raises(KeyError, match="not in the fixture vocab"):
        piece_id("▁definitely_not_a_piece")


@pytest.mark.parametrize("layout", ["2023", "tidy"])
def test_vocab_shape(both: dict[str, llama_cpp.Llama], layout: str) -> None:
    vocab = _vocab(both[layout])
    assert llama_cpp.llama_vocab_n_tokens(vocab) == VOCAB_SIZE
    assert llama_cpp.llama_vocab_type(vocab) == llama_cpp.LLAMA_VOCAB_TYPE_SPM
    assert (llama_cpp.llama_vocab_bos(vocab), llama_cpp.llama_vocab_eos(vocab)) == (BOS, EOS)
    assert llama_cpp.llama_vocab_get_add_bos(vocab) is True
    assert llama_cpp.llama_vocab_get_add_eos(vocab) is False
    assert _texts(both[layout], [PRE, SUF, MID, EOT]) == ["▁<PRE>", "▁<SUF>", "▁<MID>", "▁<EOT>"]
    assert all(llama_cpp.llama_vocab_get_attr(vocab, i) == ATTR_BYTE for i in range(3, 259))
    fim = [llama_cpp.llama_vocab_fim_pre(vocab), llama_cpp.llama_vocab_fim_suf(vocab)]
    assert fim + [llama_cpp.llama_vocab_fim_mid(vocab)] == [PRE, SUF, MID]


def test_2023_layout_has_no_eot(both: dict[str, llama_cpp.Llama]) -> None:
    """llama.cpp finds PRE/SUF/MID by text (and makes them CONTROL) but not `▁<EOT>`."""
    vocab = _vocab(both["2023"])
    assert llama_cpp.llama_vocab_eot(vocab) == -1
    assert not llama_cpp.llama_vocab_is_eog(vocab, EOT)
    assert llama_cpp.llama_vocab_is_eog(vocab, EOS)
    assert [llama_cpp.llama_vocab_is_control(vocab, i) for i in (PRE, SUF, MID, EOT)] == [True] * 3 + [False]


def test_tidy_layout_ends_at_eot(both: dict[str, llama_cpp.Llama]) -> None:
    vocab = _vocab(both["tidy"])
    assert llama_cpp.llama_vocab_eot(vocab) == EOT
    assert llama_cpp.llama_vocab_is_eog(vocab, EOT)
    assert not any(llama_cpp.llama_vocab_is_eog(vocab, i) for i in (PRE, SUF, MID))
    assert all(llama_cpp.llama_vocab_is_control(vocab, i) for i in (PRE, SUF, MID, EOT))


@pytest.mark.parametrize("layout", ["2023", "tidy"])
def test_code_tokenizes_into_whole_pieces(both: dict[str, llama_cpp.Llama], layout: str) -> None:
    llm = both[layout]
    ids = llm.tokenize(b"def foo(x):\n    return x", add_bos=False)
    assert _texts(llm, ids) == ["▁def", "▁foo", "(", "x", "):", "<0x0A>", "▁▁▁", "▁return", "▁x"]
    # Text tokenized on its own gets SentencePiece's dummy leading `▁` (a lone 29871 before a newline).
    assert _texts(llm, llm.tokenize(b"\n    return", add_bos=False)) == ["▁", "<0x0A>", "▁▁▁", "▁return"]
    assert _texts(llm, llm.tokenize(b" x", add_bos=False)) == ["▁", "▁x"]
    assert llm.tokenize(b"", add_bos=False) == []
    assert llm.tokenize(b"", add_bos=True) == [BOS]


def test_encode_infilling_trick_works(old: llama_cpp.Llama) -> None:
    """The reference encodes `"☺" + s` and drops `▁`, `☺`: that must give the suffix without a dummy space."""
    ids = old.tokenize("☺\n    return x".encode(), add_bos=False)
    assert _texts(old, ids[:2]) == ["▁", "☺"]
    assert _texts(old, ids[2:]) == ["<0x0A>", "▁▁▁", "▁return", "▁x"]


@pytest.mark.parametrize("text", ["é", "日本", "😀 ok", "naïve = '日本語' # 🎉"])
def test_non_ascii_falls_back_to_bytes_and_round_trips(old: llama_cpp.Llama, text: str) -> None:
    ids = old.tokenize(text.encode(), add_bos=True)
    vocab = _vocab(old)
    assert any(llama_cpp.llama_vocab_get_attr(vocab, i) == ATTR_BYTE for i in ids)
    assert old.detokenize(ids).decode() == text


def test_fim_markers_in_text_become_fim_tokens(both: dict[str, llama_cpp.Llama]) -> None:
    """Code Llama's merge-path pieces (`▁<PRE` ...) let plain text ` <SUF>` merge into the FIM token.

    This is why prompts must be built from ids: user text containing ` <SUF>` would inject a marker.
    """
    for llm in both.values():
        assert llm.tokenize(b"<PRE> x <SUF>", add_bos=False) == [PRE, piece_id("▁x"), SUF]
        assert llm.tokenize(b"x<SUF>", add_bos=False)[-1] != SUF
        assert llm.tokenize("▁<MID>".encode(), add_bos=False, special=True) == [MID]


def test_token_to_piece_keeps_leading_space(both: dict[str, llama_cpp.Llama]) -> None:
    buf = ctypes.create_string_buffer(64)

    def piece(llm: llama_cpp.Llama, token: int, special: bool) -> bytes:
        n = llama_cpp.llama_token_to_piece(_vocab(llm), token, buf, len(buf), 0, special)
        return buf.raw[:n]

    for llm in both.values():
        assert piece(llm, piece_id("▁return"), False) == b" return"
        assert piece(llm, MID, False) == b""  # CONTROL tokens render only with special=True
        assert piece(llm, MID, True) == "▁<MID>".encode()
        assert llm.detokenize([piece_id("▁return"), piece_id("▁x")]) == b" return x"
    # A NORMAL `▁<EOT>` (2023 files) decodes to visible text.
    assert piece(both["2023"], EOT, False) == b" <EOT>"
    assert piece(both["tidy"], EOT, False) == b""


@pytest.mark.parametrize("layout", ["2023", "tidy"])
def test_greedy_middle_is_the_bigram_chain_then_eot(both: dict[str, llama_cpp.Llama], layout: str) -> None:
    llm = both[layout]
    out = _greedy(llm, _prompt(llm, "def f():\n    ", "\n"), 5)
    assert out == [piece_id("▁return"), piece_id("▁x"), EOT, piece_id("a"), piece_id("a")]


def test_default_next_never_ends(old: llama_cpp.Llama) -> None:
    out = _greedy(old, [BOS, *old.tokenize(b"hello world", add_bos=False)], 40)
    assert out == [piece_id("a")] * 40


def test_create_completion_stops_at_eot_only_when_it_is_eog(both: dict[str, llama_cpp.Llama]) -> None:
    tidy, old = both["tidy"], both["2023"]
    done = tidy.create_completion(_prompt(tidy, "x", ""), max_tokens=6, temperature=0.0)["choices"][0]
    assert (done["text"], done["finish_reason"]) == (" return x", "stop")
    ran_on = old.create_completion(_prompt(old, "x", ""), max_tokens=6, temperature=0.0)["choices"][0]
    assert (ran_on["text"], ran_on["finish_reason"]) == (" return x <EOT>aaa", "length")


def test_last_logits_after_eval(both: dict[str, llama_cpp.Llama]) -> None:
    """`Llama.eval` no longer fills `scores` (only with logits_all); read the context's logits instead."""
    llm = both["tidy"]
    llm.reset()
    llm.eval(_prompt(llm, "x", ""))
    logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(VOCAB_SIZE,))
    assert int(logits.argmax()) == piece_id("▁return")
    assert logits.max() - np.partition(logits, -2)[-2] > 5.0


def test_custom_bigrams(make_gguf) -> None:
    chain = {"▁def": "▁foo", "▁foo": "(", "(": "x", "x": "):"}
    llm = _load(make_gguf(layout="tidy", bigrams=chain, default_next="▁pass"))
    out = _greedy(llm, [BOS, *llm.tokenize(b"def", add_bos=False)], 6)
    assert _texts(llm, out) == ["▁foo", "(", "x", "):", "▁pass", "▁pass"]


def test_many_bigram_sources_widen_the_model(make_gguf) -> None:
    words = [f"▁{w}" for w in ("def", "return", "if", "else", "elif", "for", "while", "in", "import")]
    words += [f"▁{c}" for c in "xyzijknsabc"] + list(string.ascii_letters + string.digits)
    chain = dict(zip(words[:-1], words[1:], strict=True))
    assert len(chain) > 63  # more sources than the default 64 dimensions
    llm = _load(make_gguf(bigrams=chain))
    out = _greedy(llm, [BOS, piece_id(words[0])], len(words) - 1)
    assert out == [piece_id(w) for w in words[1:]]


def test_bad_arguments_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="layout"):
        make_codellama_gguf(tmp_path / "x.gguf", layout="2024")
    with pytest.raises(KeyError, match="▁nope"):
        make_codellama_gguf(tmp_path / "x.gguf", bigrams={"▁nope": "a"})


def test_generation_is_fast(tmp_path: Path) -> None:
    start = time.perf_counter()
    make_codellama_gguf(tmp_path / "fast.gguf", layout="tidy")
    assert time.perf_counter() - start < 1.0


def test_embedded_model_is_a_gguf(embedded_model: Path) -> None:
    with embedded_model.open("rb") as f:
        assert f.read(4) == b"GGUF"
    llm = llama_cpp.Llama(model_path=str(embedded_model), vocab_only=True, verbose=False)
    assert llama_cpp.llama_vocab_n_tokens(_vocab(llm)) > 1000
