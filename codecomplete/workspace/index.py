"""Workspace index: cross-file snippets for the prompt, ranked by relevance to the code at the cursor.

Files are split into definition-aligned snippets (tree-sitter; plain line chunks without a grammar) and
kept fresh by a watchdog observer; open documents' unsaved text overrides the disk copy. A query scores
snippets with BM25 over identifiers, plus a bonus for snippets that define identifiers used at the cursor
or imported by the current file, then favours imported files, recently edited files and open documents.
The chosen snippets are returned in path order, not score order, so the prompt's start stays identical
while the user types and the KV cache keeps reusing it.

Scoring runs on immutable numpy postings (`_Segment`) rebuilt in the background after disk changes, plus
a small segment for open documents rebuilt lazily when one of them changes, so a query is a few array
gathers.
"""

from __future__ import annotations

import logging
import os
import posixpath
import queue
import re
import stat
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pathspec
import tree_sitter
from watchdog.events import (
    EVENT_TYPE_CREATED,
    EVENT_TYPE_DELETED,
    EVENT_TYPE_MODIFIED,
    EVENT_TYPE_MOVED,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer

from codecomplete.core.languages import get_parser, language_for_path, normalize_language
from codecomplete.errors import UserError

log = logging.getLogger(__name__)

MAX_SNIPPET_LINES = 40
_MAX_SNIPPET_CHARS = 4000  # a 40-line chunk longer than this is minified or data: split it further
_IGNORED_DIRS = frozenset({
    "node_modules", "__pycache__", "venv", "build", "dist", "target", "site-packages", "bower_components",
})
# Generated or data files that are text but never useful as code context.
_NOISE = ("*.lock", "package-lock.json", "pnpm-lock.yaml", "go.sum", "*.min.js", "*.min.css", "*.map",
          "*.svg", "*.csv", "*.tsv", "*.log", "*.ipynb")
_DOCUMENT = "document"  # queue item: an open document changed
_WATCHED_EVENTS = frozenset({EVENT_TYPE_CREATED, EVENT_TYPE_MODIFIED, EVENT_TYPE_DELETED, EVENT_TYPE_MOVED})
_DEBOUNCE_S = 0.05  # collect a burst of events (an editor's save, a checkout) into one rebuild
_MAX_BATCH_S = 0.3

# Ranking weights. BM25 (k1, b) as usual; the query side saturates repeated identifiers (k3).
_K1, _B, _K3 = 1.2, 0.75, 1.2
_DEF_WEIGHT = 2.0  # a snippet defining an identifier used at the cursor, per unit of that identifier's idf
_IMPORTED_NAME_WEIGHT = 1.5  # a snippet defining a name the current file imports
_IMPORTED_FILE_BOOST = 1.5  # any snippet of a module the current file imports
_OTHER_LANGUAGE = 0.5  # snippets in another language family than the current file
_OPEN_BOOST = 1.2
_RECENT_BOOST = 0.5  # the most recently edited file gets 1 + this, decaying over _RECENT_FILES
_RECENT_FILES = 16
_STICKY = 1.2  # hysteresis: last query's picks win near-ties, so the selection does not flicker
_MIN_RELATIVE = 0.1  # drop candidates scoring below this share of the best one
_CANDIDATES = 48
_PARSE_SLICE = 4096
_NEAR_CURSOR_CHARS = 1200  # identifiers this close to the cursor count 1.5 times

_IDENT = re.compile(r"\b[^\W\d]\w*")
_STOPWORDS = frozenset({
    "and", "as", "assert", "async", "await", "break", "case", "catch", "char", "class", "const", "continue",
    "def", "default", "defer", "del", "delete", "do", "double", "elif", "else", "enum", "except", "export",
    "extends", "extern", "false", "final", "finally", "float", "fn", "for", "from", "func", "function",
    "go", "goto", "if", "impl", "implements", "import", "in", "include", "int", "interface", "is", "lambda",
    "let", "long", "match", "mod", "mut", "namespace", "new", "nil", "none", "None", "not", "null", "of",
    "or", "package", "pass", "private", "protected", "pub", "public", "raise", "return", "self", "Self",
    "short", "signed", "sizeof", "static", "str", "string", "struct", "super", "switch", "template", "this",
    "throw", "throws", "true", "True", "False", "try", "type", "typedef", "typename", "typeof", "undefined",
    "union", "unsigned", "use", "var", "void", "volatile", "where", "while", "with", "yield", "define",
    "endif", "ifdef", "ifndef", "bool", "auto"
})

_COMMENTS = frozenset({"comment", "line_comment", "block_comment"})
_ATTACHED = _COMMENTS | {"attribute_item"}  # belong to the definition below them
_CLOSING_LINE = re.compile(r"\s*[)\]}][\s)\]};,]*")
_LINE_COMMENT = {"python": "#", "bash": "#", "lua": "--"}
_FAMILY = {"typescript": "javascript", "tsx": "javascript", "cpp": "c"}
_INDEX_STEMS = frozenset({"__init__", "index", "mod", "lib"})  # a file standing for its directory
_SOURCE_EXTENSIONS = re.compile(r"\.(py|pyi|[cm]?[jt]sx?|go|rs|java|c|h|cc|cpp|cxx|hh|hpp|hxx|lua|sh)$")


# ---------------------------------------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class Snippet:
    """Lines [start_line, end_line) (0-based) of `path` (relative to the root, '/'-separated)."""

    path: str
    start_line: int
    end_line: int
    text: str
    score: float


@dataclass(frozen=True, slots=True)
class Definition:
    name: str
    kind: str  # function, method, class, type, impl, module, macro, variable
    start_line: int  # 0-based, decorators/export keywords included, leading comments not
    end_line: int  # exclusive
    signature: str
    doc: str  # docstring or the comment right above; "" if none


@dataclass(frozen=True, slots=True)
class Hint:
    """A module the current file imports, as a '/'-separated path without extension."""

    path: str
    relative: bool = False  # relative to the importing file's directory
    directory: bool = False  # names a directory (Go package, Java wildcard), not a file


@dataclass(frozen=True, slots=True)
class Imports:
    names: tuple[str, ...]  # symbols imported by name
    hints: tuple[Hint, ...]


@dataclass(frozen=True, slots=True)
class Segment:
    """A piece of repository context: `text` to encode, after the family's `marker` token if set.

    `marker` is "repo_name" or "file_sep"; the prompt builder maps it to the token id (llama.cpp's
    `llama_vocab_fim_rep`/`llama_vocab_fim_sep`), never to marker text inside a string.
    """

    text: str
    marker: str | None = None


# ---------------------------------------------------------------------------------------- formatting


def style_for_family(family: str) -> str:
    """Repo-level FIM tokens for families trained with them, path comments otherwise."""
    return "file_sep" if family in ("qwen", "starcoder") else "comment"


def format_snippets(
    snippets: Sequence[Snippet],
    language: str | None,
    style: str = "comment",
    *,
    repo_name: str | None = None,
    current_path: str | None = None,
) -> list[Segment]:
    """Render snippets for placement before the prefix.

    "comment": `# path: src/util.py` (in the current language's comment syntax) above each snippet's
    code; "file_sep": Qwen2.5-Coder's repo layout (`<|repo_name|>name\\n`, then `<|file_sep|>path\\ncode`
    per file). With `current_path`, the current file's own header comes last, right before the prefix.
    """
    if style == "comment":
        mark = _LINE_COMMENT.get(language or "", "//" if language else "#")
        out = [Segment(f"{mark} path: {s.path}\n{s.text}\n\n") for s in snippets]
        if current_path is not None:
            out.append(Segment(f"{mark} path: {current_path}\n"))
        return out
    if style == "file_sep":
        out = [Segment(f"{repo_name}\n", "repo_name")] if repo_name else []
        out.extend(Segment(f"{s.path}\n{s.text}\n", "file_sep") for s in snippets)
        if current_path is not None:
            out.append(Segment(f"{current_path}\n", "file_sep"))
        return out
    raise UserError(f"unknown snippet style {style!r}: use comment or file_sep")


def _cost_text(path: str, text: str) -> str:
    """What a snippet's token cost is measured on: a header at least as long as any style renders."""
    return f"// path: {path}\n{text}\n\n"


# ---------------------------------------------------------------------------- definitions and snippets


@dataclass(frozen=True)
class _Lang:
    defs: dict[str, str]  # node type -> kind
    wrappers: dict[str, str | None]  # node type -> field of the wrapped definition (None: any named child)
    containers: frozenset[str]  # definitions whose body holds member definitions


_JS_DEFS = {
    "function_declaration": "function", "generator_function_declaration": "function",
    "class_declaration": "class", "method_definition": "method",
    "lexical_declaration": "variable", "variable_declaration": "variable",
}
_TS_DEFS = _JS_DEFS | {
    "interface_declaration": "type", "type_alias_declaration": "type", "enum_declaration": "type",
    "abstract_class_declaration": "class", "function_signature": "function", "method_signature": "method",
    "abstract_method_signature": "method", "internal_module": "module", "module": "module",
}
_C_DEFS = {
    "function_definition": "function", "declaration": "function", "struct_specifier": "type",
    "union_specifier": "type", "enum_specifier": "type", "type_definition": "type",
    "preproc_function_def": "macro", "preproc_def": "macro",
}
_TS = _Lang(_TS_DEFS, {"export_statement": "declaration", "ambient_declaration": None,
                       "expression_statement": None},
            frozenset({"class_declaration", "abstract_class_declaration", "internal_module", "module"}))
_LANGS: dict[str, _Lang] = {
    "python": _Lang(
        {"function_definition": "function", "class_definition": "class", "type_alias_statement": "type",
         "expression_statement": "variable"},
        {"decorated_definition": "definition"},
        frozenset({"class_definition"}),
    ),
    "javascript": _Lang(_JS_DEFS, {"export_statement": "declaration"}, frozenset({"class_declaration"})),
    "typescript": _TS,
    "tsx": _TS,
    "go": _Lang(
        {"function_declaration": "function", "method_declaration": "method", "type_spec": "type",
         "type_alias": "type", "const_spec": "variable", "var_spec": "variable"},
        {"type_declaration": None, "const_declaration": None, "var_declaration": None},
        frozenset(),
    ),
    "rust": _Lang(
        {"function_item": "function", "function_signature_item": "function", "struct_item": "type",
         "enum_item": "type", "union_item": "type", "trait_item": "type", "impl_item": "impl",
         "type_item": "type", "mod_item": "module", "macro_definition": "macro", "const_item": "variable",
         "static_item": "variable"},
        {},
        frozenset({"impl_item", "trait_item", "mod_item"}),
    ),
    "java": _Lang(
        {"class_declaration": "class", "interface_declaration": "type", "enum_declaration": "type",
         "record_declaration": "class", "annotation_type_declaration": "type", "method_declaration": "method",
         "constructor_declaration": "method"},
        {},
        frozenset({"class_declaration", "interface_declaration", "record_declaration"}),
    ),
    "c": _Lang(_C_DEFS, {}, frozenset()),
    "cpp": _Lang(
        _C_DEFS | {"class_specifier": "class", "namespace_definition": "module",
                   "field_declaration": "method", "alias_declaration": "type"},
        {"template_declaration": None},
        frozenset({"class_specifier", "struct_specifier", "namespace_definition"}),
    ),
}
_NAME_NODES = frozenset({"identifier", "field_identifier", "type_identifier", "destructor_name",
                         "operator_name", "namespace_identifier"})


def _last_row(node: tree_sitter.Node) -> int:
    """The last row holding any of the node's text (a node may end at column 0 of the next row)."""
    end = node.end_point
    return max(node.start_point.row, end.row - 1 if end.column == 0 else end.row)


def _unwrap(node: tree_sitter.Node, spec: _Lang) -> list[tree_sitter.Node]:
    """The definitions a node holds: itself, or those inside a wrapper (decorators, export, template...)."""
    if node.type in spec.wrappers:
        field_name = spec.wrappers[node.type]
        inner = [node.child_by_field_name(field_name)] if field_name else node.named_children
        return [d for child in inner if child is not None for d in _unwrap(child, spec)]
    return [node] if node.type in spec.defs else []


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

    spec: _Lang
    language: str
    src: bytes
    lines: list[str]
    definitions: list[Definition] = field(default_factory=list)
    kept_rows: set[int] = field(default_factory=set)

    def collect(self, nodes: Iterable[tree_sitter.Node], depth: int) -> None:
        for outer in nodes:
            inner = _unwrap(outer, self.spec)
            for node in inner:
                kind = self.spec.defs[node.type]
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
            if self.language == "python":
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
        if node.type in self.spec.containers and found is not None:
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
    spec = _LANGS.get(language)
    if spec is None:
        return None, tree
    outline = _Outline(spec, language, src, text.split("\n"))
    outline.collect(tree.root_node.named_children, 0)
    return outline, tree


@dataclass(frozen=True, slots=True)
class _Chunk:
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
    units: list[tuple[int, int, tree_sitter.Node | None]], lines: list[str], spec: _Lang | None
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
    first: int, last: int, node: tree_sitter.Node | None, lines: list[str], spec: _Lang | None
) -> list[tuple[int, int]]:
    """A unit too long for one chunk: by its members if it is a class-like container, else by lines."""
    members: list[tuple[int, int, tree_sitter.Node | None]] = []
    if node is not None and spec is not None:
        for inner in _unwrap(node, spec):
            found = _body(inner) if inner.type in spec.containers else None
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


