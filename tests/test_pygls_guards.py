"""Guards for the pygls internals lsp/protocol.py and lsp/server.py override or call: a pygls upgrade that renames or
reshapes one of them fails here, in the fast tier, instead of in an editor."""

from __future__ import annotations

import inspect
import json
import threading
from typing import Any

import pygls.io_
import pytest
from lsprotocol import types
from pygls.exceptions import JsonRpcInternalError, JsonRpcInvalidParams
from pygls.lsp.server import LanguageServer
from pygls.protocol import JsonRPCNotification, LanguageServerProtocol

from codecomplete.lsp.protocol import Protocol

# The overridden methods: (name, parameter names after self) as pygls 2.1 defines them.
OVERRIDDEN = {
    "_send_data": ["data"],
    "_send_response": ["msg_id", "result", "error"],
    "handle_message": ["message"],
    "_handle_notification": ["method_name", "params"],
    "lsp_initialize": ["params"],
    "lsp_text_document__did_open": ["params"],
    "lsp_text_document__did_change": ["params"],
    "lsp_text_document__did_close": ["params"],
}


def test_the_overridden_methods_exist_with_the_same_parameters() -> None:
    for name, params in OVERRIDDEN.items():
        original = getattr(LanguageServerProtocol, name, None)
        assert original is not None, f"pygls no longer has LanguageServerProtocol.{name}"
        assert list(inspect.signature(original).parameters)[1:] == params, name
        assert getattr(Protocol, name) is not original, f"{name} is no longer overridden"


def test_the_internals_the_server_calls_are_still_there() -> None:
    assert inspect.isgeneratorfunction(LanguageServerProtocol.lsp_initialize)  # we `yield from` it
    assert callable(getattr(LanguageServerProtocol, "get_message_type", None))
    assert list(inspect.signature(pygls.io_.run_async).parameters) == [
        "stop_event", "reader", "protocol", "logger", "error_handler"]
    assert pygls.io_.StdinAsyncReader and pygls.io_.StdoutWriter
    assert callable(getattr(LanguageServer, "report_server_error", None))
    assert LanguageServer("guard", "0")._stop_event is None  # we set it before serving stdio ourselves
    JsonRPCNotification(method="$/x", params=None, jsonrpc="2.0")


class _Capture:
    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []

    def write(self, data: bytes) -> None:
        self.frames.append(json.loads(data.split(b"\r\n\r\n", 1)[1]))

    def close(self) -> None:
        pass


def _server() -> tuple[LanguageServer, _Capture]:
    server = LanguageServer("guard", "0", protocol_cls=Protocol)
    capture = _Capture()
    server.protocol.set_writer(capture)
    server.protocol.threadsafe_writer = True
    return server, capture


def test_an_answer_written_early_is_the_only_answer() -> None:
    server, capture = _server()
    protocol: Protocol = server.protocol
    sent = []
    protocol.on_sent[7] = lambda: sent.append(7)
    protocol.answer_now(7, {"items": []}, threading.Event())
    protocol._send_response(7, {"items": ["late"]})  # pygls's own answer when the handler returns
    assert [f["id"] for f in capture.frames] == [7] and capture.frames[0]["result"] == {"items": []}
    assert sent == [7]
    protocol._send_response(8, None)  # other ids are answered as usual
    assert [f["id"] for f in capture.frames] == [7, 8]


def test_error_answers_carry_no_traceback() -> None:
    server, capture = _server()
    error = JsonRpcInternalError.of((ValueError, ValueError("boom"), None)).to_response_error()
    server.protocol._send_response(4, error=error)
    assert capture.frames[0]["error"]["code"] == -32603 and "data" not in capture.frames[0]["error"]


def test_the_internals_the_transport_calls_are_still_there() -> None:
    """transport.serve structures and dispatches messages itself and answers errors through _send_data."""
    assert list(inspect.signature(LanguageServerProtocol.structure_message).parameters)[1:] == ["data"]
    assert list(inspect.signature(LanguageServerProtocol._send_data).parameters)[1:] == ["data"]
    server, capture = _server()
    data = {"jsonrpc": "2.0", "id": 3, "method": types.TEXT_DOCUMENT_INLINE_COMPLETION, "params": {"position": 5}}
    with pytest.raises(JsonRpcInvalidParams):
        server.protocol.structure_message(data)
    assert isinstance(server.protocol.structure_message({"jsonrpc": "2.0", "method": "x/y", "params": None}),
                      JsonRPCNotification)


def test_utf8_is_preferred_when_offered() -> None:
    server, _capture = _server()
    params = types.InitializeParams(capabilities=types.ClientCapabilities(general=types.GeneralClientCapabilities(
        position_encodings=[types.PositionEncodingKind.Utf16, types.PositionEncodingKind.Utf8])))
    gen = server.protocol.lsp_initialize(params)
    try:
        while True:
            next(gen)
    except StopIteration as done:
        result = done.value
    assert result.capabilities.position_encoding == types.PositionEncodingKind.Utf8


def test_notifications_leave_no_futures_behind() -> None:
    """pygls keeps a generator handler's future under a fresh id; for a notification nothing removed it (a
    thin server grew 0.6 MB a minute while someone typed)."""
    server, _capture = _server()
    protocol: Protocol = server.protocol
    seen: list[int] = []
    server.feature(types.TEXT_DOCUMENT_DID_CHANGE)(lambda params: seen.append(params.text_document.version))
    for version in range(200):
        protocol._handle_notification(types.TEXT_DOCUMENT_DID_CHANGE, types.DidChangeTextDocumentParams(
            types.VersionedTextDocumentIdentifier(uri="file:///a.py", version=version), []))
    assert seen == list(range(200))
    assert protocol._request_futures == {}


def test_freezing_what_was_read_frees_the_garbage_first() -> None:
    """After each opened file the server freezes what lives (collections need not walk it); garbage frozen with it is
    never freed, and a thin server grew 0.6 MB a minute."""
    import gc
    import weakref

    from codecomplete.lsp import server as lsp_server

    class Node:
        pass

    cycle = Node()
    cycle.me = cycle  # type: ignore[attr-defined]
    gone = weakref.ref(cycle)
    del cycle
    try:
        lsp_server._freeze()
        assert gone() is None
    finally:
        gc.unfreeze()
