"""`codecomplete serve`: one process owns the model, its KV cache and the answer caches for every editor.

It speaks HTTP with JSON (Starlette on uvicorn; bodies in ``protocol``) on a private endpoint: a Unix socket
(0600, in a 0700 runtime dir), or loopback TCP guarded by a random token kept in a 0600 file. Requests from all
editors go through the one scheduler (``scheduler``: fairness, supersession, prefetch, idle unload); a request
whose HTTP client disconnects, or that ``POST /cancel`` names, stops within a token.

One request must never take every editor down: bodies are limited in size (413, checked from Content-Length and
while the body streams in) and in time (408: a body that stalls closes its connection), the text to complete is
limited in length, file checks run off the event loop, and every error answer is one line of JSON.
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
import time
import uuid
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import click
import filelock
import uvicorn
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect
from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from codecomplete import __version__
from codecomplete.config import MODEL_KEYS, Settings, load_settings
from codecomplete.errors import UserError
from codecomplete.models import resolve_model
from codecomplete.serving.net import parse_loopback
from codecomplete.serving.protocol import (
    CLIENT_HEADER,
    CancelRequest,
    CompleteRequest,
    CompleteResponse,
    ForgetRequest,
    InfillRequest,
    ModelRequest,
    infill_answer,
)
from codecomplete.serving.request import Answer
from codecomplete.serving.runtime import (
    ENDPOINT_NAME,
    SERVE_LOCK_NAME,
    SOCKET_NAME,
    Endpoint,
    new_token,
    read_endpoint,
    runtime_dir,
    write_endpoint,
)
from codecomplete.serving.scheduler import Scheduler, Unavailable
from codecomplete.serving.service import CompletionService, Request
from codecomplete.types import StopReason

log = logging.getLogger(__name__)

CLIENT_TTL_S = 600.0  # a client not heard from for this long no longer counts as connected
# A thin language server sends a window of at most ~100 KB plus snippets: these leave room for big windows and
# escaped text while keeping a runaway client from pinning the model thread (tokenizing 100 MB took minutes).
MAX_BODY_BYTES = 4 << 20
MAX_TEXT_CHARS = 1 << 20
BODY_TIMEOUT_S = 10.0  # a body that has not arrived by then never will: 408, and its connection is closed
_UNIX_PATH_MAX = 104  # the smallest sun_path among the platforms (macOS); Linux allows 108


class RequestRejected(UserError):
    """A request refused before it reaches the scheduler, with its HTTP status (408, 413)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Daemon:
    def __init__(
        self, settings: Settings, *, idle_unload_s: float = 1800.0, fair_slice_s: float = 2.0,
        body_timeout_s: float = BODY_TIMEOUT_S,
    ) -> None:
        self.body_timeout_s = body_timeout_s
        self.service = CompletionService(settings)
        self.scheduler = Scheduler(self.service, idle_unload_s=idle_unload_s, fair_slice_s=fair_slice_s)
        self.started = time.time()
        self.clients: dict[str, float] = {}  # client id → last request (monotonic)
        self.endpoint: Endpoint | None = None
        self.server: uvicorn.Server | None = None

    def client_of(self, request: HttpRequest) -> str:
        client = request.headers.get(CLIENT_HEADER) or "anonymous"
        self.clients[client] = time.monotonic()
        return client

    def state(self) -> str:
        """One word for a tray icon: loading, ready, busy, paused, unloaded or error."""
        if self.scheduler.paused:
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
            "paused": sched.paused,
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

    async def complete(self, client: str, request: Request, http: HttpRequest, job_id: str, supersede: bool) -> Answer:
        """The scheduler's answer; a client that disconnects meanwhile cancels its request."""
        task = asyncio.ensure_future(self.scheduler.complete(client, request, job_id=job_id, supersede=supersede))
        watcher = asyncio.ensure_future(_disconnected(http))
        try:
            await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            watcher.cancel()
        if not task.done():
            self.scheduler.cancel(job_id, StopReason.DISCONNECTED)
        return await task

    def request_exit(self) -> None:
        self.scheduler.cancel_all(StopReason.SHUTDOWN)
        if self.server is not None:
            self.server.should_exit = True


