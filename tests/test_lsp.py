"""`codecomplete lsp` driven over stdio by a real LSP client (pygls/pytest-lsp) with the embedded model."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

import pytest
from lsprotocol import types
from pytest_lsp import client_capabilities, make_test_lsp_client

pytestmark = pytest.mark.slow  # loads a model or starts processes

SERVER = [sys.executable, "-m", "codecomplete.cli", "lsp", "--no-daemon"]  # test_daemon: via a daemon
URI = "file:///work/example.py"
PY_TEXT = '''import math


def area(radius: float) -> float:
    """Area of a circle."""
    return math.pi * radius ** 2


def circumference(radius: float) -> float:
    """Circumference of a circle."""
'''


def server_env(tmp_path: Path) -> dict[str, str]:
    """The session's environment: its private runtime dir and pinned config (conftest), not the user's."""
    return dict(os.environ)


async def start(
    tmp_path: Path,
    *,
    options: dict | None = None,
    encodings: list[str] | None = None,
    root: Path | None = None,
    server: list[str] = SERVER,
):
    client = make_test_lsp_client()
    await client.start_io(*server, env=server_env(tmp_path))
    caps = client_capabilities("neovim@v0.11.0")
    if encodings is not None:
        caps.general.position_encodings = encodings
    result = await client.initialize_session(
        types.InitializeParams(
            capabilities=caps, initialization_options=options or {}, root_uri=root.as_uri() if root else None
        )
    )
    await wait_ready(client)
    return client, result


async def wait_ready(client, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = await client.protocol.send_request_async("codecomplete/status", {})
        if status.state in ("ready", "error"):
            assert status.state == "ready", status.error
            return status
        await asyncio.sleep(0.1)
    raise AssertionError("the model did not load in time")


async def wait_prefetched(client, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = await client.protocol.send_request_async("codecomplete/status", {})
        if status.stats.prefetched:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("no prefetch in time")


def open_doc(client, text: str, uri: str = URI, language: str = "python") -> None:
    client.text_document_did_open(
        types.DidOpenTextDocumentParams(types.TextDocumentItem(uri=uri, language_id=language, version=1, text=text))
    )


def insert(client, line: int, character: int, text: str, version: int, uri: str = URI) -> None:
    pos = types.Position(line=line, character=character)
    client.text_document_did_change(
        types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
            content_changes=[types.TextDocumentContentChangePartial(range=types.Range(pos, pos), text=text)],
        )
    )


def inline_params(line: int, character: int, uri: str = URI, invoked: bool = True) -> types.InlineCompletionParams:
    kind = types.InlineCompletionTriggerKind.Invoked if invoked else types.InlineCompletionTriggerKind.Automatic
    return types.InlineCompletionParams(
        context=types.InlineCompletionContext(trigger_kind=kind),
        text_document=types.TextDocumentIdentifier(uri=uri),
        position=types.Position(line=line, character=character),
    )


async def test_inline_completion_after_incremental_edits(tmp_path: Path) -> None:
    client, result = await start(tmp_path)
    try:
        assert result.capabilities.inline_completion_provider is not None
        assert result.capabilities.position_encoding == types.PositionEncodingKind.Utf8  # offered → preferred
        for _ in range(100):  # the server says ready a moment before its progress "end" arrives
            load = client.progress_reports.get("codecomplete-load", [])
            if load and type(load[-1]).__name__ == "WorkDoneProgressEnd":
                break
            await asyncio.sleep(0.05)
        assert [type(r).__name__ for r in load][:1] == ["WorkDoneProgressBegin"]
        assert type(load[-1]).__name__ == "WorkDoneProgressEnd" and load[-1].message == "ready"

        open_doc(client, PY_TEXT)
        # incremental edits: type the body of circumference, one piece at a time
        insert(client, 10, 0, "    ret", 2)
        insert(client, 10, 7, "urn ", 3)
        answer = await client.text_document_inline_completion_async(inline_params(10, 11))
        assert answer is not None and len(answer.items) == 1
        item = answer.items[0]
        assert item.insert_text.strip(), "a real suggestion"
        assert "\n" not in item.insert_text  # mid-statement: single line
        assert item.range == types.Range(types.Position(10, 11), types.Position(10, 11))

        last = await client.protocol.send_request_async("codecomplete/lastCompletion", {})
        # the server's text saw both incremental edits (the last token is re-typed by the model: token healing)
        assert (last.prompt + last.token_healing).endswith("    return ")
        assert last.format == "prefix" and last.tokens.prompt == len(last.prompt_token_ids)

        status = await client.protocol.send_request_async("codecomplete/status", {})
        assert status.state == "ready" and status.backend == "CPU"
        assert len(status.latencies_ms) == 1 and status.last_latency_ms > 0
        # The server's own time for the keystroke, outside llama.cpp, covers at least cutting and tokenizing.
        timings = status.recent[-1].timings_ms
        assert timings.keystroke >= timings.context + timings.tokenize
    finally:
        await client.shutdown_session()


async def test_an_opened_file_is_read_ahead_so_a_first_request_anywhere_is_cheap(tmp_path: Path) -> None:
    """After didOpen the server tokenizes the document's lines in the background: the first request in the
    middle of a long file takes its prompt's chunks from memory (at most its first and last are new)."""
    client, _ = await start(tmp_path, options={"maxTokens": 1, "maxTokensSingleLine": 1, "tokenBudget": 1500})
    try:
        text = "".join(f"def step_{i}(value):\n    total = value * {i}\n    return total\n\n\n" for i in range(400))
        open_doc(client, text)
        for _ in range(200):
            status = await client.protocol.send_request_async("codecomplete/status", {})
            if status.reading_ahead == 0 and status.chunks.fresh:
                break
            await asyncio.sleep(0.05)
        before = status.chunks
        assert before.fresh >= 400  # every function's chunk
        row = text[: text.index("def step_200")].count("\n") + 1
        await client.text_document_inline_completion_async(inline_params(row, 4))
        after = (await client.protocol.send_request_async("codecomplete/status", {})).chunks
        assert after.fresh - before.fresh <= 2 and after.reused - before.reused >= 100
    finally:
        await client.shutdown_session()


