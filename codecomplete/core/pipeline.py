"""One completion, end to end: context → prompt → engine → post-processing.

The CLI, the in-process service and the daemon all call ``Completer.complete``; none of them owns completion
logic. The engine comes in from outside (``codecomplete.engines.load_engine``), so this core never loads a runtime.
"""

from __future__ import annotations

import collections
import functools
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from codecomplete.config import Settings
from codecomplete.core import context as context_mod
from codecomplete.core import postprocess as postprocess_mod
from codecomplete.core.prompt import Prompt, build_prompt, choose_format, detect_family, with_token_healing
from codecomplete.core.snippets import Segment, Snippet, SnippetSource, format_snippets, style_for_family
from codecomplete.core.tokencache import IncrementalTokenizer
from codecomplete.types import Engine, Generation, StopReason, Tokenizer

# Tokens kept free in the context window for the answer beyond the largest max_tokens setting.
_CONTEXT_MARGIN = 8
# Sizing windows for time: the share of the time budget a request plans to use (the rest absorbs a busy machine's
# jitter), the answer length planned for, and the smallest window worth asking about.
_TIME_SHARE = 0.7
_TYPICAL_ANSWER_TOKENS = 24
_MIN_TIMED_BUDGET = 32
_FULL = "\0full"  # a document's key with this appended: the KV sequence its full window is prefilled into
# Tokens the repository snippets' rendering may add beyond what the index counted (the current file's header).
_REPO_HEADER_SLACK = 16
_EDGE_ANCHOR = 48  # at most this much of the line inside a remembered window edge must be unchanged to keep it
_REMEMBERED_DOCUMENTS = 64
# An answer these rules reject whole would break or repeat the file: the model's next choices are asked for.
_REJECTED = frozenset({StopReason.SYNTAX, StopReason.SUFFIX_OVERLAP, StopReason.REPETITION})
_NEXT_CHOICES = 4
# A pause mid-line is short (typing resumes within a second): a multi-line answer begun there goes out at the first
# line end after this long, with the lines complete by then; accepting them brings the next ones (prefetch).
_MID_LINE_DUE_S = 0.25
# Lines' token counts remembered (windows are budgeted line by line); a document longer than half of it is
# not read ahead on open.
COUNT_MEMO = 65536
_CALIBRATION_TEXT = "".join(f"def step_{i}(value, scale={i}):\n    total = value * scale + {i}\n    return total\n\n"
                            for i in range(40))
WARM_MAX_LINES = COUNT_MEMO // 2
WARM_MAX_LINE_CHARS = 4096  # longer lines are not read ahead (one such line can take seconds to tokenize)


@dataclass(frozen=True)
class Placement:
    """Where a window of a document lies in it: the window's text begins at character ``start`` of a document
    ``length`` characters long (what the daemon gets from an editor is such a window)."""

    start: int
    length: int


class WindowMemory:
    """Where each document's last prompt window started and ended, to keep those edges still (KV reuse).

    An edge is stored with the text beside it and found again at the same offset from its own end of the
    document: typing below a prefix start or above a suffix end leaves that edge where it was. A ``Placement``
    puts a window of a document into the whole one.
    """

    def __init__(self) -> None:
        self._edges: collections.OrderedDict[str, tuple[int, str, int, str]] = collections.OrderedDict()

    def recall(self, key: str, text: str, placed: Placement | None = None) -> tuple[int | None, int | None]:
        """The previous (prefix start, suffix end) of document ``key`` in ``text``, each None when it is gone."""
        if key not in self._edges:
            return None, None
        self._edges.move_to_end(key)
        base, total = _placement(text, placed)
        start_abs, before, from_end, after = self._edges[key]
        start = start_abs - base
        end = total - from_end - base
        keep_start = start if 0 <= start <= len(text) and text.startswith(before, start) else None
        keep_end = end if 0 <= end <= len(text) and text.endswith(after, 0, end) else None
        return keep_start, keep_end

    def forget(self, key: str) -> None:
        self._edges.pop(key, None)

    def copy(self, source: str, target: str) -> None:
        """``target`` keeps ``source``'s edges from now on (a prefilled window became the document's)."""
        if source in self._edges:
            self._edges[target] = self._edges[source]
            self._edges.move_to_end(target)

    def remember(self, key: str, text: str, start: int, end: int, placed: Placement | None = None) -> None:
        base, total = _placement(text, placed)
        after_start = text.find("\n", start, start + _EDGE_ANCHOR) + 1 or start + _EDGE_ANCHOR
        before_end = max(text.rfind("\n", max(0, end - _EDGE_ANCHOR), max(0, end - 1)) + 1, end - _EDGE_ANCHOR, 0)
        self._edges[key] = (base + start, text[start:after_start], total - base - end, text[before_end:end])
        self._edges.move_to_end(key)
        while len(self._edges) > _REMEMBERED_DOCUMENTS:
            self._edges.popitem(last=False)


