"""`codecomplete serve`: one process owns the model, its KV cache and the answer caches for every editor.

It speaks HTTP with JSON (Starlette on uvicorn) on a private endpoint: a Unix socket (0600, in a 0700 runtime
dir), or loopback TCP guarded by a random token kept in a 0600 file. Requests from all editors go through one
model thread (llama.cpp state is single-threaded) in a fair order:

- per client, round robin: a client that sends many requests cannot starve another;
- per document only the newest request survives: an older one still queued is dropped, a running one stops
  within a token;
- a generation that has had its fair slice stops (keeping its complete lines) as soon as another client waits;
- a request whose HTTP client disconnects, or that ``POST /cancel`` names, stops within a token.

The model loads at start (or on first use), unloads after an idle time and reloads on demand.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import click
import filelock
import uvicorn
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from codecomplete import __version__
from codecomplete.config import Settings, load_settings
from codecomplete.core.interrupt import Interrupt
from codecomplete.errors import UserError, quietly
from codecomplete.models import resolve_model
from codecomplete.serving.client import (
    CLIENT_HEADER,
    ENDPOINT_NAME,
    SERVE_LOCK_NAME,
    SOCKET_NAME,
    Endpoint,
    new_token,
    read_endpoint,
    runtime_dir,
    write_endpoint,
)
from codecomplete.serving.net import parse_loopback
from codecomplete.serving.service import MODEL_KEYS, CompletionService

log = logging.getLogger("codecomplete.serving.app")

HISTOGRAM_MS = (50, 100, 200, 500, 1000, 2000, 5000)
CLIENT_TTL_S = 600.0  # a client not heard from for this long no longer counts as connected
_UNIX_PATH_MAX = 104  # the smallest sun_path among the platforms (macOS); Linux allows 108


class Unavailable(UserError):
    """The daemon cannot serve the request now (paused, model failed to load, shutting down): HTTP 503."""


# --- scheduling ------------------------------------------------------------------------------------------


class _Cancel(Interrupt):
    """The flag a generation checks after every token (and llama.cpp within an evaluation once it is set).

    Set on cancel or supersede; it also reads as set once the job has had its fair slice while a request from
    another client waits — the engine then stops as on a time budget, keeping the complete lines. A
    ``background`` job (a prefetch) yields at once to any queued request.
    """

    def __init__(self, scheduler: Scheduler, client: str, background: bool = False) -> None:
        super().__init__()
        self._scheduler = scheduler
        self._client = client
        self._background = background
        self.started: float | None = None
        self.preempted = False

    def is_set(self) -> bool:
        if self.preempted or super().is_set():
            return True
        if self._background and self._scheduler._waiting:
            self.preempted = True
            return True
        started = self.started
        if (started is not None and time.monotonic() - started > self._scheduler.fair_slice_s
                and self._scheduler.others_waiting(self._client)):
            self.preempted = True
        return self.preempted

    def make_way(self) -> None:
        """A request was queued: a background job stops now, within llama.cpp's evaluation too."""
        if self._background:
            self.preempted = True
            self.set()


@dataclass(eq=False)
class Job:
    id: str
    client: str
    doc: str | None  # only the newest job per (client, doc) survives; None: never superseded
    work: Callable[[threading.Event], Any]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future
    cancel: _Cancel
    needs_model: bool = True
    queued_at: float = field(default_factory=time.monotonic)
    outcome: str | None = None  # superseded, cancelled, preempted, paused, shutdown


class Histogram:
    """Counts of end-to-end latencies (queueing included: what an editor waits) per bucket."""

    def __init__(self) -> None:
        self.counts = [0] * (len(HISTOGRAM_MS) + 1)

    def add(self, ms: float) -> None:
        self.counts[next((i for i, edge in enumerate(HISTOGRAM_MS) if ms <= edge), len(HISTOGRAM_MS))] += 1

    def to_json(self) -> dict[str, int]:
        labels = [f"<={edge}" for edge in HISTOGRAM_MS] + [f">{HISTOGRAM_MS[-1]}"]
        return dict(zip(labels, self.counts))


