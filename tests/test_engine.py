"""The engine: stops at <EOT> (even when llama.cpp does not flag it), max tokens, time budget, cancel, KV reuse."""

from __future__ import annotations

import textwrap
import threading
from pathlib import Path

import llama_cpp
import pytest

from codecomplete.core.interrupt import Interrupt
from codecomplete.core.prompt import build_prompt
from codecomplete.engines.llama import EVAL_BLOCK_TOKENS, LlamaEngine

pytestmark = pytest.mark.slow  # loads a model or starts processes


@pytest.fixture(scope="module")
def engine_2023(codellama_2023_gguf: Path) -> LlamaEngine:
    eng = LlamaEngine(codellama_2023_gguf, n_ctx=1024)
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def smol(embedded_model: Path) -> LlamaEngine:
    eng = LlamaEngine(embedded_model, n_ctx=2048)
    yield eng
    eng.close()


def test_2023_layout_eot_is_not_eog_for_llama_cpp(engine_2023: LlamaEngine) -> None:
    """The trap this engine exists to avoid: llama.cpp alone would generate straight past <EOT>."""
    vocab = engine_2023._vocab
    assert llama_cpp.llama_vocab_eot(vocab) == -1
    assert not llama_cpp.llama_vocab_is_eog(vocab, 32010)
    assert engine_2023.info.eot == 32010 and 32010 in engine_2023.info.stop_ids


@pytest.mark.parametrize("layout", ["2023", "tidy"])
def test_generation_stops_at_eot_without_eot_text(layout, codellama_2023_gguf, codellama_tidy_gguf) -> None:
    eng = LlamaEngine(codellama_2023_gguf if layout == "2023" else codellama_tidy_gguf, n_ctx=512)
    try:
        prompt = build_prompt(eng, "def f(x):\n   ", "\n", "psm")
        gen = eng.generate(prompt.token_ids, max_tokens=50)
        assert gen.text == " return x"
        assert gen.stop_reason == "eot"
        assert "<EOT>" not in gen.text and 32010 not in gen.token_ids
    finally:
        eng.close()


def test_max_tokens_stop(engine_2023: LlamaEngine) -> None:
    prompt = build_prompt(engine_2023, "def f(x):\n   ", "\n", "psm")
    gen = engine_2023.generate(prompt.token_ids, max_tokens=1)
    assert (gen.text, gen.stop_reason, len(gen.token_ids)) == (" return", "max_tokens", 1)


def test_time_budget_stop(engine_2023: LlamaEngine) -> None:
    # Not ending in <MID>: the bigram model continues with "a" forever, so only the budget stops it.
    gen = engine_2023.generate([1, 100], max_tokens=900, time_budget_s=0.05)
    assert gen.stop_reason == "time_budget"
    assert 0 < len(gen.token_ids) < 900
    assert set(gen.text) == {"a"}


def test_cancel_flag_stops_generation(engine_2023: LlamaEngine) -> None:
    cancel = threading.Event()
    seen: list[int] = []

    def stop(text: str) -> str | None:
        seen.append(len(text))
        if len(text) == 5:
            cancel.set()  # as the LSP layer does from another thread on $/cancelRequest
        return None

    gen = engine_2023.generate([1, 100], max_tokens=900, cancel=cancel, stop=stop)
    assert gen.stop_reason == "cancelled"
    assert len(gen.token_ids) == 5  # stopped right at the next check, within one token


def test_stop_callback_reason_is_reported(engine_2023: LlamaEngine) -> None:
    gen = engine_2023.generate([1, 100], max_tokens=900, stop=lambda t: "block_end" if len(t) >= 3 else None)
    assert (gen.text, gen.stop_reason) == ("aaa", "block_end")


def test_prompt_too_long_is_refused(engine_2023: LlamaEngine) -> None:
    with pytest.raises(ValueError, match="does not fit"):
        engine_2023.generate([1] * 2000, max_tokens=4)


# Long enough that the common prefixes span several evaluation blocks.
HEADER = "".join(f"def helper_{i}(value):\n    return value * {i} + {i % 7}\n\n\n" for i in range(12))
EDITS = [
    # (before, after): typing appends, deleting, inserting earlier, moving a block
    ("def add(a, b):\n    return", "def add(a, b):\n    return a"),
    ("def add(a, b):\n    return a +", "def add(a, b):\n    return a"),
    ("import os\n\ndef add(a, b):\n    ", "import os\nimport sys\n\ndef add(a, b):\n    "),
    ("x = 1\ny = 2\ndef f():\n    ", "y = 2\nx = 1\ndef f():\n    "),
]


