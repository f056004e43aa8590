"""The outline of a source file: its definitions, and the definition-aligned snippets the index ranks.

tree-sitter finds definitions (the node types are in each language's spec); a file without a grammar is cut
into plain line chunks. A definition too long for one snippet is split by its members, or folded to its
signatures and docstrings.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import tree_sitter

from codecomplete.core.languages import LanguageSpec, get_parser, spec_for

MAX_SNIPPET_LINES = 40
_MAX_SNIPPET_CHARS = 4000  # a 40-line chunk longer than this is minified or data: split it further
_PARSE_SLICE = 4096
_COMMENTS = frozenset({"comment", "line_comment", "block_comment"})
_ATTACHED = _COMMENTS | {"attribute_item"}  # belong to the definition below them
_CLOSING_LINE = re.compile(r"\s*[)\]}][\s)\]};,]*")


@dataclass(frozen=True, slots=True)
class Definition:
    name: str
    kind: str  # function, method, class, type, impl, module, macro, variable
    start_line: int  # 0-based, decorators/export keywords included, leading comments not
    end_line: int  # exclusive
    signature: str
    doc: str  # docstring or the comment right above; "" if none


_NAME_NODES = frozenset({"identifier", "field_identifier", "type_identifier", "destructor_name",
                         "operator_name", "namespace_identifier"})


def _last_row(node: tree_sitter.Node) -> int:
    """The last row holding any of the node's text (a node may end at column 0 of the next row)."""
    end = node.end_point
    return max(node.start_point.row, end.row - 1 if end.column == 0 else end.row)


def _unwrap(node: tree_sitter.Node, spec: LanguageSpec) -> list[tree_sitter.Node]:
    """The definitions a node holds: itself, or those inside a wrapper (decorators, export, template...)."""
    if node.type in spec.definition_wrappers:
        field_name = spec.definition_wrappers[node.type]
        inner = [node.child_by_field_name(field_name)] if field_name else node.named_children
        return [d for child in inner if child is not None for d in _unwrap(child, spec)]
    return [node] if node.type in spec.definitions else []


def _declarator_name(node: tree_sitter.Node, need_function: bool) -> tree_sitter.Node | None:
    """The name in a C/C++ declarator chain; for declarations only when it declares a function."""
    d = node.child_by_field_name("declarator")
    is_function = False
    while d is not None and d.type not in _NAME_NODES:
        if d.type == "function_declarator":
            is_function = True
        if d.type == "qualified_identifier":
            d = d.child_by_field_name("name")
            continue
        d = d.child_by_field_name("declarator")
    return d if d is not None and (is_function or not need_function) else None


def _name_node(node: tree_sitter.Node) -> tree_sitter.Node | None:
    kind = node.type
    if kind in ("function_definition", "declaration", "field_declaration") and node.child_by_field_name(
        "declarator"
    ):
        return _declarator_name(node, need_function=kind != "function_definition")
    if kind == "type_definition":
        return _declarator_name(node, need_function=False)
    if kind == "impl_item":
        typ = node.child_by_field_name("type")
        while typ is not None and typ.type != "type_identifier":
            typ = typ.child_by_field_name("type") or (typ.named_children[0] if typ.named_children else None)
        return typ
    if kind in ("lexical_declaration", "variable_declaration"):
        declarator = next((c for c in node.named_children if c.type == "variable_declarator"), None)
        name = declarator.child_by_field_name("name") if declarator else None
        return name if name is not None and name.type == "identifier" else None
    if kind == "expression_statement":  # Python: NAME = value / NAME: type = value
        assign = node.named_children[0] if node.named_children else None
        if assign is None or assign.type != "assignment":
            return None
        left = assign.child_by_field_name("left")
        return left if left is not None and left.type == "identifier" else None
    return node.child_by_field_name("name")


def _body(node: tree_sitter.Node) -> tuple[tree_sitter.Node, tree_sitter.Node] | None:
    """(owner, body): the block a definition's signature ends before, with the node that holds it."""
    if node.type in ("lexical_declaration", "variable_declaration"):
        declarator = next((c for c in node.named_children if c.type == "variable_declarator"), None)
        value = declarator.child_by_field_name("value") if declarator else None
        if value is None or value.type not in ("arrow_function", "function_expression", "function", "class"):
            return None
        node = value
    body = node.child_by_field_name("body")
    if body is None or _last_row(node) == node.start_point.row:  # a one-liner is its own signature
        return None
    return node, body


def _signature_end(owner: tree_sitter.Node, body: tree_sitter.Node) -> tuple[int, int]:
    """(byte, row) where the signature ends: after the last non-comment child before the body."""
    end, row = owner.start_byte, owner.start_point.row
    for child in owner.children:
        if child.start_byte >= body.start_byte:
            break
        if child.type not in _COMMENTS:
            end, row = child.end_byte, child.end_point.row
    return end, row