async def _disconnected(request: HttpRequest) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _error(status: int, message: str, *, close: bool = False) -> JSONResponse:
    """The one shape of every error answer: one line (never a traceback), and with ``close`` the connection ends
    (its unread body must not be taken for the next request)."""
    kind = "unavailable_error" if status == 503 else "authentication_error" if status == 401 else \
        "server_error" if status >= 500 else "invalid_request_error"
    line = " ".join(message.split())[:500]
    return JSONResponse({"error": {"code": status, "message": line, "type": kind}}, status_code=status,
                        headers={"Connection": "close"} if close else None)


async def _body(request: HttpRequest) -> Any:
    raw = await request.body()
    try:
        return json.loads(raw or b"{}")
    except ValueError as exc:  # UnicodeDecodeError included
        raise UserError(f"request body is not JSON: {exc}") from None
    except RecursionError:
        raise UserError("request body is not JSON the daemon takes: nested too deeply") from None


def _check_text(text: str, snippets: Any = None) -> None:
    """The text to complete (with its snippets) must fit ``MAX_TEXT_CHARS`` (a bigger one pins the model thread)
    and be valid Unicode (a lone surrogate would fail in the model thread, with a less helpful message)."""
    parts = [text, *(s.text for s in snippets or ())]
    size = sum(map(len, parts))
    if size > MAX_TEXT_CHARS:
        raise RequestRejected(413, f"text of {size} characters is too long: the daemon takes at most "
                                   f"{MAX_TEXT_CHARS} (send a window around the cursor)")
    for part in parts:  # JSON can carry a lone surrogate ("\\ud800"), which no tokenizer takes
        try:
            part.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise UserError(f"text is not valid Unicode: a lone surrogate at offset {exc.start}") from None


