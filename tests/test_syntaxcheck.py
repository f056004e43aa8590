"""syntaxcheck: errors an insertion adds around the cursor, the longest harmless cut, the local windows, speed."""

from __future__ import annotations

import heapq
import json.encoder
import random
import statistics
import textwrap
import time
from pathlib import Path

import pytest

from codecomplete.core import syntaxcheck
from codecomplete.core.languages import get_parser
from codecomplete.core.syntaxcheck import added_errors, count_errors, first_harmless_cut, local_windows

CURSOR = "█"
BENCH = Path(__file__).parent / "data" / "bench"


def split(source: str) -> tuple[str, str]:
    prefix, suffix = source.split(CURSOR)
    return prefix, suffix


@pytest.mark.parametrize(
    "language, source, errors",
    [
        ("python", "def f(x):\n    return x\n", 0),
        ("javascript", "function f() {\n  if (x) {\n    return 1;\n  }\n", 1),  # a MISSING `}`
        ("javascript", "function f() {\n  return 1;\n  }\n}\n", 1),  # an ERROR around the extra `}`
        ("c", "int f() {\n    x = a +\n}\n", 2),
    ],
)
def test_count_errors_counts_error_and_missing_nodes(language: str, source: str, errors: int) -> None:
    parser = get_parser(language)
    assert parser is not None
    assert count_errors(parser.parse(source.encode()).root_node) == errors


# (language, document with the cursor, insertion, whether it adds errors)
CASES = [
    ("python", "def mean(xs):\n    █\n", "return sum(xs) / len(xs)", False),
    ("python", "def mean(xs):\n    █\n", "return sum(xs) / len(xs))", True),
    ("python", "def mean(xs):\n    █\n\ndef g():\n    pass\n", "if xs:\n        return 0\n    return 1", False),
    ("javascript", "function f(a) {\n  █\n}\n", "return a * 2;", False),
    # The issue: `return (…);\n  }` where the suffix already has the `}`.
    ("javascript", "function f(a) {\n  if (a) {\n    █\n  }\n  return 0;\n}\n", "return (a * 2);\n  }", True),
    ("go", "func f() error {\n\t█\n\treturn nil\n}\n", "if err := g(); err != nil {\n\t\treturn err\n\t}", False),
    ("go", "func f() error {\n\t█\n\treturn nil\n}\n", "if err := g(); err != nil {\n\t\treturn err", True),
    # The issue: `in->fd = -1;\n    }` in C, the `}` already below.
    ("c", "void f(struct input *in) {\n    if (in->fd >= 0) {\n        █\n    }\n}\n", "in->fd = -1;", False),
    ("c", "void f(struct input *in) {\n    if (in->fd >= 0) {\n        █\n    }\n}\n", "in->fd = -1;\n    }", True),
    # Mid-line, before brackets an editor closed by itself.
    ("javascript", "const n = max(█);\n", "a, b", False),
    ("javascript", "const n = max(█);\n", "a, b)", True),
    ("python", "if (█):\n    pass\n", "x > 0", False),
]


@pytest.mark.parametrize("language, source, insertion, harmful", CASES)
def test_added_errors(language: str, source: str, insertion: str, harmful: bool) -> None:
    prefix, suffix = split(source)
    assert (added_errors(prefix, insertion, suffix, language) > 0) is harmful


def test_errors_the_document_already_has_do_not_count() -> None:
    # The user is half-way through a line below the cursor: that error is in both parses.
    prefix, suffix = split("def f(xs):\n    █\n    total = (\n\ndef g():\n    return 1\n")
    assert added_errors(prefix, "xs = sorted(xs)", suffix, "python") == 0
    assert added_errors(prefix, "xs = sorted(xs", suffix, "python") > 0


def test_fixing_an_error_is_not_negative() -> None:
    prefix, suffix = split("function f(a) {\n  const b = █\n  return b;\n}\n")
    assert added_errors(prefix, "", suffix, "javascript") == 0
    assert added_errors(prefix, "a * 2;", suffix, "javascript") == 0


@pytest.mark.parametrize("language", [None, "", "brainfuck", "markdown"])
def test_languages_without_a_grammar_add_no_errors(language: str | None) -> None:
    assert added_errors("x = (", "((((", "\n", language) == 0
    assert first_harmless_cut("x = (", "((((\n))", "\n", language) == len("((((\n))")


def test_aliases_find_the_grammar() -> None:
    prefix, suffix = split("function f(a) {\n  █\n}\n")
    assert added_errors(prefix, "return (a;", suffix, "js") > 0
    assert added_errors(prefix, "return (a;", suffix, "JavaScript") > 0


