"""Open documents as the editor sees them: text, language and a tree-sitter tree kept up to date incrementally.

Each change is applied to the text and, as a ``tree.edit()``, to the syntax tree; the tree is re-parsed lazily,
from the edited old tree, only when a completion needs it — so a burst of keystrokes costs one incremental
parse, never a parse from scratch per keystroke.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import tree_sitter
from lsprotocol import types

from codecomplete.context import parse_end
from codecomplete.errors import UserError
from codecomplete.languages import get_parser, language_for_path, normalize_language

# Past this size a document gets plain line windows: parsing megabytes per keystroke buys nothing.
MAX_PARSED_BYTES = 4 * 1024 * 1024


def _units(ch: str, encoding: str) -> int:
    if encoding == types.PositionEncodingKind.Utf8:
        return len(ch.encode("utf-8"))
    if encoding == types.PositionEncodingKind.Utf16:
        return 2 if ord(ch) > 0xFFFF else 1
    return 1


@dataclass
class Document:
    uri: str
    text: str
    version: int | None
    language: str | None
    tree: Any = None  # tree_sitter.Tree matching ``text`` once parsed; edited in place on changes
    _stale: bool = field(default=True, repr=False)  # tree edited but not yet re-parsed
    _line_starts: list[int] | None = field(default=None, repr=False)
    _parser: Any = field(default=None, repr=False)  # this document's own: its included range is per cursor
    _parsed_to: int = field(default=-1, repr=False)  # character offset the current tree covers

    @property
    def parseable(self) -> bool:
        return self.language is not None and len(self.text) <= MAX_PARSED_BYTES

    def syntax_tree(self, offset: int | None = None) -> Any:
        """The tree for the current text, re-parsed incrementally from the edited old tree if needed.

        With ``offset`` (a cursor) only the text up to ``parse_end`` is parsed: what the context needs,
        and it bounds the error recovery an unclosed bracket at the cursor sets off.
        """
        if not self.parseable:
            return None
        if self._parser is None:
            if get_parser(self.language) is None:
                return None
            self._parser = tree_sitter.Parser(get_parser(self.language).language)
        end = len(self.text) if offset is None else parse_end(self.text, offset)
        if self._stale or self.tree is None or end != self._parsed_to:
            data = self.text.encode("utf-8")
            end_byte = len(data) if end == len(self.text) else len(self.text[:end].encode("utf-8"))
            self._parser.included_ranges = [tree_sitter.Range((0, 0), _point(self.text, end), 0, end_byte)]
            self.tree = self._parser.parse(data, self.tree) if self.tree is not None else self._parser.parse(data)
            self._stale = False
            self._parsed_to = end
        return self.tree

    # --- positions -----------------------------------------------------------------------------------

    def line_starts(self) -> list[int]:
        if self._line_starts is None:
            starts = [0]
            find = self.text.find
            i = find("\n")
            while i >= 0:
                starts.append(i + 1)
                i = find("\n", i + 1)
            self._line_starts = starts
        return self._line_starts

    def line_text(self, line: int) -> str:
        starts = self.line_starts()
        end = starts[line + 1] - 1 if line + 1 < len(starts) else len(self.text)
        return self.text[starts[line] : end].rstrip("\r")

    def offset_at(self, position: types.Position, encoding: str) -> int:
        """Character offset of an LSP position in the negotiated encoding; UserError when outside the text."""
        starts = self.line_starts()
        if not 0 <= position.line < len(starts):
            raise UserError(f"line {position.line} is past the end of the document ({len(starts)} lines)")
        line = self.line_text(position.line)
        target = position.character
        units = 0
        for i, ch in enumerate(line):
            if units >= target:
                return starts[position.line] + i
            units += _units(ch, encoding)
        if units >= target:
            return starts[position.line] + len(line)
        raise UserError(f"character {target} is past the end of line {position.line}")

    def position_at(self, offset: int, encoding: str) -> types.Position:
        starts = self.line_starts()
        lo, hi = 0, len(starts) - 1
        while lo < hi:  # last line start <= offset
            mid = (lo + hi + 1) // 2
            if starts[mid] <= offset:
                lo = mid
            else:
                hi = mid - 1
        column = sum(_units(ch, encoding) for ch in self.text[starts[lo] : offset])
        return types.Position(line=lo, character=column)

    # --- edits ---------------------------------------------------------------------------------------

    def apply_change(self, change: Any, encoding: str) -> None:
        """Apply one ``TextDocumentContentChangeEvent`` (full text, or a range replacement)."""
        rng = getattr(change, "range", None)
        if rng is None:
            self.text = change.text
            self.tree = None
            self._stale = True
            self._line_starts = None
            return
        start = self.offset_at(rng.start, encoding)
        end = self.offset_at(rng.end, encoding)
        if end < start:
            raise UserError("change range ends before it starts")
        if self.tree is not None:
            self._edit_tree(start, end, change.text)
        self.text = self.text[:start] + change.text + self.text[end:]
        if self._line_starts is not None:  # patched, not recounted: a keystroke on a long file stays cheap
            starts = self._line_starts
            first, last = rng.start.line, rng.end.line
            inserted = [start + i + 1 for i, ch in enumerate(change.text) if ch == "\n"]
            delta = len(change.text) - (end - start)
            self._line_starts = starts[: first + 1] + inserted + [x + delta for x in starts[last + 1 :]]

    def _edit_tree(self, start: int, end: int, new_text: str) -> None:
        text = self.text
        start_byte = len(text[:start].encode("utf-8"))
        old_end_byte = start_byte + len(text[start:end].encode("utf-8"))
        new_end_byte = start_byte + len(new_text.encode("utf-8"))
        start_point = _point(text, start)
        old_end_point = _point(text, end)
        new_end_point = _point(text[:start] + new_text, start + len(new_text))
        self.tree.edit(start_byte, old_end_byte, new_end_byte, start_point, old_end_point, new_end_point)
        self._stale = True


def _point(text: str, offset: int) -> tuple[int, int]:
    """tree-sitter point (row, byte column) of a character offset."""
    line_start = text.rfind("\n", 0, offset) + 1
    return text.count("\n", 0, offset), len(text[line_start:offset].encode("utf-8"))


class Documents:
    """The open documents, by URI."""

    def __init__(self) -> None:
        self._docs: dict[str, Document] = {}

    def open(self, item: types.TextDocumentItem) -> Document:
        language = normalize_language(item.language_id) if item.language_id else None
        if language is None:
            language = language_for_path(item.uri)
        doc = Document(uri=item.uri, text=item.text, version=item.version, language=language)
        self._docs[item.uri] = doc
        return doc

    def get(self, uri: str) -> Document | None:
        return self._docs.get(uri)

    def close(self, uri: str) -> None:
        self._docs.pop(uri, None)

    def __len__(self) -> int:
        return len(self._docs)
