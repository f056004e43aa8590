"""`codecomplete lsp`: the language server. It translates LSP to a ``CompletionBackend`` and back, nothing more.

- Documents are synced incrementally (text + tree-sitter tree, see ``documents``).
- ``textDocument/inlineCompletion`` (LSP 3.18) answers with the model's suggestion; ``textDocument/completion``
  is the fallback for clients without inline completion.
- Handlers are async, so ``$/cancelRequest`` cancels the waiting task and the backend stops the generation
  within a token. The backend's scheduler lets only the newest request per document run; an older one answers
  nothing.
- The model loads once, in the background after ``initialized``, with ``$/progress`` reports.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lsprotocol import types
from pygls.io_ import StdinAsyncReader, StdoutWriter
from pygls.lsp.server import LanguageServer
from pygls.uris import to_fs_path

from codecomplete import __version__
from codecomplete.config import Settings, load_settings, split_known
from codecomplete.core.pipeline import Completion
from codecomplete.errors import UserError
from codecomplete.lsp import transport
from codecomplete.lsp.documents import Document, Documents
from codecomplete.lsp.protocol import ARRIVED, REQUEST_ID, Protocol
from codecomplete.lsp.transport import MAX_HEADER_LINE
from codecomplete.serving.net import parse_loopback
from codecomplete.serving.request import Answer, Request
from codecomplete.types import StopReason

if TYPE_CHECKING:
    from codecomplete.serving.backend import CompletionBackend
    from codecomplete.workspace import RepoIndex

log = logging.getLogger("codecomplete.lsp")

STATUS_METHOD = "codecomplete/status"
LAST_COMPLETION_METHOD = "codecomplete/lastCompletion"
# Server → client, when the state changes and after requests: what a status item shows (see _summary).
STATUS_CHANGED = "codecomplete/statusChanged"
# llama.vim's rule: an automatic request with this much text right of the cursor is rarely wanted.
MAX_AUTO_RIGHT_CHARS = 8
_EMPTY = types.InlineCompletionList(items=[])


class CodecompleteServer(LanguageServer):
    def __init__(self) -> None:
        super().__init__("codecomplete", __version__, protocol_cls=Protocol)
        self.documents = Documents()
        self.backend: CompletionBackend  # set by run(): the model in this process, or the shared daemon
        self.reading_ahead = 0  # opened documents still being read ahead (status shows it; benchmarks wait)
        self.index: RepoIndex | None = None  # the workspace, for cross-file context
        self.loaded: asyncio.Event | None = None  # set while no model load is under way (made in the loop)
        # What the user saw last: latency of the last answer, why it ended, and a sentence when it was nothing
        # for a reason the user can act on (the time budget, the model still loading).
        self.last_latency_ms: float | None = None
        self.last_stop_reason: str | None = None
        self.notice: str | None = None

    @property
    def encoding(self) -> str:
        return self.workspace.position_encoding or types.PositionEncodingKind.Utf16

    def report_server_error(self, error: Exception, source: Any) -> None:
        """pygls shows every handler failure to the user as a pop-up with the exception's text: the log has it, the
        request got its error answer, and the editor's user can do nothing with a Python exception."""
        log.error("%s: %s", getattr(source, "__name__", source), error)


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


def _show(ls: CodecompleteServer, kind: types.MessageType, message: str) -> None:
    ls.window_show_message(types.ShowMessageParams(kind, f"codecomplete: {message}"))


@server.feature(types.INITIALIZE)
def on_initialize(ls: CodecompleteServer, params: types.InitializeParams) -> None:
    try:
        ls.backend.update_settings(_settings_from(params.initialization_options))
    except UserError as exc:
        _show(ls, types.MessageType.Error, str(exc))


@server.feature(types.INITIALIZED)
async def on_initialized(ls: CodecompleteServer, params: types.InitializedParams) -> None:
    loop = asyncio.get_running_loop()
    ls.backend.set_notifier(lambda message: loop.call_soon_threadsafe(_show, ls, types.MessageType.Warning, message))
    _start_index(ls)
    await _load_model(ls)


def _start_index(ls: CodecompleteServer) -> None:
    """Index the workspace for cross-file context: in the background, never for a home dir or the root."""
    s = ls.backend.settings
    root = ls.workspace.root_path
    if not (s.repo_context and root) or Path(root).resolve() in (Path.home().resolve(), Path("/")):
        return
    from codecomplete.workspace import RepoIndex

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


