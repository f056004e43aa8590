"""Composed tokenization gives exactly the ids of tokenizing the whole text, on real vocabularies."""

from __future__ import annotations

import random
import textwrap
from pathlib import Path

import pytest

from codecomplete.core.tokencache import IncrementalTokenizer
from codecomplete.engines.llama import LlamaEngine

pytestmark = pytest.mark.slow  # loads a model or starts processes

SOURCE = Path(textwrap.__file__).read_text(encoding="utf-8")


@pytest.fixture(scope="module", params=["embedded", "codellama_2023", "codellama_tidy"])
def engine(request: pytest.FixtureRequest) -> LlamaEngine:
    path = {"embedded": "embedded_model", "codellama_2023": "codellama_2023_gguf",
            "codellama_tidy": "codellama_tidy_gguf"}[request.param]
    eng = LlamaEngine(request.getfixturevalue(path), n_ctx=512)
    yield eng
    eng.close()


def test_typing_and_editing_match_whole_tokenization(engine: LlamaEngine) -> None:
    """Typed characters, Enter with indentation, deletions and pastes before the end: every result equals
    a fresh tokenization, and most chunks came from memory rather than from llama.cpp."""
    tok = IncrementalTokenizer(engine)
    assert tok.enabled, "the probe found a mismatch for this vocabulary"
    rng = random.Random(7)
    cursor = SOURCE.index("def wrap(")
    text = SOURCE[:cursor]
    typed = SOURCE[cursor : cursor + 600]
    for i, ch in enumerate(typed):
        text += ch
        if i % 7 == 0:  # an edit a few lines up now and then: delete a character or paste a line
            at = text.rfind("\n", 0, max(0, len(text) - rng.randint(10, 400)))
            text = text[:at] + text[at + 1 :] if rng.random() < 0.5 else text[:at] + "\n    pasted = 1" + text[at:]
        assert tok.tokenize(text) == engine.tokenize(text), f"after {i} keys"
    assert tok.reused > 10 * tok.fresh


def test_windows_of_a_warmed_document_need_almost_no_tokenizing(engine: LlamaEngine) -> None:
    """After ``warm()`` on a document, windows cut anywhere in it (as a jump elsewhere in the file gives)
    equal whole tokenization and take at most their first line's chunk and the last one from llama.cpp."""
    tok = IncrementalTokenizer(engine)
    tok.warm(SOURCE)
    rng = random.Random(11)
    starts = [i + 1 for i, ch in enumerate(SOURCE) if ch == "\n"]
    for _ in range(20):
        start = rng.choice(starts[: len(starts) // 2])
        end = start + rng.randint(3000, 9000)
        fresh = tok.fresh
        window = SOURCE[start:end]
        assert tok.tokenize(window) == engine.tokenize(window)
        assert tok.fresh - fresh <= 2


class _GlobalTokenizer:
    """A toy vocabulary whose every token depends on the whole text (its length's parity), like a merge
    order that reaches across lines: splicing old ids onto new ones would be wrong."""

    class info:  # noqa: N801 - mirrors ModelInfo's attribute
        vocab_type = "bpe"

    def tokenize(self, text: str, *, add_bos: bool = False, special: bool = False) -> list[int]:
        return [b * 2 + len(text) % 2 for b in text.encode()]

    def piece(self, token: int) -> bytes:
        return bytes([token // 2])


def test_a_vocabulary_that_fails_the_probe_is_tokenized_whole() -> None:
    toy = _GlobalTokenizer()
    tok = IncrementalTokenizer(toy)
    assert not tok.enabled
    text = SOURCE[:5000]
    assert tok.tokenize(text) == toy.tokenize(text)
    assert tok.tokenize(text + "x\n") == toy.tokenize(text + "x\n")
    assert tok.reused == tok.fresh == 0
