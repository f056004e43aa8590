"""The LSP wire: framed JSON-RPC messages over stdio, read on the event loop, checked before pygls sees them.

An editor restarts a server that exits; it cannot fix one that went silent. So:
- a frame that cannot be read (no, negative, non-numeric or absurd Content-Length; EOF inside a message; a header
  line that never ends) ends the server with one line on stderr and exit status 1;
- a body that is not UTF-8 or not JSON is answered with -32700 (parse error), one that is not a JSON-RPC message
  (not an object, a batch, an id that is no integer or string, a method that is no string) with -32600, both
  with a null id, as JSON-RPC 2.0 says; requests before ``initialize`` get -32002 and a second ``initialize``
  -32600; ``params`` may be absent;
- strings with lone UTF-16 surrogates (valid JSON, not valid text) have them replaced by U+FFFD, which keeps
  UTF-16 positions where they were.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from typing import Any

from lsprotocol import types
from pygls.exceptions import JsonRpcException, JsonRpcInternalError, JsonRpcInvalidParams
from pygls.protocol import JsonRPCProtocol

from codecomplete.lsp.protocol import Protocol

log = logging.getLogger("codecomplete.lsp")

MAX_MESSAGE_BYTES = 64 << 20  # a didOpen of a large generated file fits; a lying Content-Length does not
MAX_HEADER_LINE = 1 << 12
_CONTENT_LENGTH = re.compile(rb"Content-Length: *([0-9]{1,12})\r\n", re.IGNORECASE)
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
PARSE_ERROR, INVALID_REQUEST, SERVER_NOT_INITIALIZED = -32700, -32600, -32002


class FramingError(Exception):
    """The byte stream no longer splits into messages: nothing after this point can be trusted."""


async def read_frame(reader: Any, protocol: Protocol) -> bytes | None:
    """The next message body; None at a clean end of input (between messages). The protocol learns when the
    message's first header line came (the keystroke's clock starts there)."""
    length: int | None = None
    first = True
    while True:
        try:
            line = await reader.readline()
        except (ValueError, asyncio.LimitOverrunError):
            raise FramingError(f"a header line longer than {MAX_HEADER_LINE} bytes") from None
        if first:
            protocol.arrived_at = time.perf_counter()
            if not line:
                return None
            first = False
        if not line:
            raise FramingError("the input ended inside a message's headers")
        if len(line) > MAX_HEADER_LINE:
            raise FramingError(f"a header line longer than {MAX_HEADER_LINE} bytes")
        if line in (b"\r\n", b"\n"):
            break
        if line[:15].lower() == b"content-length:":
            match = _CONTENT_LENGTH.fullmatch(line)
            if match is None:
                raise FramingError(f"bad Content-Length header {line[:80]!r}")
            length = int(match.group(1))
    if length is None:
        raise FramingError("a message without a Content-Length header")
    if not 0 < length <= MAX_MESSAGE_BYTES:
        raise FramingError(f"Content-Length {length} is outside 1..{MAX_MESSAGE_BYTES}")
    try:
        body = await reader.readexactly(length)
    except asyncio.IncompleteReadError:
        body = b""
    if len(body) != length:
        raise FramingError(f"the input ended inside a message ({length} bytes announced)")
    return body


def _error(msg_id: Any, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": msg_id, "error": {"code": code, "message": message}}


def decode(body: bytes) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(the message, None), or (None, the error answer to send): JSON-RPC's checks on one body."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, _error(None, PARSE_ERROR, f"Parse error: the message is not UTF-8 (byte {exc.start})")
    try:
        data = json.loads(text)
    except ValueError as exc:
        return None, _error(None, PARSE_ERROR, f"Parse error: {exc}")
    if not isinstance(data, dict):
        kind = "a batch (LSP has none)" if isinstance(data, list) else f"a JSON {type(data).__name__}"
        return None, _error(None, INVALID_REQUEST, f"Invalid Request: the message is {kind}, not an object")
    msg_id = data.get("id")
    if "id" in data and (isinstance(msg_id, bool) or not isinstance(msg_id, (int, str, type(None)))):
        return None, _error(None, INVALID_REQUEST, "Invalid Request: an id must be an integer or a string")
    method = data.get("method")
    if "method" in data and not isinstance(method, str):
        return None, _error(msg_id, INVALID_REQUEST, "Invalid Request: method must be a string")
    if data.get("jsonrpc") != "2.0":
        return None, _error(msg_id, INVALID_REQUEST, 'Invalid Request: "jsonrpc" must be "2.0"')
    if "method" not in data and "result" not in data and "error" not in data:
        return None, _error(msg_id, INVALID_REQUEST, "Invalid Request: neither a request, a notification nor an answer")
    if method is not None and "params" not in data:
        data["params"] = None  # optional in JSON-RPC: the handler gets None
    if _SURROGATE_ESCAPE.search(body):
        data = _without_lone_surrogates(data)
    return data, None


def _without_lone_surrogates(value: Any) -> Any:
    if isinstance(value, str):
        return _LONE_SURROGATE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {k: _without_lone_surrogates(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_lone_surrogates(v) for v in value]
    return value


class Session:
    """The initialize handshake's state, for the checks pygls does not make."""

    def __init__(self) -> None:
        self.initialize_seen = False

    def refuse(self, data: dict[str, Any]) -> dict[str, Any] | None:
        """The error answer for a message that must not reach the server now; None to let it through."""
        method, is_request = data.get("method"), "id" in data and "method" in data
        if method == types.INITIALIZE:
            if self.initialize_seen:
                return _error(data.get("id"), INVALID_REQUEST, "initialize may be sent only once")
            self.initialize_seen = True
            return None
        if not self.initialize_seen and is_request:
            return _error(data.get("id"), SERVER_NOT_INITIALIZED, f"{method}: the server is not initialized yet")
        return None

    def drops(self, data: dict[str, Any]) -> bool:
        """Notifications before initialize are dropped, except exit (LSP)."""
        return not self.initialize_seen and "id" not in data and data.get("method") != types.EXIT


async def serve(reader: Any, protocol: Protocol, stop: Any) -> int:
    """Read and dispatch messages until the input ends (0) or can no longer be framed (1)."""
    session = Session()
    while not stop.is_set():
        try:
            body = await read_frame(reader, protocol)
        except FramingError as exc:
            log.error("the message stream from the editor is broken (%s); exiting so the editor restarts us", exc)
            return 1
        if body is None:
            return 0
        data, error = decode(body)
        if data is not None:
            error = session.refuse(data)
            if error is None and session.drops(data):
                continue
        if error is not None:
            protocol._send_data(error)
            continue
        assert data is not None
        try:
            message = protocol.structure_message(data)
        except JsonRpcInvalidParams as exc:
            _answer_error(protocol, data, exc)
            continue
        except JsonRpcException as exc:
            _answer_error(protocol, data, JsonRpcInternalError(str(exc.__cause__ or exc)))
            continue
        try:
            protocol.handle_message(message)
        except Exception:  # a bug must cost this message, never the server
            log.exception("cannot handle %s", data.get("method"))
            _answer_error(protocol, data, JsonRpcInternalError("internal error"))
    return 0


def _answer_error(protocol: JsonRPCProtocol, data: dict[str, Any], exc: JsonRpcException) -> None:
    """Answer a request's id with the error; a notification has nobody to answer (logged only)."""
    log.warning("%s: %s", data.get("method"), exc)
    if "id" in data and "method" in data:
        error = exc.to_response_error()
        protocol._send_data(_error(data["id"], error.code, error.message))