def _chunks(text: str, language: str | None, polite: bool) -> tuple[list[_Chunk], list[Definition]]:
    outline, tree = _outline(text, language, polite=polite)
    lines = text.split("\n")
    spec = _LANGS.get(language or "")
    if tree is not None:
        ranges = _pack(_units(tree.root_node.named_children), lines, spec)
    else:
        ranges = _windows(lines, 0, len(lines) - 1, MAX_SNIPPET_LINES)
    chunks: list[_Chunk] = []
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
        chunks.append(_Chunk(first, last + 1, body, summary if summary != body else None))
    return chunks, outline.definitions if outline is not None else []


# ---------------------------------------------------------------------------------------------- imports

_PY_FROM = re.compile(r"^[ \t]*from[ \t]+(\.*)([\w.]*)[ \t]+import[ \t]+(\([^)]*\)|[^\n]*)", re.M)
_PY_IMPORT = re.compile(r"^[ \t]*import[ \t]+([\w.][\w., \t]*)", re.M)
_JS_FROM = re.compile(r"\b(?:import|export)\s+(?:type\s+)?([\w*{}\s,$]*?)\s*from\s*['\"]([^'\"\n]+)['\"]")
_JS_BARE = re.compile(r"\bimport\s*\(?\s*['\"]([^'\"\n]+)['\"]")
_JS_REQUIRE = re.compile(
    r"(?:(?:const|let|var)\s+([\w{}\s,:$]+?)\s*=\s*)?\brequire\s*\(\s*['\"]([^'\"\n]+)['\"]\s*\)"
)
_GO_IMPORT = re.compile(r"^[ \t]*import\s*(?:\(([^)]*)\)|(?:[\w.]+\s+)?\"([^\"\n]+)\")", re.M)
_RUST_USE = re.compile(r"^[ \t]*(?:pub(?:\([^)]*\))?\s+)?use\s+([^;]+);", re.M)
_RUST_MOD = re.compile(r"^[ \t]*(?:pub(?:\([^)]*\))?\s+)?mod\s+(\w+)\s*;", re.M)
_JAVA_IMPORT = re.compile(r"^[ \t]*import\s+(static\s+)?([\w.]+?)(\.\*)?\s*;", re.M)
_C_INCLUDE = re.compile(r"^[ \t]*#[ \t]*include[ \t]*\"([^\"\n]+)\"", re.M)
_LUA_REQUIRE = re.compile(r"\brequire\s*\(?\s*['\"]([\w./-]+)['\"]")
_WORD = re.compile(r"[^\W\d]\w*")


