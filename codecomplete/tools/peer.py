"""The benchmark's peer as an editor the typist can drive: llama.cpp's `llama-server`, asked the way llama.vim asks.

Why: `codecomplete bench --peer llama-server` replays the same typing against what a user would pick instead of
us, and compares. ``tools.llama_server`` builds and starts the server and replays llama.vim's requests for one
event; this module puts those events on the typist's timeline:

- llama.vim has one request in flight at a time and defers a new one until it is answered, so the client's calls
  run one after another in one worker thread; a pause whose request cannot start (a speculative request still
  running) waits, and that wait is part of its latency;
- the suggestion is on screen when llama.vim renders it: at once for a hit in its own cache, else when the answer
  to the request for this spot arrives. The speculative request llama.vim sends right after showing it runs on
  in the background while the person types (it may delay the next pause's request);
- a suggestion that arrives after typing resumed is not shown (llama.vim drops an answer for a cursor that has
  moved); the request itself is never cancelled;
- opening a file is BufEnter: a chunk around the cursor is queued for the ring, and one tick of llama.vim's ring
  timer (every second while the person looks at the file) sends it to the server with ``n_predict: 0``.

Requests are made at the typist's pauses, as for our server (llama.vim asks on every cursor move in insert mode;
asking only at pauses spares the peer work it would do in an editor).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from codecomplete.tools.llama_server import InfillResult, LlamaServer, LlamaVimClient
from codecomplete.tools.machine import CpuMeter
from codecomplete.tools.replay import Document, Replay, RequestRecord, RunResult, replay_files

Shown = Callable[[InfillResult | BaseException | None], None]


class TimedLlamaVimClient(LlamaVimClient):
    """llama.vim's client that says when a suggestion reaches the screen (the call then goes on with the rest of
    the event: the speculative request) and keeps every server answer with the time it arrived."""

    def __init__(self, url: str, **options: Any) -> None:
        super().__init__(url, **options)
        self.on_shown: Shown | None = None
        self.posted: list[tuple[float, InfillResult]] = []

    def shown(self, result: InfillResult | BaseException | None) -> None:
        """Tell the waiting pause once (the first call wins)."""
        callback, self.on_shown = self.on_shown, None
        if callback is not None:
            callback(result)

    def _try_hint(self, lines: Sequence[str], pos_x: int, pos_y: int) -> InfillResult | None:
        hint = super()._try_hint(lines, pos_x, pos_y)
        if hint is not None and hint.can_accept:  # llama.vim renders it at once
            self.shown(hint)
        return hint

    def _post(self, request: dict[str, Any], **kwargs: Any) -> InfillResult:
        result = super()._post(request, **kwargs)
        self.posted.append((time.perf_counter(), result))
        if kwargs.get("kind") in ("fim", "manual"):  # the answer for this spot: rendered unless a hint is up
            self.shown(result)
        return result


def entry(result: InfillResult) -> dict[str, Any]:
    """One answer in the shape of our server's records (tokens, timings_ms), so one summary reads both."""
    if result.from_cache:
        return {"source": "cache", "kind": "cache", "latency_ms": result.wall_ms, "stop_reason": "cache",
                "tokens": {"prompt": 0, "evaluated": 0, "reused": 0, "shifted": 0, "generated": 0},
                "timings_ms": {"prompt_eval": 0.0, "generate": 0.0, "total": result.wall_ms}}
    generated = result.predicted_n or 0
    evaluated = result.prompt_n or 0
    # tokens_cached is what the slot holds after the answer: the whole prompt and the generated tokens
    prompt = max(evaluated, result.tokens_cached - generated) if result.tokens_cached is not None else evaluated
    n_predict = (result.request or {}).get("n_predict")
    return {
        "source": "model",
        "kind": result.kind,
        "latency_ms": result.wall_ms,
        "tokens": {"prompt": prompt, "evaluated": evaluated, "reused": prompt - evaluated, "shifted": 0,
                   "generated": generated},
        "timings_ms": {"prompt_eval": result.prompt_ms or 0.0, "generate": result.predicted_ms or 0.0,
                       "total": result.wall_ms},
        "stop_reason": "max_tokens" if n_predict and generated >= n_predict else "stopped",
    }


