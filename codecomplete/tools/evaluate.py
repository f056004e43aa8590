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
"off" run's, which greedy decoding should make 0; an "on" answer that is the model's next choice after its
first was rejected whole (``next_choices`` > 0) is a different answer by design and is not counted.

``--ablate`` measures each post-processing rule instead: one run per task with post-processing off (the
model's text up to max_tokens), then post-processing applied to that text with every rule, with none, and with
every rule but one, each variant scored and executed. One generation stands for all of them because cutting
where ``stop_reason`` fires and post-processing gives what post-processing the whole output gives (see
``postprocess``); the "all rules" figures therefore equal a ``--postprocess on`` run's.
"""

from __future__ import annotations

import json
import os
import sys
import sysconfig
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from click.core import ParameterSource

from codecomplete.core import postprocess as postprocess_mod
from codecomplete.core.languages import language_for_path
from codecomplete.core.postprocess import RULES
from codecomplete.errors import UserError
from codecomplete.tools.evaltasks import (
    KINDS,
    InfillTask,
    build_tasks,
    edit_similarity,
    exact_match,
    mask_file_tasks,
    program_for,
)
from codecomplete.tools.evaltasks import select as select_tasks
from codecomplete.tools.sandbox import run_program

if TYPE_CHECKING:
    from codecomplete.core.context import Context

SETS = ("single-line", "multi-line", "mid-line", "repo")
FORMATS = ("psm", "spm", "prefix")
SANDBOX_TIMEOUT_S = 3.0  # as in the HumanEval infilling harness
DEFAULT_TIME_BUDGET_MS = 60_000  # far above a normal request: the machine's speed must not decide quality
DEFAULT_REPO_LIMIT = 200  # maskings for the repository measure when --limit is not given
INDEX_READY_S = 60.0  # how long the first repo-context task waits for its directory to be indexed
DETAIL_CHARS = 300  # sandbox detail kept per record in the JSON
# Real code for the repository measure besides the test data: modest, stable standard-library modules.
STDLIB_FILES = ("textwrap.py", "fnmatch.py", "shlex.py", "heapq.py", "colorsys.py", "graphlib.py", "glob.py",
                "string.py", "queue.py", "sched.py")
_TEST_DATA = Path(__file__).resolve().parents[2] / "tests" / "data"  # present in a source checkout
ALL, OFF = "all", "off"
# What --ablate scores from each raw answer: (variant, rules disabled); a rule's name means all rules but it.
VARIANTS: tuple[tuple[str, frozenset[str]], ...] = (
    (ALL, frozenset()), (OFF, frozenset(RULES)), *((rule, frozenset({rule})) for rule in RULES))


@dataclass(frozen=True)
class Case:
    """One task as the editor shows it: masked lines replaced by an empty line holding the cursor; a mid-line
    task's cursor inside its line, before the line's closing tail."""

    set: str
    task: InfillTask
    language: str | None

    @property
    def _newline(self) -> str:
        return "\n" if self.task.middle.endswith("\n") else ""

    @property
    def text(self) -> str:
        return f"{self.task.prefix}{self._newline}{self.task.suffix}"

    @property
    def offset(self) -> int:
        return len(self.task.prefix)

    def program(self, completion: str) -> str:
        """The HumanEval program for the document with ``completion`` accepted (on its own line, or mid-line)."""
        return program_for(self.task, completion + self._newline)


@dataclass(frozen=True)
class Answer:
    completion: str
    raw: str  # model output before post-processing
    stop_reason: str
    latency_ms: float
    next_choices: int = 0  # answers the pipeline rejected whole before this one


# Produces one answer per post-processing flag, in the order given, for a case in a prompt format.
Source = Callable[[Case, str, Sequence[bool]], Sequence[Answer]]
# Produces the answer with post-processing off, and the context post-processing needs to judge it (--ablate).
RawSource = Callable[[Case, str], "tuple[Answer, Context]"]


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
    ablation: str | None = None  # with --ablate: "all", "off", or the one rule left out (see VARIANTS)
    next_choices: int = 0  # answers the pipeline rejected whole before this one

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
    """``limit`` maskings spread evenly over languages and over single lines, 2–8 line spans and line rests.

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
    """Ask ``source`` for every case × format, score the answers and run HumanEval programs in the sandbox."""

    def answers(case: Case, fmt: str) -> list[tuple[bool, str | None, Answer]]:
        given = source(case, fmt, flags)
        if len(given) != len(flags):
            raise ValueError(f"completion source gave {len(given)} answers for {len(flags)} flags")
        return [(flag, None, answer) for flag, answer in zip(flags, given)]

    return _score(cases, answers, formats, jobs=jobs, progress=progress, repo_context=repo_context)


def run_ablation(cases: Sequence[Case], source: RawSource, formats: Sequence[str], *, jobs: int = 1,
           progress: bool = False, repo_context: bool = False) -> list[Record]:
    """Like ``run``, but one raw answer per case × format, post-processed once per entry of ``VARIANTS``."""

    def answers(case: Case, fmt: str) -> list[tuple[bool, str | None, Answer]]:
        raw, ctx = source(case, fmt)
        variants = []
        limited = raw.stop_reason in ("max_tokens", "time_budget", "cancelled")  # its last line is unfinished
        for name, disabled in VARIANTS:
            text, cut = postprocess_mod.postprocess(raw.completion, ctx, disabled, cut_short=limited)
            reason = cut.value if cut else raw.stop_reason
            variants.append((name != OFF, name, replace(raw, completion=text, stop_reason=reason)))
        return variants

    return _score(cases, answers, formats, jobs=jobs, progress=progress, repo_context=repo_context)


def _score(cases: Sequence[Case], answers: Callable[[Case, str], list[tuple[bool, str | None, Answer]]],
           formats: Sequence[str], *, jobs: int, progress: bool, repo_context: bool) -> list[Record]:
    """Records for ``answers(case, format)`` → (post-processing flag, ablation variant, answer).

    The model answers one request at a time here while up to ``jobs`` programs run alongside.
    """
    from tqdm import tqdm

    if jobs < 1:
        raise UserError(f"jobs must be at least 1, got {jobs}")
    pending: list[tuple[Case, str, bool, str | None, Answer, Future | None, bool]] = []
    with ThreadPoolExecutor(max_workers=jobs) as pool, tqdm(
        total=len(cases) * len(formats), desc="eval", unit="task", file=sys.stderr, disable=not progress,
        dynamic_ncols=True,
    ) as bar:
        for case in cases:
            bar.set_postfix_str(case.set, refresh=False)
            runs: dict[str, Future] = {}  # the same program from two answers runs once
            for fmt in formats:
                for flag, variant, answer in answers(case, fmt):
                    future = None
                    if case.task.test:
                        program = case.program(answer.completion)
                        if program not in runs:
                            runs[program] = pool.submit(run_program, program, timeout_s=SANDBOX_TIMEOUT_S)
                        future = runs[program]
                    pending.append((case, fmt, flag, variant, answer, future, repo_context))
                bar.update()
        return [_record(*item) for item in pending]


def _record(case: Case, fmt: str, flag: bool, variant: str | None, answer: Answer, future: Future | None,
            repo_context: bool) -> Record:
    outcome = future.result() if future is not None else None
    return Record(
        set=case.set, task_id=case.task.task_id, language=case.language, format=fmt, postprocess=flag,
        repo_context=repo_context, completion=answer.completion, raw=answer.raw, stop_reason=answer.stop_reason,
        latency_ms=answer.latency_ms, exact=exact_match(answer.completion, case.task.middle),
        edit_similarity=edit_similarity(canonical(answer.completion), canonical(case.task.middle)),
        status=outcome.status if outcome else None, detail=outcome.detail[-DETAIL_CHARS:] if outcome else "",
        ablation=variant, next_choices=answer.next_choices,
    )  # fmt: skip


def _grouped(records: Iterable[Record], key: Callable[[Record], tuple]) -> list[tuple[tuple, list[Record]]]:
    """Records by (set, *key) in first-seen order; then the repository measure's again per language ("repo:go")."""
    groups: dict[tuple, list[Record]] = {}
    by_language: dict[tuple, list[Record]] = {}
    for r in records:
        groups.setdefault((r.set, *key(r)), []).append(r)
        if r.set == "repo":
            by_language.setdefault((f"repo:{r.language}", *key(r)), []).append(r)
    return [*groups.items(), *by_language.items()]


def _row(name: str, fmt: str, flag: bool, repo_context: bool, group: Sequence[Record]) -> Row:
    n = len(group)
    executed = all(r.status is not None for r in group)
    return Row(
        set=name, format=fmt, postprocess=flag, repo_context=repo_context, n=n,
        passed=sum(r.passed for r in group) if executed else None, exact=sum(r.exact for r in group),
        edit_similarity=sum(r.edit_similarity for r in group) / n,
        latency_ms=sum(r.latency_ms for r in group) / n,
        stop_reasons=dict(Counter(r.stop_reason for r in group).most_common()),
    )  # fmt: skip


def summarize(records: Iterable[Record]) -> list[Row]:
    """One row per set × format × post-processing × repo context, in first-seen order; then a row per
    language of the repository measure ("repo:go")."""
    key = lambda r: (r.format, r.postprocess, r.repo_context)  # noqa: E731
    return [_row(*names, group) for names, group in _grouped(records, key)]


_METRICS = ("pass_at_1", "exact_match", "edit_similarity")


@dataclass(frozen=True)
class AblationRow:
    """What one rule is worth on one set × format: scores with every rule vs every rule but this one.
    The rule "all" compares every rule with none (post-processing off)."""

    rule: str
    all: Row
    without: Row

    def delta(self, metric: str) -> float | None:
        """With minus without: positive when the rule helps; None where nothing is executed."""
        mine, other = getattr(self.all, metric), getattr(self.without, metric)
        return None if mine is None or other is None else mine - other

    def to_json(self) -> dict[str, Any]:
        row = self.all
        scores = {side: {m: getattr(getattr(self, side), m) for m in _METRICS} for side in ("all", "without")}
        return {"set": row.set, "format": row.format, "repo_context": row.repo_context, "rule": self.rule,
                "n": row.n, **scores, "delta": {m: self.delta(m) for m in _METRICS}}


def ablation_rows(records: Iterable[Record]) -> list[AblationRow]:
    """Per set × format × repo context (and repo language): a row per rule in ``RULES``, then "all"."""
    rows = []
    for (name, fmt, repo_context), group in _grouped(records, lambda r: (r.format, r.repo_context)):
        by_variant: dict[str | None, list[Record]] = {}
        for r in group:
            by_variant.setdefault(r.ablation, []).append(r)
        scored = {variant: _row(name, fmt, variant != OFF, repo_context, by_variant[variant])
                  for variant, _ in VARIANTS}
        rows += [AblationRow(rule, scored[ALL], scored[rule]) for rule in RULES]
        rows.append(AblationRow(ALL, scored[ALL], scored[OFF]))
    return rows


def format_ablation_table(rows: Sequence[AblationRow]) -> str:
    """For each metric: with all rules, without this rule, and the difference (positive: the rule helps)."""
    header = ("set", "mode", "repo-ctx", "rule", "n", "pass@1", "without", "delta", "exact", "without", "delta",
              "edit-sim", "without", "delta")
    lines = [header]
    for row in rows:
        cells = [row.all.set, row.all.format, "on" if row.all.repo_context else "off", row.rule, str(row.all.n)]
        for metric in _METRICS:
            delta = row.delta(metric)
            cells += [_number(getattr(row.all, metric)), _number(getattr(row.without, metric)),
                      "-" if delta is None else f"{delta:+.3f}"]
        lines.append(tuple(cells))
    legend = ("pass@1/exact/edit-sim: with all rules; without: all rules but this one (for \"all\": none); "
              "delta = with - without, positive when the rule helps")
    return _render(lines, left=4) + "\n\n" + legend


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def raw_not_prefix(records: Iterable[Record]) -> int:
    """Tasks whose "on" raw output is not a prefix of the "off" one (see the module docstring)."""
    on: dict[tuple[str, str, str, bool], str] = {}
    off: dict[tuple[str, str, str, bool], str] = {}
    for r in records:  # a pair per task, format and repository context
        if not (r.postprocess and r.next_choices):
            (on if r.postprocess else off)[(r.set, r.task_id, r.format, r.repo_context)] = r.raw
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
    return _render(lines, left=4)


def _render(lines: Sequence[tuple[str, ...]], left: int) -> str:
    """Aligned columns: the first ``left`` (names) to the left, numbers to the right."""
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]

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
        from codecomplete.core.pipeline import Completer

        self.completer = Completer(engine, settings)
        self.settings = settings
        self.repo_context = repo_context
        self._indexes: dict[str, Any] = {}

    def _index_for(self, case: Case) -> tuple[Any, str | None]:
        """A workspace index over the masked file's directory, with the masked text as an open document
        (so the disk copy cannot leak the answer); None outside the repo set or without repo context."""
        if not self.repo_context or case.set != "repo":
            return None, None
        from codecomplete.workspace.index import RepoIndex

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

    def raw(self, case: Case, fmt: str) -> tuple[Answer, Context]:
        """The answer with post-processing off (a ``RawSource``), and the context the pipeline cut for it."""
        index, path = self._index_for(case)
        settings = self.settings.with_overrides({"format": fmt, "postprocess": False, "reuse": False})
        result = self.completer.complete(case.text, case.offset, case.language, settings=settings, index=index,
                                         path=path)
        answer = Answer(result.suggestion, result.raw, result.stop_reason.value, result.timings_ms["total"],
                        result.next_choices)
        assert result.context is not None  # a local pipeline always reports its windows
        return answer, result.context

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
            answers.append(Answer(result.suggestion, result.raw, result.stop_reason.value, latency,
                                  result.next_choices))
        return answers