def _strip_extension(path: str) -> str:
    return _SOURCE_EXTENSIONS.sub("", path)


def _names(clause: str) -> list[str]:
    """Imported names from `a, b as c, {d, e as f}`, `(a, b)` or `{a: b}`: the exporting module's names."""
    out = []
    for part in re.split(r"[,{}()]", clause):
        part = part.strip()
        if not part or part.startswith("*"):
            continue
        word = re.split(r"\s+as\s+|\s*:\s*", part)[0].strip().removeprefix("type ").strip()
        if _WORD.fullmatch(word):
            out.append(word)
    return out


def _rust_paths(tree: str, prefix: list[str]) -> list[list[str]]:
    """Expand a `use` tree (`a::b::{c, d::{e as f}}`) into its paths."""
    tree = tree.strip()
    brace = tree.find("{")
    if brace < 0:
        path = [s.strip() for s in re.split(r"\s+as\s+", tree)[0].split("::") if s.strip()]
        return [prefix + path]
    head = [s for s in tree[:brace].split("::") if s.strip()]
    inner = tree[brace + 1 : tree.rfind("}")]
    parts, depth, current = [], 0, ""
    for ch in inner:
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
            continue
        depth += (ch == "{") - (ch == "}")
        current += ch
    parts.append(current)
    return [p for part in parts if part.strip() for p in _rust_paths(part, prefix + head)]


def parse_imports(text: str, language: str | None) -> Imports:
    """Imported names and modules, by regular expression per language (fast enough for every query)."""
    names: list[str] = []
    hints: list[Hint] = []
    if language == "python":
        for m in _PY_FROM.finditer(text):
            dots, module, clause = m.group(1), m.group(2).replace(".", "/"), m.group(3).split("#")[0]
            imported = _names(clause)
            names.extend(imported)
            base = posixpath.join("../" * (len(dots) - 1), module) if dots else module
            hints.append(Hint(base.rstrip("/") or ".", relative=bool(dots)))
            hints.extend(Hint(posixpath.join(base, n), relative=bool(dots)) for n in imported)
        for m in _PY_IMPORT.finditer(text):
            for part in m.group(1).split("#")[0].split(","):
                module = re.split(r"\s+as\s+", part.strip())[0]
                if module:
                    hints.append(Hint(module.replace(".", "/")))
    elif language in ("javascript", "typescript", "tsx"):
        specs: list[str] = []
        for m in _JS_FROM.finditer(text):
            names.extend(_names(m.group(1)))
            specs.append(m.group(2))
        specs.extend(m.group(1) for m in _JS_BARE.finditer(text))
        for m in _JS_REQUIRE.finditer(text):
            if m.group(1):
                names.extend(_names(m.group(1)))
            specs.append(m.group(2))
        for spec in specs:
            relative = spec.startswith(".")
            path = _strip_extension(spec if relative else re.sub(r"^[@~]/", "", spec))
            hints.append(Hint(path, relative=relative))
    elif language == "go":
        for m in _GO_IMPORT.finditer(text):
            paths = re.findall(r"\"([^\"\n]+)\"", m.group(1)) if m.group(1) is not None else [m.group(2)]
            hints.extend(Hint(p, relative=p.startswith("."), directory=True) for p in paths)
    elif language == "rust":
        # Where `self::`/`super::` lead depends on mod.rs layouts: module paths are matched as suffixes.
        for m in _RUST_USE.finditer(text):
            for path in _rust_paths(m.group(1), []):
                module = [s for s in path if s not in ("crate", "self", "super", "*")]
                if module and path[-1] != "*":
                    names.append(module[-1])
                if len(module) > 1:
                    hints.append(Hint("/".join(module[:-1])))
                if module:
                    hints.append(Hint("/".join(module)))
        hints.extend(Hint(m.group(1)) for m in _RUST_MOD.finditer(text))
    elif language == "java":
        for m in _JAVA_IMPORT.finditer(text):
            parts = m.group(2).split(".")
            if m.group(3):
                hints.append(Hint("/".join(parts), directory=not m.group(1)))
                continue
            names.append(parts[-1])
            hints.append(Hint("/".join(parts[:-1] if m.group(1) else parts)))
    elif language in ("c", "cpp"):
        hints.extend(Hint(_strip_extension(p)) for p in _C_INCLUDE.findall(text))
    elif language == "lua":
        hints.extend(Hint(p.replace(".", "/")) for p in _LUA_REQUIRE.findall(text))
    return Imports(tuple(dict.fromkeys(names)), tuple(dict.fromkeys(hints)))


# ------------------------------------------------------------------------------------------- vocabulary


def _identifiers(text: str) -> dict[str, int]:
    counts = Counter(_IDENT.findall(text))
    return {w: n for w, n in counts.items() if len(w) > 1 and w not in _STOPWORDS}


