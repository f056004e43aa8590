"""`codecomplete lsp`: the language server. It translates LSP to the completion service and back.

- Documents are synced incrementally (text + tree-sitter tree, see ``documents``).
- ``textDocument/inlineCompletion`` (LSP 3.18) answers with the model's suggestion; ``textDocument/completion``
  is the fallback for clients without inline completion.
- llama.cpp runs in a single worker thread; handlers are async so ``$/cancelRequest`` cancels the waiting
  task, and a cancel flag stops the generation within one token. A newer request for a document supersedes
  the older one, which then answers nothing.
- The model loads once, in the background after ``initialized``, with ``$/progress`` reports.
"""

from __future__ import annotations

import asyncio
import contextvars
import gc
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lsprotocol import types
from pygls.exceptions import JsonRpcException
from pygls.io_ import StdinAsyncReader, StdoutWriter, run_async
from pygls.lsp.server import LanguageServer
from pygls.protocol import JsonRPCNotification, LanguageServerProtocol
from pygls.protocol.language_server import lsp_method
from pygls.uris import to_fs_path

from codecomplete import __version__
from codecomplete.config import Settings, load_settings, split_known
from codecomplete.core.interrupt import Interrupt
from codecomplete.errors import UserError, quietly
from codecomplete.lsp.documents import Document, Documents
from codecomplete.serving.net import parse_loopback

if TYPE_CHECKING:
    from codecomplete.serving.client import DaemonService
    from codecomplete.serving.service import CompletionService
    from codecomplete.workspace.index import RepoIndex

log = logging.getLogger("codecomplete.lsp")

STATUS_METHOD = "codecomplete/status"
LAST_COMPLETION_METHOD = "codecomplete/lastCompletion"
# llama.vim's rule: an automatic request with this much text right of the cursor is rarely wanted.
MAX_AUTO_RIGHT_CHARS = 8
_EMPTY = types.InlineCompletionList(items=[])
# The message being handled: when it began to arrive (perf_counter; 0 when unknown) and its request id.
ARRIVED: contextvars.ContextVar[float] = contextvars.ContextVar("arrived", default=0.0)
REQUEST_ID: contextvars.ContextVar[Any] = contextvars.ContextVar("request_id", default=None)