def create_app(daemon: Daemon, token: str | None = None) -> Starlette:
    """The HTTP API. With ``token`` (TCP), every request must carry ``Authorization: Bearer <token>``."""
    service, scheduler = daemon.service, daemon.scheduler

    async def health(request: HttpRequest) -> Response:
        daemon.client_of(request)
        return JSONResponse({"status": "ok", "pid": os.getpid(), "version": __version__, "state": daemon.state()})

    async def status(request: HttpRequest) -> Response:
        daemon.client_of(request)
        return JSONResponse(daemon.status())

    async def complete(request: HttpRequest) -> Response:
        """Our richer request: a document (or a window of it), the cursor, language, settings, an id."""
        client = daemon.client_of(request)
        body = CompleteRequest.from_json(await _body(request))
        _check_text(body.text, body.snippets)
        settings = daemon.request_settings(body.settings)
        key = f"{client}\0{body.doc}"
        job_id = body.id or uuid.uuid4().hex
        wanted = Request(key, body.text, body.offset, body.language, settings, path=body.path, snippets=body.snippets,
                         placed=body.placed)
        if scheduler.paused:
            raise Unavailable("completions are paused")
        answer = await daemon.complete(client, wanted, request, job_id, supersede=bool(body.doc))
        return JSONResponse(CompleteResponse(job_id, answer.completion, answer.outcome).to_json())

    async def infill(request: HttpRequest) -> Response:
        """llama-server's ``/infill``: prefix, the typed part of the cursor line, suffix, extra chunks."""
        client = daemon.client_of(request)
        body = InfillRequest.from_json(await _body(request))
        _check_text(body.text)
        settings = daemon.request_settings(body.overrides)
        wanted = Request(f"{client}\0infill", body.text, body.offset, body.language, settings)
        if scheduler.paused:
            raise Unavailable("completions are paused")
        answer = await daemon.complete(client, wanted, request, uuid.uuid4().hex, supersede=False)
        data = infill_answer(answer.completion, answer.outcome, settings.n_ctx, settings.max_tokens)
        if body.stream:  # one final event: the whole answer, as llama-server's last
            return Response(f"data: {json.dumps(data)}\n\n", media_type="text/event-stream")
        return JSONResponse(data)

    async def cancel(request: HttpRequest) -> Response:
        daemon.client_of(request)
        body = CancelRequest.from_json(await _body(request))
        return JSONResponse({"cancelled": scheduler.cancel(body.id)})

    async def forget(request: HttpRequest) -> Response:
        client = daemon.client_of(request)
        body = ForgetRequest.from_json(await _body(request))
        service.forget(f"{client}\0{body.doc}")
        return JSONResponse({"ok": True})

    async def pause(request: HttpRequest) -> Response:
        daemon.client_of(request)
        scheduler.pause()
        return JSONResponse({"paused": True})

    async def resume(request: HttpRequest) -> Response:
        daemon.client_of(request)
        scheduler.resume()
        return JSONResponse({"paused": False})

    async def model(request: HttpRequest) -> Response:
        """Switch the model (and model-level settings) for every editor; answers when it has loaded."""
        client = daemon.client_of(request)
        body = ModelRequest.from_json(await _body(request))
        settings = service.settings.with_overrides(body.overrides)
        if settings.backend == "local":  # a wrong name fails now, with the catalog's message; in a thread, as
            await asyncio.to_thread(resolve_model, settings.model)  # file checks must never stall the event loop
        await scheduler.switch(client, settings)
        return JSONResponse(daemon.status())

    async def shutdown(request: HttpRequest) -> Response:
        daemon.client_of(request)
        return JSONResponse({"ok": True, "pid": os.getpid()}, background=BackgroundTask(daemon.request_exit))

    async def on_user_error(request: HttpRequest, exc: Exception) -> Response:
        if isinstance(exc, RequestRejected):
            return _error(exc.status, str(exc), close=True)
        return _error(503 if isinstance(exc, Unavailable) else 400, str(exc))

    async def on_http_error(request: HttpRequest, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        response = _error(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}")
        response.headers.update(exc.headers or {})  # 405's Allow
        return response

    async def on_disconnect(request: HttpRequest, exc: Exception) -> Response:
        return Response(status_code=400)  # the client is gone: nobody reads this

    async def on_bug(request: HttpRequest, exc: Exception) -> Response:
        """An unexpected exception: one line naming its type (the traceback goes to the daemon's log only)."""
        return _error(500, f"internal error ({type(exc).__name__}); see the daemon log")

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
    middleware.append(Middleware(_BodyLimits, max_bytes=MAX_BODY_BYTES, timeout_s=daemon.body_timeout_s))
    handlers = {UserError: on_user_error, HTTPException: on_http_error, ClientDisconnect: on_disconnect,
                Exception: on_bug}
    return Starlette(routes=routes, middleware=middleware, exception_handlers=handlers)


class _BodyLimits:
    """Request bodies of at most ``max_bytes`` that arrive within ``timeout_s``: one client must not fill the
    daemon's memory, pin its model thread, or hold a request open forever.

    A Content-Length over the limit is refused before any of the body is read; a chunked body is counted while it
    streams in (uvicorn pauses reading beyond 64 KiB buffered, so no more than the limit is ever held). Both
    answers close the connection. Past the body, ``receive`` is left alone: it then waits for a disconnect.
    """

    def __init__(self, app: Any, max_bytes: int, timeout_s: float) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > self.max_bytes:
            await _error(413, self._too_large(int(declared)), close=True)(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        received = 0
        done = False

        async def limited() -> dict[str, Any]:
            nonlocal received, done
            if done:
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
            except asyncio.TimeoutError:
                raise RequestRejected(408, f"the request body did not arrive within {self.timeout_s:g} s") from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise RequestRejected(413, self._too_large(received, streamed=True))
                done = not message.get("more_body", False)
            else:
                done = True
            return message

        await self.app(scope, limited, send)

    def _too_large(self, size: int, streamed: bool = False) -> str:
        size_s = f"over {size} bytes" if streamed else f"{size} bytes"
        return f"request body of {size_s} is too large: the daemon takes at most {self.max_bytes} bytes"


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
        self.daemon.scheduler.cancel_all(StopReason.SHUTDOWN)
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
    preload: bool = True, body_timeout_s: float = BODY_TIMEOUT_S,
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
        daemon = Daemon(settings, idle_unload_s=idle_unload_s, fair_slice_s=fair_slice_s, body_timeout_s=body_timeout_s)
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
@click.option("--body-timeout", "body_timeout_s", type=click.FloatRange(0.1), default=BODY_TIMEOUT_S,
              show_default=True, help="Seconds a request body may take to arrive; a later one gets 408.")
def command(
    model: str | None, tcp: str | None, idle_unload_s: float, fair_slice_ms: int, lazy: bool, body_timeout_s: float,
) -> None:
    """Run the shared daemon that keeps one model loaded for every editor."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="codecomplete-daemon: %(message)s")
    settings = load_settings({"model": model} if model else None)
    if settings.backend == "local":
        resolve_model(settings.model)  # a wrong name fails here, in one line, not later in the status
    serve(settings, tcp=tcp, idle_unload_s=idle_unload_s, fair_slice_s=fair_slice_ms / 1000, preload=not lazy,
          body_timeout_s=body_timeout_s)