class Scheduler:
    """The model thread and its queue: fair between clients, newest-only per document, idle unload."""

    def __init__(self, service: CompletionService, *, idle_unload_s: float, fair_slice_s: float) -> None:
        self.service = service
        self.idle_unload_s = idle_unload_s
        self.fair_slice_s = fair_slice_s
        self.running: Job | None = None
        self.loads = 0
        self.unloads = 0
        self.last_load_ms: float | None = None
        self.unloaded = False  # the model was unloaded for idleness and reloads on demand
        self.histogram = Histogram()
        self.last_active = time.monotonic()
        self._cond = threading.Condition()
        self._queues: dict[str, deque[Job]] = {}
        self._turn: dict[str, int] = {}  # client → serial of its last turn: least recently served goes first
        self._serial = 0
        self._waiting: frozenset[str] = frozenset()  # clients with queued jobs, read lock-free by _Cancel
        self._stopping = False
        self._thread: threading.Thread | None = None

    # --- called from the event loop ---

    def start(self, preload: bool) -> None:
        self._thread = threading.Thread(target=self._run, args=(preload,), name="codecomplete-model", daemon=True)
        self._thread.start()

    def new_job(self, client: str, work: Callable[[threading.Event], Any], *, doc: str | None = None,
                job_id: str | None = None, needs_model: bool = True, background: bool = False) -> Job:
        loop = asyncio.get_running_loop()
        return Job(id=job_id or uuid.uuid4().hex, client=client, doc=doc, work=work, loop=loop,
                   future=loop.create_future(), cancel=_Cancel(self, client, background), needs_model=needs_model)

    def submit(self, job: Job) -> Job:
        with self._cond:
            if self._stopping:
                raise Unavailable("the daemon is shutting down")
            queue = self._queues.setdefault(job.client, deque())
            if job.doc is not None:
                for old in [j for j in queue if j.doc == job.doc]:
                    queue.remove(old)
                    self._finish(old, None, None, "superseded")
                running = self.running
                if running is not None and running.client == job.client and running.doc == job.doc:
                    running.outcome = "superseded"
                    running.cancel.set()
            queue.append(job)
            self._update_waiting()
            if self.running is not None:
                self.running.cancel.make_way()
            self._cond.notify()
        return job

    def cancel(self, job_id: str, outcome: str = "cancelled") -> bool:
        with self._cond:
            running = self.running
            if running is not None and running.id == job_id:
                running.outcome = running.outcome or outcome
                running.cancel.set()
                return True
            for queue in self._queues.values():
                for job in queue:
                    if job.id == job_id:
                        queue.remove(job)
                        self._update_waiting()
                        self._finish(job, None, None, outcome)
                        return True
        return False

    def cancel_all(self, outcome: str) -> None:
        with self._cond:
            for queue in self._queues.values():
                while queue:
                    self._finish(queue.popleft(), None, None, outcome)
            self._update_waiting()
            if self.running is not None:
                self.running.outcome = self.running.outcome or outcome
                self.running.cancel.set()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self.cancel_all("shutdown")
        if self._thread is not None:
            self._thread.join(timeout=10)
        completer = self.service.completer
        if completer is not None and not (self._thread and self._thread.is_alive()):
            self.service.completer = None
            completer.engine.close()

    def queue_length(self) -> int:
        return sum(len(q) for q in self._queues.values())

    def others_waiting(self, client: str) -> bool:
        waiting = self._waiting
        return bool(waiting) and (len(waiting) > 1 or client not in waiting)

    # --- the model thread ---

    def _update_waiting(self) -> None:
        self._waiting = frozenset(c for c, q in self._queues.items() if q)

    def _finish(self, job: Job, value: Any, error: BaseException | None, outcome: str | None) -> None:
        if outcome is not None:
            job.outcome = job.outcome or outcome

        def resolve() -> None:
            if job.future.done():
                return
            if error is not None:
                job.future.set_exception(error)
            else:
                job.future.set_result(value)

        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            job.loop.call_soon_threadsafe(resolve)

    def _pick(self) -> Job:
        client = min((c for c, q in self._queues.items() if q), key=lambda c: self._turn.get(c, -1))
        job = self._queues[client].popleft()
        self._serial += 1
        self._turn[client] = self._serial
        self._update_waiting()
        return job

    def idle_left(self) -> float | None:
        if not self.idle_unload_s or self.service.completer is None:
            return None
        return self.last_active + self.idle_unload_s - time.monotonic()

    def _run(self, preload: bool) -> None:
        if preload:
            with contextlib.suppress(UserError):  # the error is in the status; requests retry the load
                self._ensure_loaded()
        while True:
            with self._cond:
                job = None
                while not self._stopping:
                    if any(self._queues.values()):
                        job = self._pick()
                        self.running = job
                        break
                    left = self.idle_left()
                    if left is not None and left <= 0:
                        break
                    self._cond.wait(left)
                if self._stopping:
                    return
            if job is None:
                self._unload()
            else:
                self._execute(job)

    def _execute(self, job: Job) -> None:
        value: Any = None
        error: BaseException | None = None
        try:
            if job.needs_model:
                self._ensure_loaded()
            if not job.cancel.is_set():
                job.cancel.started = time.monotonic()  # the fair slice counts the work, not a model load
                value = job.work(job.cancel)
        except UserError as exc:
            error = exc
        except Exception as exc:  # a bug must cost one request, never the model thread
            log.exception("request %s failed", job.id)
            error = UserError(f"internal error: {exc}")
        with self._cond:
            self.running = None
            self.last_active = time.monotonic()
        if job.cancel.preempted and job.outcome is None:
            job.outcome = "preempted"
        if error is None and job.needs_model and job.outcome in (None, "preempted"):
            self.histogram.add((time.monotonic() - job.queued_at) * 1000)
        self._finish(job, value, error, None)

    def _ensure_loaded(self) -> None:
        if self.service.ready:
            return
        start = time.perf_counter()
        self.service.load()
        self.loads += 1
        self.last_load_ms = (time.perf_counter() - start) * 1000
        self.unloaded = False
        if not self.service.ready:
            raise Unavailable(self.service.error or "the model did not load")

    def switch(self, settings: Settings) -> None:
        """Load the model these settings name (runs as a job, in the model thread)."""
        self.service.update_settings(settings)
        self.service.state = "idle"  # force a reload even when only n_ctx or threads changed
        self._ensure_loaded()

    def _unload(self) -> None:
        completer = self.service.completer
        if completer is None:
            return
        self.service.completer = None
        self.service.state = "idle"
        completer.engine.close()
        self.unloads += 1
        self.unloaded = True
        log.info("model unloaded after %.0fs idle", self.idle_unload_s)