def _loaded(ls: CodecompleteServer) -> asyncio.Event:
    if ls.loaded is None:
        ls.loaded = asyncio.Event()
        ls.loaded.set()
    return ls.loaded


def _summary(ls: CodecompleteServer) -> dict[str, Any]:
    """The status a status item shows: the model, its state in one word, the last answer, and the notice."""
    summary = ls.backend.summary()
    settings = ls.backend.settings
    if summary["state"] == "ready" and not settings.enabled:
        summary["state"] = "disabled"
    summary["prefix_only"] = settings.format == "prefix" or summary.get("family") == "none"
    summary.update(last_latency_ms=ls.last_latency_ms, last_stop_reason=ls.last_stop_reason, notice=ls.notice)
    return summary


def _publish(ls: CodecompleteServer) -> None:
    ls.protocol.notify(STATUS_CHANGED, _summary(ls))


async def _load_model(ls: CodecompleteServer) -> None:
    loaded = _loaded(ls)
    loaded.clear()
    try:
        await _load_with_progress(ls)
    finally:
        loaded.set()
    if ls.notice and ls.last_stop_reason == "loading":
        ls.notice = None  # what it said is over
    _publish(ls)
    if not ls.backend.ready:
        _show(ls, types.MessageType.Error, str(ls.backend.error))


async def _load_with_progress(ls: CodecompleteServer) -> None:
    token = None
    caps = ls.client_capabilities.window
    if caps is not None and caps.work_done_progress:
        token = "codecomplete-load"
        try:
            await ls.work_done_progress.create_async(token)
            ls.work_done_progress.begin(token, types.WorkDoneProgressBegin(title="codecomplete", message="loading"))
        except Exception:  # a client that refuses progress still gets a model
            token = None
    load = asyncio.ensure_future(ls.backend.load())
    await asyncio.sleep(0)  # the backend says "loading" now: tell the status item
    _publish(ls)
    try:
        await load
    except UserError as exc:  # settings the model cannot load with: the previous ones still serve
        _show(ls, types.MessageType.Error, str(exc))
    _freeze()  # the model's and the libraries' objects live as long as the server: keep them out of collections
    if token:
        message = "ready" if ls.backend.ready else f"error: {ls.backend.error}"
        ls.work_done_progress.end(token, types.WorkDoneProgressEnd(message=message))


@server.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
async def on_configuration(ls: CodecompleteServer, params: types.DidChangeConfigurationParams) -> None:
    try:
        settings = _settings_from(params.settings)
    except UserError as exc:
        _show(ls, types.MessageType.Error, str(exc))
        return
    if ls.backend.update_settings(settings):
        await _load_model(ls)
    else:
        _publish(ls)  # e.g. completions switched off: the status item says so


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
    """While the model is idle, parse a just-opened document (where its tree is used) and let the backend read it
    ahead, so the first request anywhere in it costs what a keystroke costs. Any request stops it; a change
    meanwhile makes the tree useless, so it is dropped."""
    loop = asyncio.get_running_loop()
    text = doc.text

    def parse(_cancel: Any) -> None:
        tree = doc.parse_whole(text)
        if tree is not None:
            loop.call_soon_threadsafe(doc.adopt, text, tree)

    ls.reading_ahead += 1
    ls.backend.warm(doc.uri, text, parse if ls.backend.wants_tree else None,
                    lambda: loop.call_soon_threadsafe(_done_reading, ls))


def _done_reading(ls: CodecompleteServer) -> None:
    ls.reading_ahead -= 1
    _freeze()  # what was read stays: later collections need not walk its memos (a full walk took ~30 ms)


def _freeze() -> None:
    """Move what lives now out of the collector's walks. Garbage is collected first: frozen, a cycle is never freed
    (freezing alone after each opened file grew a thin server 0.6 MB a minute while someone typed)."""
    gc.collect()
    gc.freeze()