class _Vocab:
    """Identifier -> dense id. Grows only; lookups are lock-free, new ids are assigned under a lock."""

    def __init__(self) -> None:
        self._ids: dict[str, int] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._ids)

    def assign(self, words: Iterable[str]) -> list[int]:
        ids = self._ids
        out = []
        for w in words:
            i = ids.get(w)
            if i is None:
                with self._lock:
                    i = ids.setdefault(w, len(ids))
            out.append(i)
        return out

    def get(self, word: str) -> int | None:
        return self._ids.get(word)


# A snippet as stored: (start, end, text, summary). Records are kept as plain tuples of strings and
# numbers, which CPython's garbage collector stops tracking: with one object per snippet, definition
# and import, a full collection (which stops every thread) took ~150 ms on a 2,000-file workspace.
_Row = tuple[int, int, str, "str | None"]


@dataclass(slots=True)
class _Entry:
    """One indexed file: its snippets and their identifier statistics as flat arrays."""

    key: str
    language: str | None
    stamp: tuple[int, int]  # (mtime_ns, size) of the disk copy; (-1, len) for open documents
    rows: list[_Row]  # the snippets
    definitions: list[tuple[str, str, int, int, str, str]]  # Definition fields
    imports: tuple[tuple[str, ...], tuple[tuple[str, bool, bool], ...]]  # Imports: names, Hint fields
    terms: np.ndarray  # term id of each (chunk, term) entry
    tfs: np.ndarray  # its count in the chunk
    entry_chunk: np.ndarray  # chunk index (within this file) of each entry
    lengths: np.ndarray  # identifier count of each chunk
    def_terms: np.ndarray  # names defined in the file ...
    def_chunk: np.ndarray  # ... and the chunk holding each definition's first line
    searchable: bool = True  # False: kept only for its imports (an open document outside the index)


@dataclass
class _Doc:
    """An open document: its text and the analysis of the text it had when last analysed."""

    text: str
    language: str | None
    entry: _Entry | None = None
    analyzed: str | None = None


def _analyze(
    key: str, text: str, language: str | None, stamp: tuple[int, int], vocab: _Vocab, *, polite: bool
) -> _Entry:
    text = text.removeprefix("\ufeff").replace("\r\n", "\n")
    chunks, definitions = _chunks(text, language, polite)
    imports = parse_imports(text, language)
    terms: list[int] = []
    tfs: list[int] = []
    entry_chunk: list[int] = []
    lengths: list[int] = []
    for i, chunk in enumerate(chunks):
        counts = _identifiers(chunk.text)
        terms.extend(vocab.assign(counts))
        tfs.extend(counts.values())
        entry_chunk.extend([i] * len(counts))
        lengths.append(sum(counts.values()))
    pairs: dict[tuple[int, int], None] = {}
    starts = [c.start for c in chunks]
    for d in definitions:
        i = _chunk_at(starts, chunks, d.start_line)
        if i is not None:
            pairs[(vocab.assign([d.name])[0], i)] = None
    return _Entry(
        key=key,
        language=language,
        stamp=stamp,
        rows=[(c.start, c.end, c.text, c.summary) for c in chunks],
        definitions=[(d.name, d.kind, d.start_line, d.end_line, d.signature, d.doc) for d in definitions],
        imports=(imports.names, tuple((h.path, h.relative, h.directory) for h in imports.hints)),
        terms=np.asarray(terms, dtype=np.int64),
        tfs=np.asarray(tfs, dtype=np.float64),
        entry_chunk=np.asarray(entry_chunk, dtype=np.int64),
        lengths=np.asarray(lengths, dtype=np.float64),
        def_terms=np.asarray([t for t, _ in pairs], dtype=np.int64),
        def_chunk=np.asarray([c for _, c in pairs], dtype=np.int64),
    )


def _chunk_at(starts: list[int], chunks: list[_Chunk], row: int) -> int | None:
    lo, hi = 0, len(starts)
    while lo < hi:
        mid = (lo + hi) // 2
        if starts[mid] <= row:
            lo = mid + 1
        else:
            hi = mid
    i = lo - 1
    return i if i >= 0 and row < chunks[i].end else None


# -------------------------------------------------------------------------------------------- postings


def _csr(terms: np.ndarray, chunks: np.ndarray, weights: np.ndarray | None, size: int):
    """Postings sorted by term: indptr[t]..indptr[t+1] index the chunks (and weights) holding term t."""
    order = np.argsort(terms, kind="stable")
    indptr = np.zeros(size + 1, dtype=np.int64)
    np.cumsum(np.bincount(terms, minlength=size), out=indptr[1:])
    return indptr, chunks[order], None if weights is None else weights[order]


def _gather(indptr: np.ndarray, chunks: np.ndarray, weights: np.ndarray | None, q_ids: np.ndarray,
            q_w: np.ndarray, n: int) -> np.ndarray | None:
    """Sum over query terms of q_w[t] * posting weight, per chunk, in one vectorized pass."""
    keep = q_ids < len(indptr) - 1
    q_ids, q_w = q_ids[keep], q_w[keep]
    starts = indptr[q_ids]
    lens = indptr[q_ids + 1] - starts
    total = int(lens.sum())
    if total == 0:
        return None
    idx = np.repeat(starts - (np.cumsum(lens) - lens), lens) + np.arange(total)
    w = np.repeat(q_w, lens)
    if weights is not None:
        w = w * weights[idx]
    return np.bincount(chunks[idx], weights=w, minlength=n)


class _Segment:
    """Immutable postings over the snippets of a set of files."""

    def __init__(self, entries: list[_Entry], vocab_size: int, avgdl: float | None = None) -> None:
        self.entries = entries
        self.keys = [e.key for e in entries]
        self.file_index = {k: i for i, k in enumerate(self.keys)}
        counts = np.asarray([len(e.rows) for e in entries], dtype=np.int64)
        self.file_lo = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self.n = int(self.file_lo[-1])
        self.chunk_file = np.repeat(np.arange(len(entries), dtype=np.int64), counts)
        self.families = np.asarray([_family_code(e.language) for e in entries], dtype=np.int64)
        self.searchable = np.asarray([e.searchable for e in entries], dtype=np.float64)
        lengths = np.concatenate([e.lengths for e in entries]) if entries else np.zeros(0)
        self.avgdl = avgdl or (float(lengths.mean()) if self.n and lengths.sum() else 1.0)
        n_terms = [len(e.terms) for e in entries]
        terms = np.concatenate([e.terms for e in entries]) if entries else np.zeros(0, np.int64)
        chunk = (np.concatenate([e.entry_chunk for e in entries]) if entries else np.zeros(0, np.int64)) + (
            np.repeat(self.file_lo[:-1], n_terms)
        )
        tfs = np.concatenate([e.tfs for e in entries]) if entries else np.zeros(0)
        norm = tfs * (_K1 + 1) / (tfs + _K1 * (1 - _B + _B * lengths[chunk] / self.avgdl))
        self.size = vocab_size
        self.indptr, self.post_chunk, self.post_norm = _csr(terms, chunk, norm, vocab_size)
        self.df = np.diff(self.indptr)
        n_defs = [len(e.def_terms) for e in entries]
        def_terms = np.concatenate([e.def_terms for e in entries]) if entries else np.zeros(0, np.int64)
        def_chunk = (np.concatenate([e.def_chunk for e in entries]) if entries else np.zeros(0, np.int64)) + (
            np.repeat(self.file_lo[:-1], n_defs)
        )
        self.def_indptr, self.def_chunk, _ = _csr(def_terms, def_chunk, None, vocab_size)
        self.modules: dict[str, list[str]] = {}  # path stem (and its suffixes) -> file keys
        self.dirs: dict[str, list[str]] = {}  # directory (and its suffixes) -> file keys
        for e in entries:
            stem = _strip_extension(e.key)
            directory = posixpath.dirname(e.key)
            stems = [stem, directory] if posixpath.basename(stem) in _INDEX_STEMS and directory else [stem]
            for s in stems:
                for suffix in _suffixes(s):
                    self.modules.setdefault(suffix, []).append(e.key)
            for suffix in _suffixes(directory):
                self.dirs.setdefault(suffix, []).append(e.key)

    def df_of(self, q_ids: np.ndarray) -> np.ndarray:
        out = np.zeros(len(q_ids))
        keep = q_ids < self.size
        out[keep] = self.df[q_ids[keep]]
        return out

    def scores(self, q_ids: np.ndarray, q_w: np.ndarray, d_ids: np.ndarray, d_w: np.ndarray) -> np.ndarray:
        total = np.zeros(self.n)
        bm25 = _gather(self.indptr, self.post_chunk, self.post_norm, q_ids, q_w, self.n)
        if bm25 is not None:
            total += bm25
        defs = _gather(self.def_indptr, self.def_chunk, None, d_ids, d_w, self.n)
        if defs is not None:
            total += defs
        return total