def allowed_formats(family: str) -> list[str]:
    """The prompt layouts a model family was trained for (prefix-only always works)."""
    from codecomplete.core.prompt import choose_format

    allowed = []
    for fmt in FORMATS:
        try:
            choose_format(family, fmt)
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
@click.option("--ablate", is_flag=True, help="Measure each post-processing rule instead: one generation per "
              "task, scored with all rules, none, and all but each one (replaces --postprocess).")
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
def command(sets, limit, seed, jobs, model, formats, postprocess, ablate, repo_context, repo_paths, json_path,
            max_tokens, time_budget_ms) -> None:
    """Measure completion quality: HumanEval infilling (pass@1, exact match) and masked repository lines."""
    from codecomplete.config import load_settings
    from codecomplete.core.prompt import detect_family
    from codecomplete.engines import load_engine

    if json_path and not os.access(Path(json_path).resolve().parent, os.W_OK):  # fail before the long run
        raise UserError(f"cannot write {json_path}: its directory is missing or not writable")
    if ablate and click.get_current_context().get_parameter_source("postprocess") is ParameterSource.COMMANDLINE:
        raise UserError("--ablate scores post-processing on and off itself: drop --postprocess")
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
               f"post-processing {'ablated per rule' if ablate else postprocess}; {sets_text}", err=True)
    contexts = {"on": (True,), "off": (False,), "both": (False, True)}[repo_context]
    records = []
    for with_repo in contexts:  # repository context only changes the repo set
        subset = [c for c in cases if c.set == "repo"] if with_repo and False in contexts else cases
        source = PipelineSource(engine, settings, repo_context=with_repo)
        try:
            if ablate:
                records += run_ablation(subset, source.raw, formats, jobs=jobs, progress=True, repo_context=with_repo)
            else:
                records += run(subset, source, formats, flags, jobs=jobs, progress=True, repo_context=with_repo)
        finally:
            source.close()
    if ablate:
        ablation = ablation_rows(records)
        click.echo(format_ablation_table(ablation))
        results: dict[str, Any] = {"postprocess": ["off"], "ablation": {
            "rules": list(RULES), "rows": [row.to_json() for row in ablation]}}
    else:
        rows = summarize(records)
        click.echo(format_table(rows))
        results = {"postprocess": ["on" if f else "off" for f in flags], "raw_not_prefix": raw_not_prefix(records),
                   "summary": [row.to_json() for row in rows]}
    if json_path:
        report = {
            "model": {"path": engine.info.path, "name": engine.info.name, "family": family},
            "settings": {key: getattr(settings, key) for key in
                         ("max_tokens", "max_tokens_single_line", "time_budget_ms", "token_budget", "n_ctx")},
            "seed": seed, "limit": limit, "sets": sizes, "formats": formats,
            "repo_context": {"requested": repo_context, "measured": ["on" if c else "off" for c in contexts]},
            **results,
            "records": [asdict(r) for r in records],
        }  # fmt: skip
        try:
            text = json.dumps(report, ensure_ascii=False, indent=1) + "\n"
            Path(json_path).write_text(text, encoding="utf-8")
        except OSError as exc:
            raise UserError(f"cannot write {json_path}: {exc.strerror}") from None


def _check_formats(family: str, formats: Sequence[str]) -> None:
    from codecomplete.core.prompt import choose_format

    for fmt in formats:
        choose_format(family, fmt)


def _describe(size: dict[str, int]) -> str:
    if "tasks" in size:
        return f"{size['evaluated']} of {size['tasks']} tasks"
    return f"{size['evaluated']} maskings from {size['files']} files"
