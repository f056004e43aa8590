"""Talking to the shared daemon: find it, start it (once, under a lock), and complete through it.

``DaemonBackend`` is the ``CompletionBackend`` of an editor's thin language server: documents (text and tree) stay
in the editor's process, each request sends a window of the document around the cursor. This module never imports
llama.cpp: a thin language server stays small because the model lives only in the daemon.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import filelock
import httpx2 as httpx

from codecomplete.config import MODEL_KEYS, Settings
from codecomplete.core.interrupt import Interrupt
from codecomplete.core.pipeline import Placement
from codecomplete.errors import UserError
from codecomplete.serving.protocol import (
    CLIENT_HEADER,
    CancelRequest,
    CompleteRequest,
    CompleteResponse,
    ForgetRequest,
    ModelRequest,
)
from codecomplete.serving.request import Answer, Deliver, Request
from codecomplete.serving.runtime import (
    LOG_NAME,
    RUNTIME_ENV,
    SERVE_LOCK_NAME,
    START_LOCK_NAME,
    Endpoint,
    check_private_dir,
    make_private_dir,
    read_endpoint,
    runtime_dir,
)

START_TIMEOUT_S = 60.0
# How long a client waits for the daemon's model: a cold 7B load from a slow disk takes a while.
LOAD_TIMEOUT_S = 600.0
# Characters of document sent per token of prompt budget: generous, so the daemon's token-exact cut almost
# never reaches the window's edge (code averages 3-4 characters per token).
_CHARS_PER_TOKEN = 8
# Window edges move in steps of this many characters, so the text the daemon sees keeps its start while the
# user types (KV-cache reuse and typing-through depend on a stable prefix).
_WINDOW_STEP = 4096
_CANCEL_POLL_S = 0.01
_CANCEL_GRACE_S = 5.0  # a cancelled request the daemon has not answered by then is given up
_RESTART_BACKOFF_S = 10.0  # after a failed restart, requests get nothing at once for this long
_REQUEST_THREADS = 4  # requests of several documents may be in flight; the daemon supersedes per document
# HTTP timeouts. Connecting to a live daemon's socket is instant; a body is written well within the daemon's own
# body timeout (``app.BODY_TIMEOUT_S``, 10 s), which closes a connection whose body stalls. Answers that take
# their time (a generation, a model load) lift the read timeout instead (``wait``).
_CONNECT_TIMEOUT_S = 2.0
_IO_TIMEOUT_S = 10.0
_TIMEOUT = httpx.Timeout(_IO_TIMEOUT_S, connect=_CONNECT_TIMEOUT_S)
_WAIT_TIMEOUT = httpx.Timeout(_IO_TIMEOUT_S, connect=_CONNECT_TIMEOUT_S, read=None)
_LOG_TAIL_BYTES = 8192


class DaemonUnavailable(UserError):
    """No daemon answers (not running, crashed, or its socket is gone)."""


class DaemonClient:
    """Synchronous HTTP client for one daemon (thread-safe: a worker may cancel while another waits)."""

    def __init__(self, endpoint: Endpoint, client_id: str | None = None) -> None:
        self.endpoint = endpoint
        self.client_id = client_id or f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        headers = {CLIENT_HEADER: self.client_id}
        if endpoint.token:
            headers["Authorization"] = f"Bearer {endpoint.token}"
        transport = httpx.HTTPTransport(uds=endpoint.path) if endpoint.transport == "unix" else None
        self._http = httpx.Client(
            base_url=endpoint.base_url, transport=transport, headers=headers, trust_env=False, timeout=_TIMEOUT,
        )

    def request(self, method: str, path: str, body: dict[str, Any] | None = None, *, wait: bool = False) -> Any:
        """JSON in, JSON out; ``wait`` lifts the read timeout (a generation or a model load takes its time).

        Raises ``DaemonUnavailable`` when nobody answers, ``UserError`` with the daemon's message otherwise.
        """
        timeout = _WAIT_TIMEOUT if wait else httpx.USE_CLIENT_DEFAULT
        try:
            response = self._http.request(method, path, json=body, timeout=timeout)
        except (httpx.TransportError, OSError) as exc:
            raise DaemonUnavailable(f"the daemon at {self.endpoint.describe()} does not answer ({exc})") from None
        try:
            data = response.json()
        except ValueError:
            data = None
        if response.status_code >= 400:
            error = data.get("error") if isinstance(data, dict) else None
            message = error.get("message") if isinstance(error, dict) else error
            raise UserError(str(message or f"daemon answered HTTP {response.status_code}"))
        return data

    def health(self) -> dict[str, Any]:
        return self.request("GET", "/health")

    def status(self) -> dict[str, Any]:
        return self.request("GET", "/status")

    def cancel(self, request_id: str) -> None:
        self.request("POST", "/cancel", CancelRequest(request_id).to_json())

    def complete(self, request: CompleteRequest, cancel: threading.Event | None = None) -> CompleteResponse:
        """``POST /v1/complete``; setting ``cancel`` tells the daemon, whose generation stops within a token."""
        payload = {**request.to_json(), "id": request.id or uuid.uuid4().hex}
        if cancel is None:
            return CompleteResponse.from_json(self.request("POST", "/v1/complete", payload, wait=True))
        pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="codecomplete-http")
        try:
            future = pool.submit(self.request, "POST", "/v1/complete", payload, wait=True)
            told_at = None
            while not concurrent.futures.wait([future], timeout=_CANCEL_POLL_S).done:
                if not cancel.is_set():
                    continue
                if told_at is None:
                    told_at = time.monotonic()
                    with contextlib.suppress(UserError):  # gone already: the pending request fails on its own
                        self.cancel(payload["id"])
                elif time.monotonic() - told_at > _CANCEL_GRACE_S:
                    raise DaemonUnavailable("the daemon did not answer a cancelled request")
            return CompleteResponse.from_json(future.result())
        finally:
            pool.shutdown(wait=False)  # never wait here for a daemon that hangs

    def close(self) -> None:
        self._http.close()


def _estimate_tokens(text: str) -> int:
    """Token count without the model's tokenizer (which lives in the daemon): about 3.5 characters each."""
    return len(text) * 2 // 7 + 1


