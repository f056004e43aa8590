"""Talking to the shared daemon: find it, start it (once, under a lock), and use it from the language server.

The daemon listens on a Unix socket (0600) inside the user's runtime dir (0700), or on loopback TCP with a
random token kept in a 0600 file where Unix sockets are missing (Windows). ``daemon.json`` beside the socket
says which, so every client finds the same daemon. This module never imports llama.cpp: a thin language server
stays small because the model lives only in the daemon.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import secrets
import subprocess
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import filelock
import httpx2 as httpx
import platformdirs

from codecomplete.config import Settings
from codecomplete.errors import UserError

RUNTIME_ENV = "CODECOMPLETE_RUNTIME_DIR"
SOCKET_NAME = "daemon.sock"
ENDPOINT_NAME = "daemon.json"  # where the daemon listens (and its TCP token): 0600
SERVE_LOCK_NAME = "serve.lock"  # held by the daemon for its whole life: one daemon per runtime dir
START_LOCK_NAME = "start.lock"  # held by a client while it starts a daemon: two editors make one daemon
LOG_NAME = "daemon.log"
CLIENT_HEADER = "X-Codecomplete-Client"
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
# Settings that need another model load; a daemon's status lists its own (this is what clients assume before).
MODEL_KEYS: tuple[str, ...] = (
    "model", "n_ctx", "n_threads", "n_gpu_layers", "main_gpu", "flash_attn", "backend", "remote_url", "fim",
)
_RESTART_BACKOFF_S = 10.0  # after a failed restart, requests get nothing at once for this long


class DaemonUnavailable(UserError):
    """No daemon answers (not running, crashed, or its socket is gone)."""


def runtime_dir(create: bool = True) -> Path:
    """The private directory holding the socket, endpoint file, locks and log (``CODECOMPLETE_RUNTIME_DIR``)."""
    env = os.environ.get(RUNTIME_ENV)
    if env:
        path = Path(env).expanduser()
    else:
        with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset and falls back to /tmp
            warnings.simplefilter("ignore")
            path = Path(platformdirs.user_runtime_dir("codecomplete"))
    if create:
        try:
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create the runtime dir {path}: {exc.strerror}") from None
        if os.name == "posix":
            st = path.stat()
            if st.st_uid != os.getuid():
                raise UserError(f"runtime dir {path} belongs to another user; set {RUNTIME_ENV}")
            if st.st_mode & 0o077:
                path.chmod(0o700)
    return path


@dataclass(frozen=True)
class Endpoint:
    """Where a daemon listens, as written to ``daemon.json``."""

    transport: str  # "unix" or "tcp"
    pid: int
    version: str
    path: str | None = None  # unix socket
    host: str | None = None  # tcp
    port: int | None = None
    token: str | None = None  # tcp only: the socket itself is not private

    @property
    def base_url(self) -> str:
        return "http://codecomplete" if self.transport == "unix" else f"http://{self.host}:{self.port}"

    def describe(self) -> str:
        return f"unix:{self.path}" if self.transport == "unix" else f"tcp:{self.host}:{self.port}"


def read_endpoint(directory: Path) -> Endpoint | None:
    try:
        data = json.loads((directory / ENDPOINT_NAME).read_text(encoding="utf-8"))
        return Endpoint(**data)
    except (OSError, ValueError, TypeError):
        return None


def write_endpoint(directory: Path, endpoint: Endpoint) -> None:
    """Atomically, created 0600 (the TCP token must never be readable by others, not even for a moment)."""
    tmp = directory / f".{ENDPOINT_NAME}.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(asdict(endpoint), f)
    os.replace(tmp, directory / ENDPOINT_NAME)


def new_token() -> str:
    return secrets.token_urlsafe(32)


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
            base_url=endpoint.base_url, transport=transport, headers=headers, trust_env=False,
            timeout=httpx.Timeout(10.0, connect=2.0),
        )

    def request(self, method: str, path: str, body: dict[str, Any] | None = None, *, wait: bool = False) -> Any:
        """JSON in, JSON out; ``wait`` lifts the read timeout (a generation or a model load takes its time).

        Raises ``DaemonUnavailable`` when nobody answers, ``UserError`` with the daemon's message otherwise.
        """
        timeout = httpx.Timeout(10.0, connect=2.0, read=None) if wait else httpx.USE_CLIENT_DEFAULT
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
        self.request("POST", "/cancel", {"id": request_id})

    def complete(self, payload: dict[str, Any], cancel: threading.Event | None = None) -> dict[str, Any]:
        """``POST /v1/complete``; setting ``cancel`` tells the daemon, whose generation stops within a token."""
        payload = {"id": uuid.uuid4().hex, **payload}
        if cancel is None:
            return self.request("POST", "/v1/complete", payload, wait=True)
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
            return future.result()
        finally:
            pool.shutdown(wait=False)  # never wait here for a daemon that hangs

    def close(self) -> None:
        self._http.close()


def _estimate_tokens(text: str) -> int:
    """Token count without the model's tokenizer (which lives in the daemon): about 3.5 characters each."""
    return len(text) * 2 // 7 + 1


