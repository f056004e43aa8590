"""The Completer's window memory: typing past the token budget keeps the prompt's start, so the KV cache reuses it."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from fakes import FakeEngine

from codecomplete.config import Settings
from codecomplete.core.pipeline import Completer, Placement, WindowMemory
from codecomplete.engines.llama import LlamaEngine
from codecomplete.types import StopReason

SOURCE = "".join(
    f"def step_{i}(value, scale=2):\n    \"\"\"Step {i} of the pipeline.\"\"\"\n    return value * scale + {i}\n\n\n"
    for i in range(60)
)
TYPED = "".join(f"    total_{i} = step_{i}(total_{i - 1}, scale={i})\n" for i in range(1, 13))


def test_memory_finds_edges_again_after_typing_between_them() -> None:
    memory = WindowMemory()
    text = "a = 1\nb = 2\nc = 3\nd = 4\ne = 5\n"
    start, end = text.index("b"), text.index("e")
    memory.remember("doc", text, start, end)
    typed = text[: text.index("c")] + "x = 0\n" + text[text.index("c") :]
    assert memory.recall("doc", typed) == (start, end + len("x = 0\n"))
    assert memory.recall("other", typed) == (None, None)
    edited_above = "# new\n" + text  # the start's offset now points elsewhere; the end's distance holds
    assert memory.recall("doc", edited_above) == (None, end + len("# new\n"))


def test_memory_places_a_window_in_its_document() -> None:
    """The daemon gets a window of the document (``Placement``): edges are remembered in document coordinates."""
    memory = WindowMemory()
    document = "".join(f"line {i}\n" for i in range(100))
    base = document.index("line 10\n")
    window = document[base : document.index("line 90\n")]
    start, end = window.index("line 20\n"), window.index("line 80\n")
    memory.remember("doc", window, start, end, Placement(base, len(document)))
    moved_base = document.index("line 12\n")  # the next window starts lower
    moved = document[moved_base : document.index("line 92\n")]
    assert memory.recall("doc", moved, Placement(moved_base, len(document))) == (
        moved.index("line 20\n"), moved.index("line 80\n"))


@pytest.fixture(scope="module")
def completer(embedded_model: Path) -> Completer:
    engine = LlamaEngine(embedded_model, n_ctx=2048)
    yield Completer(engine, Settings(token_budget=400, max_tokens=4, max_tokens_single_line=4, time_budget_ms=600_000))
    engine.close()


def _type_lines(completer: Completer, doc: str | None) -> tuple[int, int, set[int]]:
    """Type TYPED line by line in the middle of SOURCE, asking after each line: (reused, prompt, first tokens)."""
    cursor = SOURCE.index("def step_40")
    reused = prompt = 0
    firsts = set()
    for n in range(1, TYPED.count("\n") + 1):
        typed = "".join(TYPED.splitlines(keepends=True)[:n])
        text = SOURCE[:cursor] + typed + SOURCE[cursor:]
        result = completer.complete(text, cursor + len(typed), "python", key=doc)
        reused += result.tokens["reused"]
        prompt += result.tokens["prompt"]
        firsts.add(tuple(result.prompt_token_ids[:8]))
    return reused, prompt, firsts


@pytest.mark.slow
def test_typing_past_the_budget_keeps_the_prompt_start(completer: Completer) -> None:
    """12 lines (~200 tokens) typed into a 400-token budget: without memory the start creeps down with
    every line; with it the start holds (the stretch up to n_ctx absorbs them) and nearly all is reused."""
    reused_free, prompt_free, firsts_free = _type_lines(completer, None)
    reused, prompt, firsts = _type_lines(completer, "file:///typed.py")
    assert len(firsts_free) > 3, "the budget never forced a move: the test proves nothing"
    assert len(firsts) == 1
    assert reused / prompt > 0.85 > reused_free / prompt_free



# --- with a scripted engine: the pipeline's own decisions, no model ------------------------------------------

PINNED = Settings(time_budget_ms=600_000, max_tokens=64, max_tokens_single_line=64)


class _CancelAfter(threading.Event):
    """Reads as set from the n-th look on: a cancel that lands mid-generation, deterministically."""

    def __init__(self, looks: int) -> None:
        super().__init__()
        self.looks = looks

    def is_set(self) -> bool:
        self.looks -= 1
        return self.looks < 0


def test_an_answer_cut_short_keeps_only_its_complete_lines() -> None:
    engine = FakeEngine(script="first = 1\nsecond = 2\nthird = 3")
    completer = Completer(engine, PINNED.with_overrides({"postprocess": False}))
    text = "def f():\n"
    whole = completer.complete(text, len(text), "python")
    assert whole.suggestion == "first = 1\nsecond = 2\nthird = 3" and whole.stop_reason == StopReason.EOT
    cut = completer.complete(text, len(text), "python", cancel=_CancelAfter(16))
    assert cut.stop_reason == StopReason.CANCELLED and cut.suggestion.endswith("first = 1")
    assert "\n" not in cut.suggestion.strip()


def test_a_window_cut_for_time_is_judged_against_the_file() -> None:
    """Under load a cold window is cut to a few lines; post-processing still reads the file around them. Here the
    cursor is in a string opened above the cut: closing it is right, and judged by the cut window alone the
    syntax check dropped it (the same blindness let suggestions that break the file through)."""
    text = 'NOTES = """\n' + "".join(f"value_{i} = compute({i})\n" for i in range(40))
    completer = Completer(FakeEngine(script='"""'), Settings(time_budget_ms=300, token_budget=400, max_tokens=8,
                                                             max_tokens_single_line=8))
    done = completer.complete(text, len(text), "python", key="notes.py")
    assert done.windows_cut and done.context.prefix_start > 500  # the prompt saw only the last lines
    assert done.suggestion == '"""'