@server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
def on_change(ls: CodecompleteServer, params: types.DidChangeTextDocumentParams) -> None:
    doc = ls.documents.get(params.text_document.uri)
    if doc is None:
        log.warning("change for unknown document %s", params.text_document.uri)
        return
    changes = params.content_changes
    if doc.out_of_sync and not any(getattr(c, "range", None) is None for c in changes):
        return  # nothing to apply these to until the editor sends the whole text again
    try:
        doc.apply_changes(changes, ls.encoding)
    except UserError as exc:  # a change we cannot place: the whole batch is refused, the last good text stays
        doc.out_of_sync = True
        log.warning("edit refused for %s (version %s): %s", doc.uri, params.text_document.version, exc)
        _show(ls, types.MessageType.Warning, f"an edit to {Path(doc.uri).name} did not fit the document ({exc}); "
                                               "no suggestions there until the file is reopened")
        return
    doc.out_of_sync = False
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
    uri = params.text_document.uri
    ls.documents.close(uri)
    ls.backend.forget(uri)
    path = _fs_path(uri)
    if ls.index is not None and path:
        ls.index.forget_document(path)


async def _suggest(
    ls: CodecompleteServer,
    uri: str,
    position: types.Position,
    *,
    automatic: bool,
    reply: Callable[[tuple[str, types.Range] | None], Any],
    replace: tuple[types.Range, str] | None = None,
) -> Any:
    """The answer to a request at ``position``: ``reply`` of the suggestion and the range it replaces, or of None."""
    doc = ls.documents.get(uri)
    backend = ls.backend
    if doc is None or doc.out_of_sync or not backend.settings.language_enabled(doc.language):
        return reply(None)
    if not backend.ready and not await _model_within_budget(ls):
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
    tree = doc.syntax_tree(offset) if backend.wants_tree and replace is None else None
    tree = tree.copy() if tree else None  # here: the next change edits the document's tree in place
    request = Request(uri, text, offset, doc.language, tree=tree, path=_fs_path(uri), index=ls.index)
    delivered: list[Any] = []

    def deliver(result: Completion, cancel: threading.Event) -> None:
        """In the worker thread, which writes the answer itself (see ``Protocol.answer_now``)."""
        answer = reply(_answer(result.suggestion, here, replace))
        _when_sent(ls, request_id, _accounting(arrived, changes_ms, result.timings_ms))
        delivered.append(answer)
        ls.protocol.answer_now(request_id, answer, cancel)

    try:
        answer = await backend.complete(request, deliver=deliver)
    except UserError as exc:
        log.info("no completion for %s: %s", uri, exc)
        return reply(None)
    _after_request(ls, answer, arrived)
    if not answer.shown:  # superseded, cancelled or empty: nothing stale reaches the editor
        ls.protocol.on_sent.pop(request_id, None)
        return reply(None)
    if delivered:
        return delivered[0]
    if answer.completion is not None:  # from the caches: the event loop writes it
        _when_sent(ls, request_id, _accounting(arrived, changes_ms, answer.completion.timings_ms))
    return reply(_answer(answer.shown, here, replace))


async def _model_within_budget(ls: CodecompleteServer) -> bool:
    """A request that arrives while the model loads waits for it, within the time budget; True when it is ready.
    Otherwise the status says so in words, and clients ask again when the status turns ready."""
    budget_s = ls.backend.settings.time_budget_ms / 1000
    loading = ls.backend.state in ("idle", "loading")
    if loading:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(_loaded(ls).wait(), budget_s)
    if ls.backend.ready:
        return True
    if loading:
        ls.last_stop_reason = "loading"
        ls.notice = "no suggestion yet: the model is still loading; suggestions start as soon as it is ready"
        _publish(ls)
    return False


def _after_request(ls: CodecompleteServer, answer: Answer, arrived: float) -> None:
    """Remember what the user got, put a sentence on the status when it was nothing for a reason they can act
    on, and tell the client."""
    completion = answer.completion
    if completion is None or answer.outcome is not None:
        return  # superseded or cancelled: the user is typing, the next request speaks for itself
    if arrived:
        ls.last_latency_ms = round((time.perf_counter() - arrived) * 1000, 1)
    ls.last_stop_reason = completion.stop_reason.value
    ls.notice = None if answer.shown else _notice(ls.backend.settings, completion)
    _publish(ls)


