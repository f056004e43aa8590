"""Every fact about a programming language, one spec per language, and cached tree-sitter parsers.

The context cutter, post-processing, the workspace index and the editors' language ids all read ``LANGUAGES``:
adding a language is one ``LanguageSpec`` here (plus tests). Grammar wheels are imported lazily, so a session that
only edits Python never loads the C++ grammar.
"""

from __future__ import annotations

import importlib
import os
import re
import threading
from dataclasses import dataclass, field
from functools import cache

import tree_sitter


@dataclass(frozen=True)
class Region:
    """A string or comment for the lexical bracket count: `opener` regex, then `rest` regex whose `end` group is
    the closing delimiter (absent: the region runs to the end of the line or text)."""

    opener: str
    rest: str


def line_comment(opener: str) -> Region:
    return Region(opener, r"[^\n]*")


def quoted(opener: str, closer: str, *, multiline: bool = False, escapes: bool = True) -> Region:
    """A delimited region; an unterminated one runs to the end of the text (or of the line)."""
    if escapes:
        char = r"(?:\\[\s\S]|[^\\])" if multiline else r"(?:\\[\s\S]|[^\\\n])"
    else:
        char = r"[\s\S]" if multiline else r"[^\n]"
    stop = r"|\Z" if multiline else r"|(?=\n)|\Z"
    return Region(opener, f"{char}*?(?:(?P<end>{re.escape(closer)}){stop})")


_C_COMMENTS = (quoted(r"/\*", "*/", multiline=True, escapes=False), line_comment("//"))
_C_QUOTES = (quoted('"', '"'), quoted("'", "'"))
# Text of no known language: both comment styles and plain quotes.
FALLBACK_REGIONS = (*_C_COMMENTS, line_comment("#"), *_C_QUOTES)


@dataclass(frozen=True)
class LanguageSpec:
    """One language: how to parse it, recognise it, cut windows in it, lex it and outline it."""

    name: str
    grammar: tuple[str, str]  # (grammar wheel's module, the function returning the grammar pointer)
    extensions: tuple[str, ...]
    aliases: tuple[str, ...]  # short names people type and LSP languageIds editors send
    line_comment: str
    # Post-processing counts brackets outside these strings and comments; `closer_words` end blocks too.
    regions: tuple[Region, ...]
    containers: frozenset[str]  # syntax nodes whose named children are statements: window edges go between them
    strings: frozenset[str]  # syntax nodes that are string literals
    interpolations: frozenset[str] = frozenset()  # code inside a string: a cursor there is not in a string
    brackets: str = "()[]{}"
    closer_words: tuple[str, ...] = ()
    block_opener: str | None = None  # regex: code at a line's end that opens a block, besides an open bracket
    # The workspace outline: definition node type -> kind; wrapper node -> field holding the definition (None:
    # any named child); definitions whose body holds member definitions.
    definitions: dict[str, str] = field(default_factory=dict)
    definition_wrappers: dict[str, str | None] = field(default_factory=dict)
    definition_containers: frozenset[str] = frozenset()
    # A string first in a definition's body documents it: the delimiters such a docstring opens and closes with
    # (an answer cut short inside one it opened gets it closed); none where the language has no docstrings.
    docstrings: tuple[str, ...] = ()
    family: str | None = None  # a language sharing its code base (TypeScript with JavaScript); default: itself
    imports: str | None = None  # whose import syntax the workspace index parses
    # Regex: a line starting with this at column 0 begins a top-level statement (never text inside a multi-line
    # string or comment, in practice). The syntax check parses from one such line to another around the cursor;
    # None: it parses the whole windows.
    top_level: str | None = None
    # Regex: an indented line starting with this begins a definition nested in a long one (a Python method deep
    # in a 1,000-line class), where no `top_level` line is near; it must not match text in a string either.
    nested_start: str | None = None

    @property
    def code_family(self) -> str:
        return self.family or self.name


_JS_CONTAINERS = frozenset({"program", "statement_block", "class_body", "switch_body", "switch_case", "switch_default"})
_TS_CONTAINERS = _JS_CONTAINERS | {"interface_body", "enum_body", "object_type"}
_JS_STRINGS = frozenset({"string", "template_string"})
_JS_REGIONS = (*_C_COMMENTS, quoted("`", "`", multiline=True), *_C_QUOTES)
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
_TS_WRAPPERS: dict[str, str | None] = {"export_statement": "declaration", "ambient_declaration": None,
                                       "expression_statement": None}
