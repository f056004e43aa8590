from __future__ import annotations

import subprocess
import sys
import threading

import pytest

from codecomplete.core.languages import (
    KNOWN_LANGUAGES,
    get_language,
    get_parser,
    language_for_path,
    normalize_language,
)

# One small valid program per language and the root node type its grammar gives it.
SAMPLES = {
    "python": (b"def f(x):\n    return x + 1\n", "module"),
    "javascript": (b"function f(x) { return <b>{x}</b>; }\n", "program"),
    "typescript": (b"function f(x: number): number { return x + 1; }\n", "program"),
    "tsx": (b"const f = (x: number) => <b>{x}</b>;\n", "program"),
    "go": (b"package main\n\nfunc f(x int) int { return x + 1 }\n", "source_file"),
    "rust": (b"fn f(x: i32) -> i32 { x + 1 }\n", "source_file"),
    "java": (b"class A { int f(int x) { return x + 1; } }\n", "program"),
    "c": (b"int f(int x) { return x + 1; }\n", "translation_unit"),
    "cpp": (b"template <typename T> T f(T x) { return x + 1; }\n", "translation_unit"),
    "lua": (b"local function f(x)\n  return x + 1\nend\n", "chunk"),
    "bash": (b"f() {\n  echo \"$1\"\n}\n", "program"),
}


def test_known_languages_are_the_eleven_with_grammars() -> None:
    assert KNOWN_LANGUAGES == (
        "python", "javascript", "typescript", "tsx", "go", "rust", "java", "c", "cpp", "lua", "bash",
    )


@pytest.mark.parametrize(
    ("path", "language"),
    [
        ("a.py", "python"), ("stubs/a.pyi", "python"),
        ("a.js", "javascript"), ("a.mjs", "javascript"), ("a.cjs", "javascript"), ("a.jsx", "javascript"),
        ("a.ts", "typescript"), ("a.mts", "typescript"), ("a.cts", "typescript"), ("src/App.tsx", "tsx"),
        ("main.go", "go"), ("lib.rs", "rust"), ("A.java", "java"),
        ("a.c", "c"), ("a.h", "c"),
        ("a.cpp", "cpp"), ("a.cc", "cpp"), ("a.cxx", "cpp"), ("a.hpp", "cpp"), ("a.hh", "cpp"), ("a.hxx", "cpp"),
        ("init.lua", "lua"), ("run.sh", "bash"), ("run.bash", "bash"),
        ("/home/u/Project/MAIN.PY", "python"),
        ("Makefile", None), ("notes.txt", None), ("a.hs", None), (".py", None), ("dir.py/file", None),
    ],
)
def test_language_for_path(path: str, language: str | None) -> None:
    assert language_for_path(path) == language


@pytest.mark.parametrize(
    ("name", "language"),
    [
        *((name, name) for name in KNOWN_LANGUAGES),
        ("py", "python"), ("Python", "python"), (" python3 ", "python"),
        ("js", "javascript"), ("javascriptreact", "javascript"),
        ("ts", "typescript"), ("typescriptreact", "tsx"),
        ("golang", "go"), ("c++", "cpp"), ("sh", "bash"), ("shell", "bash"), ("shellscript", "bash"),
        ("haskell", None), ("", None), ("plaintext", None),
    ],
)
def test_normalize_language(name: str, language: str | None) -> None:
    assert normalize_language(name) == language


@pytest.mark.parametrize("language", KNOWN_LANGUAGES)
def test_every_grammar_parses_its_language(language: str) -> None:
    source, root_type = SAMPLES[language]
    tree = get_parser(language).parse(source)
    assert tree.root_node.type == root_type
    assert not tree.root_node.has_error


def test_parsers_and_languages_are_cached_and_aliases_share_them() -> None:
    assert get_parser("python") is get_parser("python")
    assert get_parser("py") is get_parser("python")
    assert get_language("golang") is get_language("go")
    assert get_parser("typescript") is not get_parser("tsx")


def test_unknown_language_has_no_grammar() -> None:
    assert get_parser("haskell") is None
    assert get_language("haskell") is None


def test_parsers_are_per_thread() -> None:
    """A Parser holds mutable state, so two threads must never share one."""
    other: list[object] = []
    thread = threading.Thread(target=lambda: other.append(get_parser("python")))
    thread.start()
    thread.join()
    assert other[0] is not None
    assert other[0] is not get_parser("python")


@pytest.mark.slow
def test_grammars_are_imported_only_when_asked_for() -> None:
    code = (
        "import sys\n"
        "from codecomplete.core.languages import get_parser, language_for_path\n"
        "language_for_path('a.cpp')\n"
        "get_parser('python')\n"
        "print(sorted({m.split('.')[0] for m in sys.modules if m.startswith('tree_sitter_')}))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "['tree_sitter_python']"