def find_daemon(directory: Path | None = None, client_id: str | None = None) -> DaemonClient | None:
    """A client for the daemon answering in ``directory``, or None when none does.

    An endpoint file is trusted only in a private runtime dir: one another user could write to would let them
    point editors (and the code they send) at a socket of theirs.
    """
    if directory is None:
        directory = runtime_dir()
    else:
        try:
            check_private_dir(directory)
        except UserError:  # missing, or not private: no daemon of ours answers there
            return None
    endpoint = read_endpoint(directory)
    if endpoint is None:
        return None
    client = DaemonClient(endpoint, client_id)
    try:
        answered = client.health()
    except UserError:
        answered = None
    if answered is None or answered.get("pid") != endpoint.pid:  # a new daemon that has not written its file yet
        client.close()
        return None
    return client


def request_settings(settings: Settings, known: frozenset[str] | None) -> dict[str, Any]:
    """The settings a request carries: all but the editor-side switches, limited to what the daemon knows
    (a daemon started by an older version keeps serving after an upgrade)."""
    values = {k: v for k, v in asdict(settings).items() if k not in ("enabled", "languages")}
    return values if known is None else {k: v for k, v in values.items() if k in known}


def complete_with_daemon(text: str, offset: int, language: str | None, settings: Settings) -> dict[str, Any] | None:
    """``codecomplete infill`` through a running daemon (no cold load); None when none runs or it serves
    another model than these settings name, and the caller loads the model itself."""
    directory = runtime_dir(create=False)
    client = find_daemon(directory) if directory.is_dir() else None
    if client is None:
        return None
    try:
        status = client.status()
        theirs = status.get("settings") or {}
        wanted = {k: getattr(settings, k, None) for k in status.get("model_keys") or MODEL_KEYS}
        if any(v is not None and theirs.get(k) != v for k, v in wanted.items()):
            return None
        start, end = document_window(text, offset, settings.token_budget)
        request = CompleteRequest(text=text[start:end], offset=offset - start, language=language,
                                  settings=request_settings(settings, frozenset(theirs) or None))
        return client.complete(request).to_json()
    except DaemonUnavailable:  # it went away meanwhile
        return None
    finally:
        client.close()


def daemon_running(directory: Path) -> bool:
    """True while some daemon holds the serve lock, even before it listens (it may still be starting)."""
    lock = filelock.FileLock(directory / SERVE_LOCK_NAME, timeout=0, mode=0o600)
    try:
        lock.acquire()
    except filelock.Timeout:
        return True
    lock.release()
    return False


