"""Cut the prefix and suffix windows around the cursor and describe the cursor's syntactic situation.

The windows are cut at line and syntax-node boundaries within a token budget, so the model never sees
half a token at the edges and the start of the prompt stays stable while the user types.

The budget is spent by summing each line's token count, so the whole file is never tokenized. With
BPE and SentencePiece tokenizers that sum is in practice an upper bound on the joined text's count
(merges across a line break save tokens, and llama.cpp adds a leading-space piece to each text it
tokenizes alone), so the windows fit the budget.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass

import tree_sitter

from codecomplete.core.languages import LanguageSpec, get_parser, normalize_language, spec_for, statement_start
from codecomplete.errors import UserError


@dataclass(frozen=True)
class Situation:
    """What the cursor sits in; post-processing decides single- vs multi-line and where to stop from it."""

    line_prefix: str  # text of the cursor line before the cursor
    line_suffix: str  # text of the cursor line after the cursor
    indent: str  # leading whitespace of the cursor line
    mid_line: bool  # non-whitespace text follows the cursor on its line
    in_string: bool
    in_comment: bool
    after_opener: bool  # the line before the cursor ends with a bracket or block opener (`(`, `{`, `:`...)
    empty_block: bool  # the cursor is in a block body that has no statements yet
    node_type: str | None  # innermost named syntax node at the cursor (None without a grammar)
    multiline: bool  # a multi-line suggestion makes sense here


@dataclass(frozen=True)
class Context:
    prefix: str
    suffix: str
    language: str | None
    situation: Situation
    prefix_start: int  # character offset in the document where the prefix window starts
    suffix_end: int  # character offset in the document where the suffix window ends


_BLOCK_COMMENT_END = re.compile(rb"(\*/|\]=*\])\s*$")
_CLOSING_ONLY = re.compile(r"[\s)\]};]*")

# The tree is parsed only this far past the cursor. An edit that leaves a bracket or string open makes
# tree-sitter's error recovery re-scan up to the end of what it parses, about 0.4 ms per KB: on a 3,000-line
# file that was 5-9 ms per keystroke unbounded, 3 ms at 8 KB, under 1 ms at 2 KB. 2 KB holds a prefix-only
# suffix window (10 % of the budget) and two thirds of a FIM one; past it the window's end snaps to lines.
PARSE_BELOW = 2048
# No token of any vocabulary in use covers more characters than this: a text longer than budget * this cannot fit.
MAX_CHARS_PER_TOKEN = 64
# Past these the context reads text instead of a syntax tree: a line of minified code nests expressions millions
# of nodes deep, and megabytes before the cursor take seconds to parse (the LSP keeps no tree past this size).
MAX_PARSED_LINE_CHARS = 10_000
MAX_PARSED_CHARS = 4 * 1024 * 1024


def parse_end(text: str, offset: int) -> int:
    """Where parsing for a cursor at `offset` may stop: the end of the line PARSE_BELOW characters on."""
    if len(text) - offset <= PARSE_BELOW:
        return len(text)
    newline = text.find("\n", offset + PARSE_BELOW)
    return len(text) if newline < 0 else newline + 1


# Without a usable syntax boundary a window edge prefers line numbers divisible by this, so it moves
# in steps of this many lines rather than whenever one more line drops out of the budget.
_SNAP_LINES = 16
# Stability costs context: give up at most this share of a side's budget to reach a coarser boundary,
# and at most the larger share to reach any syntax boundary (beyond it, e.g. inside one huge literal,
# whole lines are the better cut).
_MAX_WASTE = 1 / 3
_MAX_WASTE_FINE = 3 / 4


def build_context(
    text: str,
    offset: int,
    language: str | None,
    count_tokens: Callable[[str], int],
    *,
    budget: int = 3000,
    prefix_share: float = 0.75,
    tree: tree_sitter.Tree | None = None,
    keep: tuple[int | None, int | None] = (None, None),
    stretch: int = 0,
) -> Context:
    """Cut prefix/suffix windows of at most `budget` tokens around character `offset` of `text`.

    Lines are counted one at a time outward from the cursor, never the whole file. Each window is then
    shrunk to the nearest syntax boundary, coarsest first, so the prefix start stays put while the user
    types. `tree` is the document's current parse when the caller keeps one (the LSP re-parses
    incrementally); otherwise the text is parsed here when the language has a grammar. `language` may
    be an alias or an LSP languageId; an unknown language keeps its name and gets line-based windows.

    `keep` is the previous request's (prefix start, suffix end) mapped into this text, for a caller that
    keeps a KV cache: an edge that still fits stays exactly where it was, and one the budget forces to
    move jumps as far as _MAX_WASTE allows, so the prompt's early tokens change rarely, not every line.
    A kept edge may take up to `stretch` tokens beyond the budget (cached tokens cost no evaluation) before
    it has to move.
    """
    if not 0 <= offset <= len(text):
        raise UserError(f"cursor offset {offset} is outside the document (0..{len(text)})")
    if budget < 1:
        raise UserError(f"context budget must be at least 1 token, got {budget}")
    if not 0.0 <= prefix_share <= 1.0:
        raise UserError(f"prefix share must be between 0 and 1, got {prefix_share}")
    name = (normalize_language(language) or language) if language else None
    row = text.count("\n", 0, offset)
    line_start = text.rfind("\n", 0, offset) + 1
    newline = text.find("\n", offset)
    line_end = len(text) if newline < 0 else newline + 1
    if line_end - line_start > MAX_PARSED_LINE_CHARS:  # minified code: its syntax tree is millions of nodes deep
        tree = None
    elif tree is None and name is not None and parse_end(text, offset) <= MAX_PARSED_CHARS:
        parser = get_parser(name)
        if parser is not None:
            tree = parser.parse(text[: parse_end(text, offset)].encode("utf-8"))
    root = tree.root_node if tree is not None else None
    spec = spec_for(name)
    situation = _situation(text, offset, row, line_start, line_end, spec, root)
    # A line longer than any budget could hold (minified code) is cut to what could fit before it is tokenized:
    # tokenizing a 5 MB line to learn that it does not fit cost tens of seconds.
    reach = budget * MAX_CHARS_PER_TOKEN
    line_prefix = text[max(line_start, offset - reach) : offset]
    line_suffix = text[offset : min(line_end, offset + reach)]

    prefix_budget = int(budget * prefix_share)
    suffix_budget = budget - prefix_budget
    prefix_cost = count_tokens(line_prefix) if line_prefix else 0
    suffix_cost = count_tokens(line_suffix) if line_suffix else 0
    trimmed = line_start < offset - reach or line_end > offset + reach
    if trimmed or prefix_cost + suffix_cost > budget:  # one enormous cursor line (minified code): cut inside it
        prefix, suffix = _cut_cursor_line(
            line_prefix, line_suffix, prefix_cost, suffix_cost, prefix_budget, budget, count_tokens
        )
        return Context(prefix, suffix, name, situation, offset - len(prefix), offset + len(suffix))

    prefix_avail = prefix_budget - prefix_cost
    suffix_avail = suffix_budget - suffix_cost
    if prefix_avail < 0:
        prefix_avail, suffix_avail = 0, suffix_avail + prefix_avail
    elif suffix_avail < 0:
        prefix_avail, suffix_avail = prefix_avail + suffix_avail, 0
    above = _Side(text, line_start, -1, count_tokens)
    below = _Side(text, line_end, 1, count_tokens)
    above.fill(prefix_avail)
    if above.at_edge:
        suffix_avail += prefix_avail - above.used
    below.fill(suffix_avail)
    if below.at_edge and not above.at_edge:
        prefix_avail += suffix_avail - below.used
        above.fill(prefix_avail)

    def line_at(r: int) -> str:
        if r <= row:
            return text[above.edges[row - r] : above.edges[row - r - 1] if r < row else line_end]
        return text[below.edges[r - row - 1] : below.edges[r - row]]

    containers, strings = (spec.containers, spec.strings) if spec else (frozenset(), frozenset())
    keep_start, keep_end = keep
    start, end = 0, len(text)
    if not above.at_edge:
        extra = _extra_cost(text, keep_start, (0, line_start), above.edges[-1], stretch, count_tokens, prefix=True)
        if extra is not None:
            start, stretch = keep_start, stretch - extra
        else:
            far = keep_start is not None
            start = above.edges[row - _snap_start(root, containers, strings, line_at, above, row, prefix_avail, far)]
    if not below.at_edge:
        extra = _extra_cost(text, keep_end, (line_end, len(text)), below.edges[-1], stretch, count_tokens, prefix=False)
        if extra is not None:
            end = keep_end
        else:
            far = keep_end is not None
            end = below.edges[_snap_end(root, containers, strings, line_at, below, row, suffix_avail, far) - row]
    return Context(text[start:offset], text[offset:end], name, situation, start, end)


# What post-processing judges a suggestion against, at least: a window cut to fit the time budget can be a few
# lines, and the syntax check then sees half a definition (under load 5 of 63 suggestions shown added errors to
# the file, and 9 harmless ones were dropped). Lines of the document, so the cost stays bounded.
JUDGED_BEFORE = 8192
JUDGED_AFTER = 4096


def widened(ctx: Context, text: str, offset: int) -> Context:
    """`ctx` with its windows extended to at least JUDGED_BEFORE/JUDGED_AFTER characters of `text` around the
    cursor, within twice that; `ctx` itself when they already reach that far. The edges are lines that start a
    statement where the language says which do (see `_statement_line`): a window starting inside a docstring
    turns its prose into code, and the syntax check then rejects every line of prose a suggestion adds to it.
    Else they are line boundaries (minified code has none: its lines are cut there, or every token would
    re-parse megabytes)."""
    start = 0
    before = offset - JUDGED_BEFORE
    if before > 0:
        farthest = max(0, offset - 2 * JUDGED_BEFORE)
        start = _statement_line(text, farthest, before, ctx.language, last=True)
        if start is None:
            newline = text.rfind("\n", farthest, before)
            start = newline + 1 if newline >= 0 else farthest
    after = offset + JUDGED_AFTER
    end = len(text)
    if after < len(text):
        farthest = min(len(text), offset + 2 * JUDGED_AFTER)
        end = _statement_line(text, after, farthest, ctx.language, last=False)
        if end is None:
            newline = text.find("\n", after, farthest)
            end = newline + 1 if newline >= 0 else farthest
    start, end = min(start, ctx.prefix_start), max(end, ctx.suffix_end)
    if (start, end) == (ctx.prefix_start, ctx.suffix_end):
        return ctx
    return Context(text[start:offset], text[offset:end], ctx.language, ctx.situation, start, end)


def _statement_line(text: str, lo: int, hi: int, language: str | None, *, last: bool) -> int | None:
    """Where the last (else the first) line in `text[lo:hi]` starting a top-level statement begins, else one
    starting a nested definition (`LanguageSpec.top_level`, `nested_start`); None if none does."""
    for pattern in (statement_start(language), statement_start(language, nested=True)):
        if pattern is None:
            continue
        found = None
        for match in pattern.finditer(text, lo, hi):
            found = match.start()
            if not last:
                break
        if found is not None:
            return found
    return None


def _extra_cost(
    text: str, edge: int | None, span: tuple[int, int], fitted: int, stretch: int, count_tokens: Callable[[str], int],
    *, prefix: bool,
) -> int | None:
    """Tokens a kept window `edge` (a prefix start, or with `prefix` False a suffix end) takes beyond the budget's
    own edge `fitted`: the lines between them when `edge` lies outside it. None when `edge` is no line boundary
    within `span` or costs more than `stretch`."""
    lo, hi = span
    if edge is None or not lo <= edge <= hi or not (edge in (0, len(text)) or text[edge - 1] == "\n"):
        return None
    extra, pos, stop = 0, *((edge, fitted) if prefix else (fitted, edge))
    while pos < stop:  # line by line, as the budget was counted
        newline = text.find("\n", pos, stop)
        nxt = stop if newline < 0 else newline + 1
        extra += count_tokens(text[pos:nxt])
        if extra > stretch:
            return None
        pos = nxt
    return extra




class _Side:
    """Whole lines on one side of the cursor line, counted outward until a token budget is spent.

    `edges[k]` is the window edge after taking k lines: a line start going up, the offset just past a
    line's newline going down. A line that did not fit is remembered, so a second fill() with a bigger
    budget does not count it again.
    """

    def __init__(self, text: str, edge: int, step: int, count_tokens: Callable[[str], int]) -> None:
        self.text = text
        self.step = step
        self.count_tokens = count_tokens
        self.edges = [edge]
        self.cumulative = [0]  # cumulative[k]: tokens in the first k lines taken
        self.at_edge = False  # every line up to the start/end of the file is taken
        self._pending: tuple[int, str, int | None] | None = None  # the next line: (far edge, text, cost)

    @property
    def taken(self) -> int:
        return len(self.edges) - 1

    @property
    def used(self) -> int:
        return self.cumulative[-1]

    def fill(self, avail: int) -> None:
        """Take whole lines while their total stays within `avail` tokens. A line too long to fit by its length
        alone is not tokenized (its cost stays unknown until a budget could hold it)."""
        while True:
            if self._pending is None:
                line = self._next_line()
                if line is None:
                    self.at_edge = True
                    return
                self._pending = (line[0], line[1], None)
            new, line_text, cost = self._pending
            if cost is None:
                if len(line_text) > (avail - self.used + 1) * MAX_CHARS_PER_TOKEN:
                    return
                cost = self.count_tokens(line_text)
                self._pending = (new, line_text, cost)
            if self.used + cost > avail:
                return
            self._pending = None
            self.edges.append(new)
            self.cumulative.append(self.used + cost)

    def _next_line(self) -> tuple[int, str] | None:
        """The next line outward as (its far edge, its text); None at the start or end of the file."""
        text, edge = self.text, self.edges[-1]
        if self.step < 0:
            if edge == 0:
                return None
            start = text.rfind("\n", 0, edge - 1) + 1
            return start, text[start:edge]
        if edge >= len(text):
            return None
        newline = text.find("\n", edge)
        end = len(text) if newline < 0 else newline + 1
        return end, text[edge:end]


def _snap_start(
    root: tree_sitter.Node | None,
    containers: frozenset[str],
    strings: frozenset[str],
    line_at: Callable[[int], str],
    above: _Side,
    row: int,
    avail: int,
    far: bool = False,
) -> int:
    """The row the prefix starts on: the first clean boundary at or after the budget's limit.

    Coarse boundaries (top-level definitions) are preferred as long as reaching them gives up at most
    _MAX_WASTE of the budget, because they stay put while lines are typed below them. Without a syntax
    boundary, line numbers play the same game (multiples of _SNAP_LINES are coarsest), never inside a
    multi-line string or comment. `far` picks the last of the coarsest boundaries instead (see _choose).
    """
    first_row = row - above.taken

    def waste(start_row: int) -> int:
        return above.used - above.cumulative[row - start_row]

    def depth(r: int) -> int | None:
        line = line_at(r).rstrip("\r\n")
        code = line.lstrip()
        if root is None or not code:
            return None
        return _start_depth(root, containers, r, len(line[: len(line) - len(code)].encode("utf-8")))

    def line_depth(r: int) -> int | None:
        return None if root is not None and _inside_token(root, r, strings) else _line_level(r)

    rows = range(first_row, row + 1)
    floor = 1 if root is None else _depth_around(root, containers, (first_row, 0), (row, 0))
    chosen = _choose(rows, waste, depth, avail, far, floor)
    if chosen is None:
        chosen = _choose(rows, waste, line_depth, avail, far)
    return first_row if chosen is None else chosen


def _snap_end(
    root: tree_sitter.Node | None,
    containers: frozenset[str],
    strings: frozenset[str],
    line_at: Callable[[int], str],
    below: _Side,
    row: int,
    avail: int,
    far: bool = False,
) -> int:
    """The row the suffix ends on (inclusive): the last clean boundary within the budget, as above."""
    last_row = row + below.taken

    def waste(end_row: int) -> int:
        return below.used - below.cumulative[end_row - row]

    def depth(r: int) -> int | None:
        code = line_at(r).rstrip()
        if root is None or not code:
            return None
        end = len(code.encode("utf-8"))
        return _end_depth(root, containers, r, end - len(code[-1].encode("utf-8")), end)

    def line_depth(r: int) -> int | None:
        return None if root is not None and _inside_token(root, r + 1, strings) else _line_level(r + 1)

    rows = range(last_row, row - 1, -1)
    floor = 1 if root is None else _depth_around(root, containers, (row + 1, 0), (last_row + 1, 0))
    chosen = _choose(rows, waste, depth, avail, far, floor)
    if chosen is None:
        chosen = _choose(rows, waste, line_depth, avail, far)
    return last_row if chosen is None else chosen


def _choose(
    rows: range,
    waste: Callable[[int], int],
    depth: Callable[[int], int | None],
    avail: int,
    far: bool = False,
    floor: int = 1,
) -> int | None:
    """Pick a boundary row among `rows`, which run from the budget's limit toward the cursor.

    The coarsest boundary (fewest enclosing containers) that wastes at most _MAX_WASTE of `avail` wins;
    failing that the nearest boundary within _MAX_WASTE_FINE; None when there is none. With `far` (an
    edge the budget forces to move, which then stays put while it fits) the distance moved decides how
    long it stays: the coarsest boundary within _MAX_WASTE that lies at least half as far as the
    farthest one there, the farthest of those. `floor` is the least depth any of `rows` can have: scans
    stop once nothing further can change the choice (each depth costs a few tree walks).
    """
    if far:
        within = sum(1 for _ in itertools.takewhile(lambda r: waste(r) <= avail * _MAX_WASTE, rows))
        chosen = _choose_far(rows[:within], waste, depth, floor)
        if chosen is not None:
            return chosen
        rows = rows[within:]  # no boundary at all within _MAX_WASTE: the nearest one beyond, as below
    found: list[int] = []  # rows each shallower than all found before them: the only useful choices
    shallowest: int | None = None
    for r in rows:
        if waste(r) > avail * _MAX_WASTE_FINE:
            break
        d = depth(r)
        if d is not None and (shallowest is None or d < shallowest):
            found.append(r)
            shallowest = d
            if d <= floor:
                break
    for r in reversed(found):
        if waste(r) <= avail * _MAX_WASTE:
            return r
    return found[0] if found else None


def _choose_far(rows: range, waste: Callable[[int], int], depth: Callable[[int], int | None], floor: int) -> int | None:
    """The far choice among `rows` (all within _MAX_WASTE), scanned from the farthest back toward the budget's
    limit: the first boundary sets how far is far enough, and one at `floor` depth is the best there can be."""
    best: tuple[int, int] | None = None  # (depth, row)
    reach: float | None = None
    for r in reversed(rows):
        d = depth(r)
        if d is None:
            continue
        if reach is None:
            reach = waste(r) / 2
        elif waste(r) < reach:
            break
        if best is None or d < best[0]:
            best = (d, r)
            if d <= floor:
                break
    return None if best is None else best[1]


def _line_level(n: int) -> int:
    """Coarseness of line number `n` as a window edge without syntax: 1 for multiples of _SNAP_LINES,
    then halving steps down to 5 for odd numbers."""
    step, level = _SNAP_LINES, 1
    while n % step:
        step //= 2
        level += 1
    return level


def _start_depth(root: tree_sitter.Node, containers: frozenset[str], r: int, column: int) -> int | None:
    """Container depth of a window starting at row `r` (first character at byte `column`).

    None when the start would cut a node: the innermost node straddling the line start must be a
    container (block, class body, module...) and the line must begin with one of its named children.
    """
    first = (r, column)
    container = _straddling(root, (r, 0))
    chain = _path(root.descendant_for_point_range(first, first), container)
    # A Python body begins with its first statement: step into containers that start right here.
    while len(chain) > 1 and chain[-1].type in containers and chain[-1].start_point == first:
        container = chain.pop()
    if not chain or not chain[-1].is_named or chain[-1].start_point != first:
        return None
    return _container_depth(container, containers)


def _end_depth(root: tree_sitter.Node, containers: frozenset[str], r: int, column: int, end: int) -> int | None:
    """Container depth of a window ending after row `r` (last character at bytes `column`..`end`)."""
    boundary = (r + 1, 0)
    container = _straddling(root, boundary)
    chain = _path(root.descendant_for_point_range((r, column), (r, end)), container)
    while len(chain) > 1 and chain[-1].type in containers and chain[-1].end_point in ((r, end), boundary):
        container = chain.pop()
    if not chain:
        return None
    last = chain[-1]
    if last.is_named:
        return _container_depth(container, containers) if last.end_point in ((r, end), boundary) else None
    # A `;` or `,` of the container itself closing the statement before it on this line.
    before = last.prev_sibling
    if before is None or not before.is_named or before.end_point.row != r or last.text not in (b";", b","):
        return None
    return _container_depth(container, containers)


def _straddling(
    root: tree_sitter.Node, point: tuple[int, int], last: tuple[int, int] | None = None
) -> tree_sitter.Node:
    """The innermost node that starts before `point` and ends after it, or after `last` (the root if none does)."""
    last = point if last is None else last
    node = root.descendant_for_point_range(point, last)
    while not node.start_point < point <= last < node.end_point:
        parent = node.parent
        if parent is None:
            break
        node = parent
    return node


def _path(node: tree_sitter.Node | None, top: tree_sitter.Node) -> list[tree_sitter.Node]:
    """`node` and its ancestors below `top`, innermost first; empty if `node` is `top` or not under it."""
    chain = []
    while node is not None and node != top:
        chain.append(node)
        node = node.parent
    return chain if node is not None else []


def _container_depth(node: tree_sitter.Node, containers: frozenset[str]) -> int | None:
    """How many containers (the root included) enclose and include `node`; None if it is no container."""
    if node.type not in containers and node.parent is not None:
        return None
    return _containers_over(node, containers)


def _depth_around(root: tree_sitter.Node, containers: frozenset[str], first: tuple[int, int],
                  last: tuple[int, int]) -> int:
    """The least depth a window edge at a line start from `first` to `last` can have: the containers over the
    innermost node straddling them all enclose each of those edges."""
    return _containers_over(_straddling(root, first, last), containers)


def _containers_over(node: tree_sitter.Node, containers: frozenset[str]) -> int:
    """How many containers (the root included) enclose and include `node`."""
    depth = 0
    current: tree_sitter.Node | None = node
    while current is not None:
        parent = current.parent
        if current.type in containers or parent is None:
            depth += 1
        current = parent
    return depth


def _inside_token(root: tree_sitter.Node, r: int, strings: frozenset[str]) -> bool:
    """True when the start of row `r` lies inside a string or comment that began on an earlier row."""
    point = (r, 0)
    node: tree_sitter.Node | None = root.descendant_for_point_range(point, point)
    while node is not None:
        if (node.type in strings or node.type.endswith("comment")) and node.start_point < point:
            return True
        node = node.parent
    return False


def _cut_cursor_line(
    line_prefix: str,
    line_suffix: str,
    prefix_cost: int,
    suffix_cost: int,
    prefix_budget: int,
    budget: int,
    count_tokens: Callable[[str], int],
) -> tuple[str, str]:
    """Share the budget inside a cursor line too long for it, cutting at word/space boundaries."""
    if suffix_cost <= budget - prefix_budget:
        prefix_limit, suffix_limit = budget - suffix_cost, suffix_cost
    elif prefix_cost <= prefix_budget:
        prefix_limit, suffix_limit = prefix_cost, budget - prefix_cost
    else:
        prefix_limit, suffix_limit = prefix_budget, budget - prefix_budget
    if prefix_cost > prefix_limit:
        cuts = _cut_points(line_prefix)
        lo, hi = 0, len(cuts) - 1  # find the earliest cut whose tail fits; the last cut keeps nothing
        while lo < hi:
            mid = (lo + hi) // 2
            if count_tokens(line_prefix[cuts[mid] :]) <= prefix_limit:
                hi = mid
            else:
                lo = mid + 1
        line_prefix = line_prefix[cuts[lo] :]
    if suffix_cost > suffix_limit:
        cuts = _cut_points(line_suffix)
        lo, hi = 0, len(cuts) - 1  # find the latest cut whose head fits; the first cut keeps nothing
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if count_tokens(line_suffix[: cuts[mid]]) <= suffix_limit:
                lo = mid
            else:
                hi = mid - 1
        line_suffix = line_suffix[: cuts[lo]]
    return line_prefix, line_suffix


def _cut_points(s: str) -> list[int]:
    """Offsets in `s` that split neither a word nor a run of spaces, with both ends included."""
    points = {0, len(s)}
    points.update(m.start() for m in re.finditer(r"\b|(?<=\s)(?=\S)|(?<=\S)(?=\s)", s))
    return sorted(points)


def _situation(
    text: str,
    offset: int,
    row: int,
    line_start: int,
    line_end: int,
    spec: LanguageSpec | None,
    root: tree_sitter.Node | None,
) -> Situation:
    # Of a very long line only the part near the cursor is read: enough to tell strings and openers apart.
    line_prefix = text[max(line_start, offset - MAX_PARSED_LINE_CHARS) : offset]
    line_suffix = text[offset : min(line_end, offset + MAX_PARSED_LINE_CHARS)].removesuffix("\n").removesuffix("\r")
    line = line_prefix + line_suffix
    markers = (spec.line_comment,) if spec else ("//", "#")

    in_string = in_comment = False
    node_type = None
    if root is not None:
        point = (row, len(line_prefix.encode("utf-8")))
        before = (row, point[1] - len(line_prefix[-1:].encode("utf-8")))
        broken = root.descendant_for_point_range((row, 0), point).has_error
        for node in (root.descendant_for_point_range(before, point), root.descendant_for_point_range(point, point)):
            string, comment, error = _classify(node, point, spec)
            in_string, in_comment, broken = in_string or string, in_comment or comment, broken or error
        if broken and not (in_string or in_comment):  # the tree cannot be trusted here: read the line
            comment_start, quote = _lex(line_prefix, markers)
            in_string, in_comment = quote is not None, comment_start is not None
        typing_word = bool(line_prefix[-1:].strip())
        node_type = root.named_descendant_for_point_range(before if typing_word else point, point).type
    else:
        comment_start, quote = _lex(line_prefix, markers)
        in_string, in_comment = quote is not None, comment_start is not None

    if line_prefix.strip():
        after_opener = _is_opener(_code_part(line_prefix, markers), spec)
        opener_line = None
    else:
        opener_line = _nearby_line(text, line_start, -1)
        after_opener = opener_line is not None and _is_opener(_code_part(opener_line, markers), spec)
    empty_block = False
    if after_opener and opener_line is not None and not line.strip() and not (in_string or in_comment):
        following = _nearby_line(text, line_end, 1)
        empty_block = (
            following is None
            or _indent_width(following) <= _indent_width(opener_line)
            or following.lstrip().startswith((")", "]", "}"))
        )
    multiline = (
        not (in_string or in_comment)
        and _CLOSING_ONLY.fullmatch(line_suffix) is not None
        and (empty_block or after_opener or not line_prefix.strip())
    )
    return Situation(
        line_prefix=line_prefix,
        line_suffix=line_suffix,
        indent=line[: len(line) - len(line.lstrip(" \t"))],
        mid_line=bool(line_suffix.strip()),
        in_string=in_string,
        in_comment=in_comment,
        after_opener=after_opener,
        empty_block=empty_block,
        node_type=node_type,
        multiline=multiline,
    )


def _classify(
    node: tree_sitter.Node | None, point: tuple[int, int], spec: LanguageSpec | None
) -> tuple[bool, bool, bool]:
    """(in string, in comment, inside a syntax error) for `point`, from `node` and its ancestors."""
    strings, interpolations = (spec.strings, spec.interpolations) if spec else (frozenset(), frozenset())
    string = comment = error = False
    looking = True
    while node is not None:
        kind = node.type
        error = error or node.is_error or node.is_missing
        if looking:
            if kind in interpolations:
                looking = False
            elif kind in strings and node.start_point < point < node.end_point:
                string, looking = True, False
            elif kind.endswith("comment") and node.start_point < point and (
                point < node.end_point or not _BLOCK_COMMENT_END.search(node.text or b"")
            ):
                comment, looking = True, False
        node = node.parent
    return string, comment, error


def _lex(line: str, markers: tuple[str, ...]) -> tuple[int | None, str | None]:
    """Where a line comment starts in `line` (None if none) and the quote left open at its end.

    A lexical reading for text without a trustworthy tree: markers inside quotes do not count.
    """
    quote = None
    i = 0
    while i < len(line):
        ch = line[i]
        if quote is not None:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = None
        elif line.startswith(markers, i):
            return i, None
        elif ch in "\"'`":
            quote = ch
        i += 1
    return None, quote


def _code_part(line: str, markers: tuple[str, ...]) -> str:
    """`line` without its trailing line comment."""
    comment_start, _ = _lex(line, markers)
    return line if comment_start is None else line[:comment_start]


def _is_opener(code: str, spec: LanguageSpec | None) -> bool:
    code = code.rstrip()
    return code.endswith(("(", "[", "{")) or (
        spec is not None and spec.block_opener is not None and re.search(spec.block_opener, code) is not None
    )


def _nearby_line(text: str, edge: int, step: int) -> str | None:
    """The nearest non-blank line above the line starting at `edge` (step -1), or from `edge` on (+1)."""
    while True:
        if step < 0:
            if edge == 0:
                return None
            start = text.rfind("\n", 0, edge - 1) + 1
            line, edge = text[start:edge], start
        else:
            if edge >= len(text):
                return None
            newline = text.find("\n", edge)
            end = len(text) if newline < 0 else newline + 1
            line, edge = text[edge:end], end
        if line.strip():
            return line.rstrip("\r\n")


def _indent_width(line: str) -> int:
    expanded = line.expandtabs(4)
    return len(expanded) - len(expanded.lstrip())