class _Protocol(LanguageServerProtocol):
    """Prefers UTF-8 positions whenever the client offers them (no UTF-16 conversions at all then), times each
    message from its arrival to its answer being written (the keystroke's own cost, see ``_accounting``), and
    lets the model thread write an answer itself (``answer_now``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.arrived_at = 0.0  # set by the stdio reader when a message's first line arrives
        self.on_sent: dict[Any, Any] = {}  # request id → called once its answer is written
        self.threadsafe_writer = False  # set when serving stdio: the writer then takes ``_writing``
        self._writing = threading.RLock()
        self._answered_early: set[Any] = set()  # request ids the model thread answered; pygls's answer is dropped

    def handle_message(self, message: Any) -> None:
        ARRIVED.set(self.arrived_at)  # pygls runs each handler in a copy of this context
        REQUEST_ID.set(getattr(message, "id", None))
        super().handle_message(message)

    def _send_data(self, data: Any) -> None:
        with self._writing:
            super()._send_data(data)

    def _send_response(self, msg_id: Any, result: Any = None, error: Any = None) -> None:
        with self._writing:
            if msg_id in self._answered_early:
                self._answered_early.discard(msg_id)
                return
            super()._send_response(msg_id, result, error)
        self._sent(msg_id)

    def answer_now(self, msg_id: Any, result: Any, cancel: threading.Event) -> None:
        """Write the answer to request ``msg_id`` from the model thread, rather than wake the event loop to write
        it (a thread wake-up: ~0.3 ms, ~1 ms after the machine idled). Not for a request cancelled meanwhile:
        the event loop answers that one, and whichever answer comes first is the only one written."""
        with self._writing:
            if not self.threadsafe_writer or msg_id is None or cancel.is_set():
                return
            super()._send_response(msg_id, result)
            self._answered_early.add(msg_id)
        self._sent(msg_id)

    def _sent(self, msg_id: Any) -> None:
        done = self.on_sent.pop(msg_id, None)
        if done is not None:
            done()

    @lsp_method(types.INITIALIZE)
    def lsp_initialize(self, params: types.InitializeParams):
        general = params.capabilities.general
        if general is not None and general.position_encodings:
            offered = list(general.position_encodings)
            if types.PositionEncodingKind.Utf8 in offered:
                offered.remove(types.PositionEncodingKind.Utf8)
                general.position_encodings = [types.PositionEncodingKind.Utf8, *offered]
        self._warm_codecs()
        return (yield from super().lsp_initialize(params))

    def _warm_codecs(self) -> None:
        """cattrs writes each message type's (de)serializer on first use, 1-2 ms apiece: write the keystroke
        path's at start-up rather than into the first keystroke's and the first completion's latency."""
        pos = {"line": 0, "character": 0}
        doc = {"uri": "file:///", "version": 1}
        change = {"range": {"start": pos, "end": pos}, "text": ""}
        for message in (
            {"method": types.TEXT_DOCUMENT_DID_CHANGE, "params": {"textDocument": doc, "contentChanges": [change]}},
            {"id": 0, "method": types.TEXT_DOCUMENT_INLINE_COMPLETION,
             "params": {"textDocument": doc, "position": pos, "context": {"triggerKind": 2}}},
        ):
            self._converter.structure({"jsonrpc": "2.0", **message}, self.get_message_type(message["method"]))
        at = types.Range(types.Position(0, 0), types.Position(0, 0))
        items = [types.InlineCompletionItem(insert_text="", range=at)]
        self._converter.unstructure(types.InlineCompletionResponse(
            id=0, result=types.InlineCompletionList(items=items)))

    # ``Documents`` holds the one copy of each open document. pygls would keep a second one in its workspace,
    # re-splitting the whole text into lines on every keystroke (~1 ms on a 3,000-line file), for nothing.

    @lsp_method(types.TEXT_DOCUMENT_DID_OPEN)
    def lsp_text_document__did_open(self, params: types.DidOpenTextDocumentParams):
        yield from self._user_handler(types.TEXT_DOCUMENT_DID_OPEN, params)

    @lsp_method(types.TEXT_DOCUMENT_DID_CHANGE)
    def lsp_text_document__did_change(self, params: types.DidChangeTextDocumentParams):
        yield from self._user_handler(types.TEXT_DOCUMENT_DID_CHANGE, params)

    @lsp_method(types.TEXT_DOCUMENT_DID_CLOSE)
    def lsp_text_document__did_close(self, params: types.DidCloseTextDocumentParams):
        yield from self._user_handler(types.TEXT_DOCUMENT_DID_CLOSE, params)

    def _user_handler(self, method: str, params: Any):
        handler = self.fm.features.get(method)
        if handler is not None:
            yield handler, (params,), None

    def structure_message(self, data: Any) -> Any:
        """A request whose params do not fit its method gets an InvalidParams answer for its id.

        pygls alone only shows a message and drops the request, leaving the client waiting forever.
        """
        try:
            return super().structure_message(data)
        except JsonRpcException as exc:
            if not (isinstance(data, dict) and "id" in data and "method" in data):
                raise
            self._send_response(data["id"], error=exc.to_response_error())
            return JsonRPCNotification(method="$/codecomplete/answered", params=None, jsonrpc="2.0")


class CodecompleteServer(LanguageServer):
    def __init__(self) -> None:
        super().__init__("codecomplete", __version__, protocol_cls=_Protocol)
        self.documents = Documents()
        self.service: CompletionService | DaemonService  # set by run(): in this process, or the shared daemon
        # One thread for llama.cpp: the model is single-threaded state; requests queue behind it.
        self.model_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="codecomplete-model")
        self.inflight: dict[str, Interrupt] = {}
        # Set by every request: queued background work (prefetch, reading a document ahead) gives way.
        self.background = Interrupt()
        self.reading_ahead = 0  # opened documents still being read ahead (status shows it; benchmarks wait)
        self.index: RepoIndex | None = None  # the workspace, for cross-file context

    @property
    def encoding(self) -> str:
        return self.workspace.position_encoding or types.PositionEncodingKind.Utf16


server = CodecompleteServer()


