"""Document sync: incremental edits keep text and the tree-sitter tree right; positions in every encoding."""

from __future__ import annotations

import random
from typing import Any

import pytest
from lsprotocol import types

from codecomplete.core.context import parse_end
from codecomplete.core.languages import get_parser
from codecomplete.errors import UserError
from codecomplete.lsp.documents import Document

UTF8, UTF16, UTF32 = (types.PositionEncodingKind.Utf8, types.PositionEncodingKind.Utf16,
                      types.PositionEncodingKind.Utf32)


def change(doc: Document, start: int, end: int, text: str, enc: str = UTF16):
    rng = types.Range(doc.position_at(start, enc), doc.position_at(end, enc))
    doc.apply_changes([types.TextDocumentContentChangePartial(range=rng, text=text)], enc)


def test_incremental_edits_match_a_fresh_parse() -> None:
    text = "def f(x):\n    s = 'é😀'\n    return x\n\nclass A:\n    pass\n"
    doc = Document(uri="file:///a.py", text=text, version=1, language="python")
    first_tree = doc.syntax_tree()
    rng = random.Random(7)
    pieces = ["x", "\n", "    ", "(", ")", "日本", "😀", "if y:\n        ", "'", ""]
    for _ in range(200):
        a = rng.randrange(len(doc.text) + 1)
        b = min(len(doc.text), a + rng.randrange(4))
        new = rng.choice(pieces)
        change(doc, a, b, new, rng.choice([UTF8, UTF16, UTF32]))
        text = text[:a] + new + text[b:]
        assert doc.text == text
        assert doc.line_starts().tolist() == [0] + [i + 1 for i, ch in enumerate(text) if ch == "\n"]  # patched right
        if rng.random() < 0.2:
            tree = doc.syntax_tree()
            fresh = get_parser("python").parse(text.encode("utf-8"))
            assert str(tree.root_node) == str(fresh.root_node)
    assert doc.syntax_tree() is not first_tree or doc.tree is first_tree  # edited in place or replaced


def test_a_cursor_bounds_the_parse_and_typing_keeps_it_exact() -> None:
    """With a cursor, the tree covers the text up to parse_end (what a fresh parse of that much gives, also
    after incremental edits with unclosed brackets), not the rest of a long file."""
    body = "".join(f"def f{i}(x):\n    return g(x, {i})\n\n\n" for i in range(2000))
    doc = Document(uri="file:///long.py", text=body, version=1, language="python")
    cursor = body.index("def f1000")
    for i, ch in enumerate("y = call(a, [b, 'c'"):
        change(doc, cursor + i, cursor + i, ch)
        offset = cursor + i + 1
        tree = doc.syntax_tree(offset)
        end = parse_end(doc.text, offset)
        assert end < len(doc.text)
        fresh = get_parser("python").parse(doc.text[:end].encode("utf-8"))
        assert str(tree.root_node) == str(fresh.root_node)
    assert tree.root_node.end_byte <= len(doc.text[:end].encode("utf-8"))


def test_tree_is_reparsed_lazily_not_per_keystroke() -> None:
    doc = Document(uri="file:///a.py", text="x = 1\n", version=1, language="python")
    doc.syntax_tree()
    for i, ch in enumerate("yy = 2\n"):
        change(doc, 6 + i, 6 + i, ch)
    assert doc._stale  # edits only marked the tree; parsing waits for the next completion
    assert doc.syntax_tree().root_node.child_count == 2


@pytest.mark.parametrize("enc,units", [(UTF8, 4 + 2 + 4 + 3), (UTF16, 4 + 1 + 2 + 1), (UTF32, 4 + 1 + 1 + 1)])
def test_positions_in_each_encoding(enc: str, units: int) -> None:
    doc = Document(uri="file:///a.py", text="a\nab = é😀日x\n", version=1, language=None)
    # cursor after "ab = é😀日": 5 ASCII chars + é + 😀 + 日
    offset = doc.offset_at(types.Position(1, 1 + units), enc)
    assert doc.text[offset:] == "x\n"
    assert doc.position_at(offset, enc) == types.Position(1, 1 + units)


def test_positions_outside_the_text_are_errors() -> None:
    doc = Document(uri="file:///a.py", text="ab\ncd", version=1, language=None)
    assert doc.offset_at(types.Position(1, 2), UTF16) == 5
    with pytest.raises(UserError):
        doc.offset_at(types.Position(2, 0), UTF16)
    with pytest.raises(UserError):
        doc.offset_at(types.Position(0, 3), UTF16)