async def test_cancel_stops_generation_and_next_request_is_prompt(tmp_path: Path) -> None:
    # A long generation: post-processing off so nothing but the token cap or a cancel stops it.
    options = {"maxTokens": 1500, "maxTokensSingleLine": 1500, "timeBudgetMs": 120000, "postprocess": False}
    client, _ = await start(tmp_path, options=options)
    try:
        line = "numbers = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, "
        open_doc(client, line)
        future = client.protocol.send_request(
            types.TEXT_DOCUMENT_INLINE_COMPLETION, inline_params(0, len(line)), msg_id="long-one"
        )
        await asyncio.sleep(0.5)
        client.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id="long-one"))
        with pytest.raises(Exception) as err:
            await asyncio.wrap_future(future)
        assert "cancel" in str(err.value).lower()

        client.workspace_did_change_configuration(
            types.DidChangeConfigurationParams(settings={"codecomplete": {"maxTokens": 8, "maxTokensSingleLine": 8}})
        )
        start_t = time.monotonic()
        answer = await client.text_document_inline_completion_async(inline_params(0, len(line)))
        elapsed = time.monotonic() - start_t
        assert answer.items
        status = await client.protocol.send_request_async("codecomplete/status", {})
        assert status.stats.requests == 2 and status.stats.completions == 1  # the cancelled one never completed
        # Time the new request spent queued behind the cancelled generation (load-independent: the server's
        # own time for the request is subtracted). A generation that ran on would hold it for seconds.
        queued = elapsed - status.recent[-1].latency_ms / 1000
        assert queued < 1.0, f"the new request waited {queued:.2f}s: the cancelled generation ran on"
    finally:
        await client.shutdown_session()


async def test_newer_request_supersedes_older(tmp_path: Path) -> None:
    options = {"maxTokens": 1500, "maxTokensSingleLine": 1500, "timeBudgetMs": 120000, "postprocess": False}
    client, _ = await start(tmp_path, options=options)
    try:
        line = "numbers = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, "
        open_doc(client, line)
        old = asyncio.ensure_future(client.text_document_inline_completion_async(inline_params(0, len(line))))
        await asyncio.sleep(0.5)
        client.workspace_did_change_configuration(
            types.DidChangeConfigurationParams(settings={"maxTokens": 6, "maxTokensSingleLine": 6})
        )
        insert(client, 0, len(line), "11, ", 2)
        new = await client.text_document_inline_completion_async(inline_params(0, len(line) + 4))
        stale = await old
        assert len(stale.items) == 0  # superseded: nothing stale is shown
        assert new.items and new.items[0].range.start == types.Position(0, len(line) + 4)
    finally:
        await client.shutdown_session()


