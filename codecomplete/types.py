"""The seams between the layers, as types: what an engine offers, what a generation returns, why it stopped.

No llama.cpp import here (a contract in ``.importlinter`` keeps it so): the completion core, remote engines and the
editor's thin language server use these types without loading a model runtime.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol


class StopReason(str, Enum):
    """Why a suggestion ended; the value is what JSON, the status and benchmarks show."""

    # the engine
    EOT = "eot"  # the model's end-of-infill token
    EOS = "eos"  # end of sequence, or another end-of-generation token
    MAX_TOKENS = "max_tokens"
    TIME_BUDGET = "time_budget"
    CANCELLED = "cancelled"
    EMPTY_PROMPT = "empty_prompt"  # nothing before or around the cursor to complete from: no suggestion
    # post-processing (see core.postprocess) ended the text
    SINGLE_LINE = "single_line"  # one line where the situation asks for one
    BLOCK_END = "block_end"  # the block the cursor is in ends (dedent, or a closer the suffix has)
    SUFFIX_OVERLAP = "suffix_overlap"  # what follows is already in the suffix
    REPETITION = "repetition"
    SYNTAX = "syntax"  # cut where inserting more would add syntax errors around the cursor
    LINE_DUE = "line_due"  # mid-line, where pauses are short: the lines complete when an answer was due
    # answered without the model
    TYPING_THROUGH = "typing_through"
    LRU = "lru"
    PREFETCH = "prefetch"
    # the scheduler ended the request
    SUPERSEDED = "superseded"
    PREEMPTED = "preempted"
    DISCONNECTED = "disconnected"
    PAUSED = "paused"
    SHUTDOWN = "shutdown"

    def __str__(self) -> str:
        return self.value

    def __hash__(self) -> int:  # equal to its value, so hash like it: a dict keyed by strings finds it
        return hash(self.value)

    __format__ = str.__format__

    @property
    def cut_short(self) -> bool:
        """Stopped before the model finished for reasons of time (not an answer to cache or trust whole)."""
        return self in (StopReason.TIME_BUDGET, StopReason.CANCELLED)

    @property
    def from_cache(self) -> bool:
        return self in (StopReason.TYPING_THROUGH, StopReason.LRU, StopReason.PREFETCH)


@dataclass(frozen=True)
class ModelInfo:
    """What the prompt builder and the status views need to know about a loaded model."""

    path: str
    name: str
    architecture: str
    description: str
    vocab_type: str
    n_vocab: int
    n_ctx_train: int
    n_ctx: int
    bos: int | None
    eos: int | None
    add_bos: bool
    eot: int | None
    fim_pre: int | None
    fim_suf: int | None
    fim_mid: int | None
    fim_pad: int | None
    fim_rep: int | None
    fim_sep: int | None
    stop_ids: frozenset[int]
    n_gpu_layers: int
    backend: str


@dataclass
class Generation:
    """One generation: the text, why it stopped, and what it cost."""

    text: str
    token_ids: list[int]
    stop_reason: StopReason
    n_prompt: int
    n_reused: int  # prompt tokens served from the KV cache (common prefix plus shifted chunks)
    n_evaluated: int  # prompt tokens evaluated for this request
    n_shifted: int = 0  # of n_reused: tokens of chunks that moved and were shifted into place
    timings_ms: dict[str, float] = field(default_factory=dict)


class Tokenizer(Protocol):
    """What the prompt builder needs of a vocabulary."""

    info: ModelInfo

    def tokenize(self, text: str, *, add_bos: bool = False, special: bool = False) -> list[int]: ...

    def token_text(self, token: int) -> str: ...

    def detokenize(self, tokens: Sequence[int]) -> str: ...

    def piece(self, token: int) -> bytes: ...


# What the engine asks after every token: a stop reason for the text so far, or None to go on.
StopCheck = Callable[[str], "StopReason | None"]


class Engine(Tokenizer, Protocol):
    """A model that turns prompt token ids into text: llama.cpp in this process, or a server that runs one.

    ``tokenizes_locally``: tokenizing is a cheap call into a local vocabulary, so remembering chunk tokenizations
    pays off (a remote engine's counts are estimates or round trips).
    ``avoids_tokens``: ``generate`` honours ``avoid``, so a rejected answer can be followed by the model's next
    choice (the servers' APIs offer no such constraint).
    """

    tokenizes_locally: bool
    avoids_tokens: bool

    def count_tokens(self, text: str) -> int: ...

    def find_token(self, text: str) -> int | None: ...

    def generate(
        self,
        prompt: Sequence[int],
        *,
        max_tokens: int,
        time_budget_s: float | None = None,
        cancel: threading.Event | None = None,
        stop: StopCheck | None = None,
        reuse: bool = True,
        shift: bool = False,
        heal: bytes = b"",
        key: str | None = None,
        avoid: frozenset[int] = frozenset(),
    ) -> Generation:
        """``key`` names the document, whose KV cache the engine may keep apart from other documents'.
        ``avoid``: token ids not to choose first (after any healed bytes); only where ``avoids_tokens``."""
        ...

    def reusable(self, prompt: Sequence[int], key: str | None = None) -> int:
        """How many of ``prompt``'s leading tokens document ``key``'s KV cache would serve without evaluation."""
        ...

    def adopt(self, source: str, target: str) -> None:
        """What is cached under ``source`` is ``target``'s from now on (``target``'s own cache is dropped)."""
        ...

    def close(self) -> None: ...
