"""``codecomplete eval``: completion quality as numbers, to measure changes to context or post-processing.

Every task is shown to the pipeline as an editor would show it: the masked line(s) replaced by one empty line
with the cursor on it. That is where someone writes a missing line, and it lets the post-processing see the
situation it was built for (leaving the masked text's own newline in place would put the cursor in front of
the next line's code, a mid-line situation that is single-line by design). So the document after accepting a
completion is ``prefix + completion + "\\n" + suffix``; for HumanEval that runs with the problem's tests in
the sandbox (pass@1, greedy), and every completion is compared with the masked text (exact match, edit
similarity).

Post-processing on vs off: both are real pipeline runs, since post-processing also stops generation early
(the "off" answer cannot be cut out of the "on" run). The prompt is evaluated once per (task, mode) and both
runs reuse it from the KV cache, so they start from identical logits (see ``PipelineSource``);
``raw_not_prefix`` in the JSON counts tasks where the "on" run's raw text is nevertheless not a prefix of the
"off" run's, which greedy decoding should make 0.
"""

from __future__ import annotations

import json
import os
import sys
import sysconfig
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import click

from .errors import UserError
from .evaltasks import (
    KINDS,
    InfillTask,
    build_tasks,
    edit_similarity,
    exact_match,
    mask_file_tasks,
    program_for,
)
from .evaltasks import select as select_tasks
from .languages import language_for_path
from .sandbox import run_program

SETS = ("single-line", "multi-line", "repo")
FORMATS = ("psm", "spm", "prefix")
SANDBOX_TIMEOUT_S = 3.0  # as in the HumanEval infilling harness
DEFAULT_TIME_BUDGET_MS = 60_000  # far above a normal request: the machine's speed must not decide quality
DEFAULT_REPO_LIMIT = 200  # maskings for the repository measure when --limit is not given
INDEX_READY_S = 60.0  # how long the first repo-context task waits for its directory to be indexed
DETAIL_CHARS = 300  # sandbox detail kept per record in the JSON
# Real code for the repository measure besides the test data: modest, stable standard-library modules.
STDLIB_FILES = ("textwrap.py", "fnmatch.py", "shlex.py", "heapq.py", "colorsys.py", "graphlib.py", "glob.py",
                "string.py", "queue.py", "sched.py")
_TEST_DATA = Path(__file__).resolve().parent.parent / "tests" / "data"  # present in a source checkout


@dataclass(frozen=True)
class Case:
    """One task as the editor shows it: the masked text replaced by an empty line holding the cursor."""

    set: str
    task: InfillTask
    language: str | None

    @property
    def text(self) -> str:
        return f"{self.task.prefix}\n{self.task.suffix}"

    @property
    def offset(self) -> int:
        return len(self.task.prefix)

    def program(self, completion: str) -> str:
        """The HumanEval program for the document with ``completion`` accepted (its line has its newline)."""
        return program_for(self.task, completion + "\n")


@dataclass(frozen=True)
class Answer:
    completion: str
    raw: str  # model output before post-processing
    stop_reason: str
    latency_ms: float


# Produces one answer per post-processing flag, in the order given, for a case in a prompt format.
Source = Callable[[Case, str, Sequence[bool]], Sequence[Answer]]


@dataclass(frozen=True)
class Record:
    set: str
    task_id: str
    language: str | None
    format: str
    postprocess: bool
    repo_context: bool
    completion: str
    raw: str
    stop_reason: str
    latency_ms: float
    exact: bool
    edit_similarity: float
    status: str | None  # sandbox verdict (passed, failed, error, timeout); None for the repository measure
    detail: str  # why the sandbox run failed, shortened

    @property
    def passed(self) -> bool:
        return self.status == "passed"