# --- the daemon and its HTTP API -------------------------------------------------------------------------


class Daemon:
    def __init__(self, settings: Settings, *, idle_unload_s: float = 1800.0, fair_slice_s: float = 2.0) -> None:
        self.service = CompletionService(settings)
        self.scheduler = Scheduler(self.service, idle_unload_s=idle_unload_s, fair_slice_s=fair_slice_s)
        self.started = time.time()
        self.paused = False
        self.clients: dict[str, float] = {}  # client id → last request (monotonic)
        self.endpoint: Endpoint | None = None
        self.server: uvicorn.Server | None = None

    def client_of(self, request: Request) -> str:
        client = request.headers.get(CLIENT_HEADER) or "anonymous"
        self.clients[client] = time.monotonic()
        return client

    def state(self) -> str:
        """One word for a tray icon: loading, ready, busy, paused, unloaded or error."""
        if self.paused:
            return "paused"
        if self.service.state == "loading":
            return "loading"
        if self.service.state == "error":
            return "error"
        if self.scheduler.unloaded:
            return "unloaded"
        if self.scheduler.running is not None:
            return "busy"
        return "ready" if self.service.ready else "loading"

    def status(self) -> dict[str, Any]:
        for _ in range(3):  # the model thread may be appending to the service's deques right now
            try:
                base = self.service.status()
                break
            except (RuntimeError, AttributeError):
                time.sleep(0.001)
        else:
            base = {"state": self.service.state, "error": self.service.error}
        sched = self.scheduler
        running = sched.running
        now = time.monotonic()
        clients = {c: round(now - t, 1) for c, t in self.clients.items() if now - t < CLIENT_TTL_S}
        idle_left = sched.idle_left()
        return {
            **base,
            "daemon_state": self.state(),
            "pid": os.getpid(),
            "version": __version__,
            "uptime_s": round(time.time() - self.started, 1),
            "endpoint": self.endpoint.describe() if self.endpoint else None,
            "paused": self.paused,
            "clients": len(clients),
            "client_idle_s": clients,
            "queue": sched.queue_length(),
            "running": None if running is None else {
                "id": running.id, "client": running.client, "waited_ms": round((now - running.queued_at) * 1000)},
            "latency_histogram_ms": sched.histogram.to_json(),
            "tokens_reused": self.service.stats.reused_tokens,
            "loads": sched.loads,
            "unloads": sched.unloads,
            "unloaded": sched.unloaded,
            "last_load_ms": None if sched.last_load_ms is None else round(sched.last_load_ms, 1),
            "idle_unload_s": sched.idle_unload_s,
            "unload_in_s": None if idle_left is None else round(max(0.0, idle_left), 1),
            "fair_slice_ms": round(sched.fair_slice_s * 1000),
            "settings": asdict(self.service.settings),
            "model_keys": list(MODEL_KEYS),
        }

    def request_settings(self, overrides: Any) -> Settings:
        """A request's settings over the daemon's; model-level ones stay the daemon's (one model for all)."""
        if overrides is None:
            return self.service.settings
        if not isinstance(overrides, dict):
            raise UserError("field 'settings' must be an object")
        base = self.service.settings
        mine = base.with_overrides(overrides)
        return replace(mine, **{k: getattr(base, k) for k in MODEL_KEYS})

    async def run_job(self, job: Job, request: Request) -> Any:
        """Queue ``job`` and wait for it; a client that disconnects meanwhile cancels it."""
        if self.paused and job.needs_model:
            raise Unavailable("completions are paused")
        self.scheduler.submit(job)
        watcher = asyncio.ensure_future(_disconnected(request))
        try:
            await asyncio.wait({job.future, watcher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            watcher.cancel()
        if not job.future.done():
            self.scheduler.cancel(job.id, "disconnected")
        return await job.future

    def request_exit(self) -> None:
        self.scheduler.cancel_all("shutdown")
        if self.server is not None:
            self.server.should_exit = True


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _error(status: int, message: str) -> JSONResponse:
    kind = "unavailable_error" if status == 503 else "authentication_error" if status == 401 else \
        "invalid_request_error"
    return JSONResponse({"error": {"code": status, "message": message, "type": kind}}, status_code=status)


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    try:
        data = json.loads(raw or b"{}")
    except ValueError as exc:
        raise UserError(f"request body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise UserError("request body must be a JSON object")
    return data


_REQUIRED = object()
_TYPE_NAMES = {str: "a string", int: "an integer", bool: "true or false", list: "a list", dict: "an object"}


def _snippets(body: dict[str, Any]) -> list[Any] | None:
    """Cross-file snippets chosen by the editor's LSP process: [{path, text}, ...] in prompt order."""
    raw = body.get("snippets")
    if raw is None:
        return None
    if not isinstance(raw, list) or not all(isinstance(s, dict) for s in raw):
        raise UserError("snippets must be a list of {path, text} objects")
    from codecomplete.workspace.index import Snippet

    return [Snippet(_field(s, "path", str), 0, 0, _field(s, "text", str), 0.0) for s in raw]


def _field(body: dict[str, Any], key: str, kind: type, default: Any = _REQUIRED) -> Any:
    if key not in body or body[key] is None:
        if default is _REQUIRED:
            raise UserError(f"missing field {key!r}")
        return default
    value = body[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise UserError(f"field {key!r} must be {_TYPE_NAMES[kind]}, got {value!r}"[:200])
    return value


def _span(body: dict[str, Any], text: str) -> tuple[int, int] | None:
    """``span`` [where the text starts in its document, the document's length], for a window of a document."""
    span = _field(body, "span", list, None)
    if span is None:
        return None
    if (len(span) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in span)
            or not 0 <= span[0] <= span[0] + len(text) <= span[1]):
        raise UserError(f"field 'span' must be [start, length] placing the text in its document, got {span!r}"[:200])
    return span[0], span[1]


def _offset_of(body: dict[str, Any], text: str) -> int:
    """The cursor: ``offset`` (characters), or ``position`` {line, character} counted in characters."""
    if body.get("offset") is not None:
        offset = _field(body, "offset", int)
    else:
        position = _field(body, "position", dict)
        line, character = _field(position, "line", int), _field(position, "character", int)
        starts = [0] + [i + 1 for i, ch in enumerate(text) if ch == "\n"]
        if not 0 <= line < len(starts):
            raise UserError(f"line {line} is past the end of the text ({len(starts)} lines)")
        offset = starts[line] + character
        line_end = starts[line + 1] - 1 if line + 1 < len(starts) else len(text)
        if character < 0 or offset > line_end:
            raise UserError(f"character {character} is outside line {line}")
    if not 0 <= offset <= len(text):
        raise UserError(f"offset {offset} is outside the text (0..{len(text)})")
    return offset


def create_app(daemon: Daemon, token: str | None = None) -> Starlette:
    """The HTTP API. With ``token`` (TCP), every request must carry ``Authorization: Bearer <token>``."""
    service = daemon.service

    async def health(request: Request) -> Response:
        daemon.client_of(request)
        return JSONResponse({"status": "ok", "pid": os.getpid(), "version": __version__, "state": daemon.state()})

    async def status(request: Request) -> Response:
        daemon.client_of(request)
        return JSONResponse(daemon.status())

    async def complete(request: Request) -> Response:
        """Our richer request: a document (or a window of it), the cursor, language, settings, an id."""
        client = daemon.client_of(request)
        body = await _body(request)
        text = _field(body, "text", str)
        offset = _offset_of(body, text)
        language = _field(body, "language", str, None)
        doc = _field(body, "doc", str, "")
        settings = daemon.request_settings(body.get("settings"))
        key = f"{client}\0{doc}"
        repo = _snippets(body)
        path = _field(body, "path", str, None)
        span = _span(body, text)

        def work(cancel: threading.Event) -> Any:
            return service.complete(
                text, offset, language, doc=key, settings=settings, cancel=cancel, snippets=repo, path=path,
                span=span,
            )

        job = daemon.scheduler.new_job(client, work, doc=key if doc else None, job_id=_field(body, "id", str, None))
        result = await daemon.run_job(job, request)
        if result is not None and job.outcome is None and result.completion and not daemon.paused:

            def ahead(cancel: threading.Event) -> Any:
                accepted_span = None if span is None else (span[0], span[1] + len(result.completion))
                return quietly(service.prefetch, text, offset, result.completion, language, doc=key,
                                settings=settings, cancel=cancel, snippets=repo, path=path, span=accepted_span)

            daemon.scheduler.submit(daemon.scheduler.new_job(client, ahead, doc=key if doc else None, background=True))
        data = {"completion": "", "stop_reason": job.outcome} if result is None else result.to_json()
        if job.outcome is not None:
            data["stop_reason"] = job.outcome
            if job.outcome != "preempted":
                data["completion"] = ""  # cancelled or superseded: nothing stale reaches an editor
        data["id"] = job.id
        return JSONResponse(data)

    async def infill(request: Request) -> Response:
        """llama-server's ``/infill``: prefix, the typed part of the cursor line, suffix, extra chunks."""
        client = daemon.client_of(request)
        body = await _body(request)
        prefix = _field(body, "input_prefix", str, "") + _field(body, "prompt", str, "")
        suffix = _field(body, "input_suffix", str, "")
        extra = ""
        for chunk in _field(body, "input_extra", list, []):
            if not isinstance(chunk, dict):
                raise UserError("input_extra must be a list of {filename, text} objects")
            extra += "\n\n--- snippet ---\n\n" + _field(chunk, "text", str, "")  # llama-server's separator
        if extra:
            extra += "\n\n"
        overrides: dict[str, Any] = {}
        n_predict = _field(body, "n_predict", int, -1)
        if n_predict > 0:
            overrides["max_tokens"] = overrides["max_tokens_single_line"] = n_predict
        t_max = _field(body, "t_max_predict_ms", int, 0)
        if t_max > 0:
            overrides["time_budget_ms"] = t_max
        overrides["reuse"] = _field(body, "cache_prompt", bool, True)
        settings = daemon.request_settings(overrides)
        text = extra + prefix + suffix
        offset = len(extra) + len(prefix)
        language = _field(body, "language", str, None)  # ours, not llama-server's; optional
        key = f"{client}\0infill"

        def work(cancel: threading.Event) -> Any:
            return service.complete(text, offset, language, doc=key, settings=settings, cancel=cancel)

        job = daemon.scheduler.new_job(client, work)
        result = await daemon.run_job(job, request)
        data = _llama_server_answer(result, job.outcome, settings)
        if _field(body, "stream", bool, False):  # one final event: the whole answer, as llama-server's last
            return Response(f"data: {json.dumps(data)}\n\n", media_type="text/event-stream")
        return JSONResponse(data)

    async def cancel(request: Request) -> Response:
        daemon.client_of(request)
        body = await _body(request)
        return JSONResponse({"cancelled": daemon.scheduler.cancel(_field(body, "id", str))})

    async def forget(request: Request) -> Response:
        client = daemon.client_of(request)
        body = await _body(request)
        service.cache.forget(f"{client}\0{_field(body, 'doc', str)}")
        return JSONResponse({"ok": True})

    async def pause(request: Request) -> Response:
        daemon.client_of(request)
        daemon.paused = True
        daemon.scheduler.cancel_all("paused")
        return JSONResponse({"paused": True})

    async def resume(request: Request) -> Response:
        daemon.client_of(request)
        daemon.paused = False
        return JSONResponse({"paused": False})

    async def model(request: Request) -> Response:
        """Switch the model (and model-level settings) for every editor; answers when it has loaded."""
        client = daemon.client_of(request)
        body = await _body(request)
        unknown = sorted(set(body) - set(MODEL_KEYS))
        if unknown:
            raise UserError(f"POST /model takes {', '.join(MODEL_KEYS)}; not {', '.join(unknown)}")
        settings = service.settings.with_overrides(body)
        if settings.backend == "local":
            resolve_model(settings.model)  # a wrong name fails now, with the catalog's message
        job = daemon.scheduler.new_job(client, lambda _cancel: daemon.scheduler.switch(settings), needs_model=False)
        await daemon.run_job(job, request)
        return JSONResponse(daemon.status())

    async def shutdown(request: Request) -> Response:
        daemon.client_of(request)
        return JSONResponse({"ok": True, "pid": os.getpid()}, background=BackgroundTask(daemon.request_exit))

    async def on_user_error(request: Request, exc: Exception) -> Response:
        return _error(503 if isinstance(exc, Unavailable) else 400, str(exc))

    routes = [
        Route("/health", health, methods=["GET"]),
        Route("/status", status, methods=["GET"]),
        Route("/v1/complete", complete, methods=["POST"]),
        Route("/infill", infill, methods=["POST"]),
        Route("/cancel", cancel, methods=["POST"]),
        Route("/v1/forget", forget, methods=["POST"]),
        Route("/pause", pause, methods=["POST"]),
        Route("/resume", resume, methods=["POST"]),
        Route("/model", model, methods=["POST"]),
        Route("/shutdown", shutdown, methods=["POST"]),
    ]
    middleware = [Middleware(_TokenCheck, token=token)] if token else []
    return Starlette(routes=routes, middleware=middleware, exception_handlers={UserError: on_user_error})


class _TokenCheck:
    """Refuses any request without the daemon's token: a loopback port is reachable by every local user."""

    def __init__(self, app: Any, token: str) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                await _error(401, "missing or wrong token (it is in daemon.json in the runtime dir)")(
                    scope, receive, send)
                return
        await self.app(scope, receive, send)


_STOP_TYPES = {"eot": "eos", "eos": "eos", "max_tokens": "limit", "time_budget": "limit"}


def _llama_server_answer(result: Any, outcome: str | None, settings: Settings) -> dict[str, Any]:
    """Our ``Completion`` in llama-server's ``/infill`` answer shape (the fields llama.vim and others read)."""
    data = result.to_json() if result is not None else {}
    content = "" if outcome not in (None, "preempted") else data.get("completion", "")
    reason = outcome or data.get("stop_reason", "")
    tokens = data.get("tokens", {})
    timings = data.get("timings_ms", {})
    prompt_n, prompt_ms = tokens.get("evaluated", 0), timings.get("prompt_eval", 0.0)
    predicted_n, predicted_ms = tokens.get("generated", 0), timings.get("generate", 0.0)
    stop_type = "none" if outcome else _STOP_TYPES.get(reason, "eos")  # post-processing stops end the answer
    return {
        "content": content,
        "id_slot": 0,
        "stop": True,
        "model": data.get("model", ""),
        "tokens_predicted": predicted_n,
        "tokens_evaluated": tokens.get("prompt", 0),
        "tokens_cached": tokens.get("reused", 0),
        "prompt": data.get("prompt", ""),
        "has_new_line": "\n" in content,
        "truncated": False,
        "stop_type": stop_type,
        "stopped_eos": stop_type == "eos",
        "stopped_limit": stop_type == "limit",
        "stopped_word": False,
        "stopping_word": "",
        "stop_reason": reason,  # ours: the exact reason (eot, block end, time budget, cancelled, ...)
        "generation_settings": {"n_ctx": settings.n_ctx, "n_predict": settings.max_tokens, "temperature": 0.0,
                                "top_k": 1, "model": data.get("model", "")},
        "timings": {
            "prompt_n": prompt_n,
            "prompt_ms": prompt_ms,
            "prompt_per_token_ms": prompt_ms / prompt_n if prompt_n else 0.0,
            "prompt_per_second": prompt_n * 1000 / prompt_ms if prompt_ms else 0.0,
            "predicted_n": predicted_n,
            "predicted_ms": predicted_ms,
            "predicted_per_token_ms": predicted_ms / predicted_n if predicted_n else 0.0,
            "predicted_per_second": predicted_n * 1000 / predicted_ms if predicted_ms else 0.0,
        },
    }


# --- serving ---------------------------------------------------------------------------------------------


def _bind(directory: Path, tcp: str | None) -> tuple[socket.socket, Endpoint]:
    """The listening socket: created private (no moment where another user could connect), and its endpoint."""
    if tcp is not None:
        host, port = parse_loopback(tcp)
        try:
            sock = socket.create_server((host, port))
        except OSError as exc:
            raise UserError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
        return sock, Endpoint("tcp", os.getpid(), __version__, host=host, port=sock.getsockname()[1],
                              token=new_token())
    path = directory / SOCKET_NAME
    if len(os.fsencode(path)) >= _UNIX_PATH_MAX:
        raise UserError(f"socket path {path} is too long for a Unix socket; set CODECOMPLETE_RUNTIME_DIR shorter")
    with contextlib.suppress(FileNotFoundError):  # a dead daemon's socket: we hold the serve lock
        path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        sock.bind(str(path))
    finally:
        os.umask(old_umask)
    path.chmod(0o600)
    sock.listen(128)
    return sock, Endpoint("unix", os.getpid(), __version__, path=str(path))


async def _watch_endpoint(daemon: Daemon, directory: Path, endpoint: Endpoint) -> None:
    """Exit when our endpoint is gone or taken over (runtime dir removed, another daemon started by hand)."""
    inode = os.stat(endpoint.path).st_ino if endpoint.path else None
    while True:
        await asyncio.sleep(1.0)
        current = read_endpoint(directory)
        try:
            moved = inode is not None and os.stat(endpoint.path).st_ino != inode  # type: ignore[arg-type]
        except OSError:
            moved = True
        if current is None or current.pid != os.getpid() or moved:
            log.warning("endpoint %s is gone; exiting", endpoint.describe())
            daemon.request_exit()
            return


class _Server(uvicorn.Server):
    """Stops running generations at once on SIGTERM/SIGINT, instead of letting them finish first."""

    def __init__(self, config: uvicorn.Config, daemon: Daemon) -> None:
        super().__init__(config)
        self.daemon = daemon

    def handle_exit(self, sig: int, frame: Any) -> None:
        self.daemon.scheduler.cancel_all("shutdown")
        super().handle_exit(sig, frame)


async def _serve_forever(daemon: Daemon, sock: socket.socket, directory: Path, preload: bool) -> None:
    assert daemon.endpoint is not None
    app = create_app(daemon, token=daemon.endpoint.token)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off", timeout_keep_alive=60,
                            timeout_graceful_shutdown=3)
    daemon.server = _Server(config, daemon)
    daemon.scheduler.start(preload)
    watcher = asyncio.ensure_future(_watch_endpoint(daemon, directory, daemon.endpoint))
    try:
        await daemon.server.serve(sockets=[sock])
    finally:
        watcher.cancel()
        await asyncio.get_running_loop().run_in_executor(None, daemon.scheduler.stop)


def _exit_quietly(sig: int, frame: Any) -> None:
    raise SystemExit(0)


def serve(
    settings: Settings, *, tcp: str | None = None, idle_unload_s: float = 1800.0, fair_slice_s: float = 2.0,
    preload: bool = True,
) -> None:
    """Run the daemon until ``POST /shutdown`` or a signal. One per runtime dir: a second one exits at once."""
    directory = runtime_dir()
    lock = filelock.FileLock(directory / SERVE_LOCK_NAME, timeout=0, mode=0o600)
    try:
        lock.acquire()
    except filelock.Timeout:
        running = read_endpoint(directory)
        where = f" (pid {running.pid}, {running.describe()})" if running else ""
        raise UserError(f"a daemon is already running in {directory}{where}") from None
    try:
        if tcp is None and (sys.platform == "win32" or not hasattr(socket, "AF_UNIX")):
            tcp = "127.0.0.1:0"
        sock, endpoint = _bind(directory, tcp)
        daemon = Daemon(settings, idle_unload_s=idle_unload_s, fair_slice_s=fair_slice_s)
        daemon.endpoint = endpoint
        write_endpoint(directory, endpoint)
        log.warning("pid %d listening on %s", os.getpid(), endpoint.describe())
        # uvicorn re-raises a SIGTERM it handled once it has shut down: end with status 0 and our cleanup then
        signal.signal(signal.SIGTERM, _exit_quietly)
        try:
            asyncio.run(_serve_forever(daemon, sock, directory, preload))
        finally:
            current = read_endpoint(directory)
            if current is not None and current.pid == os.getpid():
                (directory / ENDPOINT_NAME).unlink(missing_ok=True)
                if endpoint.path:
                    Path(endpoint.path).unlink(missing_ok=True)
    finally:
        lock.release()


@click.command("serve")
@click.option("--model", help="Catalog name or .gguf path; default: the configured or embedded model.")
@click.option("--tcp", is_flag=False, flag_value="127.0.0.1:0", default=None, metavar="[127.0.0.1:PORT]",
              help="Listen on loopback TCP with a token instead of a Unix socket (default on Windows).")
@click.option("--idle-unload", "idle_unload_s", type=click.FloatRange(0), default=1800.0, show_default=True,
              help="Unload the model after this many idle seconds (0: never); it reloads on demand.")
@click.option("--fair-slice-ms", type=click.IntRange(1), default=2000, show_default=True,
              help="A generation longer than this stops at once when another editor's request waits.")
@click.option("--lazy", is_flag=True, help="Load the model on the first request instead of at start.")
def command(model: str | None, tcp: str | None, idle_unload_s: float, fair_slice_ms: int, lazy: bool) -> None:
    """Run the shared daemon that keeps one model loaded for every editor."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="codecomplete-daemon: %(message)s")
    settings = load_settings({"model": model} if model else None)
    if settings.backend == "local":
        resolve_model(settings.model)  # a wrong name fails here, in one line, not later in the status
    serve(settings, tcp=tcp, idle_unload_s=idle_unload_s, fair_slice_s=fair_slice_ms / 1000, preload=not lazy)


# --- memory: one daemon and thin editors vs self-contained editors --------------------------------------


def process_memory_kb(pid: int) -> dict[str, int]:
    """Resident (RSS) and proportional (PSS: shared pages divided among their users) memory of a process."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        raise UserError("the memory benchmark reads /proc: Linux only") from None

    def field_kb(text: str, name: str) -> int:
        line = next(line for line in text.splitlines() if line.startswith(name + ":"))
        return int(line.split()[1])

    return {"pid": pid, "rss_kb": field_kb(status, "VmRSS"), "pss_kb": field_kb(rollup, "Pss")}


def memory_benchmark(editors: int = 3, *, model: str | None = None) -> dict[str, Any]:
    """Memory of ``editors`` thin language servers plus the daemon vs as many self-contained (``--no-daemon``)
    servers, each with the model loaded and one completion answered. The ratio is what the daemon saves."""
    return asyncio.run(_memory_benchmark(editors, model))


async def _memory_benchmark(editors: int, model: str | None) -> dict[str, Any]:
    import tempfile

    from codecomplete.serving.client import RUNTIME_ENV, DaemonClient

    with tempfile.TemporaryDirectory(prefix="cc-mem-") as tmp:
        directory = Path(tmp) / "rt"
        env = {**os.environ, RUNTIME_ENV: str(directory)}
        options = {"model": model} if model else {}
        async with _editors(editors, ["lsp"], env, options) as pids:
            endpoint = read_endpoint(directory)
            assert endpoint is not None
            shared = {"daemon": process_memory_kb(endpoint.pid), "editors": [process_memory_kb(p) for p in pids]}
            DaemonClient(endpoint).request("POST", "/shutdown")
        async with _editors(editors, ["lsp", "--no-daemon"], env, options) as pids:
            alone = {"editors": [process_memory_kb(p) for p in pids]}

    def total(kind: str, group: dict[str, Any]) -> float:
        parts = [*group["editors"], *([group["daemon"]] if "daemon" in group else [])]
        return round(sum(p[kind] for p in parts) / 1024, 1)

    result: dict[str, Any] = {"editors": editors, "shared": shared, "self_contained": alone}
    for kind in ("rss_kb", "pss_kb"):
        mb = kind.replace("_kb", "_mb")
        result[f"shared_{mb}"], result[f"self_contained_{mb}"] = total(kind, shared), total(kind, alone)
        result[f"ratio_{kind[:3]}"] = round(result[f"self_contained_{mb}"] / result[f"shared_{mb}"], 2)
    return result


@contextlib.asynccontextmanager
async def _editors(n: int, args: list[str], env: dict[str, str], options: dict[str, Any]):
    """``n`` language servers driven by real LSP clients: initialized, model ready, one completion answered."""
    from lsprotocol import types
    from pygls.lsp.client import LanguageClient

    async def one(i: int) -> LanguageClient:
        client = LanguageClient("codecomplete-bench", __version__)
        await client.start_io(sys.executable, "-m", "codecomplete.cli", *args, env=env)
        await client.initialize_async(types.InitializeParams(
            capabilities=types.ClientCapabilities(), initialization_options=options))
        client.initialized(types.InitializedParams())
        deadline = time.monotonic() + 300
        while (await client.protocol.send_request_async("codecomplete/status", {})).state != "ready":
            if time.monotonic() > deadline:
                raise UserError("the benchmark's language server did not get ready in 300 s")
            await asyncio.sleep(0.1)
        uri = f"file:///bench/editor{i}.py"
        text = f"def area_{i}(radius):\n    return "
        client.text_document_did_open(types.DidOpenTextDocumentParams(
            types.TextDocumentItem(uri=uri, language_id="python", version=1, text=text)))
        await client.text_document_inline_completion_async(types.InlineCompletionParams(
            text_document=types.TextDocumentIdentifier(uri), position=types.Position(1, 11),
            context=types.InlineCompletionContext(types.InlineCompletionTriggerKind.Invoked)))
        return client

    clients = await asyncio.gather(*(one(i) for i in range(n)))
    try:
        yield [c._server.pid for c in clients]
    finally:
        for client in clients:
            await client.shutdown_async(None)
            client.exit(None)
            await client.stop()