LINE = 'label = "héllo 😀 日本語" + '


@pytest.mark.parametrize("encoding", ["utf-16", "utf-32"])
async def test_utf16_and_utf32_positions_give_the_same_context_as_utf8(tmp_path: Path, encoding: str) -> None:
    text = f"def greet():\n    {LINE}\n"
    units = {
        "utf-8": len(("    " + LINE).encode("utf-8")),
        "utf-16": len(("    " + LINE).encode("utf-16-le")) // 2,
        "utf-32": len("    " + LINE),
    }
    prompts = {}
    for enc in ("utf-8", encoding):
        client, result = await start(tmp_path, encodings=[enc], options={"maxTokens": 4, "maxTokensSingleLine": 4})
        try:
            assert result.capabilities.position_encoding == enc
            open_doc(client, text)
            await client.text_document_inline_completion_async(inline_params(1, units[enc]))
            last = await client.protocol.send_request_async("codecomplete/lastCompletion", {})
            prompts[enc] = last.prompt + last.token_healing  # healing takes the last token off
        finally:
            await client.shutdown_session()
    assert prompts[encoding] == prompts["utf-8"]
    assert prompts["utf-8"].endswith(LINE)  # the prompt ends exactly at the cursor


async def test_completion_fallback_returns_one_marked_item(tmp_path: Path) -> None:
    client, _ = await start(tmp_path, options={"maxTokens": 16, "maxTokensSingleLine": 16})
    try:
        open_doc(client, PY_TEXT + "    return ")
        result = await client.text_document_completion_async(
            types.CompletionParams(types.TextDocumentIdentifier(URI), types.Position(10, 11))
        )
        assert len(result.items) == 1
        item = result.items[0]
        assert "codecomplete" in item.detail and item.text_edit.new_text.strip()
    finally:
        await client.shutdown_session()


async def test_bad_requests_get_empty_answers_and_server_keeps_going(tmp_path: Path) -> None:
    client, _ = await start(tmp_path, options={"maxTokens": 8, "maxTokensSingleLine": 8})
    try:
        unknown = await client.text_document_inline_completion_async(inline_params(0, 0, uri="file:///nope.py"))
        assert len(unknown.items) == 0
        open_doc(client, "x = 1\n")
        past_line = await client.text_document_inline_completion_async(inline_params(40, 0))
        past_char = await client.text_document_inline_completion_async(inline_params(0, 99))
        assert len(past_line.items) == 0 and len(past_char.items) == 0
        big = "x = 1\n" * (20 * 1024 * 1024 // 6)  # a 20 MB document
        open_doc(client, big, uri="file:///work/big.py")
        huge = await client.text_document_inline_completion_async(
            inline_params(3, 0, uri="file:///work/big.py")
        )
        assert isinstance(huge.items, (list, tuple))
        ok = await client.text_document_inline_completion_async(inline_params(1, 0))
        assert isinstance(ok.items, (list, tuple))
        status = await client.protocol.send_request_async("codecomplete/status", {})
        assert status.state == "ready" and status.documents == 2
    finally:
        await client.shutdown_session()


async def test_malformed_messages_do_not_kill_the_server(tmp_path: Path) -> None:
    """Raw bytes on stdin: broken JSON and wrong parameter types get errors; the server keeps answering."""
    proc = await asyncio.create_subprocess_exec(
        *SERVER, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=server_env(tmp_path),
    )

    def send(body: bytes) -> None:
        proc.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)

    async def read_until(marker: bytes, seen: bytes) -> bytes:
        deadline = time.monotonic() + 30
        while marker not in seen and time.monotonic() < deadline:
            chunk = await asyncio.wait_for(proc.stdout.read(65536), timeout=30)
            if not chunk:
                break
            seen += chunk
        return seen

    try:
        send(b'{"jsonrpc": "2.0", "id": 1, "method": "initialize", this is not json')
        send(b'{"jsonrpc": "2.0", "id": 2, "method": "initialize", "params": {"capabilities": {}}}')
        await proc.stdin.drain()
        out = await read_until(b'"capabilities"', b"")
        assert b'"capabilities"' in out, out[:500]
        send(b'{"jsonrpc": "2.0", "method": "initialized", "params": {}}')
        send(b'{"jsonrpc": "2.0", "id": 3, "method": "textDocument/inlineCompletion",'
             b' "params": {"textDocument": 5, "position": "here"}}')
        send(b'{"jsonrpc": "2.0", "id": 4, "method": "codecomplete/status", "params": {}}')
        await proc.stdin.drain()
        out = await read_until(b'"state"', out)
        assert b'"id": 3' in out and b'"error"' in out  # wrong types: an LSP error response
        assert b'"state"' in out  # and the next request is answered
        assert proc.returncode is None  # still running
    finally:
        proc.kill()
        await proc.wait()