def expected_reuse(first: list[int], second: list[int]) -> int:
    """Whole evaluation blocks of the first prompt that the second shares; the last token's block is redone."""
    common = next((i for i, (a, b) in enumerate(zip(first, second)) if a != b), min(len(first), len(second)))
    reused = min(common, len(first) // EVAL_BLOCK_TOKENS * EVAL_BLOCK_TOKENS) // EVAL_BLOCK_TOKENS * EVAL_BLOCK_TOKENS
    return (reused - 1) // EVAL_BLOCK_TOKENS * EVAL_BLOCK_TOKENS if reused == len(second) else reused


@pytest.mark.parametrize("before,after", EDITS)
def test_kv_reuse_never_changes_output(smol: LlamaEngine, before: str, after: str) -> None:
    """Reuse must be invisible: the same prompt gives the same tokens with a warm or a cold cache."""
    first = smol.tokenize(HEADER + before)
    second = smol.tokenize(HEADER + after)
    smol.reset_cache()
    smol.generate(first, max_tokens=12)
    warm = smol.generate(second, max_tokens=12)
    smol.reset_cache()
    cold = smol.generate(second, max_tokens=12)
    assert warm.token_ids == cold.token_ids
    assert cold.n_reused == 0 and cold.n_evaluated == len(second)
    assert warm.n_reused == expected_reuse(first, second) > len(second) // 2
    assert warm.n_evaluated == len(second) - warm.n_reused


def test_typing_with_reuse_gives_exactly_the_fresh_answers(smol: LlamaEngine) -> None:
    """A typing session, including typing exactly what the model generated (cached as single-token steps):
    every longer answer equals a cold evaluation's. Reusing from the edit's exact token instead of whole
    blocks changed about 4 in 10 such answers (llama.cpp's numbers depend on the batch split)."""
    source = Path(textwrap.__file__).read_text(encoding="utf-8")
    start = source.index("def wrap(")
    text = source[start - 2500 : start]
    smol.reset_cache()
    for step in range(10):
        ids = smol.tokenize(text)
        warm = smol.generate(ids, max_tokens=40)
        smol.reset_cache()
        cold = smol.generate(ids, max_tokens=40)
        assert warm.token_ids == cold.token_ids, f"step {step}"
        smol.generate(ids, max_tokens=40)  # the cache as the warm request left it
        if step % 3 == 2:
            text += warm.text[: max(1, len(warm.text) // 2)]  # the user types what was suggested
        else:
            text += source[start + step * 7 : start + step * 7 + 7]


def test_repeated_prompt_reuses_all_but_the_last_block(smol: LlamaEngine) -> None:
    ids = smol.tokenize(HEADER + "def fib(n):\n    ")
    smol.generate(ids, max_tokens=4)
    again = smol.generate(ids, max_tokens=4)
    assert again.n_reused == (len(ids) - 1) // EVAL_BLOCK_TOKENS * EVAL_BLOCK_TOKENS
    assert 1 <= again.n_evaluated <= EVAL_BLOCK_TOKENS


def test_an_avoided_first_token_gives_the_models_next_choice(smol: LlamaEngine) -> None:
    """Asking again with the first choice ruled out costs one prompt block, and the answer is the model's best
    among the rest: its first token differs, and ruling that one out too differs again, deterministically."""
    ids = smol.tokenize(HEADER + "def fib(n):\n    ")
    best = smol.generate(ids, max_tokens=6)
    second = smol.generate(ids, max_tokens=6, avoid=frozenset({best.token_ids[0]}))
    assert second.token_ids[0] != best.token_ids[0] and second.n_evaluated <= EVAL_BLOCK_TOKENS
    third = smol.generate(ids, max_tokens=6, avoid=frozenset(best.token_ids[:1] + second.token_ids[:1]))
    assert third.token_ids[0] not in (best.token_ids[0], second.token_ids[0])
    assert smol.generate(ids, max_tokens=6, avoid=frozenset({best.token_ids[0]})).token_ids == second.token_ids
    assert smol.generate(ids, max_tokens=6).token_ids == best.token_ids  # nothing avoided: greedy as before


def test_avoiding_applies_to_the_answer_after_the_healed_bytes(smol: LlamaEngine) -> None:
    from codecomplete.core.prompt import build_prompt, with_token_healing

    healed = with_token_healing(smol, build_prompt(smol, "def add(a, b):\n    ret", "", "prefix"))
    best = smol.generate(healed.token_ids, max_tokens=6, heal=healed.heal)
    assert len(smol.piece(best.token_ids[0])) > len(healed.heal)  # "return": the heal and the answer's start
    other = smol.generate(healed.token_ids, max_tokens=6, heal=healed.heal, avoid=frozenset(best.token_ids[:1]))
    assert other.token_ids[0] != best.token_ids[0] and other.text != best.text
    assert smol.piece(other.token_ids[0]).startswith(healed.heal[:1])  # the healed bytes are still re-typed


def test_token_healing_retypes_the_removed_bytes(smol: LlamaEngine) -> None:
    """Without the trailing indentation token the model must first produce those bytes again; they are not
    part of the returned text, and the continuation starts where the prefix ended."""
    from codecomplete.core.prompt import build_prompt, with_token_healing

    prompt = build_prompt(smol, "def add(a, b):\n    ret", "", "prefix")
    healed = with_token_healing(smol, prompt)
    assert healed.token_ids == prompt.token_ids[:-1]
    assert healed.heal == smol.piece(prompt.token_ids[-1]) and healed.heal
    gen = smol.generate(healed.token_ids, max_tokens=6, heal=healed.heal)
    first = smol.piece(gen.token_ids[0])
    assert first.startswith(healed.heal) or healed.heal.startswith(first)
    assert gen.text.startswith("urn")  # "ret" + "urn": the word completed, nothing re-emitted


def test_healing_candidates_agree_with_the_bytes(smol: LlamaEngine) -> None:
    need = b"\n    "
    cands = smol.healing_candidates(need)
    assert cands.size > 0
    for t in cands.tolist():
        p = smol.piece(t)
        assert p.startswith(need) or need.startswith(p)


def test_kv_shift_reuses_moved_chunks(smol: LlamaEngine) -> None:
    """A window whose start moved down: with shifting, the rest of the old window is moved into place."""
    lines = Path(__file__).read_text().splitlines(True)
    before, after = "".join(lines[0:60]), "".join(lines[10:65])
    first, second = smol.tokenize(before), smol.tokenize(after)
    smol.reset_cache()
    smol.generate(first, max_tokens=1)
    plain = smol.generate(second, max_tokens=1)  # default: exact prefix reuse only
    assert plain.n_shifted == 0
    smol.reset_cache()
    smol.generate(first, max_tokens=1)
    moved = smol.generate(second, max_tokens=1, shift=True)
    assert moved.n_shifted >= 64 and moved.n_reused == moved.n_shifted
    assert moved.n_evaluated == len(second) - moved.n_reused < len(second) // 2


def test_cancel_is_seen_during_a_long_prompt_evaluation(smol: LlamaEngine) -> None:
    """Prompt evaluation runs in chunks with a cancel check between them, not as one uninterruptible call."""
    ids = smol.tokenize(Path(__file__).read_text())[:1500]
    smol.reset_cache()
    cancel = threading.Event()
    timer = threading.Timer(0.05, cancel.set)
    timer.start()
    gen = smol.generate(ids, max_tokens=4, cancel=cancel)
    timer.join()
    assert gen.stop_reason == "cancelled"
    assert 0 < gen.n_evaluated < len(ids) and gen.n_evaluated % EVAL_BLOCK_TOKENS == 0


class _SetBeforeThePythonChecksLook(Interrupt):
    """Set from the start, but the engine's first check (before the first block) reads it unset: only llama.cpp,
    which reads the flag's byte between graph nodes, can stop that block."""

    def __init__(self) -> None:
        super().__init__()
        self.set()
        self.asked = 0

    def is_set(self) -> bool:
        self.asked += 1
        return self.asked > 1


def test_an_interrupt_stops_llama_cpp_inside_an_evaluation(smol: LlamaEngine) -> None:
    """A prefetch's block is not waited for: llama.cpp aborts it midway, drops it from the KV cache, and the next
    request's output is exactly a fresh evaluation's."""
    ids = smol.tokenize(Path(__file__).read_text())[:200]
    smol.reset_cache()
    fresh = smol.generate(ids, max_tokens=8)
    smol.reset_cache()
    smol.generate(ids[:64], max_tokens=1)
    gen = smol.generate(ids, max_tokens=8, cancel=_SetBeforeThePythonChecksLook())
    assert gen.stop_reason == "cancelled"
    assert gen.n_evaluated == 0 and smol.cached_tokens == gen.n_reused == 64  # the next block never landed
    again = smol.generate(ids, max_tokens=8)
    assert again.n_reused == 64 and (again.text, again.token_ids) == (fresh.text, fresh.token_ids)
