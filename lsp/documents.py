"""Open documents as the editor sees them: text, language and a tree-sitter tree kept up to date incrementally.

Each change is applied to the text and, as a ``tree.edit()``, to the syntax tree; the tree is re-parsed lazily,
from the edited old tree, only when a completion needs it — so a burst of keystrokes costs one incremental
parse, never a parse from scratch per keystroke.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tree_sitter
from lsprotocol import types

from codecomplete.core.context import MAX_PARSED_CHARS, MAX_PARSED_LINE_CHARS, parse_end
from codecomplete.core.languages import get_parser, language_for_path, normalize_language
from codecomplete.core.source import has_lone_cr, line_starts, offset_at, units
from codecomplete.errors import UserError


@dataclass
class Document:
    uri: str
    text: str
    version: int | None
    language: str | None
    tree: Any = None  # tree_sitter.Tree matching ``text`` once parsed; edited in place on changes
    _stale: bool = field(default=True, repr=False)  # tree edited but not yet re-parsed
    _line_starts: np.ndarray | None = field(default=None, repr=False)
    _parser: Any = field(default=None, repr=False)  # this document's own: its included range is per cursor
    _parsed_to: int = field(default=-1, repr=False)  # character offset the current tree covers
    unbilled_ms: float = field(default=0.0, repr=False)  # time spent on changes since the last request
    # An edit could not be applied: this copy no longer matches the editor's until it sends the whole text again
    # (a full-text change, or the file reopened). Requests get nothing meanwhile rather than a stale answer.
    out_of_sync: bool = False
    _lone_cr: bool = field(default=False, repr=False)  # lines end in a lone "\r" somewhere: no incremental tree

    def __post_init__(self) -> None:
        self._lone_cr = has_lone_cr(self.text)

    @property
    def parseable(self) -> bool:
        """Worth keeping a tree for: a known language, not huge, and lines tree-sitter counts as we do."""
        return self.language is not None and len(self.text) <= MAX_PARSED_CHARS and not self._lone_cr

    def syntax_tree(self, offset: int | None = None) -> Any:
        """The tree for the current text, re-parsed incrementally from the edited old tree if needed.

        With ``offset`` (a cursor) only the text up to ``parse_end`` is parsed: what the context needs,
        and it bounds the error recovery an unclosed bracket at the cursor sets off.
        """
        if not self.parseable:
            return None
        if offset is not None:  # a line of minified code: the context reads text there, not a tree
            row = self._row(offset)
            starts = self.line_starts()
            line_end = int(starts[row + 1]) if row + 1 < len(starts) else len(self.text)
            if line_end - int(starts[row]) > MAX_PARSED_LINE_CHARS:
                return None
        if self._parser is None:
            if get_parser(self.language) is None:
                return None
            self._parser = tree_sitter.Parser(get_parser(self.language).language)
        end = len(self.text) if offset is None else parse_end(self.text, offset)
        if self._stale or self.tree is None or end != self._parsed_to:
            data = self.text.encode("utf-8")
            end_byte = len(data) if end == len(self.text) else self._byte(end)
            self._parser.included_ranges = [tree_sitter.Range((0, 0), self._point(end), 0, end_byte)]
            self.tree = self._parser.parse(data, self.tree) if self.tree is not None else self._parser.parse(data)
            self._stale = False
            self._parsed_to = end
        return self.tree

    def parse_whole(self, text: str) -> Any:
        """A tree for ``text`` (this document's text when called) from a parser of its own, so it may run in
        another thread: tree-sitter releases the GIL while it parses. None without a grammar. The tree is
        settled (see ``_settle``) so the first keystroke anywhere in it re-parses as cheaply as later ones."""
        if not self.parseable or get_parser(self.language) is None:
            return None
        parser = tree_sitter.Parser(get_parser(self.language).language)
        data = text.encode("utf-8")
        return _settle(parser, data, parser.parse(data))

    def adopt(self, text: str, tree: Any) -> None:
        """Take a tree from ``parse_whole`` unless the text changed meanwhile or a request parsed already."""
        if self.text is text and self.tree is None:
            self.tree, self._stale, self._parsed_to = tree, False, len(text)

    # --- positions -----------------------------------------------------------------------------------

    def line_starts(self) -> np.ndarray:
        """Character offsets of the line starts (an array: an edit shifts the lines below in place)."""
        if self._line_starts is None:
            self._line_starts = np.array(line_starts(self.text), dtype=np.int64)
        return self._line_starts

    def offset_at(self, position: types.Position, encoding: str) -> int:
        """Character offset of an LSP position in the negotiated encoding; UserError when outside the text."""
        return offset_at(self.text, position.line, position.character, encoding=encoding, starts=self.line_starts())

    def position_at(self, offset: int, encoding: str) -> types.Position:
        line = self._row(offset)
        return types.Position(line=line, character=units(self.text[int(self.line_starts()[line]) : offset], encoding))

    def _row(self, offset: int) -> int:
        """The line an offset is on: the last line start at or before it."""
        return int(np.searchsorted(self.line_starts(), offset, side="right")) - 1

    def _point(self, offset: int, row: int | None = None) -> tuple[int, int]:
        """tree-sitter point (row, byte column) of a character offset."""
        row = self._row(offset) if row is None else row
        line_start = int(self.line_starts()[row])
        column = offset - line_start if self.text.isascii() else len(self.text[line_start:offset].encode("utf-8"))
        return row, column

    def _byte(self, offset: int) -> int:
        return offset if self.text.isascii() else len(self.text[:offset].encode("utf-8"))

    # --- edits ---------------------------------------------------------------------------------------

    def apply_changes(self, changes: Sequence[Any], encoding: str) -> None:
        """Apply a ``didChange`` batch whole or not at all: a change that does not fit raises UserError and leaves
        the document as it was before the batch."""
        if len(changes) == 1:  # one change checks its range before it touches anything
            self._apply_change(changes[0], encoding)
            return
        saved = (self.text, self.tree.copy() if self.tree is not None else None, self._stale, self._parsed_to,
                 None if self._line_starts is None else self._line_starts.copy(), self._lone_cr)
        try:
            for change in changes:
                self._apply_change(change, encoding)
        except UserError:
            self.text, self.tree, self._stale, self._parsed_to, self._line_starts, self._lone_cr = saved
            raise

    def _apply_change(self, change: Any, encoding: str) -> None:
        """One ``TextDocumentContentChangeEvent`` (full text, or a range replacement)."""
        rng = getattr(change, "range", None)
        if rng is None:
            self.text = change.text
            self.tree = None
            self._stale = True
            self._line_starts = None
            self._lone_cr = has_lone_cr(self.text)
            return
        start = self.offset_at(rng.start, encoding)
        end = self.offset_at(rng.end, encoding)
        if end < start:
            raise UserError("change range ends before it starts")
        new = change.text
        first, last = rng.start.line, rng.end.line
        if "\r" in new or self._lone_cr:  # rare: line ends tree-sitter does not count; recount, parse afresh
            self.text = self.text[:start] + new + self.text[end:]
            self.tree, self._stale, self._line_starts = None, True, None
            self._lone_cr = has_lone_cr(self.text)
            return
        if self.tree is not None:
            self._edit_tree(start, end, first, last, new)
        self.text = self.text[:start] + new + self.text[end:]
        delta = len(new) - (end - start)
        starts = self._line_starts
        if starts is None:
            return
        if first == last and "\n" not in new:  # a keystroke: shift the lines below in place
            starts[last + 1 :] += delta
        else:
            inserted = np.array([start + i + 1 for i, ch in enumerate(new) if ch == "\n"], dtype=np.int64)
            self._line_starts = np.concatenate((starts[: first + 1], inserted, starts[last + 1 :] + delta))

    def _edit_tree(self, start: int, end: int, first: int, last: int, new: str) -> None:
        """Tell the tree that ``new`` replaced characters ``start:end`` (on lines ``first``..``last``); the
        points come from the range's lines, not from scanning the text for them."""
        start_byte = self._byte(start)
        start_point, old_end_point = self._point(start, first), self._point(end, last)
        old_end_byte = start_byte + len(self.text[start:end].encode("utf-8"))
        new_bytes = new.encode("utf-8")
        newline = new.rfind("\n")
        new_end_point = ((first, start_point[1] + len(new_bytes)) if newline < 0 else
                         (first + new.count("\n"), len(new[newline + 1 :].encode("utf-8"))))
        self.tree.edit(start_byte, old_end_byte, start_byte + len(new_bytes), start_point, old_end_point,
                       new_end_point)
        self._stale = True


# A tree fresh from a whole parse has its long runs of siblings balanced, and the first incremental re-parse
# near any spot rebuilds them: ~1.2 ms for a keystroke in a 2,500-line class against ~0.3 ms for the next ones.
# Re-parsing around a few empty edits spread over the file does that rebuilding up front (~3 ms in all there;
# measured: after 4 such edits the first keystroke anywhere re-parses in ~0.3 ms).
SETTLE_EDITS = 4
_SETTLE_SEARCH_LINES = 200  # how far past each spread point to look for a blank line outside strings


def _settle(parser: tree_sitter.Parser, data: bytes, tree: tree_sitter.Tree) -> tree_sitter.Tree:
    """``tree`` re-parsed around empty edits at up to SETTLE_EDITS blank lines spread over ``data``, each outside
    any string or comment (an edit inside one would make the parser re-read it whole)."""
    lines = data.split(b"\n")
    starts = [0]
    for line in lines[:-1]:
        starts.append(starts[-1] + len(line) + 1)
    root = tree.root_node
    for k in range(1, SETTLE_EDITS + 1):
        first = len(lines) * k // (SETTLE_EDITS + 1)
        for row in range(first, min(len(lines), first + _SETTLE_SEARCH_LINES)):
            if lines[row].strip():
                continue
            point = (row, 0)
            node = root.descendant_for_point_range(point, point)
            if node.child_count or node.start_point >= point:
                tree.edit(starts[row], starts[row], starts[row], point, point, point)
                tree = parser.parse(data, tree)
                root = tree.root_node
                break
    return tree


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
