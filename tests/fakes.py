"""A scripted engine for pipeline, service and scheduler tests: no model, answers in microseconds, real stop rules.

``FakeEngine`` implements ``codecomplete.types.Engine`` with a character vocabulary (one id per code point, three
ids past Unicode for Code Llama-style FIM markers, so the prompt builder lays out PSM/SPM exactly) and generates a
script: a fixed text, or a function of the prompt text. It honours everything the real engine does between tokens:
the stop callback, ``cancel`` (also while "evaluating" the prompt), ``max_tokens`` and the time budget; an optional
per-token delay lets scheduler tests hold the model thread for as long as they need.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from codecomplete.types import Generation, ModelInfo, StopCheck, StopReason

MARK = 0x110000  # the first id past Unicode: <PRE>, <SUF>, <MID>, then <EOT>
PRE, SUF, MID, EOT = MARK, MARK + 1, MARK + 2, MARK + 3
_MARKER_TEXT = {PRE: "<PRE>", SUF: "<SUF>", MID: "<MID>", EOT: "<EOT>"}


@dataclass
class FakeEngine:
    """``script``: the answer, or a function from the prompt's text to the answer. ``fim``: Code Llama markers.
    ``next_choices``: the answers given instead when ``avoid`` rules out the first character of those before."""

    script: str | Callable[[str], str] = "x"
    next_choices: Sequence[str] = ()
    fim: bool = False
    token_delay_s: float = 0.0  # wall time per generated token
    prompt_delay_s: float = 0.0  # wall time per evaluated prompt token
    n_ctx: int = 4096
    prompts: list[list[int]] = field(default_factory=list)  # every prompt generate() saw
    started: threading.Event = field(default_factory=threading.Event)  # set when a generation begins
    generated: int = 0  # tokens generated so far, over all generations
    closed: bool = False
    tokenizes_locally = False
    avoids_tokens = True

    def __post_init__(self) -> None:
        self.info = ModelInfo(
            path="fake.gguf", name="fake", architecture="fake", description="scripted test engine",
            vocab_type="none", n_vocab=MARK + 4, n_ctx_train=self.n_ctx, n_ctx=self.n_ctx, bos=None, eos=None,
            add_bos=False, eot=EOT if self.fim else None, fim_pre=PRE if self.fim else None,
            fim_suf=SUF if self.fim else None, fim_mid=MID if self.fim else None, fim_pad=None, fim_rep=None,
            fim_sep=None, stop_ids=frozenset({EOT}), n_gpu_layers=0, backend="CPU",
        )
        self._cached: list[int] = []

    # --- the vocabulary ------------------------------------------------------------------------------

    def tokenize(self, text: str, *, add_bos: bool = False, special: bool = False) -> list[int]:
        return [ord(c) for c in text]

    def count_tokens(self, text: str) -> int:
        return len(text)

    def token_text(self, token: int) -> str:
        return _MARKER_TEXT.get(token) or chr(token)

    def find_token(self, text: str) -> int | None:
        found = [t for t, s in _MARKER_TEXT.items() if s == text]
        return found[0] if found else (ord(text) if len(text) == 1 else None)

    def piece(self, token: int) -> bytes:
        return self.token_text(token).encode("utf-8", "surrogatepass")  # the vocabulary is every code point

    def detokenize(self, tokens: Sequence[int]) -> str:
        return "".join(map(self.token_text, tokens))

    # --- generation ----------------------------------------------------------------------------------

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
        prompt = list(prompt)
        if not prompt:
            raise ValueError("empty prompt")
        watched = not (key or "").startswith("\0")  # the pipeline's own measurements are not the tests' requests
        if watched:
            self.prompts.append(prompt)
            self.started.set()
        start = time.perf_counter()
        deadline = None if time_budget_s is None else start + time_budget_s

        def interrupted() -> StopReason | None:
            if cancel is not None and cancel.is_set():
                return StopReason.CANCELLED
            if deadline is not None and time.perf_counter() >= deadline:
                return StopReason.TIME_BUDGET
            return None

        reused = 0
        if reuse:
            while reused < min(len(prompt), len(self._cached)) and prompt[reused] == self._cached[reused]:
                reused += 1
        reason = None
        evaluated = 0
        for _ in prompt[reused:]:
            reason = interrupted()
            if reason:
                break
            time.sleep(self.prompt_delay_s)
            evaluated += 1
        self._cached = prompt[: reused + evaluated]
        prompt_done = time.perf_counter()
        answer = self.script if watched else "x"
        if callable(answer):
            answer = answer(self.detokenize(prompt))
        answer = next((a for a in (answer, *self.next_choices) if not a or ord(a[0]) not in avoid), "")
        answer = heal.decode("utf-8") + answer if heal and not answer.startswith(heal.decode("utf-8")) else answer
        healed = len(heal.decode("utf-8"))
        text, ids = "", []
        for ch in answer:
            if reason:
                break
            time.sleep(self.token_delay_s)
            ids.append(ord(ch))
            self.generated += watched
            if healed:
                healed -= 1
            else:
                text += ch
            reason = (stop(text) if stop and text else None) or interrupted()
            if reason is None and len(ids) >= max_tokens:
                reason = StopReason.MAX_TOKENS
        end = time.perf_counter()
        return Generation(
            text=text, token_ids=ids, stop_reason=reason or StopReason.EOT, n_prompt=len(prompt), n_reused=reused,
            n_evaluated=evaluated,
            timings_ms={"prompt_eval": (prompt_done - start) * 1000, "generate": (end - prompt_done) * 1000},
        )

    def reusable(self, prompt: Sequence[int], key: str | None = None) -> int:
        n = 0
        while n < min(len(prompt), len(self._cached)) and prompt[n] == self._cached[n]:
            n += 1
        return n

    def adopt(self, source: str, target: str) -> None:
        """One cache for every key: what was prefilled is already there."""

    def close(self) -> None:
        self.closed = True