def _docstring(body: tree_sitter.Node) -> tree_sitter.Node | None:
    first = body.named_children[0] if body.named_children else None
    if first is not None and first.type == "expression_statement" and first.named_children:
        string = first.named_children[0]
        if string.type in ("string", "concatenated_string"):
            return string
    return None


def _comments_above(node: tree_sitter.Node) -> list[tree_sitter.Node]:
    """Comments (and Rust attributes) directly above `node`, with no blank line between."""
    found: list[tree_sitter.Node] = []
    row = node.start_point.row
    prev = node.prev_named_sibling
    while prev is not None and prev.type in _ATTACHED and _last_row(prev) >= row - 1:
        found.append(prev)
        row = prev.start_point.row
        prev = prev.prev_named_sibling
    found.reverse()
    return found


@dataclass
class _Outline:
    """Definitions of a file and the rows that make up its folded (signatures + docs) view."""

    spec: LanguageSpec
    src: bytes
    lines: list[str]
    definitions: list[Definition] = field(default_factory=list)
    kept_rows: set[int] = field(default_factory=set)

    def collect(self, nodes: Iterable[tree_sitter.Node], depth: int) -> None:
        for outer in nodes:
            inner = _unwrap(outer, self.spec)
            for node in inner:
                kind = self.spec.definitions[node.type]
                name_node = _name_node(node)
                if name_node is None or (kind == "variable" and depth > 0):
                    continue
                name = name_node.text.decode("utf-8", "replace").strip("\"'`")
                self._add(outer if len(inner) == 1 else node, node, name, kind, depth)

    def _add(self, start: tree_sitter.Node, node: tree_sitter.Node, name: str, kind: str, depth: int) -> None:
        src = self.src
        first, last = start.start_point.row, _last_row(node)
        comments = _comments_above(start)
        doc_node = None
        found = _body(node)
        if kind == "type" and last - first < 12:
            sig_end, sig_last = node.end_byte, last
        elif found is not None:
            sig_end, sig_last = _signature_end(*found)
            if self.spec.docstrings:
                doc_node = _docstring(found[1])
        else:  # a declaration without a body: its first line says enough
            newline = src.find(b"\n", start.start_byte, node.end_byte)
            sig_end, sig_last = (node.end_byte if newline < 0 else newline), first
        line_start = src.rfind(b"\n", 0, start.start_byte) + 1
        signature = src[line_start:sig_end].decode("utf-8", "replace").rstrip()
        if doc_node is not None:
            doc = doc_node.text.decode("utf-8", "replace")
        else:
            texts = [c.text.decode("utf-8", "replace").rstrip() for c in comments if c.type in _COMMENTS]
            doc = "\n".join(texts)
        self.definitions.append(Definition(name, kind, first, last + 1, signature, doc))

        kept = self.kept_rows
        for c in comments:
            kept.update(range(c.start_point.row, _last_row(c) + 1))
        kept.update(range(first, max(first, sig_last) + 1))
        if doc_node is not None:
            doc_first, doc_last = doc_node.start_point.row, _last_row(doc_node)
            kept.update(range(doc_first, min(doc_last, doc_first + 4) + 1))
            kept.add(doc_last)
        if found is not None and _CLOSING_LINE.fullmatch(self.lines[last]):
            kept.add(last)  # the closing brace of an elided body
        if node.type in self.spec.definition_containers and found is not None:
            self.collect(found[1].named_children, depth + 1)


def extract_definitions(text: str, language: str | None) -> list[Definition]:
    """Top-level definitions and the members of classes/impls/namespaces, in source order."""
    outline, _ = _outline(text, language, polite=False)
    return outline.definitions if outline is not None else []


def _parse(parser: tree_sitter.Parser, src: bytes, polite: bool) -> tree_sitter.Tree:
    """Parse; `polite` feeds the source in slices and lets other threads run between them.

    Parser.parse holds the GIL throughout (a 600 kB file: ~80 ms), which would stall the LSP and
    completion threads while the background thread indexes.
    """
    if not polite:
        return parser.parse(src)

    def read(offset: int, _point: object) -> bytes:
        time.sleep(0)
        return src[offset : offset + _PARSE_SLICE]

    return parser.parse(read)


def _outline(
    text: str, language: str | None, *, polite: bool
) -> tuple[_Outline | None, tree_sitter.Tree | None]:
    parser = get_parser(language) if language else None
    if parser is None or language is None:
        return None, None
    src = text.encode("utf-8")
    tree = _parse(parser, src, polite)
    spec = _outlined(language)
    if spec is None:
        return None, tree
    outline = _Outline(spec, src, text.split("\n"))
    outline.collect(tree.root_node.named_children, 0)
    return outline, tree


@dataclass(frozen=True, slots=True)
class Chunk:
    start: int  # 0-based first row
    end: int  # exclusive
    text: str
    summary: str | None  # folded view (signatures + docs) when shorter than the text


