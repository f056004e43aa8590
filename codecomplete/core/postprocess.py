"""Cut the model's raw output so a suggestion ends where the code should end.

Models write past the point where the user's code continues: they close blocks the suffix already
closes, retype the line below the cursor, or loop. The rules here are small steps in the spirit of
Tabby's post-processing pipeline and Continue's stream filters.

Line rules judge one line of the completion at a time, knowing only the lines before it. That is what
lets one rule set both tell the engine to stop generating (`stop_reason`, called after every token, so
no tokens are spent past the end) and cut the final text (`postprocess`): cutting where `stop_reason`
fired and post-processing gives the same suggestion as post-processing everything the model would
have written. A line still being generated is only judged by rules that cannot change their mind as
it grows (`single_line` and a dedent); the rest wait for its newline. Text rules then tidy the cut
text (trailing whitespace, overlap with the rest of the cursor line). Each rule is kept because
`codecomplete eval --ablate` shows it changing answers for the better (see the README).

Every rule has a public name in `RULES`; both entry points take a set of names to skip, so that
`codecomplete eval --ablate` can measure what each rule is worth from one unprocessed generation.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import cached_property

from codecomplete.core.context import Context
from codecomplete.core.languages import FALLBACK_REGIONS, LANGUAGES, Region
from codecomplete.errors import UserError
from codecomplete.types import StopReason

_WORD = re.compile(r"\w")
_FIRST_WORD = re.compile(r"\w+")
_CLOSING_PUNCT = ")]};,"
_OPENER_LOOKBACK = 4000  # characters of prefix searched for the bracket that opened the cursor's block


# --- lexing: just enough to not count brackets inside strings and comments -------------------------


class _Syntax:
    """Strings, comments, brackets and keyword block closers of one language, compiled to one regex."""

    def __init__(self, regions: tuple[Region, ...], brackets: str = "()[]{}", closer_words: tuple[str, ...] = ()):
        self.closing = "".join(c for c in brackets if c in ")]}")
        self.closer_words = frozenset(closer_words)
        alternatives = [
            f"(?P<r{k}>{r.opener}{r.rest.replace('(?P<end>', f'(?P<e{k}>')})" for k, r in enumerate(regions)
        ]
        alternatives.append(f"(?P<b>[{re.escape(brackets)}])")
        self.pattern = re.compile("|".join(alternatives))
        self.rests = tuple(re.compile(r.rest) for r in regions)
        self.terminable = tuple("(?P<end>" in r.rest for r in regions)


_SYNTAX: dict[str | None, _Syntax] = {
    spec.name: _Syntax(spec.regions, spec.brackets, spec.closer_words) for spec in LANGUAGES.values()
}
_SYNTAX[None] = _Syntax(FALLBACK_REGIONS)

_DISABLED = -1  # the cursor is in a string or comment whose delimiter is unknown: do not count brackets


def _start_state(syntax: _Syntax, ctx: Context) -> int | None:
    """The string/comment region the cursor is inside (an index into `syntax.rests`), None in code."""
    situation = ctx.situation
    line_prefix = situation.line_prefix
    inside = None
    for m in syntax.pattern.finditer(line_prefix):
        if m.lastgroup == "b" or m.end() != len(line_prefix):
            continue
        k = int(m.lastgroup[1:])
        inside = None if syntax.terminable[k] and m.group(f"e{k}") is not None else k
    flagged = situation.in_string or situation.in_comment
    # Tree-sitter knows better than this lexer; without a grammar the lexer is all we have.
    if inside is not None and (flagged or situation.node_type is None):
        return inside
    return _DISABLED if flagged else None


def _lex(syntax: _Syntax, text: str, start: int | None) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Bracket moves `(offset, +1/-1)` in code, and the spans of strings/comments that cross a newline."""
    if start == _DISABLED:
        return [], []
    moves: list[tuple[int, int]] = []
    spans: list[tuple[int, int]] = []
    pos = 0
    if start is not None:
        pos = syntax.rests[start].match(text).end()
        spans.append((0, pos))
    for m in syntax.pattern.finditer(text, pos):
        if m.lastgroup == "b":
            moves.append((m.start(), -1 if m.group() in syntax.closing else 1))
        elif "\n" in m.group():
            spans.append(m.span())
    return moves, spans


def _end_depth(syntax: _Syntax, text: str, start: int | None) -> int:
    return sum(move for _, move in _lex(syntax, text, start)[0])


# --- what the rules know --------------------------------------------------------------------------


def _indent_width(line: str) -> int:
    return len(line[: len(line) - len(line.lstrip(" \t"))].expandtabs(4))