def _settings_from(options: Any) -> Settings:
    """Editor settings (camelCase, maybe nested under "codecomplete") over the user's config file.

    Editors send their complete settings each time (VS Code: unset ones as null), so a setting the user
    removed falls back to the config file instead of keeping its old value.
    """
    if isinstance(options, dict) and isinstance(options.get("codecomplete"), dict):
        options = options["codecomplete"]
    if not isinstance(options, dict):
        options = {}
    overrides, ignored = split_known(options)
    if ignored:
        log.info("ignoring settings %s", ", ".join(ignored))
    return load_settings(overrides)


@server.feature(types.INITIALIZE)
def on_initialize(ls: CodecompleteServer, params: types.InitializeParams) -> None:
    try:
        ls.service.settings = _settings_from(params.initialization_options)
    except UserError as exc:
        ls.service.settings = Settings()
        ls.window_show_message(types.ShowMessageParams(types.MessageType.Error, f"codecomplete: {exc}"))


@server.feature(types.INITIALIZED)
async def on_initialized(ls: CodecompleteServer, params: types.InitializedParams) -> None:
    if hasattr(ls.service, "notify"):  # the daemon's client reports outages from the model thread
        loop = asyncio.get_running_loop()
        ls.service.notify = lambda message: loop.call_soon_threadsafe(
            ls.window_show_message, types.ShowMessageParams(types.MessageType.Warning, f"codecomplete: {message}")
        )
    _start_index(ls)
    await _load_model(ls)


def _start_index(ls: CodecompleteServer) -> None:
    """Index the workspace for cross-file context: in the background, never for a home dir or the root."""
    s = ls.service.settings
    root = ls.workspace.root_path
    if not (s.repo_context and root) or Path(root).resolve() in (Path.home().resolve(), Path("/")):
        return
    from codecomplete.workspace.index import RepoIndex

    try:
        ls.index = RepoIndex(root, include=s.repo_include or None, exclude=s.repo_exclude or None).start()
    except UserError as exc:
        log.warning("no workspace index: %s", exc)


@server.feature(types.SHUTDOWN)
def on_shutdown(ls: CodecompleteServer, params: Any) -> None:
    if ls.index is not None:
        ls.index.stop()


def _fs_path(uri: str) -> str | None:
    return to_fs_path(uri) if uri.startswith("file:") else None


async def _load_model(ls: CodecompleteServer) -> None:
    token = None
    caps = ls.client_capabilities.window
    if caps is not None and caps.work_done_progress:
        token = "codecomplete-load"
        try:
            await ls.work_done_progress.create_async(token)
            ls.work_done_progress.begin(token, types.WorkDoneProgressBegin(title="codecomplete", message="loading"))
        except Exception:  # a client that refuses progress still gets a model
            token = None
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(ls.model_thread, ls.service.load)
    gc.freeze()  # the model's and the libraries' objects live as long as the server: keep them out of collections
    status = ls.service.status()
    if token:
        message = "ready" if ls.service.ready else f"error: {status['error']}"
        ls.work_done_progress.end(token, types.WorkDoneProgressEnd(message=message))
    if not ls.service.ready:
        ls.window_show_message(types.ShowMessageParams(types.MessageType.Error, f"codecomplete: {status['error']}"))


@server.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
async def on_configuration(ls: CodecompleteServer, params: types.DidChangeConfigurationParams) -> None:
    try:
        settings = _settings_from(params.settings)
    except UserError as exc:
        ls.window_show_message(types.ShowMessageParams(types.MessageType.Error, f"codecomplete: {exc}"))
        return
    if ls.service.update_settings(settings):
        await _load_model(ls)


@server.feature(types.TEXT_DOCUMENT_DID_OPEN)
def on_open(ls: CodecompleteServer, params: types.DidOpenTextDocumentParams) -> None:
    item = params.text_document
    doc = ls.documents.open(item)
    doc.line_starts()  # now rather than in the first keystroke's time
    path = _fs_path(item.uri)
    if ls.index is not None and path:
        ls.index.update_document(path, item.text, item.language_id)
    _read_ahead(ls, doc)


