"""Typing-through and the LRU: answers served without the model, and only when still right."""

from __future__ import annotations

from codecomplete.core.cache import SHOWN_DOCUMENTS, SuggestionCache

DOC = "file:///a.py"
BEFORE = "def area(r):\n    return "
AFTER = "\n\nprint(area(2))\n"


def test_typing_through_serves_the_rest_of_the_suggestion() -> None:
    cache = SuggestionCache()
    cache.store(DOC, BEFORE + AFTER, len(BEFORE), "3.14 * r * r")
    typed = BEFORE + "3.1"
    assert cache.lookup(DOC, typed + AFTER, len(typed)) == ("4 * r * r", "typing_through")


def test_typing_something_else_misses() -> None:
    cache = SuggestionCache()
    cache.store(DOC, BEFORE + AFTER, len(BEFORE), "3.14 * r * r")
    typed = BEFORE + "math"
    assert cache.lookup(DOC, typed + AFTER, len(typed)) is None


def test_typing_the_whole_suggestion_leaves_nothing_to_serve() -> None:
    cache = SuggestionCache()
    cache.store(DOC, BEFORE + AFTER, len(BEFORE), "r")
    typed = BEFORE + "r"
    assert cache.lookup(DOC, typed + AFTER, len(typed)) is None


def test_text_after_the_cursor_must_be_unchanged() -> None:
    cache = SuggestionCache()
    cache.store(DOC, BEFORE + AFTER, len(BEFORE), "3.14 * r * r")
    typed = BEFORE + "3"
    assert cache.lookup(DOC, typed + AFTER + "x = 1\n", len(typed)) is None


def test_backspace_and_retype_hits_the_lru() -> None:
    cache = SuggestionCache()
    cache.store(DOC, BEFORE + AFTER, len(BEFORE), "3.14 * r * r")
    cache.store(DOC, BEFORE + "x" + AFTER, len(BEFORE) + 1, "")  # typed x: the model had nothing
    assert cache.lookup(DOC, BEFORE + AFTER, len(BEFORE)) == ("3.14 * r * r", "lru")


def test_salt_separates_settings_and_lru_is_bounded() -> None:
    cache = SuggestionCache(size=2)
    cache.store(DOC, "a", 1, "x", salt="model-1")
    assert cache.lookup("other", "a", 1, salt="model-2") is None
    cache.store(DOC, "b", 1, "y")
    cache.store(DOC, "c", 1, "z")
    assert cache.lookup("other", "a", 1, salt="model-1") is None  # evicted
    assert cache.lookup("other", "c", 1) == ("z", "lru")


def test_forget_drops_the_shown_suggestion() -> None:
    cache = SuggestionCache()
    cache.store(DOC, BEFORE + AFTER, len(BEFORE), "3.14 * r * r")
    cache.forget(DOC)
    typed = BEFORE + "3"
    assert cache.lookup(DOC, typed + AFTER, len(typed)) is None


def test_a_prefetched_answer_waits_unseen_until_its_spot_is_reached() -> None:
    """Stored ahead for where accepting the shown suggestion leaves the cursor: the shown one stays typeable
    through; reaching the spot serves the prefetched answer, which then is the one typing goes through."""
    cache = SuggestionCache()
    cache.store(DOC, BEFORE + AFTER, len(BEFORE), "3.14 * r * r")
    accepted = BEFORE + "3.14 * r * r"
    cache.store(DOC, accepted + AFTER, len(accepted), "  # square units", how="prefetch")
    assert cache.holds(accepted + AFTER, len(accepted)) and not cache.holds(BEFORE + AFTER, len(BEFORE) + 1)
    typed = BEFORE + "3.1"
    assert cache.lookup(DOC, typed + AFTER, len(typed)) == ("4 * r * r", "typing_through")
    assert cache.lookup(DOC, accepted + AFTER, len(accepted)) == ("  # square units", "prefetch")
    further = accepted + "  #"
    assert cache.lookup(DOC, further + AFTER, len(further)) == (" square units", "typing_through")


def test_what_is_kept_per_document_is_bounded() -> None:
    """An editor that opens thousands of files and never closes them, each a megabyte: the cache holds a
    bounded window of a bounded number of them, and typing-through still works in a big file."""
    cache = SuggestionCache()
    big = "x = 1\n" * 200_000
    for i in range(SHOWN_DOCUMENTS * 3):
        cache.store(f"file:///{i}.py", big + BEFORE + AFTER, len(big) + len(BEFORE), "3.14 * r * r")
    kept = cache._shown.values()
    assert len(kept) == SHOWN_DOCUMENTS
    assert all(len(s.before_tail) + len(s.after_head) <= 8000 for s in kept)
    last = f"file:///{SHOWN_DOCUMENTS * 3 - 1}.py"
    typed = big + BEFORE + "3.1"
    assert cache.lookup(last, typed + AFTER, len(typed)) == ("4 * r * r", "typing_through")
    assert cache.lookup("file:///0.py", typed + AFTER, len(typed)) is None  # the oldest went
    edited = "y" + big[1:] + BEFORE + "3.1"  # an edit before the window is not seen; one inside it is
    assert cache.lookup(last, edited + AFTER, len(edited)) == ("4 * r * r", "typing_through")
    inside = big + BEFORE.replace("area", "size") + "3.1"
    assert cache.lookup(last, inside + AFTER, len(inside)) is None
