"""Hostile input on the language server's stdio, as raw bytes: every case gets a JSON-RPC answer or a clean exit,
never silence or a traceback, and the server still gives a real suggestion afterwards."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

SERVER = [sys.executable, "-m", "codecomplete.cli", "lsp", "--no-daemon"]
GOOD = "def add(a, b):\n    return "
CAPS = {"general": {"positionEncodings": ["utf-16"]}}


class RawServer:
    """The real server over pipes: frames written as bytes, everything it sends collected in order."""

    def __init__(self, cwd: Path | None = None) -> None:
        self.proc = subprocess.Popen(SERVER, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=dict(os.environ), cwd=cwd)
        self.messages: queue.Queue[dict[str, Any]] = queue.Queue()
        self.notes: list[dict[str, Any]] = []
        self._ids = 100
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        out = self.proc.stdout
        assert out is not None
        while True:
            headers = b""
            while not headers.endswith(b"\r\n\r\n"):
                byte = out.read(1)
                if not byte:
                    return
                headers += byte
            length = int(headers.split(b"Content-Length:")[1].split(b"\r\n")[0])
            self.messages.put(json.loads(out.read(length)))

    def send_bytes(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def send(self, message: dict[str, Any] | bytes) -> None:
        body = message if isinstance(message, bytes) else json.dumps(message).encode()
        self.send_bytes(b"Content-Length: %d\r\n\r\n%s" % (len(body), body))

    def request(self, method: str, params: Any = None, *, with_params: bool = True) -> int:
        self._ids += 1
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": self._ids, "method": method}
        if with_params:
            message["params"] = params
        self.send(message)
        return self._ids

    def notify(self, method: str, params: Any) -> None:
        self.send({"jsonrpc": "2.0", "method": method, "params": params})

    def answer(self, msg_id: Any, timeout: float = 120) -> dict[str, Any]:
        """The response to ``msg_id``; notifications meanwhile are kept, server requests answered."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                message = self.messages.get(timeout=0.5)
            except queue.Empty:
                assert self.proc.poll() is None, f"the server exited: {self.stderr()}"
                continue
            if "method" in message and "id" in message:  # a request to us (progress tokens): accept it
                self.send({"jsonrpc": "2.0", "id": message["id"], "result": None})
            elif "method" in message:
                self.notes.append(message)
            elif message.get("id") == msg_id:
                return message
        raise AssertionError(f"no answer to {msg_id}")

    def initialize(self) -> None:
        self.answer(self.request("initialize", {"capabilities": CAPS, "initializationOptions": {}}))
        self.notify("initialized", {})
        deadline = time.monotonic() + 120
        while self.answer(self.request("codecomplete/status", {}))["result"]["state"] != "ready":
            assert time.monotonic() < deadline, "the model did not load"
            time.sleep(0.1)

    def open(self, uri: str, text: str) -> None:
        self.notify("textDocument/didOpen", {"textDocument": {"uri": uri, "languageId": "python", "version": 1,
                                                              "text": text}})

    def suggest(self, uri: str, line: int, character: int) -> dict[str, Any]:
        return self.answer(self.request("textDocument/inlineCompletion", {
            "textDocument": {"uri": uri}, "position": {"line": line, "character": character},
            "context": {"triggerKind": 1}}))

    def real_suggestion(self) -> str:
        """A completion for an ordinary document: the server still works."""
        self._ids += 1
        uri = f"file:///good{self._ids}.py"
        self.open(uri, GOOD)
        items = self.suggest(uri, 1, 11)["result"]["items"]
        assert items and items[0]["insertText"].strip(), "a real suggestion"
        return items[0]["insertText"]

    def stderr(self) -> str:
        return self.proc.stderr.read().decode(errors="replace") if self.proc.poll() is not None else ""

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


@pytest.fixture
def server() -> Any:
    raw = RawServer()
    yield raw
    raw.close()


def errors_shown(raw: RawServer) -> list[str]:
    return [n["params"]["message"] for n in raw.notes
            if n["method"] == "window/showMessage" and n["params"]["type"] == 1]