def _placement(text: str, placed: Placement | None) -> tuple[int, int]:
    return (0, len(text)) if placed is None else (placed.start, placed.length)


class Rates:
    """This machine's prompt-evaluation and generation speed (tokens/s) for the loaded model: measured at load,
    then followed from every request (a busy CPU slows both)."""

    _WEIGHT = 0.3  # of the newest observation

    def __init__(self, prompt_tps: float = 200.0, generate_tps: float = 20.0) -> None:
        self.prompt_tps = prompt_tps
        self.generate_tps = generate_tps

    def observe(self, gen: Any) -> None:
        """Learn from a generation (enough tokens of each kind to be a measurement, not noise)."""
        prompt_ms, generate_ms = gen.timings_ms.get("prompt_eval", 0.0), gen.timings_ms.get("generate", 0.0)
        if gen.n_evaluated >= _MIN_TIMED_BUDGET and prompt_ms > 0:
            self.prompt_tps += self._WEIGHT * (gen.n_evaluated * 1000 / prompt_ms - self.prompt_tps)
        if len(gen.token_ids) >= 4 and generate_ms > 0:
            self.generate_tps += self._WEIGHT * (len(gen.token_ids) * 1000 / generate_ms - self.generate_tps)

    def to_json(self) -> dict[str, float]:
        return {"prompt_tps": round(self.prompt_tps, 1), "generate_tps": round(self.generate_tps, 1)}


@dataclass
class Completion:
    """A suggestion and everything needed to explain it (the CLI's ``--json``, the LSP status, benchmarks).

    In JSON the suggestion is ``completion`` (what the CLI and the daemon's API have always called it).
    """

    suggestion: str
    raw: str  # the model's output before post-processing
    model: str
    format: str
    family: str
    language: str | None
    prompt: str
    prompt_token_ids: list[int]
    token_healing: str  # prompt text taken off the end and re-typed by the model first
    tokens: dict[str, int]  # prompt, generated, reused, shifted, evaluated
    timings_ms: dict[str, float]  # context, tokenize, prompt_eval, generate, postprocess, total
    stop_reason: StopReason
    multiline: bool
    source: str = "model"  # model, typing_through, lru or prefetch
    windows_cut: bool = False  # the windows were cut to fit the time budget (the full ones are prefilled later)
    next_choices: int = 0  # answers rejected whole by post-processing before this one (see ``_REJECTED``)
    # The windows the prompt was cut from (post-processing reads them); not part of the JSON.
    context: context_mod.Context | None = field(default=None, repr=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("suggestion", "context")}
        return {"completion": self.suggestion, **data, "stop_reason": self.stop_reason.value}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Completion:
        """A completion another process made (the daemon's answer), from ``to_json``'s shape."""
        names = {f.name for f in fields(cls)} - {"suggestion", "context", "stop_reason"}
        return cls(suggestion=data["completion"], stop_reason=StopReason(data["stop_reason"]),
                   **{k: v for k, v in data.items() if k in names})


def cached_completion(suggestion: str, how: StopReason, *, model: str, family: str, language: str | None,
                      elapsed_ms: float) -> Completion:
    """An answer served without the model (typing through a suggestion, the LRU, a prefetch)."""
    zero = {"prompt": 0, "generated": 0, "reused": 0, "shifted": 0, "evaluated": 0}
    return Completion(
        suggestion=suggestion, raw=suggestion, model=model, format="cached", family=family, language=language,
        prompt="", prompt_token_ids=[], token_healing="", tokens=zero,
        timings_ms={"context": 0.0, "tokenize": 0.0, "prompt_eval": 0.0, "generate": 0.0, "postprocess": 0.0,
                    "total": elapsed_ms},
        stop_reason=how, multiline="\n" in suggestion, source=how.value,
    )


