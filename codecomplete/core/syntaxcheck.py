"""Whether inserting a suggestion breaks the code around the cursor, judged by tree-sitter's error recovery.

A suggestion does harm when the document with it parses with more ERROR and MISSING nodes than the document
without it. Comparing with the document as it is, rather than asking for no errors at all, forgives what the
user is still typing and whatever the window edges cut: both parses share it.

`added_errors` (also the benchmark's measure of harm) parses just the windows it is given, fresh: 1.2-1.9 ms
for both parses of 6-11 KB windows on a 2-core CPU. The document without the suggestion is remembered, so
another suggestion between the same windows costs one parse. Errors are counted by walking only into subtrees
that have one. The post-processing rule parses less and faster: `local_windows` (the top-level statements
around the cursor, 2-10 KB) and incremental parses from the remembered tree, 0.4-0.9 ms per suggestion.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import tree_sitter

from codecomplete.core.languages import get_parser, normalize_language, statement_start

_REMEMBERED = 8  # documents-without-the-suggestion kept parsed: one per recent cursor is plenty
_MAX_TRIES = 24  # cuts tried by first_harmless_cut beyond the whole suggestion: a bound on its worst case
LOCAL_BEFORE = 2048  # `local_windows`: at least this much code before the cursor
LOCAL_AFTER = 1024  # and after it


def count_errors(node: tree_sitter.Node) -> int:
    """ERROR and MISSING nodes in `node`'s subtree, descending only where `has_error` says there is one."""
    if not node.has_error:
        return 0
    count = 0
    cursor = node.walk()
    while True:
        current = cursor.node
        assert current is not None
        if current.is_error or current.is_missing:
            count += 1
        if current.has_error and cursor.goto_first_child():
            continue
        while not cursor.goto_next_sibling():
            if not cursor.goto_parent():
                return count


def local_windows(
    prefix: str, suffix: str, language: str | None, before: int = LOCAL_BEFORE, after: int = LOCAL_AFTER
) -> tuple[str, str]:
    """The windows cut down to the top-level statements around the cursor: from the last line that starts
    one (`LanguageSpec.top_level`) at least `before` characters above the cursor, to the first at least
    `after` characters below it; the windows as they are for a language without that fact.

    Parsing costs about 0.1 ms per KB and prompt windows run to 10-12 KB, while what a suggestion breaks
    shows within its own definition (an unclosed bracket shows at the end of whatever is parsed): the
    post-processing rule parses this much instead. The edges are statement starts, not guesses, because
    starting inside a multi-line string turns code into text and text into code.
    """
    pattern = statement_start(language)
    if pattern is None:
        return prefix, suffix
    start = 0
    if len(prefix) > before:
        limit = len(prefix) - before
        for m in pattern.finditer(prefix):
            if m.start() > limit:
                break
            start = m.start()
    end = len(suffix)
    if len(suffix) > after:
        m = pattern.search(suffix, after)
        end = m.start() if m else end
    return prefix[start:], suffix[:end]


def _encode(text: str) -> bytes:
    # Editors can hand over lone surrogates; tree-sitter just sees odd bytes, in both parses alike.
    return text.encode("utf-8", "surrogatepass")


def _end_point(data: bytes, start: tuple[int, int] = (0, 0)) -> tuple[int, int]:
    """The tree-sitter point (row, byte column) reached after `data`, starting at `start`."""
    newlines = data.count(b"\n")
    if not newlines:
        return start[0], start[1] + len(data)
    return start[0] + newlines, len(data) - data.rfind(b"\n") - 1


@dataclass(frozen=True)
class _Base:
    """The document without the insertion, parsed."""

    language: str
    prefix: bytes
    suffix: bytes
    cursor: tuple[int, int]  # the insertion point as a tree-sitter point
    tree: tree_sitter.Tree
    errors: int


_lock = threading.Lock()
_bases: OrderedDict[tuple[str, str, str], _Base] = OrderedDict()