class PeerEditor:
    """llama.vim in front of a running `LlamaServer`, as an ``Editor`` for the typist (see the module doc)."""

    encoding = "utf-16"  # positions are taken as characters (the replays are ASCII)

    def __init__(self, server: LlamaServer, label: str, **client_options: Any) -> None:
        self.server = server
        self.label = label
        self.client = TimedLlamaVimClient(server.url, **client_options)
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="llama-vim")
        self._busy: asyncio.Future[Any] | None = None  # the event in flight (its background requests included)
        self._accounted = 0

    @property
    def pids(self) -> list[int]:
        return [self.server.pid]

    async def _idle(self, until: float | None = None) -> bool:
        """Wait for the request in flight (llama.vim defers the next one); False if it outlasts ``until``."""
        busy = self._busy
        if busy is None or busy.done():
            return True
        timeout = None if until is None else max(0.0, until - time.perf_counter())
        done, _ = await asyncio.wait({busy}, timeout=timeout)
        if done and busy.exception() is not None:  # e.g. the server died: the run's error, not a request's
            raise busy.exception()  # type: ignore[misc]
        return bool(done)

    async def open(self, doc: Document) -> float:
        """BufEnter with the cursor where typing starts, then one ring update, as while the person reads the file."""
        started = time.perf_counter()
        await self._idle()
        text, row = doc.text, doc.cursor.line
        self._busy = asyncio.get_running_loop().run_in_executor(self._pool, self._enter, text, row, doc.replay.name)
        await self._busy
        return (time.perf_counter() - started) * 1000

    def _enter(self, text: str, row: int, filename: str) -> None:
        self.client.on_buffer_enter(text, row, filename)
        self.client.ring_update()

    def insert(self, doc: Document, text: str) -> None:
        """llama.vim reads the buffer at each request: nothing to send per key."""

    async def sync(self) -> None:
        await self._idle()

    async def request(self, doc: Document, keyed_at: float, patience_s: float, trigger: str) -> RequestRecord:
        record = RequestRecord(doc.replay.name, doc.cursor.line, doc.cursor.column, trigger, "cancelled", None,
                               language=doc.replay.language)
        deadline = keyed_at + patience_s
        if not await self._idle(deadline):  # still busy when typing resumed: this spot is never asked
            record.reason, record.detail = "late", "busy"
            return record
        loop = asyncio.get_running_loop()
        shown: asyncio.Future[tuple[float, Any]] = loop.create_future()

        def tell(result: InfillResult | BaseException | None) -> None:
            now = time.perf_counter()
            loop.call_soon_threadsafe(lambda: shown.done() or shown.set_result((now, result)))

        self.client.on_shown = tell
        text, cursor = doc.text, (doc.cursor.line, doc.cursor.column)
        self._busy = loop.run_in_executor(self._pool, self._event, text, cursor, doc.replay.name)
        done, _ = await asyncio.wait({shown}, timeout=max(0.0, deadline - time.perf_counter()))
        if not done:
            record.reason = "late"
            return record
        at, result = shown.result()
        if isinstance(result, BaseException):
            await self._idle()  # the worker re-raises it: a dead server is the run's error, not a request's
            raise result
        record.latency_ms = (at - keyed_at) * 1000
        if result is None:
            record.outcome, record.reason, record.detail = "empty", "skipped", "not sent"
            return record
        record.server = entry(result)
        if result.can_accept and result.text.strip():
            record.outcome, record.suggestion = "answered", result.text
        else:
            record.outcome = "empty"
            record.reason = "discarded" if result.content.strip() else "empty"
        return record

    def _event(self, text: str, cursor: tuple[int, int], filename: str) -> None:
        try:
            result = self.client.complete(text, cursor, filename)
        except BaseException as exc:
            self.client.shown(exc)
            raise
        self.client.shown(result)  # nothing rendered earlier: what complete returned (None: nothing sent)

    async def account(self, record: RequestRecord, result: RunResult) -> None:
        """Every answer the server sent since the last account (this request's and the background ones)."""
        posted = self.client.posted
        fresh, self._accounted = posted[self._accounted:], len(posted)
        result.server_entries += [entry(r) for _, r in fresh if r.kind != "ring"]

    async def finish(self, result: RunResult) -> None:
        """Wait for the last background request and account for it."""
        await self._idle()
        await self.account(RequestRecord("", 0, 0, "", "", None), result)
        self._pool.shutdown(wait=True)


async def run_peer(model_path: str, label: str, replays: Sequence[Replay], realtime: bool, *, n_ctx: int,
                   threads: int, client_options: dict[str, Any], progress: Callable[[str], None]) -> RunResult:
    """A fresh llama-server (no KV cache from an earlier run), the typing replay against it with llama.vim's
    protocol (``client_options``: its settings, e.g. ``n_predict`` and ``exact_n_predict``), then stopped."""
    server = LlamaServer(model_path, n_ctx=n_ctx, threads=threads, progress=progress)
    await asyncio.to_thread(server.start)
    try:
        result = RunResult(label=label, settings={"server": "llama-server", "args": server.args[1:],
                                                  "client": "llama.vim", **client_options})
        editor = PeerEditor(server, label, **client_options)
        meter = CpuMeter()
        meter.start(editor.pids)
        started = time.perf_counter()
        await replay_files(editor, replays, realtime, result)
        await editor.finish(result)
        result.wall_s = round(time.perf_counter() - started, 1)
        result.cpu_s = meter.stop()
        result.peak_rss_mb = _peak_rss_mb(server.pid)
        result.status = {"ring_updates": sum(1 for _, r in editor.client.posted if r.kind == "ring"),
                         "requests_sent": len(editor.client.posted)}
    finally:
        await asyncio.to_thread(server.stop)
    return result


def _peak_rss_mb(pid: int) -> float | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return None