async def test_each_request_is_answered_once_whichever_thread_writes_it(tmp_path: Path) -> None:
    """The model thread writes its answers itself; pygls's own answer for the same id, a cancellation's error and a
    superseded request's empty answer must never make a second response."""
    proc = await asyncio.create_subprocess_exec(
        *SERVER, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=server_env(tmp_path),
    )
    responses: dict[int, list[dict]] = {}

    def send(message: dict) -> None:
        body = json.dumps({"jsonrpc": "2.0", **message}).encode()
        proc.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)

    async def answer(request_id: int) -> dict:
        while request_id not in responses:
            header = await asyncio.wait_for(proc.stdout.readuntil(b"\r\n\r\n"), timeout=60)
            length = int(header.split(b"Content-Length:")[1].split(b"\r\n")[0])
            message = json.loads(await proc.stdout.readexactly(length))
            if "id" in message and "method" not in message:
                responses.setdefault(message["id"], []).append(message)
        return responses[request_id][0]

    def edit(version: int, end: int, new: str) -> None:  # replace line 10 from character 11 to ``end``
        rng = {"start": {"line": 10, "character": 11}, "end": {"line": 10, "character": end}}
        send({"method": "textDocument/didChange", "params": {"textDocument": {"uri": URI, "version": version},
                                                             "contentChanges": [{"range": rng, "text": new}]}})

    def inline(request_id: int, character: int) -> None:
        send({"id": request_id, "method": "textDocument/inlineCompletion", "params": {
            "textDocument": {"uri": URI}, "position": {"line": 10, "character": character},
            "context": {"triggerKind": 1}}})

    try:
        send({"id": 1, "method": "initialize", "params": {"capabilities": {}, "initializationOptions": {
            "maxTokens": 12, "maxTokensSingleLine": 12}}})
        await answer(1)
        send({"method": "initialized", "params": {}})
        for request_id in range(2, 600):
            send({"id": request_id, "method": "codecomplete/status", "params": {}})
            if (await answer(request_id))["result"]["state"] == "ready":
                break
            await asyncio.sleep(0.1)
        send({"method": "textDocument/didOpen", "params": {"textDocument": {
            "uri": URI, "languageId": "python", "version": 1, "text": PY_TEXT + "    return "}}})
        inline(1000, 11)  # from the model
        assert (await answer(1000))["result"]["items"]
        inline(1001, 11)  # from the cache, on the event loop
        await answer(1001)
        for request_id in range(1002, 1012, 2):  # a cancel racing the answer, then a request superseding another
            edit(request_id, 11, "x")
            inline(request_id, 12)
            send({"method": "$/cancelRequest", "params": {"id": request_id}})
            inline(request_id + 1, 12)
            await proc.stdin.drain()
            await answer(request_id + 1)
            edit(request_id + 1, 12, "")
        send({"id": 5000, "method": "codecomplete/status", "params": {}})
        await answer(5000)
        await asyncio.sleep(1)  # a duplicate would be written by now
        send({"id": 5001, "method": "codecomplete/status", "params": {}})
        await answer(5001)
        twice = {i: len(r) for i, r in responses.items() if len(r) > 1}
        assert not twice, f"answered more than once: {twice}"
        assert all(i in responses for i in range(1000, 1012))
    finally:
        proc.kill()
        await proc.wait()