@dataclass(frozen=True)
class Row:
    """Aggregate of the records of one set (or one language of the repository measure) × mode × setting."""

    set: str
    format: str
    postprocess: bool
    repo_context: bool
    n: int
    passed: int | None  # None where nothing is executed (the repository measure)
    exact: int
    edit_similarity: float
    latency_ms: float
    stop_reasons: dict[str, int]

    @property
    def pass_at_1(self) -> float | None:
        return None if self.passed is None else self.passed / self.n

    @property
    def exact_match(self) -> float:
        return self.exact / self.n

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "pass_at_1": self.pass_at_1, "exact_match": self.exact_match}


def humaneval_cases(kind: str, limit: int | None, seed: int) -> tuple[list[Case], int]:
    """The selected cases of a HumanEval infilling set, and how many tasks the whole set has."""
    tasks = build_tasks(kind)  # type: ignore[arg-type]
    return [Case(kind, t, "python") for t in select_tasks(tasks, limit, seed)], len(tasks)


def source_files(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Files in a known language under ``paths`` (files or directories; hidden and cache dirs skipped)."""
    found: set[Path] = set()
    for path in map(Path, paths):
        if path.is_file():
            found.add(path)
            continue
        for root, dirs, names in os.walk(path):
            dirs[:] = [d for d in dirs if not d.startswith(".") and d not in ("__pycache__", "node_modules")]
            found.update(Path(root, n) for n in names if language_for_path(n))
    return sorted(found)


def default_repo_paths() -> list[Path]:
    """The test data's source files (in a source checkout) and a few standard-library modules."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    paths = [p for p in (stdlib / name for name in STDLIB_FILES) if p.is_file()]
    return ([_TEST_DATA] if _TEST_DATA.is_dir() else []) + paths


def repo_cases(paths: Iterable[str | os.PathLike[str]], limit: int, seed: int) -> list[Case]:
    """``limit`` maskings spread evenly over languages and over single lines vs 2–8 line spans.

    Sampling per language keeps a big Python file from drowning out a small Go one.
    """
    by_language: dict[str, list[Path]] = {}
    for path in source_files(paths):
        language = language_for_path(str(path))
        if language:
            by_language.setdefault(language, []).append(path)
    if not by_language:
        raise UserError("no source files in a known language for the repository measure")
    slots = [(language, kind) for language in sorted(by_language) for kind in KINDS]
    cases = []
    for i, (language, kind) in enumerate(slots):
        n = limit // len(slots) + (i < limit % len(slots))
        if n:
            tasks = mask_file_tasks(by_language[language], kind, n, seed)  # type: ignore[arg-type]
            cases += [Case("repo", t, language) for t in tasks]
    return cases


def canonical(text: str) -> str:
    """Text as exact match compares it: lines without trailing blanks, no blank lines at either end."""
    return "\n".join(line.rstrip() for line in text.strip("\n").split("\n")).strip("\n")


def run(cases: Sequence[Case], source: Source, formats: Sequence[str], flags: Sequence[bool], *,
        jobs: int = 1, progress: bool = False, repo_context: bool = False) -> list[Record]:
    """Ask ``source`` for every case × format, score the answers and run HumanEval programs in the sandbox.

    The model answers one request at a time here while up to ``jobs`` programs run alongside.
    """
    from tqdm import tqdm

    if jobs < 1:
        raise UserError(f"jobs must be at least 1, got {jobs}")
    pending: list[tuple[Case, str, bool, Answer, Future | None]] = []
    with ThreadPoolExecutor(max_workers=jobs) as pool, tqdm(
        total=len(cases) * len(formats), desc="eval", unit="task", file=sys.stderr, disable=not progress,
        dynamic_ncols=True,
    ) as bar:
        for case in cases:
            bar.set_postfix_str(case.set, refresh=False)
            runs: dict[str, Future] = {}  # the same program from two answers runs once
            for fmt in formats:
                answers = source(case, fmt, flags)
                if len(answers) != len(flags):
                    raise ValueError(f"completion source gave {len(answers)} answers for {len(flags)} flags")
                for flag, answer in zip(flags, answers):
                    future = None
                    if case.task.test:
                        program = case.program(answer.completion)
                        if program not in runs:
                            runs[program] = pool.submit(run_program, program, timeout_s=SANDBOX_TIMEOUT_S)
                        future = runs[program]
                    pending.append((case, fmt, flag, answer, future, repo_context))
                bar.update()
        return [_record(*item) for item in pending]


def _record(case: Case, fmt: str, flag: bool, answer: Answer, future: Future | None, repo_context: bool) -> Record:
    outcome = future.result() if future is not None else None
    return Record(
        set=case.set, task_id=case.task.task_id, language=case.language, format=fmt, postprocess=flag,
        repo_context=repo_context, completion=answer.completion, raw=answer.raw, stop_reason=answer.stop_reason,
        latency_ms=answer.latency_ms, exact=exact_match(answer.completion, case.task.middle),
        edit_similarity=edit_similarity(canonical(answer.completion), canonical(case.task.middle)),
        status=outcome.status if outcome else None, detail=outcome.detail[-DETAIL_CHARS:] if outcome else "",
    )  # fmt: skip


def summarize(records: Iterable[Record]) -> list[Row]:
    """One row per set × format × post-processing × repo context, in first-seen order; then a row per
    language of the repository measure ("repo:go")."""
    groups: dict[tuple[str, str, bool, bool], list[Record]] = {}
    by_language: dict[tuple[str, str, bool, bool], list[Record]] = {}
    for r in records:
        groups.setdefault((r.set, r.format, r.postprocess, r.repo_context), []).append(r)
        if r.set == "repo":
            key = (f"repo:{r.language}", r.format, r.postprocess, r.repo_context)
            by_language.setdefault(key, []).append(r)
    rows = []
    for (name, fmt, flag, repo_context), group in [*groups.items(), *by_language.items()]:
        n = len(group)
        executed = all(r.status is not None for r in group)
        rows.append(Row(
            set=name, format=fmt, postprocess=flag, repo_context=repo_context, n=n,
            passed=sum(r.passed for r in group) if executed else None, exact=sum(r.exact for r in group),
            edit_similarity=sum(r.edit_similarity for r in group) / n,
            latency_ms=sum(r.latency_ms for r in group) / n,
            stop_reasons=dict(Counter(r.stop_reason for r in group).most_common()),
        ))  # fmt: skip
    return rows


def raw_not_prefix(records: Iterable[Record]) -> int:
    """Tasks whose "on" raw output is not a prefix of the "off" one (see the module docstring)."""
    on: dict[tuple[str, str, str], str] = {}
    off: dict[tuple[str, str, str], str] = {}
    for r in records:
        (on if r.postprocess else off)[(r.set, r.task_id, r.format)] = r.raw
    return sum(not off[key].startswith(raw) for key, raw in on.items() if key in off)


def format_table(rows: Sequence[Row]) -> str:
    header = ("set", "mode", "post", "repo-ctx", "n", "pass@1", "exact", "edit-sim", "latency", "budget-cut")
    lines = [header]
    for row in rows:
        lines.append((
            row.set, row.format, "on" if row.postprocess else "off", "on" if row.repo_context else "off",
            str(row.n), "-" if row.pass_at_1 is None else f"{row.pass_at_1:.3f}", f"{row.exact_match:.3f}",
            f"{row.edit_similarity:.3f}", f"{row.latency_ms:.0f} ms",
            str(row.stop_reasons.get("time_budget", 0)),
        ))  # fmt: skip
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    left = 4  # the first four columns are names

    def render(line: tuple[str, ...]) -> str:
        cells = [c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths))]
        return "  ".join(cells).rstrip()

    return "\n".join(map(render, lines))