def _iter_lines(text: str) -> Iterator[str]:
    """Lines of `text` one by one, so that finding the first non-blank line does not split a long suffix."""
    start = 0
    while (end := text.find("\n", start)) >= 0:
        yield text[start:end]
        start = end + 1
    yield text[start:]


def _first_word(text: str) -> str:
    m = _FIRST_WORD.match(text)
    return m.group() if m else ""


@dataclass(frozen=True)
class _Env:
    """What the rules need from the context, worked out once per call."""

    ctx: Context
    syntax: _Syntax
    start: int | None  # lexer state at the cursor
    at_line_start: bool  # only whitespace before the cursor on its line
    next_line: str | None  # first non-blank line below the cursor line, right-stripped
    suffix_head: str | None  # first non-blank suffix text (from the cursor on), stripped
    suffix_head_indent: int | None  # its indent, None when it is on the cursor line

    @cached_property
    def opener_indent(self) -> int | None:
        """Indent of the line holding the innermost bracket left open before the cursor.

        Only the last stretch of the prefix is read (from a line start): that block opens near the
        cursor, and a far one is better unknown than slow to find.
        """
        prefix = self.ctx.prefix
        if len(prefix) > _OPENER_LOOKBACK:
            prefix = prefix[prefix.find("\n", len(prefix) - _OPENER_LOOKBACK) + 1 :]
        open_at: list[int] = []
        for at, move in _lex(self.syntax, prefix, None)[0]:
            if move > 0:
                open_at.append(at)
            elif open_at:
                open_at.pop()
        if not open_at:
            return None
        return _indent_width(prefix[prefix.rfind("\n", 0, open_at[-1]) + 1 :])

    def closes_block(self, bracket: str, indent: int | None) -> bool:
        """Whether the suffix already starts with the closer of the cursor's bracket block.

        The first closer after the cursor matches the innermost open bracket, unless the user has not
        closed that block yet and it closes an outer one: then it is indented less than the line that
        opened the block (or, when that line is out of sight, than the completion's own closer).
        """
        head = self.suffix_head
        if head is None or not head.startswith(bracket):
            return False
        if self.suffix_head_indent is None:
            return True  # right after the cursor, on its line
        expected = self.opener_indent if self.opener_indent is not None else indent
        return expected is None or self.suffix_head_indent == expected

    def ends_with_word(self, word: str, indent: int | None) -> bool:
        """Whether the suffix already starts with this keyword closer (at the same indent, if given)."""
        head = self.suffix_head
        if head is None or _first_word(head) != word:
            return False
        return indent is None or self.suffix_head_indent is None or indent == self.suffix_head_indent


def _env(ctx: Context) -> _Env:
    syntax = _SYNTAX.get(ctx.language, _SYNTAX[None])
    lines = _iter_lines(ctx.suffix)
    cursor_rest = next(lines)
    head, head_indent = (cursor_rest.strip(), None) if cursor_rest.strip() else (None, None)
    next_line = None
    for line in lines:
        if line.strip():
            next_line = line.rstrip()
            if head is None:
                head, head_indent = line.strip(), _indent_width(line)
            break
    return _Env(
        ctx=ctx,
        syntax=syntax,
        start=_start_state(syntax, ctx),
        at_line_start=not ctx.situation.line_prefix.strip(),
        next_line=next_line,
        suffix_head=head,
        suffix_head_indent=head_indent,
    )


@dataclass(frozen=True)
class _Line:
    """One line of the completion; line 0 continues the cursor line."""

    start: int  # offset of the line in the completion
    text: str  # the completion's part of the line
    full: str  # the line as it reads in the document (line 0 includes the text before the cursor)
    complete: bool  # its newline has been generated (or generation is over)
    in_code: bool  # starts outside strings and comments
    end_depth: int  # bracket depth at its end, counted from the start of the completion
    negative_at: int | None  # offset of the closer that first took the depth below zero on this line

    @property
    def end(self) -> int:
        return self.start + len(self.text)

    @property
    def stripped(self) -> str:
        return self.full.strip()

    @property
    def indent(self) -> int:
        return _indent_width(self.full)


@dataclass(frozen=True)
class _Scan:
    env: _Env
    text: str
    lines: list[_Line]
    block_indent: int | None  # lines indented less than this have left the cursor's block