def _suffixes(path: str) -> list[str]:
    parts = [p for p in path.split("/") if p]
    return ["/".join(parts[i:]) for i in range(len(parts))]


_FAMILY_CODES: dict[str | None, int] = {None: 0}


def _family_code(language: str | None) -> int:
    family = _FAMILY.get(language or "", language)
    return _FAMILY_CODES.setdefault(family, len(_FAMILY_CODES))


# ---------------------------------------------------------------------------------------- ignore rules


class _Rules:
    """What the index skips: fixed directory names, hidden names, .gitignore files, globs and noise."""

    def __init__(self, root: str, include: list[str] | None, exclude: list[str] | None) -> None:
        self.root = root
        self.include = _spec(include, "include") if include else None
        self.exclude = _spec(list(exclude or []) + list(_NOISE), "exclude")
        self.gitignores: dict[str, pathspec.GitIgnoreSpec] = {}  # directory (relative; "" = root) -> rules

    def load(self, directory: str) -> None:
        """Read `directory`/.gitignore (for the root also .git/info/exclude, which it overrides)."""
        files = [".git/info/exclude", ".gitignore"] if directory == "" else [".gitignore"]
        lines: list[str] = []
        for name in files:
            try:
                with open(os.path.join(self.root, directory, name), encoding="utf-8", errors="replace") as f:
                    lines.extend(f.read().splitlines())
            except OSError:
                continue
        if lines:
            self.gitignores[directory] = _gitignore(lines)
        else:
            self.gitignores.pop(directory, None)

    def skip_name(self, name: str) -> bool:
        return name.startswith(".") or name in _IGNORED_DIRS

    def gitignored(self, rel: str, is_dir: bool) -> bool:
        """The deepest .gitignore with a matching rule decides, as in git."""
        directory = rel
        while directory:
            directory = posixpath.dirname(directory)
            spec = self.gitignores.get(directory)
            if spec is not None:
                inner = rel[len(directory) + 1 :] if directory else rel
                decided = spec.check_file(inner + "/" if is_dir else inner).include
                if decided is not None:
                    return decided
        return False

    def wanted_file(self, rel: str) -> bool:
        return (self.include is None or self.include.match_file(rel)) and not self.exclude.match_file(rel)

    def excluded(self, rel: str, is_dir: bool) -> bool:
        """Full check of a path found by an event: every ancestor directory, then the path itself."""
        parts = rel.split("/")
        if any(self.skip_name(p) for p in parts):
            return True
        for i in range(1, len(parts)):
            if self.gitignored("/".join(parts[:i]), True):
                return True
        return self.gitignored(rel, is_dir) or (not is_dir and not self.wanted_file(rel))


def _spec(patterns: list[str], what: str) -> pathspec.GitIgnoreSpec:
    try:
        return pathspec.GitIgnoreSpec.from_lines(patterns)
    except (ValueError, TypeError, re.error) as e:
        raise UserError(f"bad {what} glob in {patterns!r}: {e}") from None


def _gitignore(lines: list[str]) -> pathspec.GitIgnoreSpec:
    """A .gitignore's rules; lines git would not understand either are skipped, not fatal."""
    try:
        return pathspec.GitIgnoreSpec.from_lines(lines)
    except (ValueError, re.error):
        valid = []
        for line in lines:
            try:
                pathspec.GitIgnoreSpec.from_lines([line])
            except (ValueError, re.error):
                continue
            valid.append(line)
        return pathspec.GitIgnoreSpec.from_lines(valid)


def _read_text(path: str, max_bytes: int) -> str | None:
    """The file's text, or None for binaries (NUL bytes), non-UTF-8 and files over max_bytes."""
    with open(path, "rb") as f:
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes or b"\0" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


# ------------------------------------------------------------------------------------------------ index


class _Handler(FileSystemEventHandler):
    def __init__(self, index: RepoIndex) -> None:
        self.index = index

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type not in _WATCHED_EVENTS:  # opened/closed/attrib: our own reads cause these
            return
        if event.is_directory and event.event_type == EVENT_TYPE_MODIFIED:
            return
        paths = [os.fsdecode(event.src_path)]
        if event.event_type == EVENT_TYPE_MOVED:
            paths.append(os.fsdecode(event.dest_path))
        self.index._enqueue(event.event_type, paths, event.is_directory)