class Completer:
    """Turns (document text, cursor offset, language) into a post-processed suggestion."""

    def __init__(self, engine: Engine, settings: Settings) -> None:
        self.engine = engine
        self.settings = settings
        self.family = detect_family(engine)
        # Windows are budgeted line by line, and between keystrokes almost every line is unchanged.
        self.count_tokens = functools.lru_cache(maxsize=COUNT_MEMO)(engine.count_tokens)
        self.windows = WindowMemory()
        self.tok: Tokenizer = IncrementalTokenizer(engine) if engine.tokenizes_locally else engine
        self.rates = Rates()
        # Documents served by windows cut for time, and their cut budgets (oldest first; bounded).
        self._cut: collections.OrderedDict[str, int] = collections.OrderedDict()

    def calibrate(self) -> None:
        """Measure this machine's speeds once, at load: a short prompt and a few generated tokens, so the first
        request in a file is already sized for the time budget."""
        ids = self.tok.tokenize(_CALIBRATION_TEXT)[: 4 * _MIN_TIMED_BUDGET]
        for _ in range(2):  # the first run pays for llama.cpp's warm-up
            gen = self.engine.generate(ids, max_tokens=8, reuse=False, key="\0calibration")
        self.rates = Rates(gen.n_evaluated * 1000 / max(gen.timings_ms["prompt_eval"], 1e-3),
                           max(1, len(gen.token_ids)) * 1000 / max(gen.timings_ms["generate"], 1e-3))

    @property
    def chunks(self) -> dict[str, int]:
        """Prompt text chunks tokenized by the engine vs taken from memory (see ``tokencache``)."""
        tok = self.tok
        if isinstance(tok, IncrementalTokenizer):
            return {"fresh": tok.fresh, "reused": tok.reused}
        return {"fresh": 0, "reused": 0}

    def warm(self, text: str, cancel: threading.Event | None = None) -> None:
        """Count and tokenize a just-opened document's lines ahead of requests, so the first window cut from it,
        anywhere, costs what a keystroke costs. Stops when ``cancel`` is set; very long files are left to
        demand (their lines would crowd the memo)."""
        lines = text.split("\n")
        if len(lines) > WARM_MAX_LINES:
            return
        count = self.count_tokens
        for i, line in enumerate(lines):  # as the windows count them: each line with its newline
            if i % 64 == 0 and cancel is not None and cancel.is_set():
                return
            if len(line) <= WARM_MAX_LINE_CHARS:  # minified code: counted when a window needs it, if ever
                count(line + "\n" if i < len(lines) - 1 else line)
        if isinstance(self.tok, IncrementalTokenizer):
            self.tok.warm(text, cancel)

    def _repo_segments(
        self,
        index: SnippetSource | None,
        given: Sequence[Snippet] | None,
        text: str,
        path: str | None,
        ctx: context_mod.Context,
        s: Settings,
        room: int,
    ) -> list[Segment]:
        """Snippets from other files for the code around the cursor, rendered for this model family."""
        budget = min(s.repo_context_budget, room - _REPO_HEADER_SLACK)
        if budget <= _REPO_HEADER_SLACK:
            return []
        count = self.count_tokens
        if given is not None:  # chosen with an estimate elsewhere: keep what fits by this model's count
            chosen = []
            for snippet in given:
                budget -= count(f"// path: {snippet.path}\n{snippet.text}\n\n")
                if budget < 0:
                    break
                chosen.append(snippet)
        else:
            assert index is not None
            first = text.count("\n", 0, ctx.prefix_start)
            last = text.count("\n", 0, ctx.suffix_end) + 1
            chosen = index.query(
                ctx.prefix + ctx.suffix, path, budget_tokens=budget, count_tokens=count,
                window=(first, last) if path else None, cursor=len(ctx.prefix),
            )
            path = index.relative(path) if path else None
        if not chosen:
            return []
        style = style_for_family(self.family) if self.engine.info.fim_sep is not None else "comment"
        return format_snippets(chosen, ctx.language, style, current_path=path)

    def _prompt(
        self, text: str, offset: int, language: str | None, s: Settings, *, budget: int | None, key: str | None,
        placed: Placement | None, tree: Any, path: str | None, index: SnippetSource | None,
        snippets: Sequence[Snippet] | None,
    ) -> tuple[context_mod.Context, str, Prompt, float]:
        """The windows, the layout, the prompt for a request and the milliseconds the windows took: at the
        settings' budget with cross-file snippets (``budget`` None), or cut to ``budget`` tokens for time (no
        snippets); either way kept still between requests under ``key`` (sticky windows)."""
        engine = self.engine
        started = time.perf_counter()
        prefix_only = s.format == "prefix" or (s.format == "auto" and self.family == "none")
        room = engine.info.n_ctx - max(s.max_tokens, s.max_tokens_single_line) - _CONTEXT_MARGIN
        full = budget is None
        use_repo = full and (index is not None or bool(snippets)) and s.repo_context and s.repo_context_budget > 0
        sticky = key is not None and s.reuse
        room_here = room - (s.repo_context_budget if use_repo else 0)  # what the current file may take
        if budget is None:
            budget = s.token_budget
        budget = max(16, min(budget, room_here))
        ctx = context_mod.build_context(
            text,
            offset,
            language,
            self.count_tokens,
            budget=budget,
            prefix_share=0.9 if prefix_only else 0.75,
            tree=tree,
            keep=self.windows.recall(key, text, placed) if sticky else (None, None),
            stretch=max(0, room_here - budget) if sticky else 0,
        )
        if sticky:
            self.windows.remember(key, text, ctx.prefix_start, ctx.suffix_end, placed)
        context_ms = (time.perf_counter() - started) * 1000
        fmt = choose_format(self.family, s.format)
        prompt = build_prompt(self.tok, ctx.prefix, ctx.suffix, fmt)
        if use_repo:
            segments = self._repo_segments(index, snippets, text, path, ctx, s, room - len(prompt.token_ids))
            if segments:
                prompt = build_prompt(self.tok, ctx.prefix, ctx.suffix, fmt, segments)
        return ctx, fmt, with_token_healing(self.tok, prompt), context_ms

    @functools.cached_property
    def _blank_tokens(self) -> frozenset[int]:
        """The vocabulary's tokens of only spaces, tabs and newlines (a model stuck writing blanks goes on in
        another one of them)."""
        engine = self.engine
        return frozenset(t for t in range(engine.info.n_vocab) if not engine.piece(t).strip())

    def _timed_budget(self, s: Settings, multiline: bool) -> int:
        """The prompt tokens this machine evaluates, and writes an answer after, within the time budget (rates
        measured at load, then from every request)."""
        rates = self.rates
        answer_ms = min(s.max_tokens if multiline else s.max_tokens_single_line, _TYPICAL_ANSWER_TOKENS) \
            * 1000 / rates.generate_tps
        return max(_MIN_TIMED_BUDGET, int((s.time_budget_ms * _TIME_SHARE - answer_ms) * rates.prompt_tps / 1000))

    def _too_slow(self, prompt: Prompt, s: Settings, key: str | None, budget: int) -> bool:
        """Whether evaluating what the KV cache lacks of ``prompt`` would not fit the time budget."""
        missing = len(prompt.token_ids) - self.engine.reusable(prompt.token_ids, key)
        return s.reuse and missing > budget

    def prefill(
        self, text: str, offset: int, language: str | None, *, cancel: threading.Event | None = None,
        tree: Any = None, settings: Settings | None = None, path: str | None = None,
        index: SnippetSource | None = None, snippets: Sequence[Snippet] | None = None, key: str | None = None,
        placed: Placement | None = None,
    ) -> None:
        """For a document served by windows cut for time: evaluate its full window (as background work that any
        request stops) into a KV sequence of its own, and once it is whole, make it the document's: the requests
        that follow get the full context at the cost of a keystroke. Stopped, it keeps the blocks it evaluated
        for the next try (the cut window's requests use the document's own sequence meanwhile)."""
        s = settings or self.settings
        if key is None or key not in self._cut:
            return
        full_key = key + _FULL
        _ctx, _fmt, prompt, _ms = self._prompt(text, offset, language, s, budget=None, key=full_key, placed=placed,
                                               tree=tree, path=path, index=index, snippets=snippets)
        if not prompt.token_ids:
            return
        gen = self.engine.generate(prompt.token_ids, max_tokens=0, cancel=cancel, reuse=True, key=full_key)
        if gen.stop_reason == StopReason.MAX_TOKENS:  # evaluated whole: the document's window from now on
            self.engine.adopt(full_key, key)
            self.windows.copy(full_key, key)
            self._cut.pop(key, None)

    def complete(
        self,
        text: str,
        offset: int,
        language: str | None,
        *,
        cancel: threading.Event | None = None,
        tree: Any = None,
        settings: Settings | None = None,
        path: str | None = None,
        index: SnippetSource | None = None,
        snippets: Sequence[Snippet] | None = None,
        key: str | None = None,
        placed: Placement | None = None,
    ) -> Completion:
        """``index`` (with the document's ``path``) adds ranked snippets from the rest of the workspace;
        ``snippets`` are such snippets chosen elsewhere (by an editor's thin LSP process for the daemon).
        ``key`` names the document across requests: with reuse on, its window edges stay where they were;
        ``placed`` says where ``text`` lies in that document when it is a window of it.

        When the part of the prompt the KV cache lacks could not be evaluated within the time budget on this
        machine (a file just opened, a jump), the windows are cut to what can, and ``Completion.windows_cut``
        asks for the full window to be prefilled in the background (``prefill``)."""
        s = settings or self.settings
        engine = self.engine
        t0 = time.perf_counter()
        where = {"key": key, "placed": placed, "tree": tree, "path": path, "index": index, "snippets": snippets}
        # A window cut for time stays the document's until its full one is prefilled (typing then only appends
        # to it); it is cut afresh when even it cannot be evaluated in time (a jump, a busier machine): sticky
        # edges stretch a window by the distance jumped.
        cut_budget = self._cut.get(key) if key is not None and s.reuse else None
        windows_cut = cut_budget is not None
        if windows_cut:
            self._cut.move_to_end(key)  # type: ignore[arg-type]
        ctx, fmt, prompt, context_ms = self._prompt(text, offset, language, s, budget=cut_budget, **where)
        timed = self._timed_budget(s, ctx.situation.multiline)
        if prompt.token_ids and self._too_slow(prompt, s, key, timed):
            windows_cut = True
            if key is not None:
                self.windows.forget(key)
                self._cut[key] = timed
                while len(self._cut) > _REMEMBERED_DOCUMENTS:
                    self._cut.popitem(last=False)
            ctx, fmt, prompt, more_ms = self._prompt(text, offset, language, s, budget=timed, **where)
            context_ms += more_ms
        multiline = ctx.situation.multiline
        t2 = time.perf_counter()
        t1 = t0 + context_ms / 1000
        if not prompt.token_ids:  # an empty file, no BOS: nothing to complete from
            return Completion(
                suggestion="", raw="", model=engine.info.path, format=fmt, family=self.family, language=language,
                prompt="", prompt_token_ids=[], token_healing="",
                tokens={"prompt": 0, "generated": 0, "reused": 0, "shifted": 0, "evaluated": 0},
                timings_ms={"context": (t1 - t0) * 1000, "tokenize": 0.0, "prompt_eval": 0.0,
                            "generate": 0.0, "postprocess": 0.0, "total": (t2 - t0) * 1000},
                stop_reason=StopReason.EMPTY_PROMPT, multiline=multiline, context=ctx,
            )
        skip = postprocess_mod.check_rules(s.postprocess_skip)
        judged = context_mod.widened(ctx, text, offset)  # the rules read the file, not just a window cut for time
        stop = _stopper(judged, skip, t0 + _MID_LINE_DUE_S if multiline and ctx.situation.line_prefix.strip()
                        else None) if s.postprocess else None
        avoid: frozenset[int] = frozenset()
        tried: list[Generation] = []  # the answers asked for, the shown one last
        postprocess_ms = 0.0
        while True:
            left = s.time_budget_ms / 1000 - (time.perf_counter() - t0) if avoid else s.time_budget_ms / 1000
            gen = engine.generate(
                prompt.token_ids,
                max_tokens=s.max_tokens if multiline else s.max_tokens_single_line,
                time_budget_s=left,
                cancel=cancel,
                stop=stop,
                reuse=s.reuse,
                shift=s.kv_shift,
                heal=prompt.heal,
                key=key,
                avoid=avoid,
            )
            tried.append(gen)
            self.rates.observe(gen)
            t3 = time.perf_counter()
            final, cut = _judge(gen, judged, skip, s.postprocess)
            t4 = time.perf_counter()
            postprocess_ms += (t4 - t3) * 1000
            # The whole answer was rejected as harmful or redundant: offer the model's next choice for its first
            # token, while the budget lasts (Copilot's several candidates, at the cost of one prompt block each).
            rejected = not final and (cut or gen.stop_reason) in _REJECTED and engine.avoids_tokens
            first = _first_answer_token(engine, gen.token_ids, len(prompt.heal)) if rejected else None
            if (first is None or len(tried) > _NEXT_CHOICES or (cancel is not None and cancel.is_set())
                    or (time.perf_counter() - t0) * 1000 > s.time_budget_ms * _TIME_SHARE):
                break
            avoid |= {first} if gen.text.strip() else self._blank_tokens  # blanks: the next starts with code
        return Completion(
            suggestion=final,
            raw=gen.text,
            model=engine.info.path,
            format=fmt,
            family=self.family,
            language=language,
            prompt=prompt.text,
            prompt_token_ids=prompt.token_ids,
            token_healing=prompt.heal.decode("utf-8", "replace"),
            tokens={
                "prompt": gen.n_prompt,  # the server's count for text backends; the ids' length locally
                "generated": sum(len(g.token_ids) for g in tried),
                "reused": gen.n_reused,
                "shifted": gen.n_shifted,
                "evaluated": sum(g.n_evaluated for g in tried),
            },
            timings_ms={
                "context": (t1 - t0) * 1000,
                "tokenize": (t2 - t1) * 1000,
                "prompt_eval": sum(g.timings_ms["prompt_eval"] for g in tried),
                "generate": sum(g.timings_ms["generate"] for g in tried),
                "postprocess": postprocess_ms,
                "total": (t4 - t0) * 1000,
            },
            stop_reason=cut or gen.stop_reason,
            multiline=multiline,
            windows_cut=windows_cut,
            next_choices=len(tried) - 1,
            context=ctx,
        )