def _read_ahead(ls: CodecompleteServer, doc: Document) -> None:
    """Parse a just-opened document and count and tokenize its lines in the model thread while it is idle, so
    the first request anywhere in it costs what a keystroke costs (not a whole parse and tokenization).
    Any request stops it; a change meanwhile makes the tree useless, so it is dropped."""
    loop = asyncio.get_running_loop()
    text, cancel = doc.text, ls.background
    warm = getattr(ls.service, "warm", None)  # through the daemon, the daemon sees only windows

    def work() -> None:
        try:
            tree = doc.parse_whole(text)
            if tree is not None:
                loop.call_soon_threadsafe(doc.adopt, text, tree)
            if warm is not None and not cancel.is_set():
                warm(text, cancel)
        finally:
            loop.call_soon_threadsafe(_done_reading, ls)

    ls.reading_ahead += 1
    ls.model_thread.submit(quietly, work)


def _done_reading(ls: CodecompleteServer) -> None:
    ls.reading_ahead -= 1
    gc.freeze()  # what was read stays: later collections need not walk its memos (a full walk took ~30 ms)


@server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
def on_change(ls: CodecompleteServer, params: types.DidChangeTextDocumentParams) -> None:
    doc = ls.documents.get(params.text_document.uri)
    if doc is None:
        log.warning("change for unknown document %s", params.text_document.uri)
        return
    try:
        for change in params.content_changes:
            doc.apply_change(change, ls.encoding)
    except UserError as exc:  # a change we cannot place: ask for nothing stale, keep the last good text
        log.warning("bad change for %s: %s", doc.uri, exc)
        return
    doc.version = params.text_document.version
    path = _fs_path(doc.uri)
    if ls.index is not None and path:
        ls.index.update_document(path, doc.text)
        ls.index.mark_edited(path)
    arrived = ARRIVED.get()
    if arrived:
        doc.unbilled_ms += (time.perf_counter() - arrived) * 1000


@server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
def on_close(ls: CodecompleteServer, params: types.DidCloseTextDocumentParams) -> None:
    ls.documents.close(params.text_document.uri)
    ls.service.cache.forget(params.text_document.uri)
    path = _fs_path(params.text_document.uri)
    if ls.index is not None and path:
        ls.index.forget_document(path)
    cancel = ls.inflight.pop(params.text_document.uri, None)
    if cancel:
        cancel.set()


async def _suggest(
    ls: CodecompleteServer,
    uri: str,
    position: types.Position,
    *,
    automatic: bool,
    reply: Callable[[tuple[str, types.Range] | None], Any],
    replace: tuple[types.Range, str] | None = None,
) -> Any:
    """The answer to a request at ``position``: ``reply`` of the suggestion and the range it replaces, or of None.
    Supersedes older requests."""
    doc = ls.documents.get(uri)
    service = ls.service
    if doc is None or not service.ready or not service.settings.language_enabled(doc.language):
        return reply(None)
    arrived, request_id, changes_ms = ARRIVED.get(), REQUEST_ID.get(), doc.unbilled_ms
    doc.unbilled_ms = 0.0
    enc = ls.encoding
    try:
        offset = doc.offset_at(position, enc)
        text, start = doc.text, offset
        if replace is not None:  # the editor's completion popup has an item selected: complete after it
            rng, chosen = replace
            start = doc.offset_at(rng.start, enc)
            end = doc.offset_at(rng.end, enc)
            text = text[:start] + chosen + text[end:]
            offset = start + len(chosen)
    except UserError as exc:
        log.info("no completion for %s: %s", uri, exc)
        return reply(None)
    line_end = text.find("\n", offset)
    right = text[offset : len(text) if line_end < 0 else line_end].strip()
    if automatic and len(right) > MAX_AUTO_RIGHT_CHARS:
        return reply(None)
    here = doc.position_at(start, enc)

    previous = ls.inflight.get(uri)
    if previous is not None:
        previous.set()  # superseded: it stops within one token and answers nothing
    ls.background.set()  # a real request goes first
    ls.background = Interrupt()
    lookup = getattr(service, "lookup", None)  # in-process: cached answers skip the model queue
    cached = lookup(text, offset, doc.language, doc=uri) if lookup else None
    if cached is not None:
        _when_sent(ls, request_id, _accounting(arrived, changes_ms, cached.timings_ms),
                   partial(_prefetch, ls, uri, doc.language, text, offset, cached.completion))
        return reply(_answer(cached.completion, here, replace))
    cancel = Interrupt()
    ls.inflight[uri] = cancel
    tree = doc.syntax_tree(offset) if replace is None else None
    tree = tree.copy() if tree else None  # here: the next change edits the document's tree in place
    language, path, index = doc.language, _fs_path(uri), ls.index

    def job() -> Any:
        """In the model thread, which also writes the answer (see ``answer_now``)."""
        result = service.complete(text, offset, language, doc=uri, cancel=cancel, tree=tree, path=path, index=index)
        answer = reply(_answer(result.completion, here, replace))
        if not cancel.is_set():
            _when_sent(ls, request_id, _accounting(arrived, changes_ms, getattr(result, "timings_ms", None)),
                       partial(_prefetch, ls, uri, language, text, offset, result.completion))
            ls.protocol.answer_now(request_id, answer, cancel)
        return answer

    try:
        answer = await asyncio.get_running_loop().run_in_executor(ls.model_thread, job)
    except asyncio.CancelledError:
        cancel.set()  # $/cancelRequest: the executor thread sees the flag at the next token
        raise
    except UserError as exc:
        log.info("no completion for %s: %s", uri, exc)
        return reply(None)
    finally:
        if ls.inflight.get(uri) is cancel:
            del ls.inflight[uri]
    if cancel.is_set():  # superseded or cancelled: nothing stale reaches the editor (unless already written)
        ls.protocol.on_sent.pop(request_id, None)
        return reply(None)
    return answer


