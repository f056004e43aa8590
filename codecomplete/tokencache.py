"""Tokenize long prompt texts incrementally: between keystrokes only the end of the prefix changes.

Tokenizing a 3,000-token window costs milliseconds in llama.cpp on every keystroke; re-tokenizing only the
lines from the edit on costs tens of microseconds. The splice is exact only at a point no token crosses:
a newline right after a word character, where every pre-tokenizer in use (GPT-2, Llama 3, Qwen,
StarCoder regexes) starts a new pre-token and SentencePiece vocabularies have no piece spanning a newline.
Each vocabulary is probed once at start-up; one that disagrees anywhere is tokenized whole every time.
"""

from __future__ import annotations

import collections
from typing import Any

from .prompt import Tokenizer, encode_infilling

MIN_LENGTH = 2048  # characters: shorter texts are cheap to tokenize whole
_REMEMBERED = 8
_PROBE = "".join(
    f"def step_{i}(value, scale={i}):\n    \"\"\"Step {i}.\"\"\"\n    total = value * scale + {i}  # why\n"
    f"    if total > limit_{i}:\n        return None\n    items[{i}] = {{'k': total}}\n    return total\n\n\n"
    f"const x{i} = () => {{\n  return fetch(url).then((r) => r.json());\n}};\n\tüber_{i} = 'naïve'\r\n"
    for i in range(40)
)


class IncrementalTokenizer:
    """A ``Tokenizer`` that reuses the ids of a recently tokenized text sharing a long beginning."""

    def __init__(self, tok: Tokenizer) -> None:
        self._tok = tok
        self._recent: collections.OrderedDict[str, list[int]] = collections.OrderedDict()
        self._piece_length: dict[int, int] = {}
        self.spliced = 0  # texts tokenized by splicing, for tests and figures
        self.enabled = self._agrees_on_probe()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tok, name)

    def tokenize(self, text: str, *, add_bos: bool = False, special: bool = False) -> list[int]:
        if add_bos or special or len(text) < MIN_LENGTH or not self.enabled:
            return self._tok.tokenize(text, add_bos=add_bos, special=special)
        ids = self._recent.get(text)
        if ids is None:
            ids = self._splice(text)
            self._recent[text] = ids
            while len(self._recent) > _REMEMBERED:
                self._recent.popitem(last=False)
        self._recent.move_to_end(text)
        return list(ids)

    def _splice(self, text: str) -> list[int]:
        best, shared = None, 0
        for old in self._recent:
            n = _common_prefix(old, text)
            if n > shared:
                best, shared = old, n
        if best is not None:
            ids = self._spliced(best, self._recent[best], text, shared)
            if ids is not None:
                self.spliced += 1
                return ids
        return self._tok.tokenize(text)

    def _spliced(self, old: str, old_ids: list[int], text: str, shared: int) -> list[int] | None:
        """``old_ids`` up to the last safe split before ``shared``, then the rest of ``text`` tokenized."""
        split = _split_point(text, shared)
        if split is None:
            return None
        # Walk back from the end of the old text to the token that starts at the split.
        tail_bytes = len(old[split:].encode("utf-8"))
        k, length = len(old_ids), 0
        while length < tail_bytes and k > 1:
            k -= 1
            length += self._length(old_ids[k])
        if length != tail_bytes:
            return None  # a token crosses the split in the old text: not a safe place after all
        return old_ids[:k] + self._tail(text[split:])

    def _length(self, token: int) -> int:
        n = self._piece_length.get(token)
        if n is None:
            n = self._piece_length[token] = len(self._tok.piece(token))
        return n

    def _tail(self, text: str) -> list[int]:
        """Tokens of text that continues a longer one: without SentencePiece's dummy leading space."""
        return encode_infilling(self._tok, text)

    def _agrees_on_probe(self) -> bool:
        whole = self._tok.tokenize(_PROBE)
        self._recent[_PROBE] = whole
        for end in range(MIN_LENGTH, len(_PROBE), 293):
            text = _PROBE[:end]
            for old in (_PROBE, text[:-40] + "x = 1\n" + text[-40:]):
                spliced = self._spliced(old, self._tok.tokenize(old), text, _common_prefix(old, text))
                if spliced is not None and spliced != self._tok.tokenize(text):
                    self._recent.clear()
                    return False
        self._recent.clear()
        return True


def _common_prefix(a: str, b: str) -> int:
    """Length of the shared beginning, by binary search over slice comparisons (memcmp, not a Python loop)."""
    lo, hi = 0, min(len(a), len(b))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _split_point(text: str, before: int) -> int | None:
    """The last newline before offset ``before`` that follows a word character (see the module docstring):
    the edited line is re-tokenized whole."""
    pos = text.rfind("\n", 0, before)
    while pos > 0:
        if text[pos - 1].isalnum() or text[pos - 1] == "_":
            return pos
        pos = text.rfind("\n", 0, pos)
    return None