def daemon_command(args: tuple[str, ...] = ()) -> list[str]:
    """``python -P -m codecomplete.cli serve``: ``-P`` (Python 3.11+) keeps the working directory off
    ``sys.path``, so no module of the folder an editor has open can shadow one of ours inside the daemon.

    Not ``-I``: that drops the user site-packages, where a ``pip install --user`` codecomplete lives. On 3.10,
    ``_spawn``'s fixed working directory (the private runtime dir) is the protection.
    """
    safe_path = ["-P"] if sys.version_info >= (3, 11) else []
    return [sys.executable, *safe_path, "-m", "codecomplete.cli", "serve", *args]


def ensure_daemon(
    directory: Path | None = None, *, client_id: str | None = None, args: tuple[str, ...] = (),
    timeout: float = START_TIMEOUT_S,
) -> DaemonClient:
    """The running daemon, or a new one: started under a lock so editors starting together make one.

    A given ``directory`` gets the runtime dir's checks (created 0700, no symlink, ours, in a safe parent) before
    any lock or log file is made in it.
    """
    if directory is None:
        directory = runtime_dir()
    else:
        directory = Path(os.path.abspath(directory))
        make_private_dir(directory)
    client = find_daemon(directory, client_id)
    if client is not None:
        return client
    try:
        with filelock.FileLock(directory / START_LOCK_NAME, timeout=timeout, mode=0o600):
            client = find_daemon(directory, client_id)
            if client is not None:
                return client
            child = None if daemon_running(directory) else _spawn(directory, args)
            return _wait_for_daemon(directory, child, client_id, timeout)
    except filelock.Timeout:
        raise DaemonUnavailable(f"another process has been starting the daemon for {timeout:.0f}s") from None


def _spawn(directory: Path, args: tuple[str, ...]) -> subprocess.Popen:
    """Start ``codecomplete serve`` detached from this process: it outlives the editor that started it.

    Its working directory is the runtime dir, not the editor's (VS Code's is the open workspace): nothing there
    can be imported by the daemon, even where ``-P`` is missing. A thread reaps it when it exits, so a daemon
    that stops never lingers as a zombie child of a long-lived language server.
    """
    if os.name == "posix":
        detach: dict[str, Any] = {"start_new_session": True}
    else:
        detach = {"creationflags": subprocess.DETACHED_PROCESS | subprocess.CREATE_NEW_PROCESS_GROUP}
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(directory / LOG_NAME, flags, 0o600)
    with os.fdopen(fd, "ab") as log:  # the child keeps its own copy of the descriptor
        child = subprocess.Popen(
            daemon_command(args), stdin=subprocess.DEVNULL, stdout=log, stderr=log, close_fds=True,
            cwd=directory, env={**os.environ, RUNTIME_ENV: str(directory)}, **detach,
        )
    threading.Thread(target=child.wait, name=f"codecomplete-reap-{child.pid}", daemon=True).start()
    return child


def _wait_for_daemon(
    directory: Path, child: subprocess.Popen | None, client_id: str | None, timeout: float
) -> DaemonClient:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        client = find_daemon(directory, client_id)
        if client is not None:
            return client
        # the reaper thread waits on the child (poll() here would race it): its returncode says it has exited
        if child is not None and child.returncode is not None and not daemon_running(directory):
            raise DaemonUnavailable(f"the daemon exited at start: {_log_tail(directory)}")
        time.sleep(0.05)
    raise DaemonUnavailable(f"the daemon did not answer within {timeout:.0f}s (log: {directory / LOG_NAME})")


def _log_tail(directory: Path) -> str:
    """The log's last line (why a daemon exited at start), read from its end: the log grows over many runs."""
    try:
        with open(directory / LOG_NAME, "rb") as log:
            size = log.seek(0, os.SEEK_END)
            log.seek(max(0, size - _LOG_TAIL_BYTES))
            lines = log.read().decode("utf-8", errors="replace").strip().splitlines()
    except OSError:
        lines = []
    return lines[-1][-500:] if lines else f"no output (log: {directory / LOG_NAME})"


# --- the thin language server's side ---------------------------------------------------------------------