@pytest.mark.parametrize(
    "language, source, insertion, kept",
    [
        # Whole: nothing to cut.
        ("python", "def f(xs):\n    █\n", "n = len(xs)\n    return n", "n = len(xs)\n    return n"),
        # The last line is broken: back to the line end before it.
        ("python", "def f(xs):\n    █\n", "n = len(xs)\n    return n +", "n = len(xs)"),
        # Repeated lines after a valid start, the last one cut by the token limit.
        ("go", "func f() int {\n\t█\n}\n", "n := 1\n\tn++\n\tn++\n\treturn n +", "n := 1\n\tn++\n\tn++"),
        # A block closed twice: the line with the second closer goes, blank lines are not a cut of their own.
        ("javascript", "function f(a) {\n  █\n}\n", "const b = a;\n\n  return b;\n}\n\n",
         "const b = a;\n\n  return b;"),
        # One line only: after its last `;` that keeps the code whole.
        ("c", "void f(int *p) {\n    █\n}\n", "p[0] = 1; p[1] = 2; p[2] =", "p[0] = 1; p[1] = 2;"),
        # Nothing harmless: dropped.
        ("go", "func f() {\n\t█\n}\n", "x := (1 +", ""),
        ("javascript", "function f(a) {\n  █\n}\n", "\n  return a +", ""),
    ],
)
def test_first_harmless_cut(language: str, source: str, insertion: str, kept: str) -> None:
    prefix, suffix = split(source)
    cut = first_harmless_cut(prefix, insertion, suffix, language)
    assert insertion[:cut] == kept
    assert added_errors(prefix, insertion[:cut], suffix, language) == 0


def test_whitespace_is_left_alone() -> None:
    prefix, suffix = split("def f():\n    █\n")
    assert first_harmless_cut(prefix, "  \n ", suffix, "python") == 4


def _real_code() -> list[tuple[str, str]]:
    python = [Path(module.__file__).read_text() for module in (textwrap, json.encoder, heapq)]
    return [(text, "python") for text in python] + [
        ((BENCH / "ratelimit.go").read_text(), "go"),
        ((BENCH / "taskqueue.js").read_text(), "javascript"),
    ]


def test_incremental_parses_count_as_fresh_ones() -> None:
    """The rule counts with incremental parses from the remembered tree, the benchmark with fresh ones: they
    must agree, for real lines put back and for broken ones."""
    rng = random.Random(7)
    junk = ["", ")", "}", "\n}", " +", "(", "{\n", '"', " else {", ";", "]"]
    compared = 0
    for text, language in _real_code():
        lines = text.split("\n")
        for _ in range(40):
            i = rng.randrange(1, len(lines) - 2)
            j = min(len(lines) - 1, i + rng.choice([1, 2, 4]))
            indent = lines[i][: len(lines[i]) - len(lines[i].lstrip())]
            insertion = "\n".join(lines[i:j])[len(indent) :] + rng.choice(junk)
            prefix = "\n".join(lines[:i]) + "\n" + indent
            suffix = "\n" + "\n".join(lines[j:])
            base = syntaxcheck._base(language, prefix, suffix)
            fresh = syntaxcheck._errors_with(base, insertion, incremental=False)
            assert syntaxcheck._errors_with(base, insertion, incremental=True) == fresh, (language, insertion)
            compared += 1
    assert compared == 200


def test_local_windows_start_and_end_at_top_level_statements() -> None:
    prefix = "".join(f"def f{i}(x):\n    return x + {i}\n\n" for i in range(200)) + "def g(x):\n    "
    suffix = "\n    return x\n\n" + "".join(f"def h{i}():\n    pass\n\n" for i in range(100))
    near_prefix, near_suffix = local_windows(prefix, suffix, "python")
    assert near_prefix.startswith("def f") and prefix.endswith(near_prefix)
    assert len(near_prefix) >= syntaxcheck.LOCAL_BEFORE and len(near_prefix) < syntaxcheck.LOCAL_BEFORE + 40
    assert suffix.startswith(near_suffix) and suffix[len(near_suffix) :].startswith("def h")
    assert syntaxcheck.LOCAL_AFTER <= len(near_suffix) < syntaxcheck.LOCAL_AFTER + 40


def test_local_windows_never_start_inside_a_docstring() -> None:
    """Column-0 words inside a multi-line string are no statement starts (heapq's essay is full of them): every
    start chosen is where a top-level statement of the file starts."""
    text = Path(heapq.__file__).read_text()
    parser = get_parser("python")
    assert parser is not None
    data = text.encode()
    starts = {len(data[: child.start_byte].decode()) for child in parser.parse(data).root_node.children}
    chosen = set()
    for cursor in range(0, len(text), 500):
        cursor = text.index("\n", cursor) + 1
        near_prefix, _ = local_windows(text[:cursor], text[cursor:], "python")
        chosen.add(cursor - len(near_prefix))
    assert len(chosen) > 5 and chosen <= starts


def test_local_windows_without_the_language_fact_are_the_windows() -> None:
    prefix, suffix = "echo a\n" * 1000, "echo b\n" * 1000
    assert local_windows(prefix, suffix, "bash") == (prefix, suffix)
    assert local_windows(prefix, suffix, None) == (prefix, suffix)


@pytest.mark.parametrize("language", ["python", "go", "javascript"])
def test_added_errors_takes_a_few_ms_on_8_kb_windows(language: str) -> None:
    text = dict((lang, t) for t, lang in reversed(_real_code()))[language]
    text = (text * (1 + 8192 // len(text)))[: 8192 + 4096]
    cursor = text.index("\n", 8192 - 2048) + 1
    timings = []
    for k in range(10):  # different windows each time, so nothing is remembered: two full parses a call
        prefix, suffix = text[:cursor], text[cursor : cursor + 2048 + k]
        started = time.perf_counter()
        added_errors(prefix, "x = 1\n", suffix, language)
        timings.append(time.perf_counter() - started)
    median = statistics.median(timings)
    assert median < 0.02, f"{median * 1e3:.1f} ms per call on 8 KB"