def _when_sent(ls: CodecompleteServer, request_id: Any, *work: Callable[[], None] | None) -> None:
    """Run ``work`` right after the answer to ``request_id`` is written: the answer goes out before a prefetch
    can take the GIL."""
    todo = [w for w in work if w is not None]
    if request_id is None:
        for w in todo:
            w()
        return
    ls.protocol.on_sent[request_id] = lambda: [w() for w in todo]


def _accounting(arrived: float, changes_ms: float, timings: dict[str, float] | None) -> Callable[[], None] | None:
    """What adds the server's own time for this keystroke to the request's timings once the answer is written
    (``daemon``): its document changes since the last request and the request from its arrival to its answer
    written, less llama.cpp's prompt evaluation and generation. The client's and the pipe's time are not in it."""
    if not arrived or timings is None:
        return None
    llama = timings.get("prompt_eval", 0.0) + timings.get("generate", 0.0)

    def written() -> None:
        timings["daemon"] = changes_ms + (time.perf_counter() - arrived) * 1000 - llama

    return written


def _prefetch(ls: CodecompleteServer, uri: str, language: str | None, text: str, offset: int, suggestion: str) -> None:
    """Queue the next suggestion for where accepting this one leaves the cursor (Tab-Tab-Tab); the next request
    cancels it. Through the daemon there is nothing to do here: the daemon prefetches itself."""
    prefetch = getattr(ls.service, "prefetch", None)
    if prefetch is None or not suggestion:
        return
    ls.model_thread.submit(quietly, prefetch, text, offset, suggestion, language, doc=uri, cancel=ls.background,
                           path=_fs_path(uri), index=ls.index)


def _answer(
    completion: str, here: types.Position, replace: tuple[types.Range, str] | None
) -> tuple[str, types.Range] | None:
    if not completion:
        return None
    if replace is not None:
        rng, chosen = replace
        return chosen + completion, rng
    return completion, types.Range(start=here, end=here)


@server.feature(
    types.TEXT_DOCUMENT_INLINE_COMPLETION,
    types.InlineCompletionOptions(),
)
async def on_inline_completion(
    ls: CodecompleteServer, params: types.InlineCompletionParams
) -> types.InlineCompletionList:
    ctx = params.context
    selected = ctx.selected_completion_info if ctx else None
    return await _suggest(
        ls,
        params.text_document.uri,
        params.position,
        automatic=ctx is None or ctx.trigger_kind == types.InlineCompletionTriggerKind.Automatic,
        reply=_inline_list,
        replace=(selected.range, selected.text) if selected else None,
    )


def _inline_list(found: tuple[str, types.Range] | None) -> types.InlineCompletionList:
    if found is None:
        return _EMPTY
    text, rng = found
    return types.InlineCompletionList(items=[types.InlineCompletionItem(insert_text=text, range=rng)])