_TS_DEF_CONTAINERS = frozenset({"class_declaration", "abstract_class_declaration", "internal_module", "module"})
_C_DEFS = {
    "function_definition": "function", "declaration": "function", "struct_specifier": "type",
    "union_specifier": "type", "enum_specifier": "type", "type_definition": "type",
    "preproc_function_def": "macro", "preproc_def": "macro",
}
_C_CONTAINERS = frozenset({"translation_unit", "compound_statement", "field_declaration_list", "case_statement",
                           "enumerator_list"})
_WORD_OPENER = r"\b(then|do|else|repeat)$|\bfunction\b[^()]*\([^()]*\)$"
_JS_TOP_LEVEL = r"(?:export|function|class|async|const|let|var|interface|type|enum|declare|abstract)\b"
_C_TOP_LEVEL = r"[A-Za-z_]\w*[\s*(]"  # a declaration or definition; not a `label:`

_SPECS = (
    LanguageSpec(
        name="python", grammar=("tree_sitter_python", "language"), extensions=(".py", ".pyi"),
        aliases=("py", "python3"), line_comment="#",
        regions=(line_comment("#"), quoted('"""', '"""', multiline=True), quoted("'''", "'''", multiline=True),
                 *_C_QUOTES),
        containers=frozenset({"module", "block"}), strings=frozenset({"string"}),
        interpolations=frozenset({"interpolation"}), block_opener=r":$",
        definitions={"function_definition": "function", "class_definition": "class",
                     "type_alias_statement": "type", "expression_statement": "variable"},
        definition_wrappers={"decorated_definition": "definition"},
        definition_containers=frozenset({"class_definition"}), docstrings=('"""', "'''"), imports="python",
        top_level=r"(?:async\s+def|def|class)\b|@",
        nested_start=r"(?:async\s+)?def\s+\w+\s*\(",  # a signature: doctest examples start with `>>>`
    ),
    LanguageSpec(
        name="javascript", grammar=("tree_sitter_javascript", "language"),
        extensions=(".js", ".mjs", ".cjs", ".jsx"), aliases=("js", "jsx", "node", "javascriptreact"),
        line_comment="//", regions=_JS_REGIONS, containers=_JS_CONTAINERS, strings=_JS_STRINGS,
        interpolations=frozenset({"template_substitution"}),
        definitions=_JS_DEFS, definition_wrappers={"export_statement": "declaration"},
        definition_containers=frozenset({"class_declaration"}), imports="javascript", top_level=_JS_TOP_LEVEL,
    ),
    LanguageSpec(
        name="typescript", grammar=("tree_sitter_typescript", "language_typescript"),
        extensions=(".ts", ".mts", ".cts"), aliases=("ts",), line_comment="//", regions=_JS_REGIONS,
        containers=_TS_CONTAINERS, strings=_JS_STRINGS, interpolations=frozenset({"template_substitution"}),
        definitions=_TS_DEFS, definition_wrappers=_TS_WRAPPERS, definition_containers=_TS_DEF_CONTAINERS,
        family="javascript", imports="javascript", top_level=_JS_TOP_LEVEL,
    ),
    LanguageSpec(
        name="tsx", grammar=("tree_sitter_typescript", "language_tsx"), extensions=(".tsx",),
        aliases=("typescriptreact",), line_comment="//", regions=_JS_REGIONS, containers=_TS_CONTAINERS,
        strings=_JS_STRINGS, interpolations=frozenset({"template_substitution"}),
        definitions=_TS_DEFS, definition_wrappers=_TS_WRAPPERS, definition_containers=_TS_DEF_CONTAINERS,
        family="javascript", imports="javascript", top_level=_JS_TOP_LEVEL,
    ),
    LanguageSpec(
        name="go", grammar=("tree_sitter_go", "language"), extensions=(".go",), aliases=("golang",),
        line_comment="//", regions=(*_C_COMMENTS, quoted("`", "`", multiline=True, escapes=False), *_C_QUOTES),
        containers=frozenset({"source_file", "block", "statement_list", "field_declaration_list",
                              "expression_switch_statement", "type_switch_statement", "select_statement",
                              "expression_case", "type_case", "default_case", "communication_case"}),
        strings=frozenset({"interpreted_string_literal", "raw_string_literal", "rune_literal"}),
        definitions={"function_declaration": "function", "method_declaration": "method", "type_spec": "type",
                     "type_alias": "type", "const_spec": "variable", "var_spec": "variable"},
        definition_wrappers={"type_declaration": None, "const_declaration": None, "var_declaration": None},
        imports="go", top_level=r"(?:func|type|var|const)\b",
    ),
    LanguageSpec(
        name="rust", grammar=("tree_sitter_rust", "language"), extensions=(".rs",), aliases=("rs",),
        line_comment="//",
        # A quote is a char literal only if it closes after one character: `'a` is a lifetime.
        regions=(*_C_COMMENTS, quoted('r#"', '"#', multiline=True, escapes=False), quoted('"', '"', multiline=True),
                 Region("'", r"(?:\\[^'\n]+|[^\\'\n])(?P<end>')")),
        containers=frozenset({"source_file", "block", "declaration_list", "field_declaration_list", "match_block",
                              "enum_variant_list"}),
        strings=frozenset({"char_literal", "raw_string_literal", "string_literal"}),
        definitions={"function_item": "function", "function_signature_item": "function", "struct_item": "type",
                     "enum_item": "type", "union_item": "type", "trait_item": "type", "impl_item": "impl",
                     "type_item": "type", "mod_item": "module", "macro_definition": "macro",
                     "const_item": "variable", "static_item": "variable"},
        definition_containers=frozenset({"impl_item", "trait_item", "mod_item"}), imports="rust",
        top_level=r"(?:pub|fn|impl|struct|enum|trait|mod|const|static|type|unsafe|async|macro_rules)\b|#\[",
    ),
    LanguageSpec(
        name="java", grammar=("tree_sitter_java", "language"), extensions=(".java",), aliases=(),
        line_comment="//", regions=(*_C_COMMENTS, quoted('"""', '"""', multiline=True), *_C_QUOTES),
        containers=frozenset({"program", "block", "class_body", "interface_body", "enum_body", "constructor_body",
                              "switch_block", "switch_block_statement_group"}),
        strings=frozenset({"character_literal", "string_literal"}),
        definitions={"class_declaration": "class", "interface_declaration": "type", "enum_declaration": "type",
                     "record_declaration": "class", "annotation_type_declaration": "type",
                     "method_declaration": "method", "constructor_declaration": "method"},
        definition_containers=frozenset({"class_declaration", "interface_declaration", "record_declaration"}),
        imports="java", top_level=r"(?:public|protected|private|abstract|final|class|interface|enum|record)\b|@",
    ),
    LanguageSpec(
        name="c", grammar=("tree_sitter_c", "language"), extensions=(".c", ".h"), aliases=(),
        line_comment="//", regions=(*_C_COMMENTS, *_C_QUOTES), containers=_C_CONTAINERS,
        strings=frozenset({"char_literal", "string_literal", "system_lib_string"}), definitions=_C_DEFS,
        imports="c", top_level=_C_TOP_LEVEL,
    ),
    LanguageSpec(
        name="cpp", grammar=("tree_sitter_cpp", "language"),
        extensions=(".cpp", ".cc", ".cxx", ".hpp", ".hh", ".hxx"), aliases=("c++", "cxx", "cc"),
        line_comment="//", regions=(*_C_COMMENTS, *_C_QUOTES), containers=_C_CONTAINERS | {"declaration_list"},
        strings=frozenset({"char_literal", "raw_string_literal", "string_literal", "system_lib_string"}),
        definitions=_C_DEFS | {"class_specifier": "class", "namespace_definition": "module",
                               "field_declaration": "method", "alias_declaration": "type"},
        definition_wrappers={"template_declaration": None},
        definition_containers=frozenset({"class_specifier", "struct_specifier", "namespace_definition"}),
        family="c", imports="c", top_level=_C_TOP_LEVEL,
    ),
    LanguageSpec(
        name="lua", grammar=("tree_sitter_lua", "language"), extensions=(".lua",), aliases=(), line_comment="--",
        regions=(quoted(r"--\[\[", "]]", multiline=True, escapes=False), line_comment("--"),
                 quoted(r"\[\[", "]]", multiline=True, escapes=False), *_C_QUOTES),
        containers=frozenset({"chunk", "block"}), strings=frozenset({"string"}), closer_words=("end", "until"),
        block_opener=_WORD_OPENER, imports="lua", top_level=r"(?:local\s+)?function\b",
    ),
    LanguageSpec(
        name="bash", grammar=("tree_sitter_bash", "language"), extensions=(".sh", ".bash"),
        aliases=("sh", "shell", "shellscript", "zsh"), line_comment="#",
        # `case` arms end in an unmatched `)`, so parentheses do not count in shell scripts.
        regions=(line_comment(r"(?<![^\s])#"), quoted('"', '"', multiline=True),
                 quoted("'", "'", multiline=True, escapes=False)),
        brackets="[]{}", closer_words=("fi", "done", "esac"), block_opener=_WORD_OPENER,
        containers=frozenset({"program", "compound_statement", "do_group", "if_statement", "elif_clause",
                              "else_clause", "case_item"}),
        strings=frozenset({"ansi_c_string", "heredoc_body", "raw_string", "string"}),
        interpolations=frozenset({"arithmetic_expansion", "command_substitution", "expansion",
                                  "simple_expansion"}),
    ),
)