def _scan(text: str, env: _Env, final: bool) -> _Scan:
    moves, spans = _lex(env.syntax, text, env.start)
    parts = text.split("\n")
    line_prefix = env.ctx.situation.line_prefix
    lines = []
    start = depth = m = 0
    for index, part in enumerate(parts):
        end = start + len(part)
        negative_at = None
        while m < len(moves) and moves[m][0] < end:
            depth += moves[m][1]
            if depth < 0 and negative_at is None:
                negative_at = moves[m][0]
            m += 1
        hidden = any(s < start < e for s, e in spans)
        full = line_prefix + part if index == 0 else part
        lines.append(_Line(start, part, full, final or index < len(parts) - 1, not hidden, depth, negative_at))
        start = end + 1
    return _Scan(env, text, lines, _block_indent(env, lines))


def _block_indent(env: _Env, lines: list[_Line]) -> int | None:
    """The indent of the block the cursor is in.

    Mid-line it is the cursor line's (one level deeper after a block opener); at the start of a line
    the completion's first non-blank line decides, since the model is choosing the indentation there.
    """
    situation = env.ctx.situation
    if not env.at_line_start:
        deeper = situation.after_opener or situation.empty_block
        return _indent_width(situation.line_prefix) + (1 if deeper else 0)
    return next((line.indent for line in lines if line.stripped), None)


# --- line rules: (scan, line index) -> where to cut, or None ---------------------------------------


@dataclass(frozen=True)
class _Cut:
    end: int  # keep completion[:end]
    reason: StopReason


def _single_line(scan: _Scan, i: int) -> _Cut | None:
    """Where only a line makes sense, the first newline ends the suggestion."""
    if i > 0 and not scan.env.ctx.situation.multiline:
        return _Cut(scan.lines[i].start - 1, StopReason.SINGLE_LINE)
    return None


def _is_closer_start(scan: _Scan, line: _Line) -> bool | None:
    """Whether the line starts with a block closer; None while that cannot be known yet."""
    syntax = scan.env.syntax
    if line.stripped[0] in syntax.closing:
        return True
    if not syntax.closer_words:
        return False
    return _first_word(line.stripped) in syntax.closer_words if line.complete else None


def _dedent(scan: _Scan, i: int) -> _Cut | None:
    """A line indented less than the cursor's block has left it (the main rule for Python)."""
    line = scan.lines[i]
    if i == 0 or scan.block_indent is None or not line.in_code or not line.stripped:
        return None
    if _is_closer_start(scan, line) is not False:
        return None  # `_closing_line` decides, once the line is complete
    if line.indent < scan.block_indent:
        return _Cut(line.start - 1, StopReason.BLOCK_END)
    return None


def _closing_line(scan: _Scan, i: int) -> _Cut | None:
    """A closer that leaves the cursor's block ends the suggestion; it stays unless the suffix has it.

    A line that reopens (`} else {`) keeps the block going. A closer typed after code on the cursor
    line stays: what duplicates the rest of that line is trimmed by `_drop_line_suffix_overlap`.
    """
    line = scan.lines[i]
    if not line.complete:
        return None
    env = scan.env
    whole_line = i > 0 or env.at_line_start
    if line.negative_at is not None and line.end_depth < 0:
        if not whole_line:
            return _Cut(line.end, StopReason.BLOCK_END)
        at = line.negative_at
        leads = not scan.text[line.start : at].strip()
        closed = env.closes_block(scan.text[at], line.indent if leads and i > 0 else None)
        return _Cut(at if closed else line.end, StopReason.BLOCK_END)
    if not (whole_line and env.syntax.closer_words and line.in_code and line.stripped):
        return None
    word = _first_word(line.stripped)
    if word not in env.syntax.closer_words:
        return None
    if i == 0:  # its indent is the editor's as much as the model's
        return _Cut(0 if env.ends_with_word(word, None) else line.end, StopReason.BLOCK_END)
    if scan.block_indent is not None and line.indent < scan.block_indent:
        return _Cut(line.start - 1 if env.ends_with_word(word, line.indent) else line.end, StopReason.BLOCK_END)
    return None


def _is_closer_only(stripped: str, syntax: _Syntax) -> bool:
    rest = stripped.strip(_CLOSING_PUNCT)
    return not rest or rest in syntax.closer_words


def _suffix_line(scan: _Scan, i: int) -> _Cut | None:
    """A line equal to the first line below the cursor is where the suffix takes over (Continue).

    Lines of closers are left to `_closing_line`: nested blocks legitimately repeat them.
    """
    env = scan.env
    line = scan.lines[i]
    target = env.next_line
    if target is None or not line.complete or _is_closer_only(target.strip(), env.syntax):
        return None
    if i == 0 and env.ctx.situation.line_suffix.strip():
        return None  # the cursor line keeps its own rest; it is not a whole line
    if line.full.rstrip() == target:
        return _Cut(max(line.start - 1, 0), StopReason.SUFFIX_OVERLAP)
    return None