@server.feature(types.TEXT_DOCUMENT_COMPLETION, types.CompletionOptions(trigger_characters=[]))
async def on_completion(ls: CodecompleteServer, params: types.CompletionParams) -> types.CompletionList:
    """For clients without inline completion: the suggestion as one item, marked as the model's."""
    return await _suggest(ls, params.text_document.uri, params.position, automatic=False, reply=_completion_list)


def _completion_list(found: tuple[str, types.Range] | None) -> types.CompletionList:
    if found is None:
        return types.CompletionList(is_incomplete=True, items=[])
    text, rng = found
    first = text.split("\n", 1)[0].strip() or text.strip()
    item = types.CompletionItem(
        label=first[:60],
        kind=types.CompletionItemKind.Snippet,
        detail="codecomplete (model suggestion)",
        documentation=types.MarkupContent(kind=types.MarkupKind.PlainText, value=text),
        text_edit=types.TextEdit(range=rng, new_text=text),
        insert_text_format=types.InsertTextFormat.PlainText,
        sort_text="0",
        filter_text=first,
    )
    return types.CompletionList(is_incomplete=True, items=[item])


@server.feature(STATUS_METHOD)
def on_status(ls: CodecompleteServer, params: Any) -> dict[str, Any]:
    status = ls.service.status()
    if not ls.service.settings.enabled and status["state"] == "ready":
        status["state"] = "disabled"
    status["documents"] = len(ls.documents)
    status["reading_ahead"] = ls.reading_ahead
    status["position_encoding"] = getattr(ls.encoding, "value", ls.encoding)
    return status


@server.feature(LAST_COMPLETION_METHOD)
def on_last_completion(ls: CodecompleteServer, params: Any) -> dict[str, Any] | None:
    """The last completion with its exact prompt, tokens, timings and stop reason: no opaque context."""
    last = ls.service.last
    return last.to_json() if last else None


def run(tcp: str | None = None, daemon: bool = True) -> None:
    """Serve over stdio (editors) or loopback TCP (debugging). Logs go to stderr, never to the protocol.

    With ``daemon`` the model lives in the shared daemon (started if none runs); without, in this process.
    """
    level = os.environ.get("CODECOMPLETE_LOG", "warning").upper()
    logging.basicConfig(level=getattr(logging, level, logging.WARNING), stream=sys.stderr,
                        format="codecomplete-lsp: %(name)s: %(message)s")
    if daemon:
        from codecomplete.serving.client import DaemonService

        server.service = DaemonService(Settings())
    else:
        from codecomplete.serving.service import CompletionService

        server.service = CompletionService(Settings())
    if tcp:
        server.start_tcp(*parse_loopback(tcp))
    else:
        _serve_stdio(server)


class _Stamping:
    """A message reader that notes when each message's first line arrives (``_Protocol.arrived_at``)."""

    def __init__(self, reader: Any, protocol: _Protocol) -> None:
        self._reader = reader
        self._protocol = protocol
        self._between = True  # the next line read starts a message

    async def readline(self) -> bytes:
        line = await self._reader.readline()
        if self._between:
            self._protocol.arrived_at = time.perf_counter()
            self._between = False
        return line

    async def readexactly(self, n: int) -> bytes:
        body = await self._reader.readexactly(n)
        self._between = True
        return body


def _serve_stdio(ls: CodecompleteServer) -> None:
    """pygls's stdio reader hands every header line and body to a thread pool (three hand-offs per message,
    six per keystroke); reading the pipe on the event loop takes that out of each keystroke's latency.
    A stdin that is no pipe (a file) keeps pygls's reader."""

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        reader: Any = asyncio.StreamReader(limit=1 << 30, loop=loop)
        try:
            await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader, loop=loop), sys.stdin.buffer)
        except ValueError:
            reader = StdinAsyncReader(sys.stdin.buffer, ls.thread_pool)
        ls.protocol.set_writer(StdoutWriter(sys.stdout.buffer))
        ls.protocol.threadsafe_writer = True  # a blocking write under the protocol's lock, from any thread
        await run_async(stop_event=ls._stop_event, reader=_Stamping(reader, ls.protocol), protocol=ls.protocol,
                        logger=log, error_handler=ls.report_server_error)

    ls._stop_event = threading.Event()
    try:
        asyncio.run(serve())
    except BrokenPipeError:
        log.error("the editor closed the connection")
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        ls.shutdown()
