"""Where the server reaches into pygls: the protocol subclass, each override guarded by tests/test_pygls_guards.py.

pygls 2 has no public hooks for these, so they override its methods; a pygls upgrade that renames or reshapes one
fails those tests, not an editor.
- UTF-8 positions are preferred whenever the client offers them (no UTF-16 conversions at all then).
- Each message is timed from its arrival to its answer being written (the keystroke's own cost).
- The model thread may write an answer itself (``answer_now``); pygls's later answer for that id is dropped.
- Error answers carry no traceback (pygls puts one in ``error.data``): the editor shows what it gets.
- pygls's own copy of open documents is bypassed (``Documents`` keeps the one copy).
(Malformed messages never reach pygls: see ``transport``.)
"""

from __future__ import annotations

import contextvars
import threading
from typing import Any

from lsprotocol import types
from pygls.protocol import LanguageServerProtocol
from pygls.protocol.language_server import lsp_method

# The message being handled: when it began to arrive (perf_counter; 0 when unknown) and its request id.
ARRIVED: contextvars.ContextVar[float] = contextvars.ContextVar("arrived", default=0.0)
REQUEST_ID: contextvars.ContextVar[Any] = contextvars.ContextVar("request_id", default=None)


class Protocol(LanguageServerProtocol):
    """pygls's language server protocol with the overrides listed in the module docstring."""

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

    def _handle_notification(self, method_name: str, params: Any) -> None:
        """pygls files the future of a generator-style handler (didOpen, didChange, didClose) under a fresh id
        and, for a notification, never removes it: a future and a lock per keystroke, ~1 KB, for the life of the
        server (0.6 MB a minute while typing). Those this notification added go once done."""
        futures = self._request_futures
        before = set(futures)  # requests in flight: a handful (the model thread may answer one meanwhile)
        super()._handle_notification(method_name, params)
        for msg_id in [key for key in list(futures) if key not in before]:
            future = futures.get(msg_id)
            if future is not None:
                future.add_done_callback(lambda _done, key=msg_id: futures.pop(key, None))

    def _send_data(self, data: Any) -> None:
        with self._writing:
            super()._send_data(data)

    def _send_response(self, msg_id: Any, result: Any = None, error: Any = None) -> None:
        if error is not None:
            error.data = None  # a traceback, for pygls's internal errors: the log has it
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