LANGUAGES: dict[str, LanguageSpec] = {spec.name: spec for spec in _SPECS}
KNOWN_LANGUAGES: tuple[str, ...] = tuple(LANGUAGES)
_EXTENSIONS = {ext: spec.name for spec in _SPECS for ext in spec.extensions}
_ALIASES = {alias: spec.name for spec in _SPECS for alias in spec.aliases}

_local = threading.local()  # a Parser holds mutable state: one per thread


def spec_for(language: str | None) -> LanguageSpec | None:
    """The spec of one of KNOWN_LANGUAGES (by our name); None for text of no known language."""
    return LANGUAGES.get(language or "")


@cache
def statement_start(language: str | None, *, nested: bool = False) -> re.Pattern[str] | None:
    """A multi-line regex for a line that starts a top-level statement (`LanguageSpec.top_level`) or, with
    `nested`, an indented one starting a nested definition (`nested_start`); None where the language has none."""
    spec = spec_for(normalize_language(language)) if language else None
    start = None if spec is None else spec.nested_start if nested else spec.top_level
    indent = r"[ \t]+" if nested else ""
    return re.compile(f"^{indent}(?:{start})", re.M) if start else None


def comment_marker(language: str | None) -> str:
    """How a line comment starts: the language's own marker, `#` for text of no known language."""
    spec = spec_for(language)
    if spec is not None:
        return spec.line_comment
    return "//" if language else "#"


