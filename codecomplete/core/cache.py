"""Answers that need no model: typing through a suggestion on screen, and recently seen contexts.

Typing-through: when the user types exactly the characters the last suggestion starts with, the rest of that
suggestion is still right, so it is served trimmed (llama.vim and Tabby do the same). The LRU catches
backspace-and-retype and cursor returns: the same text around the cursor gets the same answer. It also holds
prefetched answers: the next suggestion for where accepting the shown one leaves the cursor.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass

# Characters around the cursor that key the LRU and check typing-through; the prompt window is usually smaller.
_KEY_BEFORE = 6000
_KEY_AFTER = 2000
SHOWN_DOCUMENTS = 64  # documents whose suggestion on screen is remembered (an editor that never closes its own)


@dataclass(frozen=True)
class _Shown:
    """The spot a suggestion was made for, by the text's lengths either side of the cursor and bounded windows
    of it (a copy of the whole document per editor would grow with every file open)."""

    before_len: int
    before_tail: str  # the last `_KEY_BEFORE` characters before the cursor
    after_len: int
    after_head: str  # the first `_KEY_AFTER` characters after it
    suggestion: str

    def typed(self, text: str, offset: int) -> str | None:
        """What was typed since, when the text is the same around it; None when it is not."""
        if len(text) - offset != self.after_len or offset < self.before_len:
            return None
        if not text.startswith(self.after_head, offset):
            return None
        start = self.before_len - len(self.before_tail)
        if not text.startswith(self.before_tail, start):
            return None
        return text[self.before_len : offset]


class SuggestionCache:
    def __init__(self, size: int = 256) -> None:
        self._size = size
        self._lru: OrderedDict[bytes, tuple[str, str]] = OrderedDict()  # key → (suggestion, how it was made)
        self._shown: OrderedDict[str, _Shown] = OrderedDict()  # per document: the last suggestion on screen

    @staticmethod
    def _key(text: str, offset: int, salt: str) -> bytes:
        h = hashlib.blake2b(digest_size=16)
        for part in (salt, text[max(0, offset - _KEY_BEFORE) : offset], "\0", text[offset : offset + _KEY_AFTER]):
            h.update(part.encode("utf-8", "surrogatepass"))
        return h.digest()

    def lookup(self, doc: str, text: str, offset: int, salt: str = "") -> tuple[str, str] | None:
        """(suggestion, how) where how is ``typing_through``, ``lru`` or ``prefetch``; None when the model must
        answer. A suggestion served from the LRU becomes the one on screen, which typing can go through."""
        shown = self._shown.get(doc)
        typed = None if shown is None else shown.typed(text, offset)
        if shown is not None and typed and shown.suggestion.startswith(typed) and len(typed) < len(shown.suggestion):
            return shown.suggestion[len(typed) :], "typing_through"
        key = self._key(text, offset, salt)
        hit = self._lru.get(key)
        if hit is None:
            return None
        self._lru.move_to_end(key)
        self._show(doc, text, offset, hit[0])
        return hit

    def holds(self, text: str, offset: int, salt: str = "") -> bool:
        """Whether the LRU has an answer for this spot (without touching what is on screen)."""
        return self._key(text, offset, salt) in self._lru

    def store(self, doc: str, text: str, offset: int, suggestion: str, salt: str = "", how: str = "lru") -> None:
        """Remember an answer; one made ahead (``how="prefetch"``) is not on screen yet, so it is not shown."""
        key = self._key(text, offset, salt)
        self._lru[key] = (suggestion, how)
        self._lru.move_to_end(key)
        while len(self._lru) > self._size:
            self._lru.popitem(last=False)
        if how != "prefetch":
            self._show(doc, text, offset, suggestion)

    def _show(self, doc: str, text: str, offset: int, suggestion: str) -> None:
        self._shown.pop(doc, None)
        if suggestion:
            tail, head = text[max(0, offset - _KEY_BEFORE) : offset], text[offset : offset + _KEY_AFTER]
            self._shown[doc] = _Shown(offset, tail, len(text) - offset, head, suggestion)
            while len(self._shown) > SHOWN_DOCUMENTS:
                self._shown.popitem(last=False)

    def forget(self, doc: str) -> None:
        self._shown.pop(doc, None)
