"""The LSP wire (lsp/transport.py): framing, JSON-RPC's error answers, the initialize handshake, lone surrogates."""

from __future__ import annotations

import asyncio
import json

import pytest

from codecomplete.lsp.transport import (
    INVALID_REQUEST,
    MAX_MESSAGE_BYTES,
    PARSE_ERROR,
    SERVER_NOT_INITIALIZED,
    FramingError,
    Session,
    decode,
    read_frame,
)


def reader(data: bytes) -> asyncio.StreamReader:
    stream = asyncio.StreamReader(limit=1 << 12)
    stream.feed_data(data)
    stream.feed_eof()
    return stream


class _Clock:
    arrived_at = 0.0


def frame(body: bytes, header: bytes | None = None) -> bytes:
    return (header if header is not None else b"Content-Length: %d\r\n" % len(body)) + b"\r\n" + body


async def frames(data: bytes) -> list[bytes | None]:
    stream, out = reader(data), []
    while True:
        body = await read_frame(stream, _Clock())  # type: ignore[arg-type]
        out.append(body)
        if body is None:
            return out


async def test_frames_are_read_one_after_the_other() -> None:
    one, two = b'{"a": 1}', b'{"b": "\xc3\xa9"}'
    data = frame(one) + frame(two, b"Content-Type: application/vscode-jsonrpc; charset=utf-8\r\ncontent-length: %d\r\n"
                                   % len(two))
    assert await frames(data) == [one, two, None]


@pytest.mark.parametrize("header", [
    b"",  # no Content-Length at all
    b"Content-Length: -5\r\n",
    b"Content-Length: five\r\n",
    b"Content-Length: 0\r\n",
    b"Content-Length: %d\r\n" % (MAX_MESSAGE_BYTES + 1),
    b"Content-Length: 999\r\n",  # more than the input holds: EOF inside the message
    b"X-Junk: " + b"x" * 10_000 + b"\r\n",  # a header line that never ends within the limit
])
async def test_a_frame_that_cannot_be_read_is_a_framing_error(header: bytes) -> None:
    with pytest.raises(FramingError):
        await frames(frame(b'{"jsonrpc": "2.0", "method": "x"}', header))


async def test_eof_inside_the_headers_is_a_framing_error() -> None:
    with pytest.raises(FramingError, match="inside"):
        await frames(b"Content-Length: 10\r\n")


@pytest.mark.parametrize(("body", "code"), [
    (b"{not json", PARSE_ERROR),
    (b'{"jsonrpc": "2.0", "id": 1, "method": "x", "params": "\xff\xfe"}', PARSE_ERROR),  # not UTF-8
    (b"[1, 2]", INVALID_REQUEST),  # a batch
    (b'"text"', INVALID_REQUEST),
    (b'{"jsonrpc": "2.0", "id": {"a": 1}, "method": "x"}', INVALID_REQUEST),
    (b'{"jsonrpc": "2.0", "id": true, "method": "x"}', INVALID_REQUEST),
    (b'{"jsonrpc": "2.0", "id": 1.5, "method": "x"}', INVALID_REQUEST),
    (b'{"jsonrpc": "2.0", "id": 1, "method": 7}', INVALID_REQUEST),
    (b'{"jsonrpc": "1.0", "id": 1, "method": "x"}', INVALID_REQUEST),
    (b'{"jsonrpc": "2.0", "id": 1}', INVALID_REQUEST),
])
def test_bodies_that_are_no_message_get_the_json_rpc_error(body: bytes, code: int) -> None:
    data, error = decode(body)
    assert data is None and error is not None and error["error"]["code"] == code
    assert set(error) == {"jsonrpc", "id", "error"} and "Traceback" not in json.dumps(error)


def test_params_may_be_absent_and_lone_surrogates_become_replacement_characters() -> None:
    data, error = decode(b'{"jsonrpc": "2.0", "id": 2, "method": "codecomplete/status"}')
    assert error is None and data == {"jsonrpc": "2.0", "id": 2, "method": "codecomplete/status", "params": None}
    text = '{"jsonrpc": "2.0", "method": "x", "params": {"t": ["a\\ud800b", "\\ud83d\\ude00", "\\udfff"]}}'
    data, error = decode(text.encode())
    assert error is None and data["params"]["t"] == ["a\ufffdb", "\U0001f600", "\ufffd"]


def test_the_initialize_handshake_is_enforced() -> None:
    session = Session()
    status = {"jsonrpc": "2.0", "id": 1, "method": "codecomplete/status", "params": None}
    assert session.refuse(status)["error"]["code"] == SERVER_NOT_INITIALIZED
    assert session.drops({"jsonrpc": "2.0", "method": "textDocument/didOpen", "params": {}})
    assert not session.drops({"jsonrpc": "2.0", "method": "exit", "params": None})
    initialize = {"jsonrpc": "2.0", "id": 2, "method": "initialize", "params": {"capabilities": {}}}
    assert session.refuse(initialize) is None
    assert session.refuse(status) is None and not session.drops({"jsonrpc": "2.0", "method": "x", "params": None})
    assert session.refuse({**initialize, "id": 3})["error"]["code"] == INVALID_REQUEST