def find_daemon(directory: Path | None = None, client_id: str | None = None) -> DaemonClient | None:
    """A client for the daemon answering in ``directory``, or None when none does."""
    directory = directory or runtime_dir()
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
        return client.complete({
            "text": text[start:end], "offset": offset - start, "language": language,
            "settings": request_settings(settings, frozenset(theirs) or None),
        })
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
    return [sys.executable, "-m", "codecomplete.cli", "serve", *args]


def ensure_daemon(
    directory: Path | None = None, *, client_id: str | None = None, args: tuple[str, ...] = (),
    timeout: float = START_TIMEOUT_S,
) -> DaemonClient:
    """The running daemon, or a new one: started under a lock so editors starting together make one."""
    directory = directory or runtime_dir()
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
    """Start ``codecomplete serve`` detached from this process: it outlives the editor that started it."""
    if os.name == "posix":
        detach: dict[str, Any] = {"start_new_session": True}
    else:
        detach = {"creationflags": subprocess.DETACHED_PROCESS | subprocess.CREATE_NEW_PROCESS_GROUP}
    fd = os.open(directory / LOG_NAME, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "ab") as log:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            daemon_command(args), stdin=subprocess.DEVNULL, stdout=log, stderr=log, close_fds=True,
            env={**os.environ, RUNTIME_ENV: str(directory)}, **detach,
        )


def _wait_for_daemon(
    directory: Path, child: subprocess.Popen | None, client_id: str | None, timeout: float
) -> DaemonClient:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        client = find_daemon(directory, client_id)
        if client is not None:
            return client
        if child is not None and child.poll() is not None and not daemon_running(directory):
            raise DaemonUnavailable(f"the daemon exited at start: {_log_tail(directory)}")
        time.sleep(0.05)
    raise DaemonUnavailable(f"the daemon did not answer within {timeout:.0f}s (log: {directory / LOG_NAME})")


def _log_tail(directory: Path) -> str:
    try:
        lines = (directory / LOG_NAME).read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        lines = []
    return lines[-1] if lines else f"no output (log: {directory / LOG_NAME})"


# --- the thin language server's side ---------------------------------------------------------------------


