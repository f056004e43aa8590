"""Tokenize long prompt texts from remembered pieces: between keystrokes, and between windows of one file, almost
every line is one llama.cpp has tokenized before.

A text is cut at points no token crosses — a newline right after a word character, where every pre-tokenizer in
use (GPT-2, Llama 3, Qwen, StarCoder regexes) starts a new pre-token and SentencePiece vocabularies have no piece
spanning a newline — into chunks; each chunk's ids are remembered, so only chunks not seen before (the one being
typed in) reach llama.cpp. Tokenizing a 3,000-token window costs milliseconds; composing it about 0.2 ms,
also at the first request after a jump to a part of the file read ahead with ``warm()``.
Each vocabulary is probed once at start-up; one that disagrees anywhere is tokenized whole every time.
"""

from __future__ import annotations

import threading
from typing import Any

from codecomplete.core.prompt import encode_infilling
from codecomplete.types import Tokenizer

MIN_LENGTH = 2048  # characters: shorter texts are cheap to tokenize whole
MAX_CHUNKS = 32768  # remembered chunk tokenizations (a few MB): several large files' worth
MAX_HEADS = 64
WARM_MAX_CHUNK = 16384  # characters: a longer chunk is not tokenized ahead (it can take seconds)
_PROBE = "".join(
    f"def step_{i}(value, scale={i}):\n    \"\"\"Step {i}.\"\"\"\n    total = value * scale + {i}  # why\n"
    f"    if total > limit_{i}:\n        return None\n    items[{i}] = {{'k': total}}\n    return total\n\n\n"
    f"const x{i} = () => {{\n  return fetch(url).then((r) => r.json());\n}};\n\tüber_{i} = 'naïve'\r\n"
    for i in range(40)
)


class IncrementalTokenizer:
    """A ``Tokenizer`` whose ``tokenize`` composes long texts from remembered chunk tokenizations."""

    def __init__(self, tok: Tokenizer) -> None:
        self._tok = tok
        self._chunks: dict[str, list[int]] = {}  # oldest first: the first to go when full
        self._heads: dict[str, list[int]] = {}  # a text's start, tokenized as one (it changes when a window moves)
        self.reused = 0  # chunks served from memory, for tests and figures
        self.fresh = 0  # chunks llama.cpp tokenized
        self.enabled = self._agrees_on_probe()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tok, name)

    def tokenize(self, text: str, *, add_bos: bool = False, special: bool = False) -> list[int]:
        if add_bos or special or len(text) < MIN_LENGTH or not self.enabled:
            return self._tok.tokenize(text, add_bos=add_bos, special=special)
        return self._composed(text)

    def warm(self, text: str, cancel: threading.Event | None = None) -> None:
        """Tokenize a document's chunks ahead of the windows that will be cut from it; stops when ``cancel``
        is set (a request wants the model thread)."""
        if not self.enabled:
            return
        cuts = _cuts(text)
        for i in range(len(cuts) - 1):
            if i % 64 == 0 and cancel is not None and cancel.is_set():
                return
            if cuts[i + 1] - cuts[i] <= WARM_MAX_CHUNK:  # minified code: tokenized if a window ever takes it
                self._chunk(text[cuts[i] : cuts[i + 1]])

    def _composed(self, text: str) -> list[int]:
        """The head (up to the first safe split) as a text of its own, then every chunk without the dummy
        leading space SentencePiece gives a text's start."""
        cuts = _cuts(text)
        if len(cuts) == 1:
            return self._tok.tokenize(text)
        head = text[: cuts[0]]
        ids = self._heads.get(head)
        if ids is None:
            ids = _keep(self._heads, head, self._tok.tokenize(head), MAX_HEADS)
        ids = list(ids)
        for a, b in zip(cuts, cuts[1:]):
            ids += self._chunk(text[a:b])
        return ids

    def _chunk(self, chunk: str) -> list[int]:
        chunks = self._chunks
        known = chunks.get(chunk)
        if known is None:
            known = _keep(chunks, chunk, encode_infilling(self._tok, chunk), MAX_CHUNKS)
            self.fresh += 1
        else:
            self.reused += 1
        return known

    def _agrees_on_probe(self) -> bool:
        """Composition equals whole tokenization on code that mixes languages, indentation, CRLF and non-ASCII,
        cut at many lengths (so texts also end mid-line and mid-word)."""
        agrees = all(
            self._composed(text) == self._tok.tokenize(text)
            for end in range(MIN_LENGTH, len(_PROBE), 293)
            for text in (_PROBE[:end], "x = 1\n" + _PROBE[end - 1000 : end])
        )
        self._chunks.clear()
        self._heads.clear()
        self.reused = self.fresh = 0
        return agrees


def _keep(memo: dict[str, list[int]], key: str, ids: list[int], limit: int) -> list[int]:
    """Remember ``ids`` under ``key``, forgetting the oldest entry beyond ``limit``."""
    memo[key] = ids
    if len(memo) > limit:
        del memo[next(iter(memo))]
    return ids


def _cuts(text: str) -> list[int]:
    """The safe split points of ``text``, then its end. (A loop over ``str.find`` is twice as fast as a regular
    expression with a look-behind here.)"""
    cuts, find = [], text.find
    pos = find("\n", 1)
    while pos >= 0:
        before = text[pos - 1]
        if before.isalnum() or before == "_":
            cuts.append(pos)
        pos = find("\n", pos + 1)
    cuts.append(len(text))
    return cuts