class RepoIndex:
    """Snippets of a workspace, kept fresh by watchdog, ranked per completion request.

    Thread-safe: the LSP feeds documents from its thread, completions query from theirs, and one
    background thread scans, follows file events and rebuilds the postings.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        include: list[str] | None = None,
        exclude: list[str] | None = None,
        max_file_bytes: int = 1_000_000,
    ) -> None:
        path = os.path.realpath(os.fspath(root))
        if not os.path.isdir(path):
            raise UserError(f"workspace root {os.fspath(root)!r} is not a directory")
        if max_file_bytes < 1:
            raise UserError(f"max_file_bytes must be positive, got {max_file_bytes}")
        self.root = path
        self.max_file_bytes = max_file_bytes
        self._rules = _Rules(path, include, exclude)
        self._vocab = _Vocab()
        self._lock = threading.RLock()
        self._files: dict[str, _Entry] = {}  # disk copies
        self._docs: dict[str, _Doc] = {}  # open documents
        self._doc_segment: _Segment | None = None  # over the open documents' latest analyses
        self._recent: OrderedDict[str, None] = OrderedDict()
        self._base = _Segment([], 0)
        self._events: queue.Queue[tuple[str, list[str], bool] | None] = queue.Queue()
        self._ready = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_pick: tuple[str | None, frozenset[tuple[str, str]]] = (None, frozenset())
        self._costs: dict[tuple[str, str], int] = {}
        self._cost_fn: Callable[[str], int] | None = None
        self.watching = False
        self.watch_error: str | None = None  # why live updates are off (e.g. the inotify watch limit)
        self.build_ms = 0.0  # last postings rebuild
        self.scan_s = 0.0  # initial scan

    # -- lifecycle

    def start(self) -> RepoIndex:
        """Scan and watch in a background thread; returns at once. Queries see files as they are indexed."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="repoindex", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._events.put(None)
        if self._thread is not None:
            self._thread.join(timeout=10)

    def wait_ready(self, timeout: float | None = None) -> bool:
        """True once the initial scan is done."""
        return self._ready.wait(timeout)

    def __enter__(self) -> RepoIndex:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- documents

    def update_document(self, path: str, text: str, language: str | None = None) -> None:
        """Unsaved text of an open document; it replaces the disk copy until forget_document().

        `language` may be an LSP languageId; by default the file extension decides.
        """
        key = self._key(path)
        name = (normalize_language(language) if language else None) or language_for_path(key)
        with self._lock:
            doc = self._docs.get(key)
            if doc is None:
                self._docs[key] = _Doc(text, name)
            elif doc.text != text:
                doc.text = text
        if self._running():
            self._events.put((_DOCUMENT, [], False))

    def forget_document(self, path: str) -> None:
        key = self._key(path)
        with self._lock:
            if self._docs.pop(key, None) is not None:
                self._doc_segment = None

    def mark_edited(self, path: str) -> None:
        """Record an edit: recently edited files rank higher."""
        key = self._key(path)
        with self._lock:
            self._recent[key] = None
            self._recent.move_to_end(key)
            while len(self._recent) > _RECENT_FILES:
                self._recent.popitem(last=False)

    def definitions(self, path: str) -> list[Definition]:
        entry = self._entry(self._key(path))
        return [Definition(*d) for d in entry.definitions] if entry is not None else []

    def snippets(self, path: str) -> list[Snippet]:
        """All snippets of one file (open-document text first), in order, unscored."""
        key = self._key(path)
        entry = self._entry(key)
        return [Snippet(key, start, end, text, 0.0) for start, end, text, _ in entry.rows] if entry else []

    def stats(self) -> dict[str, float | int | bool]:
        base = self._base
        return {"files": len(base.keys), "snippets": base.n, "identifiers": len(self._vocab),
                "ready": self._ready.is_set(), "watching": self.watching, "build_ms": round(self.build_ms, 2),
                "scan_s": round(self.scan_s, 3)}

    # -- queries

    def query(
        self,
        ctx_text: str,
        current_path: str | None,
        *,
        budget_tokens: int,
        count_tokens: Callable[[str], int],
        imports: list[str] | None = None,
        exclude_path: str | None = None,
        window: tuple[int, int] | None = None,
        cursor: int | None = None,
    ) -> list[Snippet]:
        """The best snippets for the code around the cursor within `budget_tokens`, in path order.

        `ctx_text` is the code around the cursor (the prefix and suffix windows); `cursor` its offset
        in there, so the word being typed is left out of the query and identifiers near it count more.
        `window` is the line range [start, end) of `current_path` that ctx_text covers: snippets of the
        current file overlapping it are never returned (the whole current file without it).
        `imports` adds imported names to those parsed from the current file; `exclude_path` drops a
        file entirely. A snippet's cost is `count_tokens` of its text with a path header; a candidate
        that does not fit may come in folded form (signatures and docstrings only).
        """
        if budget_tokens <= 0:
            return []
        ranked = self._rank(ctx_text, current_path, imports, exclude_path, window, cursor)
        current = self._key(current_path) if current_path else None
        sticky_for, sticky = self._last_pick
        if sticky_for == current and sticky:
            ranked = sorted(
                ((score * _STICKY if (path, chunk.text) in sticky else score, path, chunk)
                 for score, path, chunk in ranked),
                key=lambda r: (-r[0], r[1], r[2].start),
            )
        if count_tokens != self._cost_fn:  # another model's tokenizer: cached costs are void
            self._costs, self._cost_fn = {}, count_tokens
        elif len(self._costs) > 50_000:
            self._costs = {}
        costs = self._costs
        chosen: list[Snippet] = []
        picked: set[tuple[str, str]] = set()
        remaining = budget_tokens
        top = ranked[0][0] if ranked else 0.0
        for score, path, chunk in ranked:
            if score < top * _MIN_RELATIVE or remaining <= 0:
                break
            for text in (chunk.text, chunk.summary):
                if text is None:
                    continue
                cost = costs.get((path, text))
                if cost is None:
                    cost = costs[(path, text)] = count_tokens(_cost_text(path, text))
                if cost <= remaining:
                    remaining -= cost
                    chosen.append(Snippet(path, chunk.start, chunk.end, text, score))
                    picked.add((path, chunk.text))
                    break
        self._last_pick = (current, frozenset(picked))
        chosen.sort(key=lambda s: (s.path, s.start_line))
        return chosen

    def rank(
        self,
        ctx_text: str,
        current_path: str | None,
        *,
        imports: list[str] | None = None,
        exclude_path: str | None = None,
        window: tuple[int, int] | None = None,
        cursor: int | None = None,
    ) -> list[Snippet]:
        """Candidate snippets, best first (what query() picks from; for tests and diagnostics)."""
        return [
            Snippet(path, c.start, c.end, c.text, score)
            for score, path, c in self._rank(ctx_text, current_path, imports, exclude_path, window, cursor)
        ]

    def _rank(
        self,
        ctx_text: str,
        current_path: str | None,
        imports: list[str] | None,
        exclude_path: str | None,
        window: tuple[int, int] | None,
        cursor: int | None,
    ) -> list[tuple[float, str, _Chunk]]:
        current = self._key(current_path) if current_path else None
        base = self._base
        docs = self._documents(current)
        excluded = self._key(exclude_path) if exclude_path else None
        current_entry = self._entry(current) if current else None
        current_language = current_entry.language if current_entry else (
            language_for_path(current) if current else None)

        counts = _query_counts(ctx_text, cursor)
        q_words = [w for w in counts if self._vocab.get(w) is not None]
        q_ids = np.asarray([self._vocab.get(w) for w in q_words], dtype=np.int64)
        q_tf = np.asarray([counts[w] for w in q_words], dtype=np.float64)
        names_found, hint_rows = current_entry.imports if current_entry else ((), ())
        found = Imports(names_found, tuple(Hint(*h) for h in hint_rows))
        names = [w for w in dict.fromkeys([*found.names, *(imports or [])]) if self._vocab.get(w) is not None]
        n_ids = np.asarray([self._vocab.get(w) for w in names], dtype=np.int64)

        total = max(1, base.n + docs.n)

        def idf(ids: np.ndarray) -> np.ndarray:
            df = base.df_of(ids) + docs.df_of(ids)
            return np.log1p((total - df + 0.5) / (df + 0.5))

        q_w = idf(q_ids) * q_tf * (_K3 + 1) / (q_tf + _K3)
        d_ids = np.concatenate([q_ids, n_ids])
        d_w = np.concatenate([q_w * _DEF_WEIGHT, idf(n_ids) * _IMPORTED_NAME_WEIGHT])
        imported = self._imported_files(found.hints, current, (base, docs)) if current else set()
        with self._lock:
            recent = list(reversed(self._recent))
            open_keys = {k for k, d in self._docs.items() if d.entry is not None}

        candidates: list[tuple[float, str, _Chunk]] = []
        for seg, is_docs in ((base, False), (docs, True)):
            if seg.n == 0:
                continue
            scores = seg.scores(q_ids, q_w, d_ids, d_w)
            mult = np.ones(len(seg.keys))
            if current_language is not None:
                mult[seg.families != _family_code(current_language)] *= _OTHER_LANGUAGE
            if is_docs:
                mult *= _OPEN_BOOST
            for key in imported:
                i = seg.file_index.get(key)
                if i is not None:
                    mult[i] *= _IMPORTED_FILE_BOOST
            for rank_, key in enumerate(recent):
                i = seg.file_index.get(key)
                if i is not None:
                    mult[i] *= 1 + _RECENT_BOOST * (1 - rank_ / _RECENT_FILES)
            mult *= seg.searchable
            for key in {excluded} if is_docs else open_keys | {excluded}:
                i = seg.file_index.get(key)
                if i is not None:
                    mult[i] = 0
            scores *= mult[seg.chunk_file]
            i = seg.file_index.get(current) if current else None
            if i is not None:
                lo = int(seg.file_lo[i])
                for j, (start, end, text, _) in enumerate(seg.entries[i].rows):
                    overlaps = window is None or start < window[1] and end > window[0]
                    if overlaps or text in ctx_text:  # the text test covers a stale analysis
                        scores[lo + j] = 0
            idx = np.flatnonzero(scores > 0)
            if len(idx) > _CANDIDATES:
                idx = idx[np.argpartition(-scores[idx], _CANDIDATES)[:_CANDIDATES]]
            for j in idx.tolist():
                f = int(seg.chunk_file[j])
                chunk = _Chunk(*seg.entries[f].rows[j - int(seg.file_lo[f])])
                candidates.append((float(scores[j]), seg.keys[f], chunk))
        candidates.sort(key=lambda c: (-c[0], c[1], c[2].start))
        return candidates[:_CANDIDATES]

    def _imported_files(self, hints: Iterable[Hint], current: str, segments: Iterable[_Segment]) -> set[str]:
        found: set[str] = set()
        here = posixpath.dirname(current)
        for hint in hints:
            if hint.relative:
                target = posixpath.normpath(posixpath.join(here, hint.path))
                if target.startswith(".."):
                    continue
                keys = [target]
            else:
                keys = _suffixes(hint.path)
            for seg in segments:
                table = seg.dirs if hint.directory else seg.modules
                for k in keys:  # longest suffix first: the most specific match wins
                    hit = table.get(k)
                    if hit:
                        found.update(hit)
                        break
        found.discard(current)
        return found

    def _documents(self, current: str | None) -> _Segment:
        """The segment of open documents' latest analyses.

        Documents whose analysis is out of date are analysed here, except the one being typed in
        (`current`) while the background thread is there to redo it: until then its previous analysis,
        or its disk copy, stands in. What matters of it here is the part outside the cursor window,
        which rarely changes, and a big file takes ~30 ms per 1,000 lines to analyse.
        """
        background = self._running()

        def now(key: str, doc: _Doc) -> bool:
            if doc.analyzed == doc.text:
                return False
            if key != current or not background:
                return True
            return doc.entry is None and key not in self._files

        with self._lock:
            todo = [(k, d.text, d.language) for k, d in self._docs.items() if now(k, d)]
        self._analyze_documents(todo, polite=False)
        with self._lock:
            if self._doc_segment is None:
                entries = [d.entry for _, d in sorted(self._docs.items()) if d.entry is not None]
                self._doc_segment = _Segment(entries, len(self._vocab), self._base.avgdl)
            return self._doc_segment

    def _analyze_documents(self, todo: list[tuple[str, str, str | None]], *, polite: bool) -> None:
        for key, text, language in todo:
            entry = _analyze(key, text, language, (-1, len(text)), self._vocab, polite=polite)
            entry.searchable = not os.path.isabs(key) and not self._rules.excluded(key, False)
            with self._lock:
                doc = self._docs.get(key)
                if doc is not None:
                    doc.entry, doc.analyzed = entry, text
                    self._doc_segment = None

    def _running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stopping.is_set()

    def _entry(self, key: str | None) -> _Entry | None:
        if key is None:
            return None
        with self._lock:
            doc = self._docs.get(key)
            if doc is None:
                return self._files.get(key)
        if doc.entry is None:
            self._documents(key)
        return doc.entry or self._files.get(key)

    def relative(self, path: str) -> str:
        """How the index names ``path``: relative to the root with '/' (absolute outside the root)."""
        return self._key(path)

    def _key(self, path: str) -> str:
        """Index key: the path relative to the root with '/' separators; absolute outside the root."""
        full = os.path.realpath(os.path.join(self.root, path))
        rel = os.path.relpath(full, self.root)
        if rel == ".." or rel.startswith(".." + os.sep):
            return full.replace(os.sep, "/")
        return rel.replace(os.sep, "/")

    # -- background work

    def _enqueue(self, kind: str, paths: list[str], is_dir: bool) -> None:
        rels = [self._inside(p) for p in paths]
        if kind == EVENT_TYPE_MOVED and (rels[0] is None or rels[1] is None):  # into or out of the tree
            kind = EVENT_TYPE_CREATED if rels[0] is None else EVENT_TYPE_DELETED
        kept = [r for r in rels if r is not None]
        if not kept or all(self._noise(r) for r in kept):
            return  # outside the root, or .git churn and friends: not worth waking the worker
        self._events.put((kind, kept, is_dir))

    def _inside(self, path: str) -> str | None:
        rel = os.path.relpath(path, self.root).replace(os.sep, "/")
        return None if rel == "." or rel == ".." or rel.startswith("../") else rel

    def _noise(self, rel: str) -> bool:
        """Events under skipped names are dropped early; a .gitignore outside them changes the rules."""
        directory, name = posixpath.split(rel)
        if name == ".gitignore":
            return bool(directory) and self._rules.excluded(directory, True)
        return any(self._rules.skip_name(part) for part in rel.split("/"))

    def _run(self) -> None:
        observer = None
        try:
            try:
                observer = Observer()
                observer.schedule(_Handler(self), self.root, recursive=True)
                observer.start()
                self.watching = True
            except OSError as e:
                self.watch_error = f"cannot watch {self.root}: {e}"
                log.warning("%s; the index will not follow changes on disk", self.watch_error)
                observer = None
            t0 = time.perf_counter()
            self._scan()
            self.scan_s = time.perf_counter() - t0
            self._ready.set()
            while not self._stopping.is_set():
                batch = self._next_batch()
                if batch:
                    self._apply(batch)
        except Exception:
            log.exception("repository index stopped")
        finally:
            self._ready.set()
            if observer is not None:
                observer.stop()
                observer.join(timeout=5)
            self.watching = False

    def _next_batch(self) -> list[tuple[str, list[str], bool]]:
        item = self._events.get()
        if item is None:
            return []
        batch = [item]
        deadline = time.monotonic() + _MAX_BATCH_S
        while time.monotonic() < deadline:
            try:
                item = self._events.get(timeout=_DEBOUNCE_S)
            except queue.Empty:
                break
            if item is None:
                return []
            batch.append(item)
        return batch

    def _apply(self, batch: list[tuple[str, list[str], bool]]) -> None:
        if any(kind == _DOCUMENT for kind, _, _ in batch):
            with self._lock:
                todo = [(k, d.text, d.language) for k, d in self._docs.items() if d.analyzed != d.text]
            self._analyze_documents(todo, polite=True)
        events = [item for item in batch if item[0] != _DOCUMENT]
        if not events:
            return
        if any(posixpath.basename(p) == ".gitignore" for _, paths, _ in events for p in paths):
            self._scan()
            return
        files: dict[str, None] = {}
        for kind, paths, is_dir in events:
            if kind == EVENT_TYPE_MOVED:
                gone, new = paths
                if is_dir:
                    self._drop_tree(gone)
                    self._scan_dir(new)
                else:
                    files[gone] = None
                    files[new] = None
            elif is_dir and kind == EVENT_TYPE_DELETED:
                self._drop_tree(paths[0])
            elif is_dir:
                self._scan_dir(paths[0])
            else:
                files[paths[0]] = None
        for rel in files:
            if self._refresh(rel):
                self.mark_edited(rel)
        self._publish()

    def _drop_tree(self, rel: str) -> None:
        with self._lock:
            for key in [k for k in self._files if k == rel or k.startswith(rel + "/")]:
                del self._files[key]

    def _refresh(self, rel: str) -> bool:
        """Bring one path's entry up to date with the disk; True if its content was (re)indexed."""
        try:
            st = os.lstat(os.path.join(self.root, rel))
        except OSError:
            st = None
        if st is None or not stat.S_ISREG(st.st_mode) or self._rules.excluded(rel, False):
            with self._lock:
                self._files.pop(rel, None)
            return False
        return self._index_file(rel, st)

    def _index_file(self, rel: str, st: os.stat_result) -> bool:
        stamp = (st.st_mtime_ns, st.st_size)
        old = self._files.get(rel)
        if old is not None and old.stamp == stamp:
            return False
        text = None
        if st.st_size <= self.max_file_bytes:
            try:
                text = _read_text(os.path.join(self.root, rel), self.max_file_bytes)
            except OSError:
                text = None
        if text is None:
            with self._lock:
                self._files.pop(rel, None)
            return False
        entry = _analyze(rel, text, language_for_path(rel), stamp, self._vocab, polite=True)
        with self._lock:
            self._files[rel] = entry
        return True

    def _scan_dir(self, rel_dir: str) -> set[str]:
        """Index every wanted file under rel_dir (loading .gitignore files on the way); the keys seen."""
        seen: set[str] = set()
        if rel_dir and self._rules.excluded(rel_dir, True):
            return seen
        top = os.path.join(self.root, rel_dir)
        interval = 0.5
        next_publish = time.monotonic() + interval
        for dirpath, dirnames, filenames in os.walk(top):
            if self._stopping.is_set():
                break
            rel_here = os.path.relpath(dirpath, self.root).replace(os.sep, "/")
            rel_here = "" if rel_here == "." else rel_here
            self._rules.load(rel_here)
            keep = []
            for d in sorted(dirnames):
                rel = posixpath.join(rel_here, d)
                if not (self._rules.skip_name(d) or os.path.islink(os.path.join(dirpath, d))
                        or self._rules.gitignored(rel, True)):
                    keep.append(d)
            dirnames[:] = keep
            for name in sorted(filenames):
                if self._stopping.is_set():
                    break
                rel = posixpath.join(rel_here, name)
                if self._rules.skip_name(name) or self._rules.gitignored(rel, False) or not (
                    self._rules.wanted_file(rel)
                ):
                    continue
                try:
                    st = os.lstat(os.path.join(dirpath, name))
                except OSError:
                    continue
                if stat.S_ISREG(st.st_mode):
                    self._index_file(rel, st)
                    if rel in self._files:
                        seen.add(rel)
            if not self._ready.is_set() and time.monotonic() > next_publish:
                self._publish()  # a long first scan: let queries see what is there so far
                interval *= 2
                next_publish = time.monotonic() + interval
        return seen

    def _scan(self) -> None:
        """Walk the whole tree; entries for files no longer there (or now ignored) are dropped."""
        self._rules.gitignores.clear()
        seen = self._scan_dir("")
        if not self._stopping.is_set():
            with self._lock:
                for key in [k for k in self._files if k not in seen]:
                    del self._files[key]
        self._publish()

    def _publish(self) -> None:
        t0 = time.perf_counter()
        with self._lock:
            entries = [self._files[k] for k in sorted(self._files)]
        self._base = _Segment(entries, len(self._vocab))
        self.build_ms = (time.perf_counter() - t0) * 1000