def document_window(text: str, offset: int, token_budget: int) -> tuple[int, int]:
    """The part of a document worth sending for a completion at ``offset``: (start, end) character offsets.

    Whole lines, generous for the token budget, with edges that move in coarse steps so the prefix the daemon
    sees stays put while the user types. Small documents go whole.
    """
    reach = max(token_budget, 256) * _CHARS_PER_TOKEN
    start, end = 0, len(text)
    if offset > reach:
        snapped = (offset - reach) // _WINDOW_STEP * _WINDOW_STEP
        start = text.rfind("\n", 0, snapped) + 1
    if len(text) - offset > reach:
        snapped = -(-(offset + reach) // _WINDOW_STEP) * _WINDOW_STEP
        newline = text.find("\n", snapped)
        end = len(text) if newline < 0 else newline + 1
    return start, end


@dataclass
class RemoteCompletion:
    """The daemon's answer; mirrors ``pipeline.Completion`` where the language server reads it."""

    data: dict[str, Any]

    @property
    def completion(self) -> str:
        return self.data.get("completion") or ""

    @property
    def stop_reason(self) -> str:
        return self.data.get("stop_reason") or ""

    def to_json(self) -> dict[str, Any]:
        return self.data


class _DaemonCache:
    """The daemon keeps the typing-through and LRU caches; closing a document frees its entry there."""

    def __init__(self, service: DaemonService) -> None:
        self._service = service

    def forget(self, doc: str) -> None:
        client = self._service.client
        if client is None:
            return
        with contextlib.suppress(UserError):  # a daemon that is gone has forgotten everything already
            client.request("POST", "/v1/forget", {"doc": doc})


class DaemonService:
    """What ``CompletionService`` offers the language server, answered by the shared daemon.

    Documents (text and tree) stay in the language server; each request sends a window of the document around
    the cursor (syntax trees do not cross processes: the daemon parses the window, a few kilobytes). When the
    daemon dies, the next request starts a new one and retries once; the editor is told once per outage, and
    while a new daemon cannot be started, requests get nothing at once rather than a start attempt each.
    """

    def __init__(self, settings: Settings, directory: Path | None = None) -> None:
        self.settings = settings
        self.directory = directory
        self.state = "idle"  # idle → loading → ready | error, like CompletionService
        self.error: str | None = None
        self.last: RemoteCompletion | None = None
        self.cache = _DaemonCache(self)
        self.client: DaemonClient | None = None
        self.notify: Callable[[str], None] | None = None  # shows one message in the editor
        self._client_id = f"lsp-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._model_keys = MODEL_KEYS  # replaced by the daemon's own list once attached
        self._known: frozenset[str] | None = None  # the daemon's settings: an older daemon may know fewer
        self._outage = False  # the editor was told that the daemon is gone
        self._retry_at = 0.0
        self._lock = threading.Lock()

    @property
    def ready(self) -> bool:
        return self.state == "ready"

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

    def load(self, on_progress: Callable[[str], None] | None = None) -> None:
        """Attach to (or start) the daemon and wait for its model.

        Model-level settings this editor names (not None) that differ from the daemon's switch the daemon's
        model: there is one model for every editor.
        """
        self.state, self.error = "loading", None
        if on_progress:
            on_progress("connecting to the codecomplete daemon")
        try:
            client = self._connect()
            status = client.status()
            self._model_keys = tuple(status.get("model_keys") or self._model_keys)
            theirs = status.get("settings") or {}
            self._known = frozenset(theirs) or None
            wanted = {k: getattr(self.settings, k, None) for k in self._model_keys}
            wanted = {k: v for k, v in wanted.items() if v is not None and theirs.get(k) != v}
            if wanted:
                client.request("POST", "/model", wanted, wait=True)
            self._wait_loaded(client)
        except UserError as exc:
            self._drop()
            self.state, self.error = "error", str(exc)

    def _wait_loaded(self, client: DaemonClient) -> None:
        deadline = time.monotonic() + LOAD_TIMEOUT_S
        while time.monotonic() < deadline:
            status = client.status()
            if status["state"] == "ready" or status.get("unloaded"):  # unloaded while idle: reloads on demand
                self.state = "ready"
                return
            if status["state"] == "error":
                raise UserError(status.get("error") or "the daemon could not load the model")
            time.sleep(0.1)
        raise UserError(f"the daemon's model did not load within {LOAD_TIMEOUT_S:.0f}s")

    def update_settings(self, settings: Settings) -> bool:
        """Switch settings; True when the model must be (re)loaded for them."""
        reload = any(getattr(settings, k, None) != getattr(self.settings, k, None) for k in self._model_keys)
        self.settings = settings
        return reload or self.state == "error"

    def complete(
        self,
        text: str,
        offset: int,
        language: str | None,
        *,
        doc: str = "",
        settings: Settings | None = None,
        cancel: threading.Event | None = None,
        tree: Any = None,  # unused: the daemon parses the window it gets
        path: str | None = None,
        index: Any = None,
    ) -> RemoteCompletion:
        """With a workspace ``index`` (kept by this editor's process), the cross-file snippets are chosen here,
        with an estimated token count, and sent along; the daemon keeps what fits by the model's count."""
        s = settings or self.settings
        start, end = document_window(text, offset, s.token_budget)
        payload = {
            "doc": doc, "text": text[start:end], "offset": offset - start, "language": language,
            "settings": request_settings(s, self._known), "span": [start, len(text)],
        }
        if index is not None and s.repo_context and s.repo_context_budget > 0:
            window = (text.count("\n", 0, start), text.count("\n", 0, end) + 1)
            chosen = index.query(
                text[start:end], path, budget_tokens=s.repo_context_budget, count_tokens=_estimate_tokens,
                window=window if path else None, cursor=offset - start,
            )
            payload["snippets"] = [{"path": sn.path, "text": sn.text} for sn in chosen]
            payload["path"] = index.relative(path) if path else None
        try:
            data = self._connect().complete(payload, cancel)
        except DaemonUnavailable:
            if cancel is not None and cancel.is_set():
                raise UserError("cancelled while the daemon was unavailable") from None
            data = self._restart_and_retry(payload, cancel)
        self._outage = False
        result = RemoteCompletion(data)
        if "prompt" in data:  # answered by the model or its caches, not dropped before it ran
            self.last = result
        return result

    def _restart_and_retry(self, payload: dict[str, Any], cancel: threading.Event | None) -> dict[str, Any]:
        self._drop()
        if time.monotonic() < self._retry_at:
            raise DaemonUnavailable("the codecomplete daemon is not running")
        probe = find_daemon(self.directory)
        if probe is not None:  # a dropped idle connection, or another editor restarted it: no outage
            probe.close()
            return self._connect().complete(payload, cancel)
        if not self._outage and self.notify:
            self.notify("the codecomplete daemon stopped; starting a new one")
        self._outage = True
        try:
            return self._connect().complete(payload, cancel)
        except DaemonUnavailable as exc:
            self._drop()
            self._retry_at = time.monotonic() + _RESTART_BACKOFF_S
            if self.notify:
                self.notify(f"cannot restart the codecomplete daemon: {exc}")
            raise

    def status(self) -> dict[str, Any]:
        state, error, client = self.state, self.error, self.client  # before the round trip: ordered like events
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