def _stopper(
    judged: context_mod.Context, skip: frozenset[str], due: float | None
) -> Callable[[str], StopReason | None]:
    """The engine's per-token check: the post-processing rules, and past ``due`` (perf_counter) the end of a line
    after which the answer has complete code to show (a block it opened is not: it goes on)."""

    def stop(so_far: str) -> StopReason | None:
        reason = postprocess_mod.stop_reason(so_far, judged, skip)
        if reason is not None or due is None or not so_far.rstrip(" \t").endswith("\n") or not so_far.strip():
            return reason
        if time.perf_counter() >= due and postprocess_mod.postprocess(so_far, judged, skip, cut_short=True)[0]:
            return StopReason.LINE_DUE
        return None

    return stop


def _first_answer_token(vocab: Tokenizer, token_ids: Sequence[int], healed: int) -> int | None:
    """The first generated token that goes beyond the ``healed`` bytes the model re-typed: the answer's first."""
    for token in token_ids:
        healed -= len(vocab.piece(token))
        if healed < 0:
            return token
    return None


def _judge(gen: Generation, judged: context_mod.Context, skip: frozenset[str],
           rules: bool) -> tuple[str, StopReason | None]:
    """What the user sees of ``gen``, and which rule cut it. Stopped by a limit, its last line is unfinished:
    post-processing trims it to what is complete; without the rules, never half a line cut by time."""
    raw = gen.text
    if rules:
        limited = gen.stop_reason.cut_short or gen.stop_reason in (StopReason.MAX_TOKENS, StopReason.LINE_DUE)
        return postprocess_mod.postprocess(raw, judged, skip, cut_short=limited)
    return (raw[: raw.rindex("\n")] if "\n" in raw else "") if gen.stop_reason.cut_short else raw, None
