"""Scoring an answer as the user receives it (tools.scoring); harm through a stand-in for the core's syntax check,
and through the real one on a C and a Python document."""

from __future__ import annotations

import pytest

from codecomplete.tools.scoring import NOT_SHOWN, Spot, aggregate, score, syntax_checker

SPOT = Spot(language="python", prefix="def f(x):\n    ", suffix="\n\nprint(f(2))\n",
            truth="return x + 1\n\nprint(f(2))\n")


def unbalanced(prefix: str, insertion: str, suffix: str, language: str | None) -> int:
    """Stand-in for core.syntaxcheck.added_errors: one error per unclosed parenthesis the insertion adds."""
    return max(0, insertion.count("(") - insertion.count(")"))


def test_a_shown_suggestion_is_scored_against_the_true_text() -> None:
    s = score(SPOT, "return x + 2\n", None, unbalanced)
    assert s["shown"] and s["why_not"] is None
    assert s["common_prefix"] == len("return x + ") and s["first_line_equal"] is False
    assert s["harm"] is False and s["added_errors"] == 0
    exact = score(SPOT, "return x + 1", None, unbalanced)
    assert exact["first_line_equal"] is True and exact["common_prefix"] == len("return x + 1")
    harmful = score(SPOT, "return max(x", None, unbalanced)
    assert harmful["harm"] is True and harmful["added_errors"] == 1


def test_nothing_shown_keeps_the_reason_and_is_not_scored_for_harm() -> None:
    for text in (None, "", "  \n"):
        s = score(SPOT, text, "late", unbalanced)
        assert not s["shown"] and s["why_not"] == "late" and s["harm"] is None
    assert score(SPOT, None, None, unbalanced)["why_not"] == "empty"
    assert score(SPOT, "return x", None, None)["harm"] is None  # no syntax check: harm n/a, still shown


def test_aggregate_per_language_and_in_total() -> None:
    js = Spot("javascript", "f(", ");\n", "1);\n")
    scores = [
        ("python", score(SPOT, "return x + 1", None, unbalanced)),
        ("python", score(SPOT, "return max(x", None, unbalanced)),
        ("python", score(SPOT, None, "late", unbalanced)),
        ("javascript", score(js, "1", None, unbalanced)),
        ("javascript", score(js, "", "cut", unbalanced)),
    ]
    figures = aggregate(scores)
    total = figures["total"]
    assert total["pauses"] == 5 and total["shown"] == 3 and total["shown_rate"] == 0.6
    assert total["harmful"] == 1 and total["harm_rate"] == pytest.approx(1 / 3, abs=1e-4)
    assert total["not_shown"] == {"late": 1, "cut": 1}
    assert list(total["not_shown"]) == [r for r in NOT_SHOWN if r in total["not_shown"]]
    assert figures["by_language"]["python"]["first_line_equal"] == 1
    assert figures["by_language"]["javascript"]["shown_rate"] == 0.5
    assert aggregate([])["total"]["shown_rate"] is None


def test_the_core_syntax_check_finds_harm_in_c_and_python() -> None:
    check = syntax_checker()
    if check is None:
        pytest.skip("codecomplete.core.syntaxcheck is not there yet")
    c = Spot("c", "int main(void) {\n    int x = 1;\n    ", "\n    return x;\n}\n", "x += 2;\n    return x;\n}\n")
    assert score(c, "x += 2;", None, check)["harm"] is False
    assert score(c, "x += (2;", None, check)["harm"] is True
    assert score(SPOT, "return x + 1", None, check)["harm"] is False
    assert score(SPOT, "return (x +", None, check)["harm"] is True