def language_for_path(path: str) -> str | None:
    """Our language name for a file path, by extension (case-insensitive); None when unknown."""
    return _EXTENSIONS.get(os.path.splitext(path)[1].lower())


def normalize_language(name: str) -> str | None:
    """Map our names, common aliases and LSP languageIds to our language name; None when unknown."""
    key = name.strip().lower()
    if key in LANGUAGES:
        return key
    return _ALIASES.get(key)


def get_language(language: str) -> tree_sitter.Language | None:
    """The tree-sitter Language for one of KNOWN_LANGUAGES (or an alias); None without a grammar."""
    name = normalize_language(language)
    return None if name is None else _load_language(name)


@cache
def _load_language(name: str) -> tree_sitter.Language:
    module_name, function = LANGUAGES[name].grammar
    module = importlib.import_module(module_name)
    return tree_sitter.Language(getattr(module, function)())


def get_parser(language: str) -> tree_sitter.Parser | None:
    """A parser for `language`, cached per thread (parsers are not safe to share); None without a grammar."""
    name = normalize_language(language)
    if name is None:
        return None
    parsers: dict[str, tree_sitter.Parser] = _local.__dict__.setdefault("parsers", {})
    parser = parsers.get(name)
    if parser is None:
        parser = parsers[name] = tree_sitter.Parser(_load_language(name))
    return parser
