"""The long-lived completion service: one model, loaded in the background, and what it has done lately.

The language server (and later the shared daemon) hold one of these; it owns the model's life cycle and its
statistics, so protocol layers only translate requests.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from codecomplete.config import Settings
from codecomplete.core.cache import SuggestionCache
from codecomplete.core.pipeline import Completer, Completion, load_engine
from codecomplete.errors import UserError

# Settings that need the model reloaded when they change.
MODEL_KEYS = ("model", "n_ctx", "n_threads", "n_gpu_layers", "main_gpu", "flash_attn", "backend", "remote_url", "fim")


# A prefetch starts this long after the answer it follows, so a typist's next key cancels it before it
# touches the model (keys come every ~125 ms at 8 chars/s; a suggestion is read for longer).
PREFETCH_DELAY_S = 0.15


def _salt(s: Settings) -> str:
    """What besides the text decides a suggestion: cached answers are only valid for the same settings."""
    return repr((s.model, s.format, s.max_tokens, s.max_tokens_single_line, s.token_budget, s.postprocess))


@dataclass
class Stats:
    requests: int = 0
    completions: int = 0
    prompt_tokens: int = 0
    reused_tokens: int = 0
    generated_tokens: int = 0
    prefetched: int = 0  # next suggestions computed ahead and kept


class CompletionService:
    """Owns the engine. ``load()`` runs in a worker thread; ``complete()`` too (it blocks on llama.cpp)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
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

    def load(self, on_progress: Callable[[str], None] | None = None) -> None:
        """Load (or reload) the configured model; failures become ``state == "error"`` with a one-line reason."""
        with self._load_lock:
            self.state = "loading"
            self.error = None
            if on_progress:
                on_progress(f"loading {self.settings.model or 'the embedded model'}")
            old, self.completer = self.completer, None
            if old is not None:
                old.engine.close()
            try:
                engine = load_engine(self.settings)
            except UserError as exc:
                self.state, self.error = "error", str(exc)
                return
            except Exception as exc:  # llama.cpp failures we did not foresee still must not kill the server
                self.state, self.error = "error", f"cannot load model: {exc}"
                return
            self.completer = Completer(engine, self.settings)
            self.state = "ready"

    def update_settings(self, settings: Settings) -> bool:
        """Switch settings; returns True when the model must be reloaded for them."""
        reload = any(getattr(settings, k) != getattr(self.settings, k) for k in MODEL_KEYS)
        self.settings = settings
        if self.completer is not None:
            self.completer.settings = settings
        return reload or self.state == "error"

    def lookup(
        self, text: str, offset: int, language: str | None, *, doc: str = "", settings: Settings | None = None
    ) -> Completion | None:
        """The cached answer for this spot, if any. Cheap: callers use it before queueing for the model, so a
        typed-through suggestion never waits behind a generation."""
        s = settings or self.settings
        if not self.ready or not s.reuse:
            return None
        start = time.perf_counter()
        hit = self.cache.lookup(doc, text, offset, _salt(s))
        if hit is None:
            return None
        result = self._cached(hit[0], hit[1], language, start)
        self._record(result, start)
        return result

    def complete(
        self,
        text: str,
        offset: int,
        language: str | None,
        *,
        doc: str = "",
        settings: Settings | None = None,
        **kwargs: Any,
    ) -> Completion:
        """A suggestion from the caches when the text allows, else from the model (see ``Completer``)."""
        if not self.ready:
            raise UserError(f"model not ready ({self.state})")
        assert self.completer is not None
        s = settings or self.settings
        cached = self.lookup(text, offset, language, doc=doc, settings=s)
        if cached is not None:
            return cached
        start = time.perf_counter()
        result = self.completer.complete(text, offset, language, settings=s, doc=doc, **kwargs)
        if result.stop_reason not in ("cancelled", "time_budget") and s.reuse:  # cut short: not the answer
            self.cache.store(doc, text, offset, result.completion, _salt(s))
        self._record(result, start)
        return result

    def prefetch(
        self,
        text: str,
        offset: int,
        suggestion: str,
        language: str | None,
        *,
        doc: str = "",
        settings: Settings | None = None,
        **kwargs: Any,
    ) -> Completion | None:
        """Tab-Tab-Tab: the suggestion for where accepting ``suggestion`` at ``offset`` leaves the cursor,
        computed while the user reads it and kept in the LRU, so accepting answers at once. Callers run it
        only when the model is idle and cancel it (``cancel``) for any real request."""
        s = settings or self.settings
        if not (self.ready and s.prefetch and s.reuse and suggestion):
            return None
        assert self.completer is not None
        accepted, at = text[:offset] + suggestion + text[offset:], offset + len(suggestion)
        if self.cache.holds(accepted, at, _salt(s)):
            return None
        cancel = kwargs.get("cancel")
        if cancel is not None and cancel.wait(PREFETCH_DELAY_S):  # still typing: leave the model alone
            return None
        result = self.completer.complete(accepted, at, language, settings=s, doc=doc, **kwargs)
        if result.stop_reason not in ("cancelled", "time_budget"):
            self.cache.store(doc, accepted, at, result.completion, _salt(s), how="prefetch")
            self.stats.prefetched += 1
        return result

    def warm(self, text: str, cancel: threading.Event | None = None) -> None:
        """Read a just-opened document ahead (see ``Completer.warm``); callers run it when the model is idle."""
        if self.ready:
            assert self.completer is not None
            self.completer.warm(text, cancel)

    def _record(self, result: Completion, start: float) -> None:
        self.stats.requests += 1
        self.last = result
        if result.stop_reason == "cancelled":
            return
        latency = (time.perf_counter() - start) * 1000
        self.latencies_ms.append(latency)
        self.stats.completions += 1
        self.stats.prompt_tokens += result.tokens["prompt"]
        self.stats.reused_tokens += result.tokens["reused"]
        self.stats.generated_tokens += result.tokens["generated"]
        self.recent.append({"latency_ms": latency, "source": result.source, "tokens": result.tokens,
                            "timings_ms": result.timings_ms, "stop_reason": result.stop_reason})

    def _cached(self, suggestion: str, how: str, language: str | None, start: float) -> Completion:
        assert self.completer is not None
        elapsed = (time.perf_counter() - start) * 1000
        zero = {"prompt": 0, "generated": 0, "reused": 0, "shifted": 0, "evaluated": 0}
        return Completion(
            completion=suggestion, raw=suggestion, model=self.completer.engine.info.path, format="cached",
            family=self.completer.family, language=language, prompt="", prompt_token_ids=[], token_healing="",
            tokens=zero,
            timings_ms={"context": 0.0, "tokenize": 0.0, "prompt_eval": 0.0, "generate": 0.0, "postprocess": 0.0,
                        "total": elapsed},
            stop_reason=how, multiline="\n" in suggestion, source=how,
        )

    def status(self) -> dict[str, Any]:
        info = self.completer.engine.info if self.completer else None
        tok = self.completer.tok if self.completer else None
        return {
            "state": self.state,
            "error": self.error,
            "model": info.path if info else self.settings.model,
            "model_name": info.name if info else None,
            "family": self.completer.family if self.completer else None,
            "backend": info.backend if info else None,
            "n_gpu_layers": info.n_gpu_layers if info else None,
            "latencies_ms": [round(x, 1) for x in self.latencies_ms],
            "last_latency_ms": round(self.latencies_ms[-1], 1) if self.latencies_ms else None,
            "stats": vars(self.stats).copy(),
            # Prompt text chunks tokenized by llama.cpp vs taken from memory (see tokencache).
            "chunks": {"fresh": getattr(tok, "fresh", 0), "reused": getattr(tok, "reused", 0)},
            "recent": list(self.recent),
        }