def test_crlf_lines() -> None:
    doc = Document(uri="file:///a.py", text="ab\r\ncd\r\n", version=1, language=None)
    assert doc.offset_at(types.Position(0, 2), UTF16) == 2
    assert doc.offset_at(types.Position(1, 1), UTF16) == 5


def test_a_tree_parsed_ahead_is_taken_unless_the_text_changed_meanwhile() -> None:
    text = "def f(x):\n    return x\n"
    doc = Document(uri="file:///a.py", text=text, version=1, language="python")
    tree = doc.parse_whole(doc.text)
    doc.adopt(text, tree)
    assert doc.syntax_tree() is tree  # taken as is: no parse of the whole text on the first request

    moved = Document(uri="file:///b.py", text=text, version=1, language="python")
    tree = moved.parse_whole(moved.text)
    change(moved, 0, 0, "import os\n")  # a keystroke while the tree was being parsed
    moved.adopt(text, tree)
    assert moved.tree is None
    assert str(moved.syntax_tree().root_node) == str(get_parser("python").parse(moved.text.encode()).root_node)


@pytest.mark.parametrize("language, unit", [
    ("python", 'class K{i}:\n    """Doc é{i}.\n\n    More 😀.\n    """\n\n    def m(self):\n        return "日本"\n\n'),
    ("javascript", "/* note {i}\n\n   é */\nclass K{i} {{\n  m() {{\n    return `a\n\nb`;\n  }}\n\n}}\n\n"),
])
def test_a_tree_parsed_ahead_is_settled_yet_exact(language: str, unit: str) -> None:
    """The empty edits that settle a whole parse (blank lines, never inside strings or comments, byte offsets
    with multi-byte text before them) leave exactly the tree a fresh parse gives, and so do keystrokes after."""
    text = "".join(unit.format(i=i) for i in range(300))
    doc = Document(uri=f"file:///a.{language[:2]}", text=text, version=1, language=language)
    doc.adopt(text, doc.parse_whole(text))
    parser = get_parser(language)
    assert str(doc.syntax_tree().root_node) == str(parser.parse(text.encode()).root_node)
    for spot in (len(text) // 7, len(text) // 2, len(text) - 20):
        change(doc, spot, spot, "\n")
        assert str(doc.syntax_tree().root_node) == str(parser.parse(doc.text.encode()).root_node)


def _change(line: int, character: int, end_line: int, end_character: int, text: str) -> Any:
    rng = types.Range(types.Position(line, character), types.Position(end_line, end_character))
    return types.TextDocumentContentChangePartial(range=rng, text=text)


def test_a_batch_with_a_change_that_does_not_fit_is_refused_whole() -> None:
    source = "def f(x):\n    return x\n"
    doc = Document(uri="file:///a.py", text=source, version=1, language="python")
    doc.syntax_tree(len(source))
    doc.line_starts()
    good, bad = _change(1, 4, 1, 10, "yield"), _change(9, 0, 9, 0, "oops")
    with pytest.raises(UserError, match="line 10 is out of range"):
        doc.apply_changes([good, bad], UTF16)
    assert doc.text == source and list(doc.line_starts()) == [0, 10, 23]
    assert str(doc.syntax_tree(len(source)).root_node) == str(get_parser("python").parse(source.encode()).root_node)
    doc.apply_changes([good, _change(0, 4, 0, 5, "g")], UTF16)
    assert doc.text == "def g(x):\n    yield x\n"


def test_lone_carriage_returns_end_lines_as_lsp_says() -> None:
    doc = Document(uri="file:///a.py", text="a = 1\rb = 2\r\nc = 3\n", version=1, language="python")
    assert doc.offset_at(types.Position(1, 2), UTF16) == 8 and doc.offset_at(types.Position(2, 0), UTF16) == 13
    assert doc.position_at(8, UTF16) == types.Position(1, 2)
    assert doc.syntax_tree(8) is None  # tree-sitter counts lines differently: the context parses the text itself
    doc.apply_changes([_change(1, 0, 1, 1, "bb")], UTF16)
    assert doc.text == "a = 1\rbb = 2\r\nc = 3\n" and doc.offset_at(types.Position(2, 0), UTF16) == 14