BROKEN_BY = "def f(a, b):\n    total = a + b\n    "  # the cursor, then the rest of the file
AFTER = "\n\n\nprint(f(1, 2))\n"


def test_an_answer_rejected_whole_is_followed_by_the_models_next_choice() -> None:
    """The model's first answer would break the file (or repeat it): the user gets its next choice instead of
    nothing, found by ruling out the rejected first token; at most ``_NEXT_CHOICES`` times, then nothing."""
    text = BROKEN_BY + AFTER
    alone = Completer(FakeEngine(script=")"), PINNED).complete(text, len(BROKEN_BY), "python")
    assert alone.suggestion == "" and alone.next_choices == 1  # the model had nothing else to say
    engine = FakeEngine(script=")", next_choices=("print(f(1, 2))", "return total"))  # repeats the file, then right
    done = Completer(engine, PINNED).complete(text, len(BROKEN_BY), "python")
    assert done.suggestion == "return total" and done.next_choices == 2 and len(engine.prompts) == 3
    answers = 1 + len("print(f(1, 2))") + len("return total")
    assert done.tokens["generated"] == answers + 3 * len(done.token_healing)  # each re-typed the healed indent
    raw = FakeEngine(script=")", next_choices=("return total",))  # without the rules nothing is judged
    assert Completer(raw, PINNED.with_overrides({"postprocess": False})).complete(
        text, len(BROKEN_BY), "python").suggestion == ")" and len(raw.prompts) == 1


def test_a_model_stuck_on_blanks_is_asked_for_an_answer_that_starts_with_code() -> None:
    """Under load the benchmark's model wrote 34 spaces, then (told not to start with that one) other blanks: its
    next choice may not start with any blank token."""
    docstring = 'def wrap(chunks, line):\n    """wrap(chunks : [string],\n' + " " * 29
    engine = FakeEngine(script=" " * 40, next_choices=("\t" * 40, "line : [string])"))
    done = Completer(engine, PINNED).complete(docstring + '\n    """\n', len(docstring), "python")
    assert done.suggestion == "line : [string])" and done.next_choices == 1 and len(engine.prompts) == 2