def document_window(text: str, offset: int, token_budget: int) -> tuple[int, int]:
    """The part of a document worth sending for a completion at ``offset``: (start, end) character offsets.

    Whole lines, generous for the token budget, with edges that move in coarse steps so the prefix the daemon
    sees stays put while the user types. Small documents go whole; a line longer than the reach (minified code)
    is cut inside, as the daemon would cut it anyway.
    """
    reach = max(token_budget, 256) * _CHARS_PER_TOKEN
    start, end = 0, len(text)
    if offset > reach:
        snapped = (offset - reach) // _WINDOW_STEP * _WINDOW_STEP
        start = max(text.rfind("\n", 0, snapped) + 1, snapped - reach)
    if len(text) - offset > reach:
        snapped = -(-(offset + reach) // _WINDOW_STEP) * _WINDOW_STEP
        newline = text.find("\n", snapped, snapped + reach)
        end = min(len(text), snapped + reach) if newline < 0 else newline + 1
    return start, end


class DaemonBackend:
    """The ``CompletionBackend`` of a thin language server: the shared daemon answers.

    When the daemon dies, the next request starts a new one and retries once; the editor is told once per
    outage, and while a new daemon cannot be started, requests get nothing at once rather than a start attempt
    each.
    """

    wants_tree = False  # syntax trees do not cross processes: the daemon parses the window it gets

    def __init__(self, settings: Settings, directory: Path | None = None) -> None:
        self._settings = settings
        self.directory = directory
        self._state = "idle"  # idle → loading → ready | error
        self._error: str | None = None
        self.last: CompleteResponse | None = None
        self.client: DaemonClient | None = None
        self.notify: Callable[[str], None] | None = None  # shows one message in the editor
        self._client_id = f"lsp-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._model_keys = MODEL_KEYS  # replaced by the daemon's own list once attached
        self._known: frozenset[str] | None = None  # the daemon's settings: an older daemon may know fewer
        self._model: dict[str, Any] = {}  # model, model_name, family: what the daemon said at the last attach
        self._outage = False  # the editor was told that the daemon is gone
        self._retry_at = 0.0
        self._lock = threading.Lock()
        self._pool = concurrent.futures.ThreadPoolExecutor(_REQUEST_THREADS, thread_name_prefix="codecomplete-daemon")

    @property
    def settings(self) -> Settings:
        return self._settings

    @property
    def state(self) -> str:
        return self._state

    @property
    def error(self) -> str | None:
        return self._error

    @property
    def ready(self) -> bool:
        return self._state == "ready"

    def set_notifier(self, notify: Callable[[str], None]) -> None:
        self.notify = notify

    def update_settings(self, settings: Settings) -> bool:
        reload = any(getattr(settings, k, None) != getattr(self._settings, k, None) for k in self._model_keys)
        self._settings = settings
        return reload or self._state == "error"

    async def load(self) -> None:
        refused = await asyncio.get_running_loop().run_in_executor(self._pool, self._attach)
        if refused is not None:
            raise refused

    def _attach(self) -> UserError | None:
        """Attach to (or start) the daemon and wait for its model; the daemon's refusal of a model switch, if any
        (it keeps serving the model it had, and so does this editor).

        Model-level settings this editor names (not None) that differ from the daemon's switch the daemon's
        model: there is one model for every editor.
        """
        self._state, self._error = "loading", None
        refused = None
        try:
            client = self._connect()
            status = client.status()
            self._model_keys = tuple(status.get("model_keys") or self._model_keys)
            theirs = status.get("settings") or {}
            self._known = frozenset(theirs) or None
            wanted = {k: getattr(self._settings, k, None) for k in self._model_keys}
            wanted = {k: v for k, v in _absolute_model(wanted).items() if v is not None and theirs.get(k) != v}
            if wanted:
                try:
                    client.request("POST", "/model", ModelRequest(wanted).to_json(), wait=True)
                except DaemonUnavailable:
                    raise
                except UserError as exc:
                    refused = exc
            self._wait_loaded(client)
        except UserError as exc:
            self._drop()
            self._state, self._error = "error", str(exc)
        return refused

    def _wait_loaded(self, client: DaemonClient) -> None:
        deadline = time.monotonic() + LOAD_TIMEOUT_S
        while time.monotonic() < deadline:
            status = client.status()
            if status["state"] == "ready" or status.get("unloaded"):  # unloaded while idle: reloads on demand
                self._model = {k: status.get(k) for k in ("model", "model_name", "family")}
                self._state = "ready"
                return
            if status["state"] == "error":
                raise UserError(status.get("error") or "the daemon could not load the model")
            time.sleep(0.1)
        raise UserError(f"the daemon's model did not load within {LOAD_TIMEOUT_S:.0f}s")

    def _connect(self) -> DaemonClient:
        with self._lock:
            if self.client is None:
                self.client = ensure_daemon(self.directory, client_id=self._client_id)
            return self.client

    def _drop(self) -> None:
        with self._lock:
            if self.client is not None:
                self.client.close()
            self.client = None

    async def complete(self, request: Request, *, deliver: Deliver | None = None) -> Answer:
        """With a workspace index (kept by this editor's process), the cross-file snippets are chosen here,
        with an estimated token count, and sent along; the daemon keeps what fits by the model's count."""
        cancel = Interrupt()
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, self._complete, request, cancel, deliver)
        except asyncio.CancelledError:  # $/cancelRequest: the request thread tells the daemon
            cancel.set()
            raise

    def _complete(self, request: Request, cancel: Interrupt, deliver: Deliver | None) -> Answer:
        s = request.settings or self._settings
        text, offset = request.text, request.offset
        start, end = document_window(text, offset, s.token_budget)
        snippets, path = None, None
        index = request.index
        if index is not None and s.repo_context and s.repo_context_budget > 0:
            window = (text.count("\n", 0, start), text.count("\n", 0, end) + 1)
            snippets = tuple(index.query(
                text[start:end], request.path, budget_tokens=s.repo_context_budget, count_tokens=_estimate_tokens,
                window=window if request.path else None, cursor=offset - start,
            ))
            path = index.relative(request.path) if request.path else None
        wire = CompleteRequest(text=text[start:end], offset=offset - start, language=request.language,
                               doc=request.key, settings=request_settings(s, self._known),
                               placed=Placement(start, len(text)), snippets=snippets, path=path)
        try:
            response = self._connect().complete(wire, cancel)
        except DaemonUnavailable:
            if cancel.is_set():
                raise UserError("cancelled while the daemon was unavailable") from None
            response = self._restart_and_retry(wire, cancel)
        self._outage = False
        if response.completion is not None:  # answered by the model or its caches, not dropped before it ran
            self.last = response
        answer = Answer(response.completion, response.outcome)
        if deliver is not None and response.completion is not None and not cancel.is_set():
            deliver(response.completion, cancel)
        return answer

    def _restart_and_retry(self, request: CompleteRequest, cancel: Interrupt) -> CompleteResponse:
        self._drop()
        if time.monotonic() < self._retry_at:
            raise DaemonUnavailable("the codecomplete daemon is not running")
        probe = find_daemon(self.directory)
        if probe is not None:  # a dropped idle connection, or another editor restarted it: no outage
            probe.close()
            return self._connect().complete(request, cancel)
        if not self._outage and self.notify:
            self.notify("the codecomplete daemon stopped; starting a new one")
        self._outage = True
        try:
            return self._connect().complete(request, cancel)
        except DaemonUnavailable as exc:
            self._drop()
            self._retry_at = time.monotonic() + _RESTART_BACKOFF_S
            if self.notify:
                self.notify(f"cannot restart the codecomplete daemon: {exc}")
            raise

    def warm(self, key: str, text: str, prepare: Callable[[threading.Event], None] | None,
             done: Callable[[], None]) -> None:
        """The daemon sees windows only: nothing to read ahead there."""
        done()

    def forget(self, key: str) -> None:
        """The daemon keeps the caches: tell it, off the event loop."""
        client = self.client
        if client is not None:
            self._pool.submit(_quiet_forget, client, key)

    async def status(self) -> dict[str, Any]:
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._status)

    def _status(self) -> dict[str, Any]:
        state, error, client = self._state, self._error, self.client  # before the round trip: ordered like events
        if client is None:
            return {"state": state, "error": error, "daemon": None}
        try:
            status = client.status()
        except UserError as exc:
            return {"state": "error", "error": str(exc), "daemon": None}
        status["daemon"] = {"endpoint": client.endpoint.describe(), "pid": client.endpoint.pid,
                            "client_id": client.client_id}
        if state != "ready":  # this editor is still attaching: not ready for it, whatever the daemon says
            status["state"], status["error"] = state, error
        return status

    def summary(self) -> dict[str, Any]:
        return {"state": self._state, "error": self._error, "model": self._settings.model, "model_name": None,
                "family": None, **self._model}

    def last_completion(self) -> dict[str, Any] | None:
        return self.last.to_json() if self.last else None

    def close(self) -> None:
        self._pool.shutdown(wait=False)
        self._drop()


def _absolute_model(settings: dict[str, Any]) -> dict[str, Any]:
    """A model named by a path relative to this editor's folder, made absolute: the daemon runs elsewhere (from its
    runtime dir, so that nothing in a workspace can be imported into it)."""
    model = settings.get("model")
    if isinstance(model, str) and model and Path(model).expanduser().is_file():
        return {**settings, "model": str(Path(model).expanduser().resolve())}
    return settings


def _quiet_forget(client: DaemonClient, key: str) -> None:
    with contextlib.suppress(UserError):  # a daemon that is gone has forgotten everything already
        client.request("POST", "/v1/forget", ForgetRequest(key).to_json())
