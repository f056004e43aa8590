"""Every answer of a typing replay scored as the user receives it.

Why: the replay retypes real files, so at every pause it knows what the person typed next. A latency figure says
nothing about whether the suggestion was worth showing; these scores do: was something shown (and if not, why
not), how many characters of it agree with what was typed next, whether its first line is the true next line, and
whether accepting it would add syntax errors to the file (harm; ``codecomplete.core.syntaxcheck.added_errors``,
tree-sitter ERROR and MISSING nodes with the insertion against without it).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

# Why a pause showed nothing, in the order a report lists them.
NOT_SHOWN = ("late", "skipped", "empty", "cut", "time_budget", "discarded", "error")
_REASON_TEXT = {
    "late": "answer came after typing resumed",
    "skipped": "not asked (the client or server declined the spot)",
    "empty": "the model produced nothing",
    "cut": "post-processing cut it all",
    "time_budget": "out of time before a complete line",
    "discarded": "the client discarded it (repeats the text around it)",
    "error": "error",
}

AddedErrors = Callable[[str, str, str, "str | None"], int]


@dataclass(frozen=True)
class Spot:
    """Where a pause happened: the document around the cursor and what the person typed next."""

    language: str
    prefix: str  # the document before the cursor
    suffix: str  # the document after the cursor, as it is (the untyped rest of the slice is not there yet)
    truth: str  # what follows the cursor once typing is done: the rest of the typed slice, then the suffix


def syntax_checker() -> AddedErrors | None:
    """``added_errors`` from the core, or None while that module is not there (harm is then reported as n/a)."""
    try:
        from codecomplete.core.syntaxcheck import added_errors
    except ImportError:
        return None
    return added_errors


def score(spot: Spot, shown: str | None, reason: str | None, added_errors: AddedErrors | None) -> dict[str, Any]:
    """One pause's score. ``shown`` is the text accepting the suggestion would insert (None or "" when nothing was
    shown, then ``reason`` says why)."""
    text = shown or ""
    if not text.strip():
        return {"shown": False, "why_not": reason or "empty", "chars": 0, "common_prefix": 0, "first_line_equal": None,
                "harm": None, "added_errors": None}
    first = text.split("\n", 1)[0].rstrip()
    errors = None if added_errors is None else added_errors(spot.prefix, text, spot.suffix, spot.language)
    return {
        "shown": True,
        "why_not": None,
        "chars": len(text),
        "common_prefix": len(os.path.commonprefix([text, spot.truth])),
        "first_line_equal": first == spot.truth.split("\n", 1)[0].rstrip(),
        "harm": None if errors is None else errors > 0,
        "added_errors": errors,
    }


def aggregate(scores: Iterable[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """Per language and in total: shown rate over pauses, harm rate over shown suggestions, why nothing was shown,
    agreement with the true text."""
    by_language: dict[str, list[dict[str, Any]]] = {}
    everything: list[dict[str, Any]] = []
    for language, s in scores:
        by_language.setdefault(language, []).append(s)
        everything.append(s)
    return {"total": _figures(everything), "by_language": {k: _figures(v) for k, v in sorted(by_language.items())}}


def _figures(scores: list[dict[str, Any]]) -> dict[str, Any]:
    pauses = len(scores)
    shown = [s for s in scores if s["shown"]]
    checked = [s for s in shown if s["harm"] is not None]
    harmful = sum(1 for s in checked if s["harm"])
    counted = Counter(s["why_not"] for s in scores if s["why_not"])
    why = {r: counted.pop(r) for r in NOT_SHOWN if r in counted} | dict(sorted(counted.items()))
    prefixes = sorted(s["common_prefix"] for s in shown)
    return {
        "pauses": pauses,
        "shown": len(shown),
        "shown_rate": _rate(len(shown), pauses),
        "not_shown": why,
        "harm_checked": len(checked),
        "harmful": harmful,
        "harm_rate": _rate(harmful, len(checked)) if checked else None,
        "first_line_equal": sum(1 for s in shown if s["first_line_equal"]),
        "first_line_equal_rate": _rate(sum(1 for s in shown if s["first_line_equal"]), len(shown)),
        "common_prefix_mean": round(sum(prefixes) / len(prefixes), 1) if prefixes else None,
        "common_prefix_median": prefixes[len(prefixes) // 2] if prefixes else None,
        "chars_mean": round(sum(s["chars"] for s in shown) / len(shown), 1) if shown else None,
    }


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def reason_text(reason: str) -> str:
    return _REASON_TEXT.get(reason, reason)