def _windows(lines: list[str], first: int, last: int, max_lines: int) -> list[tuple[int, int]]:
    """Rows first..last (inclusive) in runs of at most max_lines, broken after a blank line if possible."""
    out = []
    row = first
    while row <= last:
        end = min(last, row + max_lines - 1)
        if end < last:
            for r in range(end, row + max_lines // 2, -1):
                if not lines[r].strip():
                    end = r
                    break
        out.append((row, end))
        row = end + 1
    return out


def _units(nodes: Sequence[tree_sitter.Node]) -> list[tuple[int, int, tree_sitter.Node | None]]:
    """Row ranges of nodes with the comments and attributes right above each attached to it."""
    units: list[tuple[int, int, tree_sitter.Node | None]] = []
    pending: int | None = None  # first row of comments waiting for the node below them
    for i, node in enumerate(nodes):
        first, last = node.start_point.row, _last_row(node)
        following = nodes[i + 1] if i + 1 < len(nodes) else None
        if node.type in _ATTACHED and following is not None and following.start_point.row <= last + 1:
            pending = first if pending is None else pending
            continue
        units.append((first if pending is None else pending, last, node))
        pending = None
    return units


def _pack(
    units: list[tuple[int, int, tree_sitter.Node | None]], lines: list[str], spec: LanguageSpec | None
) -> list[tuple[int, int]]:
    """Group consecutive units into chunks of at most MAX_SNIPPET_LINES rows; split bigger units."""
    out: list[tuple[int, int]] = []
    current: tuple[int, int] | None = None
    for first, last, node in units:
        if last - first + 1 > MAX_SNIPPET_LINES:
            if current is not None:
                out.append(current)
                current = None
            out.extend(_split(first, last, node, lines, spec))
        elif current is not None and last - current[0] + 1 <= MAX_SNIPPET_LINES:
            current = (current[0], last)
        else:
            if current is not None:
                out.append(current)
            current = (first, last)
    if current is not None:
        out.append(current)
    return out


def _split(
    first: int, last: int, node: tree_sitter.Node | None, lines: list[str], spec: LanguageSpec | None
) -> list[tuple[int, int]]:
    """A unit too long for one chunk: by its members if it is a class-like container, else by lines."""
    members: list[tuple[int, int, tree_sitter.Node | None]] = []
    if node is not None and spec is not None:
        for inner in _unwrap(node, spec):
            found = _body(inner) if inner.type in spec.definition_containers else None
            if found is not None:
                members = _units(found[1].named_children)
    if not members:
        return _windows(lines, first, last, MAX_SNIPPET_LINES)
    units: list[tuple[int, int, tree_sitter.Node | None]] = []
    if first < members[0][0]:
        units.append((first, members[0][0] - 1, None))
    units.extend(members)
    if members[-1][1] < last:
        units.append((members[-1][1] + 1, last, None))
    return _pack(units, lines, spec)


def _fold(lines: list[str], first: int, last: int, kept: set[int]) -> str | None:
    """Rows first..last with each run of rows outside `kept` shown as one indented `...` line."""
    if not any(r in kept for r in range(first, last + 1)):
        return None
    out: list[str] = []
    eliding = False
    for r in range(first, last + 1):
        line = lines[r]
        if r in kept:
            out.append(line)
            eliding = False
        elif not line.strip():
            if not eliding:
                out.append(line)
        elif not eliding:
            out.append(line[: len(line) - len(line.lstrip())] + "...")
            eliding = True
    return "\n".join(out)


def _outlined(language: str | None) -> LanguageSpec | None:
    """The spec of a language whose definitions the outline knows; None for the others (plain chunks)."""
    spec = spec_for(language)
    return spec if spec is not None and spec.definitions else None


def chunk_file(text: str, language: str | None, polite: bool) -> tuple[list[Chunk], list[Definition]]:
    outline, tree = _outline(text, language, polite=polite)
    lines = text.split("\n")
    spec = _outlined(language)
    if tree is not None:
        ranges = _pack(_units(tree.root_node.named_children), lines, spec)
    else:
        ranges = _windows(lines, 0, len(lines) - 1, MAX_SNIPPET_LINES)
    chunks: list[Chunk] = []
    pending = list(reversed(ranges))
    while pending:
        first, last = pending.pop()
        while first <= last and not lines[first].strip():
            first += 1
        while last >= first and not lines[last].strip():
            last -= 1
        if first > last:
            continue
        body = "\n".join(lines[first : last + 1])
        if len(body) > _MAX_SNIPPET_CHARS:
            if first < last:
                half = max(1, (last - first + 1) // 2)
                pending.extend(reversed(_windows(lines, first, last, half)))
            continue  # a single line this long is data, not context
        summary = _fold(lines, first, last, outline.kept_rows) if outline is not None else None
        chunks.append(Chunk(first, last + 1, body, summary if summary != body else None))
    return chunks, outline.definitions if outline is not None else []