def test_hostile_messages_get_json_rpc_answers_and_the_server_keeps_serving(server: RawServer) -> None:
    before = server.answer(server.request("codecomplete/status", {}))
    assert before["error"]["code"] == -32002  # not initialized yet
    server.initialize()
    again = server.answer(server.request("initialize", {"capabilities": {}}))
    assert again["error"]["code"] == -32600
    server.real_suggestion()

    for body, code in ((b"{not json", -32700), (b"[1, 2, 3]", -32600), (b'"just a string"', -32600),
                       (b'{"jsonrpc": "2.0", "id": 1, "method": "x", "params": "\xff"}', -32700),
                       (b'{"jsonrpc": "2.0", "id": {"nested": 1}, "method": "codecomplete/status"}', -32600)):
        server.send(body)
        answer = server.answer(None)
        assert answer["error"]["code"] == code and answer["id"] is None
        assert "Traceback" not in json.dumps(answer)
        server.real_suggestion()

    for method in ("codecomplete/status", "codecomplete/lastCompletion"):  # params may be absent
        answer = server.answer(server.request(method, with_params=False))
        assert "result" in answer, answer
    bad = server.answer(server.request("textDocument/inlineCompletion", {"position": 5}))
    assert bad["error"]["code"] == -32602 and "data" not in bad["error"]
    assert errors_shown(server) == []  # no pop-ups with Python exception texts
    server.real_suggestion()


def test_edits_and_texts_that_used_to_break_it(server: RawServer) -> None:
    server.initialize()
    # lone surrogates: valid JSON, not valid text
    server.send(b'{"jsonrpc": "2.0", "method": "textDocument/didOpen", "params": {"textDocument": {"uri": '
                b'"file:///s.py", "languageId": "python", "version": 1, "text": "x = \\"\\ud800\\"\\ny = "}}}')
    answer = server.suggest("file:///s.py", 1, 4)
    assert "result" in answer and "Traceback" not in json.dumps(answer)
    server.real_suggestion()

    # an empty document: an empty answer, not an internal error
    server.open("file:///empty.py", "")
    assert server.suggest("file:///empty.py", 0, 0)["result"] == {"items": []}

    # lone carriage returns end lines
    server.open("file:///cr.py", "import os\rx = os.")
    server.suggest("file:///cr.py", 1, 7)
    last = server.answer(server.request("codecomplete/lastCompletion", {}))["result"]
    assert (last["prompt"] + last["token_healing"]).endswith("x = os.")

    # a didChange batch with one change that does not fit is refused whole, with one warning
    server.open("file:///b.py", GOOD)
    server.notify("textDocument/didChange", {"textDocument": {"uri": "file:///b.py", "version": 2}, "contentChanges": [
        {"range": {"start": {"line": 1, "character": 4}, "end": {"line": 1, "character": 4}}, "text": "x = 1\n    "},
        {"range": {"start": {"line": 40, "character": 0}, "end": {"line": 40, "character": 0}}, "text": "?"}]})
    assert server.suggest("file:///b.py", 1, 11)["result"] == {"items": []}  # out of sync: nothing stale
    warnings = [n for n in server.notes if n["method"] == "window/showMessage" and n["params"]["type"] == 2]
    assert len(warnings) == 1 and "b.py" in warnings[0]["params"]["message"]
    server.notify("textDocument/didChange", {"textDocument": {"uri": "file:///b.py", "version": 3},
                                             "contentChanges": [{"text": GOOD}]})  # the editor resyncs
    assert server.suggest("file:///b.py", 1, 11)["result"]["items"]

    # a 5 MB line of minified code: bounded work, not a minute of tokenizing
    line = "var a=" + "x+" * 2_500_000 + "1;"
    server.open("file:///min.js", line + "\nfoo(")
    started = time.monotonic()
    server.suggest("file:///min.js", 0, 3_000_000)
    assert time.monotonic() - started < 30
    server.real_suggestion()
    assert errors_shown(server) == []


@pytest.mark.parametrize("frame", [
    b"Content-Type: x\r\n\r\n{}",  # no Content-Length
    b"Content-Length: -5\r\n\r\n{}",
    b"Content-Length: lots\r\n\r\n{}",
    b"Content-Length: 999999999999\r\n\r\n{}",
    b"Content-Length: 500\r\n\r\n{\"jsonrpc\"",  # then the input ends inside the message
])
def test_a_broken_stream_ends_the_server_with_a_message(frame: bytes) -> None:
    raw = RawServer()
    try:
        raw.answer(raw.request("initialize", {"capabilities": CAPS}))
        raw.send_bytes(frame)
        assert raw.proc.stdin is not None
        raw.proc.stdin.close()
        assert raw.proc.wait(timeout=30) == 1
        err = raw.stderr()
        assert "message stream from the editor is broken" in err and "Traceback" not in err
    finally:
        raw.close()


def test_the_end_of_input_between_messages_is_a_clean_exit() -> None:
    raw = RawServer()
    try:
        raw.answer(raw.request("initialize", {"capabilities": CAPS}))
        assert raw.proc.stdin is not None
        raw.proc.stdin.close()
        assert raw.proc.wait(timeout=30) == 0
    finally:
        raw.close()