class PipelineSource:
    """Answers from the real pipeline (context → prompt → engine → post-processing) on one loaded model.

    With several flags, a first cold run loads the prompt into the KV cache and is discarded; every answer
    then comes from a run that reuses it, so all of them see bit-identical logits for the prompt (a prompt
    evaluated in batches and one served from the cache differ in the last digits, enough to flip a greedy
    choice now and then). Latency is reported as for a cold request: the cold run's prompt evaluation
    stands in for the cached one.
    """

    def __init__(self, engine: Any, settings: Any, *, repo_context: bool = False) -> None:
        from .pipeline import Completer

        self.completer = Completer(engine, settings)
        self.settings = settings
        self.repo_context = repo_context
        self._indexes: dict[str, Any] = {}

    def _index_for(self, case: Case) -> tuple[Any, str | None]:
        """A workspace index over the masked file's directory, with the masked text as an open document
        (so the disk copy cannot leak the answer); None outside the repo set or without repo context."""
        if not self.repo_context or case.set != "repo":
            return None, None
        from .repoindex import RepoIndex

        path = case.task.problem_id
        root = str(Path(path).parent)
        index = self._indexes.get(root)
        if index is None:
            index = self._indexes[root] = RepoIndex(root).start()
            index.wait_ready(INDEX_READY_S)
        index.update_document(path, case.text)
        return index, path

    def close(self) -> None:
        for index in self._indexes.values():
            index.stop()

    def __call__(self, case: Case, fmt: str, flags: Sequence[bool]) -> list[Answer]:
        prime = len(flags) > 1
        cold_prompt_ms = 0.0
        answers = []
        index, path = self._index_for(case)
        for i, flag in enumerate((flags[0], *flags) if prime else flags):
            settings = self.settings.with_overrides({"format": fmt, "postprocess": flag, "reuse": i > 0})
            result = self.completer.complete(case.text, case.offset, case.language, settings=settings,
                                             index=index, path=path)
            timings = result.timings_ms
            if i == 0:
                cold_prompt_ms = timings["prompt_eval"]
                if prime:
                    continue
            latency = timings["total"] - timings["prompt_eval"] + cold_prompt_ms
            answers.append(Answer(result.completion, result.raw, result.stop_reason, latency))
        return answers


