"""Language names, file-extension and alias mapping, and cached tree-sitter parsers.

Grammar wheels are imported lazily so a session that only edits Python never loads the C++ grammar.
"""

from __future__ import annotations

import importlib
import os
import threading
from functools import cache

import tree_sitter

KNOWN_LANGUAGES: tuple[str, ...] = (
    "python", "javascript", "typescript", "tsx", "go", "rust", "java", "c", "cpp", "lua", "bash",
)

# language -> (grammar module, function returning the grammar pointer)
_GRAMMARS: dict[str, tuple[str, str]] = {
    "python": ("tree_sitter_python", "language"),
    "javascript": ("tree_sitter_javascript", "language"),
    "typescript": ("tree_sitter_typescript", "language_typescript"),
    "tsx": ("tree_sitter_typescript", "language_tsx"),
    "go": ("tree_sitter_go", "language"),
    "rust": ("tree_sitter_rust", "language"),
    "java": ("tree_sitter_java", "language"),
    "c": ("tree_sitter_c", "language"),
    "cpp": ("tree_sitter_cpp", "language"),
    "lua": ("tree_sitter_lua", "language"),
    "bash": ("tree_sitter_bash", "language"),
}

_EXTENSIONS: dict[str, str] = {
    ".py": "python", ".pyi": "python",
    ".js": "javascript", ".mjs": "javascript", ".cjs": "javascript", ".jsx": "javascript",
    ".ts": "typescript", ".mts": "typescript", ".cts": "typescript",
    ".tsx": "tsx",
    ".go": "go",
    ".rs": "rust",
    ".java": "java",
    ".c": "c", ".h": "c",
    ".cpp": "cpp", ".cc": "cpp", ".cxx": "cpp", ".hpp": "cpp", ".hh": "cpp", ".hxx": "cpp",
    ".lua": "lua",
    ".sh": "bash", ".bash": "bash",
}

# Short names people type and LSP languageIds editors send.
_ALIASES: dict[str, str] = {
    "py": "python", "python3": "python",
    "js": "javascript", "jsx": "javascript", "node": "javascript", "javascriptreact": "javascript",
    "ts": "typescript", "typescriptreact": "tsx",
    "golang": "go",
    "rs": "rust",
    "c++": "cpp", "cxx": "cpp", "cc": "cpp",
    "sh": "bash", "shell": "bash", "shellscript": "bash", "zsh": "bash",
}

_local = threading.local()  # a Parser holds mutable state: one per thread


def language_for_path(path: str) -> str | None:
    """Our language name for a file path, by extension (case-insensitive); None when unknown."""
    return _EXTENSIONS.get(os.path.splitext(path)[1].lower())


def normalize_language(name: str) -> str | None:
    """Map our names, common aliases and LSP languageIds to our language name; None when unknown."""
    key = name.strip().lower()
    if key in _GRAMMARS:
        return key
    return _ALIASES.get(key)


def get_language(language: str) -> tree_sitter.Language | None:
    """The tree-sitter Language for one of KNOWN_LANGUAGES (or an alias); None without a grammar."""
    name = normalize_language(language)
    return None if name is None else _load_language(name)


@cache
def _load_language(name: str) -> tree_sitter.Language:
    module_name, function = _GRAMMARS[name]
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
