"""The peer on the typist's timeline (tools.peer): when llama.vim's suggestion is on screen, that its speculative
request runs on in the background and delays the next pause, and that a late answer is not shown. The server is
faked at the HTTP call (no process), with answers that take a set time."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from codecomplete.tools import llama_server
from codecomplete.tools.peer import PeerEditor, entry
from codecomplete.tools.replay import Document, RunResult, replay_from_text

ANSWER_S = 0.15  # what every fake /infill takes: the budgets below are multiples of it
TEXT = "def double(x):\n    y = x\n    return y * 2\n\nprint(double(2))\n"


class FakeServer:
    url = "http://127.0.0.1:9"
    pid = 0
    args = ["llama-server"]


@pytest.fixture
def posts(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Every /infill body, answered after ANSWER_S with 32 tokens of content and llama-server's timings."""
    seen: list[dict[str, Any]] = []
    lock = threading.Lock()

    def fake_http(method: str, base_url: str, path: str, body: dict[str, Any] | None, **_: Any) -> tuple[int, Any]:
        with lock:
            seen.append(dict(body or {}))
        time.sleep(ANSWER_S)
        n = (body or {}).get("n_predict", 0)
        return 200, {"content": "z = 1" if n else "", "timings/prompt_n": 10, "timings/prompt_ms": 50.0,
                     "timings/predicted_n": n, "timings/predicted_ms": 90.0, "tokens_cached": 50 + n}

    monkeypatch.setattr(llama_server, "_http", fake_http)
    return seen


def _doc(editor: PeerEditor) -> Document:
    replay = replay_from_text("double.py", TEXT, "python", 1, 8.0, first_line=3)
    doc = Document(replay, editor.encoding)
    doc.type(replay.keys[0].text)  # the indentation: the cursor at the start of `return y * 2`
    return doc


async def test_suggestion_is_shown_when_its_answer_arrives_and_the_speculative_request_follows(
    posts: list[dict[str, Any]],
) -> None:
    editor = PeerEditor(FakeServer(), "peer")  # type: ignore[arg-type]
    doc = _doc(editor)
    keyed = time.perf_counter()
    record = await editor.request(doc, keyed, 10.0, "start")
    assert record.outcome == "answered" and record.suggestion == "z = 1"
    assert record.server is not None and record.server["kind"] == "fim"
    assert record.server["tokens"] == {"prompt": 50, "evaluated": 10, "reused": 40, "shifted": 0, "generated": 128}
    assert record.latency_ms is not None and record.latency_ms >= ANSWER_S * 1000

    # the speculative request for the spot after accepting it is still running: the next pause waits for it, then
    # llama.vim's own cache has the answer
    again = await editor.request(doc, time.perf_counter(), 10.0, "line")
    speculative_done = editor.client.posted[1][0]
    assert record.latency_ms < (speculative_done - keyed) * 1000  # shown before the background request ended
    assert again.outcome == "answered" and again.server is not None and again.server["source"] == "cache"
    assert [p["n_predict"] for p in posts] == [128, 128] and posts[1]["prompt"] == "    z = 1"
    result = RunResult()
    await editor.finish(result)
    assert [e["kind"] for e in result.server_entries] == ["fim", "speculative"]


async def test_an_answer_after_typing_resumed_is_not_shown(posts: list[dict[str, Any]]) -> None:
    editor = PeerEditor(FakeServer(), "peer")  # type: ignore[arg-type]
    doc = _doc(editor)
    record = await editor.request(doc, time.perf_counter(), ANSWER_S / 3, "word")
    assert record.outcome == "cancelled" and record.latency_ms is None and record.reason == "late"
    # still busy with that request (and its speculative one) when the next short pause ends: never sent
    busy = await editor.request(doc, time.perf_counter(), ANSWER_S / 3, "word")
    assert busy.reason == "late" and busy.detail == "busy"
    await editor.finish(RunResult())


def test_a_cached_answer_is_an_entry_with_no_model_work() -> None:
    cached = llama_server.InfillResult(content="x", text="x", can_accept=True, wall_ms=0.2, from_cache=True,
                                       kind="cache")
    assert entry(cached)["source"] == "cache" and entry(cached)["tokens"]["evaluated"] == 0