def allowed_formats(family: str) -> list[str]:
    """The prompt layouts a model family was trained for (prefix-only always works)."""
    from .prompt import choose_format

    allowed = []
    for fmt in FORMATS:
        try:
            choose_format(family, fmt, "")
        except UserError:
            continue
        allowed.append(fmt)
    return allowed


@click.command("eval")
@click.option("--set", "sets", multiple=True, type=click.Choice([*SETS, "all"]), default=("all",),
              show_default=True, help="Task set (repeatable): HumanEval single-line / multi-line infilling, "
              "or repo (masked lines of real files, any language).")
@click.option("--limit", type=click.IntRange(1), help="Tasks per set (a spread-out, seeded sample). "
              f"Default: the whole HumanEval set; {DEFAULT_REPO_LIMIT} maskings for repo.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for sampling tasks.")
@click.option("--jobs", type=click.IntRange(1), default=2, show_default=True,
              help="Sandboxed test programs run at once (the model answers one request at a time).")
@click.option("--model", help="Catalog name or path to a .gguf file; default: the configured or embedded "
              "model.")
@click.option("--format", "formats", multiple=True, type=click.Choice(FORMATS),
              help="Prompt layout (repeatable); default: every layout the model was trained for.")
@click.option("--postprocess", type=click.Choice(["on", "off", "both"]), default="both", show_default=True)
@click.option("--repo-context", type=click.Choice(["on", "off", "both"]), default="off", show_default=True,
              help="Repository context for the repo set (not available yet: measured without it).")
@click.option("--repo-path", "repo_paths", multiple=True, type=click.Path(exists=True),
              help="Files or directories for the repo set (repeatable); default: tests/data and a few "
              "standard-library modules.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, writable=True),
              help="Write the summary and every answer to this JSON file.")