def test_next_choices_stay_within_the_time_budget() -> None:
    """A slow machine: the first answer took most of the budget, so no second one is asked for."""
    engine = FakeEngine(script=")", next_choices=("return total",), token_delay_s=0.25)
    slow = Completer(engine, Settings(time_budget_ms=300, max_tokens=8, max_tokens_single_line=8))
    done = slow.complete(BROKEN_BY + AFTER, len(BROKEN_BY), "python")
    assert done.suggestion == "" and done.next_choices == 0 and len(engine.prompts) == 1


STRUCT = "\n\t\ttokens: burst,\n\t\tlast:   now,\n\t\tkey:    key,\n\t}\n\treturn b\n}\n"


def test_a_multi_line_answer_begun_mid_line_goes_out_at_a_line_end_when_due() -> None:
    """Mid-line pauses are short: past the due time a block being written is answered with its complete lines,
    not after typing resumed (the benchmark under load lost such pauses). At the start of a line it runs on."""
    engine = FakeEngine(script=STRUCT, token_delay_s=0.02)  # a line every ~0.3 s; the whole answer ~1.2 s
    mid_line = "func get(key string) *bucket {\n\tb := &bucket{"
    due = Completer(engine, PINNED).complete(mid_line, len(mid_line), "go")
    assert due.multiline and due.stop_reason == StopReason.LINE_DUE
    assert due.suggestion.startswith("\n\t\ttokens: burst,") and STRUCT.startswith(due.suggestion + "\n")
    assert due.tokens["generated"] < len(STRUCT) // 2
    at_line_start = "func get(key string) *bucket {\n\tb := &bucket{\n\t\t"
    whole = Completer(FakeEngine(script=STRUCT[3:], token_delay_s=0.02), PINNED).complete(
        at_line_start, len(at_line_start), "go")
    assert whole.stop_reason != StopReason.LINE_DUE and whole.suggestion.count("\n") >= 2


def test_a_block_the_answer_opens_mid_line_is_not_cut_when_due() -> None:
    """Its first lines alone would leave the block open (an added syntax error): the answer runs on to the
    block's end."""
    arrow = "(item) => {\n    item.close();\n    return item;\n  }"
    before, after = "function closeAll(items) {\n  const done = items.map(", ");\n  return done;\n}\n"
    done = Completer(FakeEngine(script="(" + arrow + "\n", token_delay_s=0.02), PINNED).complete(  # "(" healed
        before + after, len(before), "javascript")
    assert done.multiline and done.suggestion == arrow  # not "(item) => {\n    item.close();" at the due time


def test_fim_layouts_follow_the_model_not_the_cursor() -> None:
    """One layout per model: a layout that flipped between keystrokes re-evaluated the whole prompt each time."""
    text = "def f(x):\n    return x\n"
    prefix_only = Completer(FakeEngine(), PINNED).complete(text, 10, "python")
    assert prefix_only.format == "prefix" and "<PRE>" not in prefix_only.prompt
    fim = Completer(FakeEngine(fim=True), PINNED)
    at_boundary = fim.complete(text, 10, "python", key="a.py")  # after "\n": SPM, the suffix first
    assert at_boundary.format == "spm" and at_boundary.prompt.startswith("<PRE><SUF>    return x")
    mid_word = fim.complete(text, text.index("urn"), "python", key="a.py")  # inside a word: SPM, healed
    assert mid_word.format == "spm" and mid_word.prompt.startswith("<PRE><SUF>urn x")
    assert (mid_word.prompt + mid_word.token_healing).endswith("<MID>def f(x):\n    ret")


def test_post_processing_ends_the_generation_where_the_code_ends() -> None:
    engine = FakeEngine(script="total = a + b\n    return total\n\ndef g():\n    pass\n")
    text = "def f(a, b):\n    "
    result = Completer(engine, PINNED).complete(text, len(text), "python")
    assert result.suggestion == "total = a + b\n    return total"
    assert result.stop_reason == StopReason.BLOCK_END and result.raw.count("def g") == 0  # stopped while generating