def _repetition(scan: _Scan, i: int) -> _Cut | None:
    """The same line three times in a row is a loop: keep the first (Continue)."""
    if i < 2 or not scan.lines[i].complete:
        return None
    first, second, third = (scan.lines[j].full.rstrip() for j in (i - 2, i - 1, i))
    if first.strip() and first == second == third:
        return _Cut(scan.lines[i - 2].end, StopReason.REPETITION)
    return None


_LINE_RULES: tuple[tuple[str, Callable[[_Scan, int], _Cut | None]], ...] = (
    ("single_line", _single_line),
    ("dedent", _dedent),
    ("closing_line", _closing_line),
    ("suffix_line", _suffix_line),
    ("repetition", _repetition),
)


def _find_cut(text: str, env: _Env, final: bool, disabled: frozenset[str]) -> _Cut | None:
    rules = [rule for name, rule in _LINE_RULES if name not in disabled]
    scan = _scan(text, env, final)
    for i in range(len(scan.lines)):
        for rule in rules:
            cut = rule(scan, i)
            if cut is not None:
                return cut
    return None


# --- text rules: (text, env) -> text, applied to the cut text --------------------------------------


def _strip_trailing_whitespace(text: str, env: _Env) -> str:
    """Trailing blanks go, and a suggestion of only whitespace is none; the first line's leading whitespace
    stays as generated.

    Before a non-blank rest of the cursor line the end is left alone: there it separates words.
    """
    if not text.strip():
        return ""
    lines = text.split("\n")
    body = "\n".join([line.rstrip() for line in lines[:-1]] + [lines[-1]])
    return body if env.ctx.situation.line_suffix.strip() else body.rstrip()


def _drop_line_suffix_overlap(text: str, env: _Env) -> str:
    """Drop an end that the rest of the cursor line already has (`x)` before `)`).

    Part of that rest only counts when it is punctuation, and a closer only when the completion
    did not open it itself (`len(x)` before `)` keeps its parenthesis).
    """
    rest = env.ctx.situation.line_suffix.rstrip()
    if not rest.strip():
        return text
    for k in range(len(rest), 0, -1):
        piece = rest[:k]
        if not text.endswith(piece) or (k < len(rest) and _WORD.search(piece)):
            continue
        kept = text[:-k]
        if _end_depth(env.syntax, kept, env.start) <= 0:
            return kept
    return text


# (name, rule, the reason it reports when it changes the text; None keeps the line rules' reason)
_TEXT_RULES: tuple[tuple[str, Callable[[str, _Env], str], str | None], ...] = (
    ("trailing_whitespace", _strip_trailing_whitespace, None),
    ("line_suffix_overlap", _drop_line_suffix_overlap, StopReason.SUFFIX_OVERLAP),
)

# Every rule's name, in the order the rules run: what `disabled` takes and `eval --ablate` reports.
RULES: tuple[str, ...] = tuple(rule[0] for rule in (*_LINE_RULES, *_TEXT_RULES))


def check_rules(names: Iterable[str]) -> frozenset[str]:
    """The names as a set, once each is known to be a rule: a typo must not silently disable nothing."""
    chosen = frozenset(names)
    unknown = sorted(chosen.difference(RULES))
    if unknown:
        raise UserError(f"unknown post-processing rule {', '.join(unknown)} (rules: {', '.join(RULES)})")
    return chosen


# --- public API -----------------------------------------------------------------------------------


def stop_reason(text: str, ctx: Context, disabled: frozenset[str] = frozenset()) -> StopReason | None:
    """Called by the engine after every generated token with the text so far; returns a reason
    ('single_line', 'block_end', 'suffix_overlap', 'repetition') as soon as generation can stop.
    Rules named in `disabled` (see `RULES`) are skipped."""
    cut = _find_cut(text, _env(ctx), False, check_rules(disabled) if disabled else disabled)
    return cut.reason if cut else None


def postprocess(
    text: str, ctx: Context, disabled: frozenset[str] = frozenset()
) -> tuple[str, StopReason | None]:
    """The final suggestion, and which rule cut it last ('single_line', 'block_end', 'suffix_overlap',
    'repetition'), or None if nothing was cut. Rules named in `disabled` (see
    `RULES`) are skipped: with all of them disabled the text comes back as it is."""
    disabled = check_rules(disabled)
    env = _env(ctx)
    reason = None
    cut = _find_cut(text, env, True, disabled)
    if cut is not None:
        text, reason = text[: cut.end], cut.reason
    for name, rule, why in _TEXT_RULES:
        if name in disabled:
            continue
        changed = rule(text, env)
        if changed != text:
            text, reason = changed, why or reason
    return text, reason
