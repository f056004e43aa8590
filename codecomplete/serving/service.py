"""The long-lived completion service: one engine, loaded on demand, its answer caches and what it has done lately.

The scheduler (``serving.scheduler``) is the only caller of the model-touching methods, always from its model
thread; ``lookup`` is cheap and runs on the event loop, so a typed-through suggestion never waits for the model.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from codecomplete.config import MODEL_KEYS, Settings
from codecomplete.core.cache import SuggestionCache
from codecomplete.core.pipeline import Completer, Completion, cached_completion
from codecomplete.engines import load_engine
from codecomplete.errors import UserError
from codecomplete.serving.request import Request
from codecomplete.types import Engine, StopReason

# A prefetch starts this long after the answer it follows, so a typist's next key cancels it before it
# touches the model (keys come every ~125 ms at 8 chars/s; a suggestion is read for longer).
PREFETCH_DELAY_S = 0.15


def _salt(s: Settings) -> str:
    """What besides the text decides a suggestion: cached answers are only valid for the same settings."""
    return repr((s.model, s.format, s.max_tokens, s.max_tokens_single_line, s.token_budget, s.postprocess,
                 s.postprocess_skip))


@dataclass
class Stats:
    requests: int = 0
    completions: int = 0
    prompt_tokens: int = 0
    reused_tokens: int = 0
    generated_tokens: int = 0
    prefetched: int = 0  # next suggestions computed ahead and kept


class CompletionService:
    """Owns the engine. ``load()``, ``generate()``, ``prefetch()`` and ``warm()`` block on llama.cpp: the
    scheduler runs them in its model thread."""

    def __init__(self, settings: Settings, engine_factory: Callable[[Settings], Engine] = load_engine) -> None:
        self.settings = settings
        self._engine_factory = engine_factory  # tests give a scripted engine
        self.state = "idle"  # idle → loading → ready | error
        self.error: str | None = None
        self.completer: Completer | None = None
        self.latencies_ms: deque[float] = deque(maxlen=100)
        self.stats = Stats()
        self.last: Completion | None = None  # shown on request: what the model saw and why it stopped
        self.recent: deque[dict[str, Any]] = deque(maxlen=32)  # per-request costs, for status and benchmarks
        self.cache = SuggestionCache()
        self._load_lock = threading.Lock()

    @property
    def ready(self) -> bool:
        return self.state == "ready" and self.completer is not None

    def load(self) -> None:
        """Load (or reload) the configured model; failures become ``state == "error"`` with a one-line reason."""
        with self._load_lock:
            self.unload()
            self.state, self.error = "loading", None
            try:
                engine = self._engine_factory(self.settings)
            except UserError as exc:
                self.state, self.error = "error", str(exc)
                return
            except Exception as exc:  # llama.cpp failures we did not foresee still must not kill the server
                self.state, self.error = "error", f"cannot load model: {exc}"
                return
            completer = Completer(engine, self.settings)
            try:
                completer.calibrate()
            except Exception as exc:  # a model that cannot generate is no model
                engine.close()
                self.state, self.error = "error", f"cannot use model: {exc}"
                return
            self.completer = completer
            self.state = "ready"

    def unload(self) -> None:
        """Free the model (idle unload, shutdown, before a reload)."""
        completer, self.completer = self.completer, None
        self.state = "idle"
        if completer is not None:
            completer.engine.close()

    def update_settings(self, settings: Settings) -> bool:
        """Switch settings; returns True when the model must be reloaded for them."""
        reload = any(getattr(settings, k) != getattr(self.settings, k) for k in MODEL_KEYS)
        self.settings = settings
        if self.completer is not None:
            self.completer.settings = settings
        return reload or self.state == "error"

    def lookup(self, request: Request) -> Completion | None:
        """The cached answer for this spot, if any."""
        s = request.settings or self.settings
        if not self.ready or not s.reuse:
            return None
        assert self.completer is not None
        start = time.perf_counter()
        hit = self.cache.lookup(request.key, request.text, request.offset, _salt(s))
        if hit is None:
            return None
        suggestion, how = hit
        result = cached_completion(suggestion, StopReason(how), model=self.completer.engine.info.path,
                                   family=self.completer.family, language=request.language,
                                   elapsed_ms=(time.perf_counter() - start) * 1000)
        self._record(result, start)
        return result

    def generate(self, request: Request, cancel: threading.Event | None = None) -> Completion:
        """A suggestion from the model (callers looked in the caches first)."""
        if not self.ready:
            raise UserError(f"model not ready ({self.state})")
        assert self.completer is not None
        s = request.settings or self.settings
        start = time.perf_counter()
        result = self._complete(request, s, cancel)
        if not result.stop_reason.cut_short and s.reuse:  # cut short: not the answer
            self.cache.store(request.key, request.text, request.offset, result.suggestion, _salt(s))
        self._record(result, start)
        return result

    def prefetch(self, request: Request, suggestion: str, cancel: threading.Event) -> None:
        """Tab-Tab-Tab: the suggestion for where accepting ``suggestion`` leaves the cursor, computed while the
        user reads it and kept in the LRU, so accepting answers at once. The scheduler runs it as background
        work that any request stops."""
        s = request.settings or self.settings
        if not (self.ready and s.prefetch and s.reuse and suggestion):
            return
        ahead = request.accepted(suggestion)
        if self.cache.holds(ahead.text, ahead.offset, _salt(s)):
            return
        if cancel.wait(PREFETCH_DELAY_S):  # still typing: leave the model alone
            return
        result = self._complete(ahead, s, cancel)
        if not result.stop_reason.cut_short:
            self.cache.store(ahead.key, ahead.text, ahead.offset, result.suggestion, _salt(s), how="prefetch")
            self.stats.prefetched += 1

    def _complete(self, request: Request, s: Settings, cancel: threading.Event | None) -> Completion:
        assert self.completer is not None
        return self.completer.complete(
            request.text, request.offset, request.language, settings=s, cancel=cancel, tree=request.tree,
            path=request.path, index=request.index, snippets=request.snippets, key=request.key,
            placed=request.placed,
        )

    def prefill(self, request: Request, cancel: threading.Event) -> None:
        """After an answer made with windows cut for time: evaluate the full window into the KV cache while the user
        reads it (background work that any request stops, keeping what it evaluated)."""
        if not self.ready:
            return
        assert self.completer is not None
        s = request.settings or self.settings
        self.completer.prefill(request.text, request.offset, request.language, settings=s, cancel=cancel,
                               tree=request.tree, path=request.path, index=request.index, snippets=request.snippets,
                               key=request.key, placed=request.placed)

    def warm(self, text: str, cancel: threading.Event | None = None) -> None:
        """Read a just-opened document ahead (see ``Completer.warm``)."""
        if self.ready:
            assert self.completer is not None
            self.completer.warm(text, cancel)

    def forget(self, key: str) -> None:
        """A document was closed: what is on screen for it is gone."""
        self.cache.forget(key)

    def _record(self, result: Completion, start: float) -> None:
        self.stats.requests += 1
        self.last = result
        if result.stop_reason == StopReason.CANCELLED:
            return
        latency = (time.perf_counter() - start) * 1000
        self.latencies_ms.append(latency)
        self.stats.completions += 1
        self.stats.prompt_tokens += result.tokens["prompt"]
        self.stats.reused_tokens += result.tokens["reused"]
        self.stats.generated_tokens += result.tokens["generated"]
        self.recent.append({"latency_ms": latency, "source": result.source, "tokens": result.tokens,
                            "timings_ms": result.timings_ms, "stop_reason": result.stop_reason.value,
                            "next_choices": result.next_choices})

    def summary(self) -> dict[str, Any]:
        """What a status notification says of the model."""
        completer = self.completer
        info = completer.engine.info if completer else None
        return {
            "state": self.state,
            "error": self.error,
            "model": info.path if info else self.settings.model,
            "model_name": info.name if info else None,
            "family": completer.family if completer else None,
        }

    def status(self) -> dict[str, Any]:
        completer = self.completer
        info = completer.engine.info if completer else None
        return {
            **self.summary(),
            "backend": info.backend if info else None,
            "n_gpu_layers": info.n_gpu_layers if info else None,
            "latencies_ms": [round(x, 1) for x in self.latencies_ms],
            "last_latency_ms": round(self.latencies_ms[-1], 1) if self.latencies_ms else None,
            "stats": vars(self.stats).copy(),
            "chunks": completer.chunks if completer else {"fresh": 0, "reused": 0},
            "rates": completer.rates.to_json() if completer else None,
            "recent": list(self.recent),
        }