def _grammar(language: str | None) -> str | None:
    """Our name for a language that has a grammar; None otherwise."""
    if not language:
        return None
    name = normalize_language(language)
    return name if name is not None and get_parser(name) is not None else None


def _base(language: str, prefix: str, suffix: str) -> _Base:
    key = (language, prefix, suffix)
    with _lock:
        found = _bases.get(key)
        if found is not None:
            _bases.move_to_end(key)
            return found
    parser = get_parser(language)
    assert parser is not None
    before, after = _encode(prefix), _encode(suffix)
    tree = parser.parse(before + after)
    base = _Base(language, before, after, _end_point(before), tree, count_errors(tree.root_node))
    with _lock:
        _bases[key] = base
        while len(_bases) > _REMEMBERED:
            _bases.popitem(last=False)
    return base


def _errors_with(base: _Base, insertion: str, *, incremental: bool) -> int:
    """Errors in the base document with `insertion` at the cursor: a fresh parse, or an incremental one
    from the base tree, a third of the cost (0.2 vs 0.6 ms on 3-10 KB). Tree-sitter means the two to give
    the same tree; their error counts agreed in all of 3,400 insertions of real and broken code we compared
    (Python, Go, JavaScript), and tests/test_syntaxcheck.py keeps comparing them."""
    parser = get_parser(base.language)
    assert parser is not None
    data = _encode(insertion)
    text = base.prefix + data + base.suffix
    if not incremental:
        return count_errors(parser.parse(text).root_node)
    tree = base.tree.copy()  # the remembered tree is shared: edit a copy
    start = len(base.prefix)
    tree.edit(
        start_byte=start, old_end_byte=start, new_end_byte=start + len(data),
        start_point=base.cursor, old_end_point=base.cursor, new_end_point=_end_point(data, base.cursor),
    )
    return count_errors(parser.parse(text, tree).root_node)


def added_errors(prefix: str, insertion: str, suffix: str, language: str | None) -> int:
    """How many more ERROR/MISSING nodes tree-sitter finds in `prefix + insertion + suffix` than in
    `prefix + suffix` (never below 0; 0 for a language without a grammar). Two fresh parses, one of them
    remembered for the next insertion between the same windows."""
    name = _grammar(language)
    if name is None or not insertion:
        return 0
    base = _base(name, prefix, suffix)
    return max(0, _errors_with(base, insertion, incremental=False) - base.errors)


def _cuts(insertion: str) -> list[int]:
    """Where `first_harmless_cut` may cut, best first: line ends from the last back, then statement ends (`;`) on
    the first line. A cut that would leave a blank last line is skipped: the one before it says the same."""
    cuts = []
    end = len(insertion)
    while (end := insertion.rfind("\n", 0, end)) >= 0:
        kept_line = insertion[insertion.rfind("\n", 0, end) + 1 : end]
        if kept_line.strip() or end == 0:
            cuts.append(end)
    first_line_end = insertion.find("\n")
    first_line = insertion if first_line_end < 0 else insertion[:first_line_end]
    cuts += [i + 1 for i in range(len(first_line) - 2, -1, -1) if first_line[i] == ";"]
    return cuts


def first_harmless_cut(prefix: str, insertion: str, suffix: str, language: str | None) -> int:
    """The length of the longest start of `insertion` that adds no syntax errors (see `added_errors`), cut at a
    line end or, failing that, after a `;` on its first line: `len(insertion)` when all of it is harmless (and
    for a language without a grammar), 0 when no such start is.

    One fresh parse of the document without the insertion (remembered), then an incremental one per cut tried.
    """
    name = _grammar(language)
    if name is None or not insertion.strip():
        return len(insertion)
    base = _base(name, prefix, suffix)
    if _errors_with(base, insertion, incremental=True) <= base.errors:
        return len(insertion)
    for cut in _cuts(insertion)[:_MAX_TRIES]:
        if cut == 0 or _errors_with(base, insertion[:cut], incremental=True) <= base.errors:
            return cut
    return 0