def _notice(settings: Settings, completion: Completion) -> str | None:
    """Why nothing was shown, in words, with the setting to change; None when the model simply had nothing."""
    if completion.stop_reason != StopReason.TIME_BUDGET:
        return None
    tokens = completion.tokens
    done = tokens["reused"] + tokens["evaluated"]
    if done < tokens["prompt"]:
        return (f"no suggestion: the {settings.time_budget_ms} ms time budget ran out while reading the prompt "
                f"({done} of {tokens['prompt']} tokens); raise timeBudgetMs or lower tokenBudget")
    return (f"no suggestion: the {settings.time_budget_ms} ms time budget ran out before a whole line was written "
            f"({tokens['generated']} tokens); raise timeBudgetMs")


def _when_sent(ls: CodecompleteServer, request_id: Any, work: Callable[[], None] | None) -> None:
    """Run ``work`` right after the answer to ``request_id`` is written."""
    if work is None:
        return
    if request_id is None:
        work()
        return
    ls.protocol.on_sent[request_id] = work


def _accounting(arrived: float, changes_ms: float, timings: dict[str, float]) -> Callable[[], None] | None:
    """What adds the server's own time for this keystroke to the request's timings once the answer is written
    (``keystroke``): its document changes since the last request and the request from its arrival to its answer
    written, less llama.cpp's prompt evaluation and generation. The client's and the pipe's time are not in it."""
    if not arrived:
        return None
    llama = timings.get("prompt_eval", 0.0) + timings.get("generate", 0.0)

    def written() -> None:
        timings["keystroke"] = changes_ms + (time.perf_counter() - arrived) * 1000 - llama

    return written


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
async def on_status(ls: CodecompleteServer, params: Any) -> dict[str, Any]:
    status = {**await ls.backend.status(), **_summary(ls)}
    status["effective_settings"] = {_camel(k): v for k, v in asdict(ls.backend.settings).items()}
    status["documents"] = len(ls.documents)
    status["reading_ahead"] = ls.reading_ahead
    status["position_encoding"] = getattr(ls.encoding, "value", ls.encoding)
    return status


@server.feature(LAST_COMPLETION_METHOD)
def on_last_completion(ls: CodecompleteServer, params: Any) -> dict[str, Any] | None:
    """The last completion with its exact prompt, tokens, timings and stop reason: no opaque context."""
    return ls.backend.last_completion()


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def run(tcp: str | None = None, daemon: bool = True) -> None:
    """Serve over stdio (editors) or loopback TCP (debugging). Logs go to stderr, never to the protocol.

    With ``daemon`` the model lives in the shared daemon (started if none runs); without, in this process.
    """
    level = os.environ.get("CODECOMPLETE_LOG", "warning").upper()
    logging.basicConfig(level=getattr(logging, level, logging.WARNING), stream=sys.stderr,
                        format="codecomplete-lsp: %(name)s: %(message)s")
    if daemon:
        from codecomplete.serving.client import DaemonBackend

        server.backend = DaemonBackend(Settings())
    else:
        from codecomplete.serving.backend import LocalBackend

        server.backend = LocalBackend(Settings())
    if tcp:
        server.start_tcp(*parse_loopback(tcp))
    else:
        sys.exit(_serve_stdio(server))


def _serve_stdio(ls: CodecompleteServer) -> int:
    """Serve until the editor closes the input; the exit status (1: the stream broke, see ``transport``).

    pygls's stdio reader hands every header line and body to a thread pool (three hand-offs per message, six per
    keystroke); reading the pipe on the event loop takes that out of each keystroke's latency. A stdin that is no
    pipe (a file) is read through pygls's thread-pool reader."""

    async def serve() -> int:
        loop = asyncio.get_running_loop()
        reader: Any = asyncio.StreamReader(limit=MAX_HEADER_LINE, loop=loop)
        try:
            await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader, loop=loop), sys.stdin.buffer)
        except ValueError:
            reader = StdinAsyncReader(sys.stdin.buffer, ls.thread_pool)
        ls.protocol.set_writer(StdoutWriter(sys.stdout.buffer))
        ls.protocol.threadsafe_writer = True  # a blocking write under the protocol's lock, from any thread
        return await transport.serve(reader, ls.protocol, ls._stop_event)

    ls._stop_event = threading.Event()
    status = 0
    try:
        status = asyncio.run(serve())
    except BrokenPipeError:
        log.error("the editor closed the connection")
    except KeyboardInterrupt:
        pass
    finally:
        ls.backend.close()
        ls.shutdown()
    return status