async def test_typing_through_a_suggestion_is_answered_from_the_cache(tmp_path: Path) -> None:
    client, _ = await start(tmp_path, options={"maxTokens": 16, "maxTokensSingleLine": 16})
    try:
        open_doc(client, PY_TEXT + "    return ")
        first = await client.text_document_inline_completion_async(inline_params(10, 11))
        shown = first.items[0].insert_text
        assert len(shown) >= 2
        insert(client, 10, 11, shown[:2], 2)  # the user types the first two characters of the suggestion
        second = await client.text_document_inline_completion_async(inline_params(10, 13))
        assert second.items[0].insert_text == shown[2:]
        last = await client.protocol.send_request_async("codecomplete/lastCompletion", {})
        assert last.source == "typing_through" and last.tokens.evaluated == 0
        insert(client, 10, 13, "Q", 3)  # diverging from the suggestion goes back to the model
        await client.text_document_inline_completion_async(inline_params(10, 14))
        last = await client.protocol.send_request_async("codecomplete/lastCompletion", {})
        assert last.source == "model"
    finally:
        await client.shutdown_session()


@pytest.mark.parametrize("mode", ["in-process", "daemon"])
async def test_accepting_a_suggestion_is_answered_from_the_prefetch(tmp_path: Path, mode: str) -> None:
    """Tab-Tab-Tab: after a suggestion the server computes the next one for where accepting it leaves the
    cursor, so the request after accepting needs no model work; with prefetch off it does."""
    server = SERVER if mode == "in-process" else SERVER[:-1]
    for prefetch, source in ((True, "prefetch"), (False, "model")):
        options = {"maxTokens": 12, "maxTokensSingleLine": 12, "prefetch": prefetch}
        client, _ = await start(tmp_path, options=options, server=server)
        try:
            text = PY_TEXT.replace("circumference", f"circumference_{prefetch}")  # no answers cached across rounds
            open_doc(client, text + "    return ")
            first = await client.text_document_inline_completion_async(inline_params(10, 11))
            shown = first.items[0].insert_text
            assert shown and "\n" not in shown
            await wait_prefetched(client) if prefetch else await asyncio.sleep(1.0)  # time it would have had
            insert(client, 10, 11, shown, 2)  # Tab: the editor inserts the suggestion
            await client.text_document_inline_completion_async(inline_params(10, 11 + len(shown)))
            last = await client.protocol.send_request_async("codecomplete/lastCompletion", {})
            assert last.source == source
            assert (last.tokens.evaluated == 0) == prefetch
        finally:
            await client.shutdown_session()


@pytest.mark.parametrize("mode", ["in-process", "daemon"])
async def test_workspace_snippets_reach_the_prompt(tmp_path: Path, mode: str) -> None:
    """Cross-file context: a definition from another workspace file is in the prompt, with its path header."""
    root = tmp_path / "ws"
    root.mkdir()
    (root / "geometry.py").write_text(
        'def circle_area(radius: float) -> float:\n    """Area of a circle."""\n    return 3.14159 * radius ** 2\n'
    )
    main = "from geometry import circle_area\n\n\ndef total_area(radii):\n    return sum("
    (root / "main.py").write_text(main)
    server = SERVER if mode == "in-process" else SERVER[:-1]  # without --no-daemon: through the shared daemon
    client, _ = await start(tmp_path, root=root, server=server, options={"maxTokens": 8, "maxTokensSingleLine": 8})
    try:
        uri = (root / "main.py").as_uri()
        open_doc(client, main, uri=uri)
        last = None
        for _ in range(50):  # the index scans in the background
            await client.text_document_inline_completion_async(inline_params(4, 15, uri=uri))
            last = await client.protocol.send_request_async("codecomplete/lastCompletion", {})
            if "circle_area(radius" in last.prompt:
                break
            insert(client, 4, 15, " ", 2)  # a new spot, so the answer is not served from the cache
            await asyncio.sleep(0.2)
        assert "# path: geometry.py\ndef circle_area(radius: float)" in last.prompt
        assert "# path: main.py\nfrom geometry import circle_area" in last.prompt
    finally:
        await client.shutdown_session()