@click.option("--max-tokens", type=click.IntRange(1, 4096), help="Most tokens to generate per answer.")
@click.option("--time-budget-ms", type=click.IntRange(1), default=DEFAULT_TIME_BUDGET_MS, show_default=True,
              help="Wall-time budget per request; generous so the machine's speed does not decide quality.")
def command(sets, limit, seed, jobs, model, formats, postprocess, repo_context, repo_paths, json_path,
            max_tokens, time_budget_ms) -> None:
    """Measure completion quality: HumanEval infilling (pass@1, exact match) and masked repository lines."""
    from .config import load_settings
    from .pipeline import load_engine
    from .prompt import detect_family

    if json_path and not os.access(Path(json_path).resolve().parent, os.W_OK):  # fail before the long run
        raise UserError(f"cannot write {json_path}: its directory is missing or not writable")
    chosen = SETS if "all" in sets else tuple(s for s in SETS if s in sets)
    flags = {"on": (True,), "off": (False,), "both": (True, False)}[postprocess]
    settings = load_settings({"model": model, "max_tokens": max_tokens, "max_tokens_single_line": max_tokens,
                              "time_budget_ms": time_budget_ms})
    cases: list[Case] = []
    sizes: dict[str, dict[str, int]] = {}
    for name in chosen:
        if name == "repo":
            selected = repo_cases(repo_paths or default_repo_paths(), limit or DEFAULT_REPO_LIMIT, seed)
            sizes[name] = {"evaluated": len(selected), "files": len({c.task.problem_id for c in selected})}
        else:
            selected, total = humaneval_cases(name, limit, seed)
            sizes[name] = {"tasks": total, "evaluated": len(selected)}
        cases += selected

    engine = load_engine(settings)
    family = detect_family(engine)
    formats = list(formats) or allowed_formats(family)
    _check_formats(family, formats)  # a layout the model cannot do fails now, not after an hour of tasks
    sets_text = "; ".join(f"{name} {_describe(size)}" for name, size in sizes.items())
    click.echo(f"eval: {engine.info.name} ({family}), formats {', '.join(formats)}, "
               f"post-processing {postprocess}; {sets_text}", err=True)
    contexts = {"on": (True,), "off": (False,), "both": (False, True)}[repo_context]
    records = []
    for with_repo in contexts:  # repository context only changes the repo set
        subset = [c for c in cases if c.set == "repo"] if with_repo and False in contexts else cases
        source = PipelineSource(engine, settings, repo_context=with_repo)
        try:
            records += run(subset, source, formats, flags, jobs=jobs, progress=True, repo_context=with_repo)
        finally:
            source.close()
    rows = summarize(records)
    click.echo(format_table(rows))
    mismatched = raw_not_prefix(records)
    if json_path:
        report = {
            "model": {"path": engine.info.path, "name": engine.info.name, "family": family},
            "settings": {key: getattr(settings, key) for key in
                         ("max_tokens", "max_tokens_single_line", "time_budget_ms", "token_budget", "n_ctx")},
            "seed": seed, "limit": limit, "sets": sizes, "formats": formats,
            "postprocess": ["on" if f else "off" for f in flags],
            "repo_context": {"requested": repo_context, "measured": ["on" if c else "off" for c in contexts]},
            "raw_not_prefix": mismatched,
            "summary": [row.to_json() for row in rows],
            "records": [asdict(r) for r in records],
        }  # fmt: skip
        try:
            text = json.dumps(report, ensure_ascii=False, indent=1) + "\n"
            Path(json_path).write_text(text, encoding="utf-8")
        except OSError as exc:
            raise UserError(f"cannot write {json_path}: {exc.strerror}") from None


def _check_formats(family: str, formats: Sequence[str]) -> None:
    from .prompt import choose_format

    for fmt in formats:
        choose_format(family, fmt, "")


def _describe(size: dict[str, int]) -> str:
    if "tasks" in size:
        return f"{size['evaluated']} of {size['tasks']} tasks"
    return f"{size['evaluated']} maskings from {size['files']} files"