def _query_counts(text: str, cursor: int | None) -> Counter[str]:
    """Identifier weights of the code around the cursor; the word being typed is left out."""
    if cursor is None:
        counts: Counter[str] = Counter(_IDENT.findall(text))
    else:
        cursor = max(0, min(cursor, len(text)))
        lo = _word_edge(text, max(0, cursor - _NEAR_CURSOR_CHARS), -1)
        hi = _word_edge(text, min(len(text), cursor + _NEAR_CURSOR_CHARS), 1)
        start, end = _word_edge(text, cursor, -1), _word_edge(text, cursor, 1)
        near = Counter(_IDENT.findall(text, lo, start)) + Counter(_IDENT.findall(text, end, hi))
        counts = Counter(_IDENT.findall(text, 0, lo)) + Counter(_IDENT.findall(text, hi))
        for word, n in near.items():
            counts[word] += n * 1.5
    return Counter({w: n for w, n in counts.items() if len(w) > 1 and w not in _STOPWORDS})


def _word_edge(text: str, i: int, step: int) -> int:
    """Move offset `i` out of the identifier it falls inside, toward `step`."""
    if step < 0:
        while i > 0 and (text[i - 1].isalnum() or text[i - 1] == "_"):
            i -= 1
    else:
        while i < len(text) and (text[i].isalnum() or text[i] == "_"):
            i += 1
    return i


__all__ = [
    "MAX_SNIPPET_LINES", "Definition", "Hint", "Imports", "RepoIndex", "Segment", "Snippet",
    "extract_definitions", "format_snippets", "parse_imports", "style_for_family",
]
