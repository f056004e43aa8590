"""Cut the model's raw output so a suggestion ends where the code should end, and never show broken code.

Models write past the point where the user's code continues: they close blocks the suffix already
closes, retype the line below the cursor, or loop; an answer the token or time limit cut ends
mid-expression. The rules here are small steps in the spirit of Tabby's post-processing pipeline and
Continue's stream filters.

Line rules judge one line of the completion at a time, knowing only the lines before it. That is what
lets one rule set both tell the engine to stop generating (`stop_reason`, called after every token, so
no tokens are spent past the end) and cut the final text (`postprocess`): cutting where `stop_reason`
fired and post-processing gives the same suggestion as post-processing everything the model would
have written. A line still being generated is only judged by rules that cannot change their mind as
it grows (`single_line` and a dedent); the rest wait for its newline. An answer the engine cut short
(`cut_short`) is then trimmed back to its last complete line and statement; a docstring it opened is closed
instead, whether a limit or a line rule cut it. Text rules tidy the cut text (trailing whitespace, overlap
with the rest of the cursor line, the file's own indentation), and last of all `syntax` trims brackets the
code after the cursor does not close, then re-parses the windows with the suggestion in place and trims or
drops it if it adds syntax errors: that needs the final text, so it never stops generation. Each rule is kept because
`codecomplete eval --ablate` shows it changing answers for the better (see the README).

Every rule has a public name in `RULES`; both entry points take a set of names to skip, so that
`codecomplete eval --ablate` can measure what each rule is worth from one unprocessed generation.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import cached_property

from codecomplete.core.context import Context
from codecomplete.core.languages import FALLBACK_REGIONS, LANGUAGES, Region
from codecomplete.core.syntaxcheck import first_harmless_cut, local_windows
from codecomplete.errors import UserError
from codecomplete.types import StopReason

_WORD = re.compile(r"\w")
_FIRST_WORD = re.compile(r"\w+")
_CLOSING_PUNCT = ")]};,"
_OPENER_LOOKBACK = 4000  # characters of prefix searched for the bracket that opened the cursor's block
_COMMENT_STARTS = ("//", "/*", "#", "--")  # a region whose opener matches one of these is a comment
# Code ending in one of these goes on past the line: a binary operator, `=` in any assignment, member access,
# a line continuation. Not `++`/`--` (postfix), `...` (Python's Ellipsis, a spread), `import *`, lone `<`/`>` (generics,
# `#include <x.h>`, JSX), `?` (Rust), `:` (labels, `case x:`; Python's block opener is the spec's), `,` (a list
# inside a bracket the suffix closes).
_DANGLING = re.compile(r"(?:&&|\|\||<<|>>|->|=>|<-|::|[-+*/%&|^=!.\\~])$")
_NOT_DANGLING = re.compile(r"(?:\+\+|--|\.\.\.|\*/|\bimport\s+\*)$")
_MAX_PERIOD = 8  # longest block of lines `repetition` looks for
# A line the model is stuck in: a piece of 3-40 characters thrice or more in a row over 64 characters
# (`1.1.1.1.…`, `_FLOPPY_FLOPPY_…`), over 24 when the piece is code of 8 characters or more
# (`last: now(), last: now(), …`; not a row of `0, ` or `None, `: data); or whitespace running on past column 48
# (16 blanks or more generated at once: no indentation goes there).
_LOOP = re.compile(r"(\S.{2,39}?)\1{2,}")
_LOOP_SPAN, _CODE_LOOP_SPAN = 64, 24
_LETTER = re.compile(r"[^\W\d]")
# A sentence of prose: from a word to a `.`, `!` or `?` followed by a blank (not `os.path`, `e.g`); and how long
# one must be for its second pass to be a loop rather than a phrase used twice.
_SENTENCE = re.compile(r"\w(?:[^.!?]|[.!?](?!\s|$))*[.!?](?=\s|$)")
_SENTENCE_MIN = 24
_BLANK_RUN = re.compile(r"[ \t]{16,}")
_BLANK_RUN_COLUMN = 48
_LEADING = re.compile(r"^([ \t]*)(\S)", re.M)  # a non-blank line's indentation and first character
_INDENT_STEPS = (2, 3, 4, 8)  # widths of one level of space indentation
_INDENT_SAMPLE = 2000  # characters of prefix read to tell how the file indents (half as many of suffix)
_SPACES_PER_TAB = (4, 8, 2)  # what a model writing spaces in a tab-indented file may mean by one level, likeliest first


# --- lexing: just enough to not count brackets inside strings and comments -------------------------


class _Syntax:
    """Strings, comments, brackets and keyword block closers of one language, compiled to one regex."""

    def __init__(
        self,
        regions: tuple[Region, ...],
        brackets: str = "()[]{}",
        closer_words: tuple[str, ...] = (),
        block_opener: str | None = None,
        docstrings: tuple[str, ...] = (),
    ):
        self.closing = "".join(c for c in brackets if c in ")]}")
        self.pairs = dict(zip(brackets[::2], brackets[1::2]))  # opener -> its closer
        self.docstrings = docstrings
        self.closer_words = frozenset(closer_words)
        self.block_opener = re.compile(block_opener) if block_opener else None
        self.comments = tuple(any(re.match(r.opener, start) for start in _COMMENT_STARTS) for r in regions)
        alternatives = [
            f"(?P<r{k}>{r.opener}{r.rest.replace('(?P<end>', f'(?P<e{k}>')})" for k, r in enumerate(regions)
        ]
        alternatives.append(f"(?P<b>[{re.escape(brackets)}])")
        self.pattern = re.compile("|".join(alternatives))
        self.rests = tuple(re.compile(r.rest) for r in regions)
        self.terminable = tuple("(?P<end>" in r.rest for r in regions)


_SYNTAX: dict[str | None, _Syntax] = {
    spec.name: _Syntax(spec.regions, spec.brackets, spec.closer_words, spec.block_opener, spec.docstrings)
    for spec in LANGUAGES.values()
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


@dataclass(frozen=True)
class _Open:
    """What a completion leaves unfinished, from a lexical reading of it."""

    unclosed: list[int]  # offsets of the brackets it opened and did not close, outermost first
    own_closers: frozenset[int]  # offsets of the closers that closed a bracket it opened itself
    comments: list[tuple[int, int]]  # spans of its comments
    unterminated: int | None  # start of a string or block comment it opened that runs to its end
    in_text: bool  # all of it continues the string or comment the cursor is in: prose, not code


def _read_open(syntax: _Syntax, text: str, start: int | None) -> _Open:
    """Like `_lex`, but for judging where the text ends rather than counting depth along it."""
    moves: list[tuple[int, int]] = []
    comments: list[tuple[int, int]] = []
    unterminated = None
    pos = 0
    if start is not None and start != _DISABLED:
        m = syntax.rests[start].match(text)
        pos = m.end()
        if syntax.comments[start]:
            comments.append((0, pos))
        # Left open, the string or comment the cursor is in is closed by the user's own delimiter after it.
    in_text = start == _DISABLED or (start is not None and pos == len(text))
    if start != _DISABLED:
        for m in syntax.pattern.finditer(text, pos):
            if m.lastgroup == "b":
                moves.append((m.start(), -1 if m.group() in syntax.closing else 1))
                continue
            k = int(m.lastgroup[1:])
            if syntax.comments[k]:
                comments.append(m.span())
            if syntax.terminable[k] and m.group(f"e{k}") is None and m.end() == len(text):
                unterminated = m.start()
    stack: list[int] = []
    own: set[int] = set()
    for at, move in moves:
        if move > 0:
            stack.append(at)
        elif stack:
            stack.pop()
            own.add(at)
    return _Open(stack, frozenset(own), comments, unterminated, in_text)


def _code_end(text: str, comments: list[tuple[int, int]]) -> int:
    """The end of the last code in `text`: trailing whitespace and comments skipped."""
    end = len(text.rstrip())
    for a, b in reversed(comments):
        if a < end <= b:
            end = len(text[:a].rstrip())
    return end


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
        """Indent of the statement holding the innermost bracket left open before the cursor.

        That is the indent of the bracket's line, unless the line continues a bracket opened above it
        (a wrapped signature or condition: `    int b) {`, `        in->owned) {`): then it is the indent
        of the line that bracket opened on, which is where the block's closer lines up.

        Only the last stretch of the prefix is read (from a line start): that block opens near the
        cursor, and a far one is better unknown than slow to find.
        """
        prefix = self.ctx.prefix
        if len(prefix) > _OPENER_LOOKBACK:
            prefix = prefix[prefix.find("\n", len(prefix) - _OPENER_LOOKBACK) + 1 :]
        open_at: list[tuple[int, int]] = []  # (offset, offset of the line start its statement begins on)
        line_start = 0
        continued: int | None = None  # that statement line, for a line that closed a bracket from above
        for at, move in _lex(self.syntax, prefix, None)[0]:
            start = prefix.rfind("\n", 0, at) + 1
            if start != line_start:
                line_start, continued = start, None
            if move > 0:
                open_at.append((at, start if continued is None else continued))
            elif open_at:
                opened, anchor = open_at.pop()
                if opened < line_start:
                    continued = anchor if continued is None else min(continued, anchor)
        if not open_at:
            return None
        return _indent_width(prefix[open_at[-1][1] :])

    @cached_property
    def statement_indent(self) -> int:
        """Indent of the line the cursor's statement began on: the cursor line's own, unless that line closes
        brackets opened above it (a wrapped signature: `             metavar=None):`), where it is the indent of
        the line that opened them (`    def __init__(self,`), which is where the statement's block lines up."""
        prefix = self.ctx.prefix
        if len(prefix) > _OPENER_LOOKBACK:
            prefix = prefix[prefix.find("\n", len(prefix) - _OPENER_LOOKBACK) + 1 :]
        cursor_line = prefix.rfind("\n") + 1
        starts: list[tuple[int, int]] = [(0, 0)]  # (line start, bracket depth there)
        depth = lowest = 0
        for at, move in _lex(self.syntax, prefix, None)[0]:
            while starts[-1][0] < cursor_line and (newline := prefix.find("\n", starts[-1][0], at)) >= 0:
                starts.append((newline + 1, depth))
            depth += move
            if at >= cursor_line:
                lowest = min(lowest, depth - starts[-1][1])
        while starts[-1][0] < cursor_line and (newline := prefix.find("\n", starts[-1][0])) >= 0:
            starts.append((newline + 1, depth))
        floor = starts[-1][1] + lowest
        statement = next((s for s, d in reversed(starts) if d <= floor), 0)
        return _indent_width(prefix[statement:])

    @cached_property
    def pending_closers(self) -> str:
        """The closers the suffix has for brackets opened before it, in order (the first `_OPENER_LOOKBACK`
        characters of it); none when the cursor is in a string or comment."""
        if self.start is not None:
            return ""
        suffix = self.ctx.suffix[:_OPENER_LOOKBACK]
        depth = 0
        pending = []
        for at, move in _lex(self.syntax, suffix, None)[0]:
            if move < 0 and depth == 0:
                pending.append(suffix[at])
            depth = max(0, depth + move)
        return "".join(pending)

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

    @cached_property
    def file_indent(self) -> tuple[str, int] | None:
        """How the file indents, read from the windows: `("\\t", 0)` with tabs, `(" ", width)` with spaces
        (width: the commonest step between lines); None when neither clearly wins (at least 2 lines, twice
        the other's count), so a mixed or barely indented file is left as the model wrote it."""
        tabs = spaces = 0
        steps: Counter[int] = Counter()
        prefix, suffix = self.ctx.prefix, self.ctx.suffix
        if len(prefix) > _INDENT_SAMPLE:  # the nearest lines say it; reading all of a 12 KB window costs 0.2 ms
            prefix = prefix[prefix.find("\n", len(prefix) - _INDENT_SAMPLE) + 1 :]
        for window in (prefix, suffix[: suffix.rfind("\n", 0, _INDENT_SAMPLE // 2) + 1]):
            previous = None
            for m in _LEADING.finditer(window):
                ws = m.group(1)
                if m.group(2) == "*":  # a block comment's continuation, aligned with a space
                    continue
                if "\t" in ws:
                    tabs += ws.startswith("\t")
                    previous = None
                    continue
                spaces += len(ws) >= 2
                if previous is not None and len(ws) - previous in _INDENT_STEPS:
                    steps[len(ws) - previous] += 1
                previous = len(ws)
        if tabs >= 2 and tabs >= 2 * spaces:
            return "\t", 0
        if spaces >= 2 and spaces >= 2 * tabs:
            return " ", steps.most_common(1)[0][0] if steps else 4
        return None

    @cached_property
    def tab_level(self) -> int:
        """Tabs indenting the cursor line, or the last non-blank line above it when the cursor is at column 0."""
        line = self.ctx.situation.line_prefix
        if not line:
            stripped = self.ctx.prefix.rstrip()
            line = stripped[stripped.rfind("\n") + 1 :]
        return len(line) - len(line.lstrip("\t"))


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

    @cached_property
    def non_blank(self) -> tuple[list[int], list[str], dict[int, int]]:
        """The non-blank lines: their indices, their text as `repetition` compares it, and index -> position."""
        indices = [i for i, line in enumerate(self.lines) if line.stripped]
        return indices, [self.lines[i].full.rstrip() for i in indices], {i: k for k, i in enumerate(indices)}


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
        return env.statement_indent + (1 if deeper else 0)
    return next((line.indent for line in lines if line.stripped), None)


# --- line rules: (scan, line index) -> where to cut, or None ---------------------------------------


@dataclass(frozen=True)
class _Cut:
    end: int  # keep completion[:end]
    reason: StopReason


def _single_line(scan: _Scan, i: int) -> _Cut | None:
    """Where only a line makes sense, the first newline ends the suggestion; at the end of a line already written,
    or on a blank line (in a docstring, a comment) the model keeps blank, a suggestion that starts a new line is
    that next line (shown under the cursor's line, as Copilot does)."""
    situation = scan.env.ctx.situation
    if situation.multiline:
        return None
    blank = not (situation.line_prefix.strip() or situation.line_suffix.strip())
    if i > int(not scan.lines[0].text and (blank or _line_is_written(scan.env))):
        return _Cut(scan.lines[i].start - 1, StopReason.SINGLE_LINE)
    return None


def _line_is_written(env: _Env) -> bool:
    """The cursor is at the end of a line that reads finished: code before it, nothing after it, and no operator,
    `=` or opener left hanging (the statement or block goes on there, not on a line of its own). A comma does
    not hang: the next argument or element on the next line is what comes."""
    situation = env.ctx.situation
    code = situation.line_prefix.rstrip()
    opener = env.syntax.block_opener
    return bool(code) and not situation.line_suffix.strip() and not (
        (_DANGLING.search(code) and not _NOT_DANGLING.search(code)) or code.endswith(("(", "[", "{"))
        or (opener is not None and opener.search(code)))


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


_SPACING = re.compile(r"\s*([^\w\s])\s*|\s+")


def _spacing_free(code: str) -> str:
    """`code` with the spacing that does not change its meaning taken out (around punctuation, runs of blanks)."""
    return _SPACING.sub(lambda m: m.group(1) or " ", code.strip())


def _suffix_line(scan: _Scan, i: int) -> _Cut | None:
    """A line equal to the first line below the cursor is where the suffix takes over (Continue).

    Equal up to spacing: blanks around punctuation, and tabs against spaces in the indentation, are the
    model's style, not new code. The indentation counts, since code at another depth is other code (Python),
    except on a line the cursor starts: its indentation is the editor's as much as the model's, and the
    line right above the suffix's own copy is a repeat at any depth.

    Lines of closers are left to `_closing_line`: nested blocks legitimately repeat them.
    """
    env = scan.env
    line = scan.lines[i]
    target = env.next_line
    if target is None or not line.complete or not line.stripped or _is_closer_only(target.strip(), env.syntax):
        return None
    if i == 0 and env.ctx.situation.line_suffix.strip():
        return None  # the cursor line keeps its own rest; it is not a whole line
    if _spacing_free(line.full) != _spacing_free(target):
        return None
    if (i == 0 and env.at_line_start) or line.indent == _indent_width(target):
        return _Cut(max(line.start - 1, 0), StopReason.SUFFIX_OVERLAP)
    return None


def _loops(line: _Line) -> bool:
    """Whether the model is stuck within this line (see `_LOOP`); only its generated part counts: continuing a
    pattern the user typed is not a loop."""
    for m in _LOOP.finditer(line.text):
        piece = m.group(1)
        code = len(piece) >= 8 and _LETTER.search(piece) is not None
        if m.end() - m.start() >= (_CODE_LOOP_SPAN if code else _LOOP_SPAN):
            return True
    prefix = line.full[: len(line.full) - len(line.text)]
    return any(len((prefix + line.text[: m.end()]).expandtabs(4)) > _BLANK_RUN_COLUMN
               for m in _BLANK_RUN.finditer(line.text))


def _repeated_sentence(scan: _Scan, line: _Line) -> _Cut | None:
    """Prose that loops in whole sentences, wrapped differently on each pass (a docstring the model writes on and
    on), is cut where a sentence starts for the second time: judged on the line of prose that completes it."""
    if line.in_code:
        return None
    seen = set()
    for m in _SENTENCE.finditer(scan.text, 0, min(line.end + 1, len(scan.text))):
        sentence = " ".join(m.group().split())
        if sentence in seen and m.end() > line.start:
            return _Cut(len(scan.text[: m.start()].rstrip()), StopReason.REPETITION)
        if len(sentence) >= _SENTENCE_MIN:
            seen.add(sentence)
    return None


def _repetition(scan: _Scan, i: int) -> _Cut | None:
    """A loop is cut back to its first pass: the same line a third time in a row, at any indentation (a line
    nesting itself, `this.on('drain', () => {`; lines of only brackets nest legitimately), or a block of lines a
    second time (blank lines between them do not count). Two equal lines can be meant (`x += 1` twice, table rows);
    a copied block of several lines is not. The line that completes the repeat decides, so a loop is never
    generated further than that. A block of only closers is nesting, not a loop. A line looping within itself
    goes whole, as soon as it does. Prose repeating a sentence is cut before its second pass."""
    line = scan.lines[i]
    if _loops(line):
        return _Cut(max(line.start - 1, 0), StopReason.REPETITION)
    if not line.complete or not line.stripped:
        return None
    if (cut := _repeated_sentence(scan, line)) is not None:
        return cut
    indices, keys, position = scan.non_blank
    k = position[i]
    key = keys[k]
    same = k >= 2 and keys[k - 1].strip() == key.strip() == keys[k - 2].strip()
    if same and (keys[k - 1] == key == keys[k - 2] or _WORD.search(key)):
        return _Cut(scan.lines[indices[k - 2]].end, StopReason.REPETITION)
    for period in range(2, min(_MAX_PERIOD, (k + 1) // 2) + 1):
        if keys[k - period] != key or keys[k - 2 * period + 1 : k - period + 1] != keys[k - period + 1 : k + 1]:
            continue
        block = keys[k - period + 1 : k + 1]
        if any(not _is_closer_only(code.strip(), scan.env.syntax) for code in block):
            return _Cut(scan.lines[indices[k - period]].end, StopReason.REPETITION)
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


# --- an answer the engine cut short (token limit, time budget): back to what is complete -----------


def _dangling_end(text: str, env: _Env) -> int | None:
    """Where to cut `text` so that it does not end mid-statement; None when its end is complete, or is the
    text of the string or comment the cursor is in.

    It is not when it leaves open a bracket it opened (cut before the line that opened it, keeping the
    closers of its own that start that line: `} else {` keeps its `}`) or a string or comment, or when its
    last line ends with a binary operator, `=`, a member access or a block opener (Python's `:`, Lua's
    `then`). A trailing blank line goes too, so that the line above is judged.
    """
    read = _read_open(env.syntax, text, env.start)
    if read.in_text:
        return None
    if read.unclosed or read.unterminated is not None:
        at = min(read.unclosed[:1] + ([] if read.unterminated is None else [read.unterminated]))
        line_start = text.rfind("\n", 0, at) + 1
        code = keep = line_start + len(text[line_start:at]) - len(text[line_start:at].lstrip())
        while keep < at and (keep in read.own_closers or (keep > code and text[keep] in ";,")):
            keep += 1
        return keep if keep > code else max(line_start - 1, 0)
    last = text.rfind("\n") + 1
    if not text[last:].strip():
        return max(last - 1, 0) if text.strip() else None
    end = _code_end(text, read.comments)
    if end <= last:
        return None  # the last line is a comment
    line = (env.ctx.situation.line_prefix if last == 0 else "") + text[last:end]
    opener = env.syntax.block_opener
    if (_DANGLING.search(line) and not _NOT_DANGLING.search(line)) or (opener and opener.search(line)):
        return max(last - 1, 0)
    return None


def _close_docstring(text: str, env: _Env) -> str | None:
    """`text` with the docstring it opened and left open closed, as PEP 257 writes it: the delimiter right after a
    one-line docstring, else on a line of its own at the docstring's indentation. None when `text` does not end
    inside a docstring of its own (a string opened first on its line, nothing left open before it), or when that
    holds no word yet. Prose cut short is worth showing; unclosed, it would turn the code below into a string."""
    syntax = env.syntax
    read = _read_open(syntax, text, env.start) if syntax.docstrings else None
    if read is None or read.unterminated is None or read.unclosed:
        return None
    at = read.unterminated
    quote = next((q for q in syntax.docstrings if text.startswith(q, at)), None)
    line_start = text.rfind("\n", 0, at) + 1
    indent = (env.ctx.situation.line_prefix if line_start == 0 else "") + text[line_start:at]
    body = text.rstrip()
    if quote is None or indent.strip() or not _WORD.search(body, at):
        return None
    return body + quote if "\n" not in body[at:] else f"{body}\n{indent}{quote}"


def _ends_cleanly(text: str, env: _Env) -> bool:
    """Whether a cursor line the engine cut short ends a statement for sure: with `;` or a closer, nothing
    left open. A word might be half-written (`retur`, `resu`), a string or number might go on."""
    if not text.strip() or _dangling_end(text, env) is not None:
        return False
    end = _code_end(text, _read_open(env.syntax, text, env.start).comments)
    return end > 0 and text[end - 1] in ";)]},"


def _trim_cut_short(text: str, env: _Env, checked: bool) -> str:
    """An answer the engine cut short is kept up to its last complete line, and from there back to the last
    complete statement (see `_dangling_end`); one still on the cursor's line only if it ends cleanly, or up to
    its last whole word when it is prose in the string or comment the cursor is in. With the syntax check
    (`checked`), complete lines in a block the answer opened stay when the code after the cursor closes it and
    inserting them adds no syntax error (a method typed again above the rest of its body), up to the line that
    opens a bracket that code does not close (`_trim_mismatched`)."""
    newline = text.rfind("\n")
    if newline < 0:
        if _ends_cleanly(text, env):
            return text
        if _read_open(env.syntax, text, env.start).in_text:  # prose: its whole words are worth showing
            return text.rstrip() if text[-1:].isspace() else text[: len(text) - len(text.split()[-1])].rstrip()
        # a list going on (`12, 13, 1`): its complete elements are worth showing, the one being written is not
        comma = text.rfind(",")
        kept = text[: comma + 1]
        return kept if comma > 0 and _ends_cleanly(kept, env) else ""
    lines = text = text[:newline]
    closed = _close_docstring(lines, env)
    if closed is not None:
        return closed
    while (cut := _dangling_end(text, env)) is not None:
        text = text[:cut]
    if checked and text != lines and _read_open(env.syntax, lines, env.start).unclosed:
        kept = _trim_mismatched(lines, env)
        if len(kept) > len(text) and _drop_syntax_errors(kept, env) == kept:
            return kept
    return text


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


def _space_unit(widths: list[int], level: int) -> int:
    """Spaces a model meant as one tab, from the space indents it wrote (first line first) and the tab level
    around the cursor: the likeliest unit that divides them all and puts the first within a level of it."""
    for unit in _SPACES_PER_TAB:
        if all(w % unit == 0 for w in widths) and abs(widths[0] // unit - level) <= 1:
            return unit
    return next((unit for unit in _SPACES_PER_TAB if all(w % unit == 0 for w in widths)), _SPACES_PER_TAB[0])


def _reindent(text: str, env: _Env) -> str:
    """Indent the suggestion as the file does: tabs where the file uses tabs (a model often writes spaces
    in Go), its own width of spaces where it uses spaces. Only a line's leading whitespace changes, and not
    on lines that start inside a string or comment, nor on the cursor line unless the cursor is at its start.
    Spaces after tabs, and a remainder of spaces short of a level, are alignment and stay."""
    style = env.file_indent
    if style is None or env.start == _DISABLED:
        return text
    parts = text.split("\n")
    spans = _lex(env.syntax, text, env.start)[1]
    line_prefix = env.ctx.situation.line_prefix
    lines = []  # (index, what precedes it on its line, its leading whitespace)
    start = 0
    for i, part in enumerate(parts):
        line_start, start = start, start + len(part) + 1
        if (i == 0 and (not env.at_line_start or env.start is not None)) or not part.strip():
            continue
        if any(s < line_start < e for s, e in spans):
            continue
        full = (line_prefix if i == 0 else "") + part
        lines.append((i, line_prefix if i == 0 else "", full[: len(full) - len(full.lstrip(" \t"))]))
    tabs, width = style[0] == "\t", style[1]
    if tabs:
        widths = [len(ws) for _, _, ws in lines if ws and not ws.strip(" ")]
        if not widths:
            return text
        width = _space_unit(widths, env.tab_level)
    for i, lead, ws in lines:
        if tabs:
            columns = len(ws.expandtabs(width))
            new = "\t" * (columns // width) + " " * (columns % width) if ws.startswith(" ") else ws
        else:
            new = ws.expandtabs(width)
        if new != ws and new.startswith(lead):
            parts[i] = new[len(lead) :] + parts[i][len(ws) - len(lead) :]
    return "\n".join(parts)


def _trim_mismatched(text: str, env: _Env) -> str:
    """Back to before the line that opened a bracket the suggestion leaves open when the code after the cursor
    closes it with another kind (`this.on('drain', () => {` before a lone `}`: the `(` stays open) or not at all.
    Tree-sitter's error recovery can count such a file as no worse than it was; the user would see a `(` that
    nothing closes."""
    if env.start is not None:
        return text
    while text.strip():
        unclosed = _read_open(env.syntax, text, env.start).unclosed
        pending = env.pending_closers
        wrong = next((at for j, at in enumerate(reversed(unclosed))
                      if j >= len(pending) or env.syntax.pairs.get(text[at]) != pending[j]), None)
        if wrong is None:
            break
        text = text[: max(text.rfind("\n", 0, wrong), 0)]
    return text


def _drop_syntax_errors(text: str, env: _Env) -> str:
    """Trim the suggestion to its longest start that adds no syntax errors to the code around the cursor
    (cut at a line end, else after a `;` on its first line), or drop it: see `syntaxcheck`. Errors the
    document already has do not count against it. Only the top-level definitions around the cursor are
    parsed (`local_windows`: about 3 KB, two parses of 0.3 ms), after brackets left open that the code after the
    cursor does not close are trimmed (`_trim_mismatched`). Languages without a grammar are left alone."""
    ctx = env.ctx
    if ctx.language not in LANGUAGES:
        return text
    text = _trim_mismatched(text, env)
    if not text.strip():
        return text
    prefix, suffix = local_windows(ctx.prefix, ctx.suffix, ctx.language)
    text = text[: first_harmless_cut(prefix, text, suffix, ctx.language)]
    if text.strip() and (prefix, suffix) != (ctx.prefix, ctx.suffix):
        text = text[: first_harmless_cut(ctx.prefix, text, ctx.suffix, ctx.language)]
    return text


# (name, rule, the reason it reports when it changes the text; None keeps the line rules' reason)
_TEXT_RULES: tuple[tuple[str, Callable[[str, _Env], str], str | None], ...] = (
    ("trailing_whitespace", _strip_trailing_whitespace, None),
    ("line_suffix_overlap", _drop_line_suffix_overlap, StopReason.SUFFIX_OVERLAP),
    ("indentation", _reindent, None),
    ("syntax", _drop_syntax_errors, StopReason.SYNTAX),
)

# Every rule's name, in the order the rules run: what `disabled` takes and `eval --ablate` reports.
RULES: tuple[str, ...] = (*(rule[0] for rule in _LINE_RULES), "cut_short", *(rule[0] for rule in _TEXT_RULES))


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
    text: str, ctx: Context, disabled: frozenset[str] = frozenset(), *, cut_short: bool = False
) -> tuple[str, StopReason | None]:
    """The final suggestion, and which rule cut it last ('single_line', 'block_end', 'suffix_overlap',
    'repetition'), or None if nothing was cut (trimming a cut-short answer, re-indenting and the syntax
    check keep the reason they found). `cut_short`: the engine stopped the answer at its token limit or
    time budget, so its last line is unfinished. Rules named in `disabled` (see `RULES`) are skipped:
    with all of them disabled the text comes back as it is."""
    disabled = check_rules(disabled)
    env = _env(ctx)
    reason = None
    cut_short = cut_short and "cut_short" not in disabled
    cut = _find_cut(text, env, not cut_short, disabled)
    if cut is not None:  # a loop cut inside a docstring, its first line where only a line makes sense
        text, reason = text[: cut.end], cut.reason
        text = _close_docstring(text, env) or text
    elif cut_short:  # where a line rule cut, the code had ended before the engine stopped
        text = _trim_cut_short(text, env, "syntax" not in disabled)
    for name, rule, why in _TEXT_RULES:
        if name in disabled:
            continue
        changed = rule(text, env)
        if changed != text:
            text, reason = changed, why or reason
    return text, reason
