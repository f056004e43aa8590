"""The benchmark's peer, for real: llama.cpp's `llama-server` built against the wheel's libraries (cached after
the first build, which takes minutes), started on the tiny Code-Llama-vocabulary GGUF, driven like llama.vim."""

from __future__ import annotations

import http.client
import io
import json
import os
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from gguf_factory import FIM_DEMO_BIGRAMS
from procs import alive

from codecomplete.errors import UserError
from codecomplete.tools.llama_server import (
    RESPONSE_FIELDS,
    LlamaServer,
    LlamaVimClient,
    chunk_similarity,
    ensure_llama_server,
    free_port,
    llama_cpp_python,
)

# The first run on a machine compiles the server (several minutes): the timeout covers that build.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

# Cursor on the blank, indented line 1: llama.vim sends an empty middle and n_indent 0 there.
DOC = ["def double(x):", "    ", "", "print(double(2))"]
FILENAME = "example.py"


@pytest.fixture(scope="module")
def binary() -> Path:
    return ensure_llama_server(progress=lambda message: print(message, flush=True))


@pytest.fixture
def server(binary: Path, codellama_tidy_gguf: Path) -> Iterator[LlamaServer]:
    with LlamaServer(codellama_tidy_gguf, n_ctx=2048, threads=2, binary=binary) as srv:
        yield srv


def _get(url: str, path: str) -> tuple[int, object]:
    conn = http.client.HTTPConnection(url.split("://", 1)[1], timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def test_binary_is_cached_and_reports_its_version(binary: Path) -> None:
    assert binary.is_file() and os.access(binary, os.X_OK)
    assert ensure_llama_server(progress=lambda _m: pytest.fail("a second call must not build")) == binary
    assert (binary.parent.parent / "build.json").is_file()


def test_health_and_clean_stop(binary: Path, codellama_tidy_gguf: Path) -> None:
    with LlamaServer(codellama_tidy_gguf, n_ctx=2048, threads=2, binary=binary) as srv:
        assert srv.url.startswith("http://127.0.0.1:")
        assert _get(srv.url, "/health") == (200, {"status": "ok"})
        pid = srv.pid
        assert alive(pid)
        assert "--cache-reuse" in srv.args and srv.args[srv.args.index("--batch-size") + 1] == "1024"
    assert not alive(pid)


def test_infill_request_and_answer_have_llama_vims_shape(server: LlamaServer) -> None:
    client = LlamaVimClient(server.url)
    result = client.complete(DOC, (1, 4), FILENAME, auto=False, speculative=False)

    assert result is not None and not result.from_cache and result.kind == "manual"
    request = result.request
    assert request is not None
    assert set(request) == {
        "id_slot", "input_prefix", "input_suffix", "input_extra", "prompt", "n_predict", "stop", "n_indent",
        "top_k", "top_p", "samplers", "stream", "cache_prompt", "t_max_prompt_ms", "t_max_predict_ms",
        "response_fields", "model",
    }
    assert request["input_prefix"] == "def double(x):\n"
    assert request["prompt"] == ""  # a blank line: llama.vim starts from its beginning
    assert request["input_suffix"] == "\n\nprint(double(2))\n"
    assert request["n_indent"] == 0 and request["id_slot"] == 0 and request["t_max_predict_ms"] == 250
    assert request["samplers"] == ["top_k", "top_p", "infill"] and request["response_fields"] == RESPONSE_FIELDS

    # the fixture model answers `▁return ▁x ▁<EOT>` after `▁<MID>`
    assert result.content == " return x"
    assert result.text == "return x" and result.can_accept  # one leading blank trimmed on the indented line
    assert set(result.response or {}) == set(RESPONSE_FIELDS)
    assert result.prompt_n and result.prompt_n > 0 and result.prompt_ms is not None
    assert result.predicted_n == 3 and result.predicted_ms is not None and result.predicted_per_second
    assert result.tokens_cached and result.tokens_cached > 0
    assert result.wall_ms > 0


def test_second_request_at_the_same_spot_reuses_the_servers_kv_cache(server: LlamaServer) -> None:
    client = LlamaVimClient(server.url)
    first = client.complete(DOC, (1, 4), FILENAME, auto=False, speculative=False)
    second = client.complete(DOC, (1, 4), FILENAME, auto=False, speculative=False)
    assert first is not None and second is not None
    assert first.prompt_n is not None and second.prompt_n is not None and second.tokens_cached is not None
    assert second.prompt_n < first.prompt_n  # only the tail is evaluated again
    assert second.tokens_cached >= first.prompt_n


def test_client_cache_answers_typing_through_and_still_refreshes(server: LlamaServer) -> None:
    doc = ["def double(x):", "    z =", "", "print(double(2))"]
    client = LlamaVimClient(server.url)
    shown = client.complete(doc, (1, 7), FILENAME)
    assert shown is not None and not shown.from_cache and shown.kind == "fim"
    assert shown.content == " return x" and shown.text == " return x"
    assert [r.kind for r in shown.background] == ["speculative"]  # for the spot after accepting it
    assert shown.background[0].request is not None
    assert shown.background[0].request["prompt"] == "    z = return x"
    assert shown.background[0].request["t_max_predict_ms"] == 1000

    again = client.complete(doc, (1, 7), FILENAME)  # same spot: from llama.vim's own cache, nothing new sent
    assert again is not None and again.from_cache and again.content == " return x"
    assert again.prompt_n is None and again.background == []

    typed = ["def double(x):", "    z = r", "", "print(double(2))"]  # the user typed the suggestion's " r"
    through = client.complete(typed, (1, 9), FILENAME)
    assert through is not None and through.from_cache and through.content == "eturn x"
    # shown at once from the cache; the spot after accepting it was asked for already (same context as the first
    # speculative request), so only this spot is refreshed
    assert [r.kind for r in through.background] == ["fim"]
    assert all(not r.from_cache and r.predicted_n is not None for r in through.background)


def test_exact_n_predict_generates_exactly_n_tokens(server: LlamaServer) -> None:
    n = 24
    plain = LlamaVimClient(server.url, n_predict=n).complete(DOC, (1, 4), FILENAME, auto=False, speculative=False)
    assert plain is not None and plain.predicted_n == 3  # the model says `<EOT>` after `return x`
    exact = LlamaVimClient(server.url, n_predict=n, exact_n_predict=True)
    for _ in range(2):  # also when the prompt comes from the KV cache
        result = exact.complete(DOC, (1, 4), FILENAME, auto=False, speculative=False)
        assert result is not None and result.predicted_n == n
        assert result.request is not None and result.request["ignore_eos"] is True
        assert "infill" not in result.request["samplers"]


def test_ring_buffer_chunks_are_evaluated_in_the_background_and_sent(server: LlamaServer) -> None:
    client = LlamaVimClient(server.url)
    other = [f"def helper_{i}(value):" for i in range(5)] + ["    return value * 2"]
    client.on_yank(other, "helpers.py")
    assert len(client.ring_queued) == 1 and not client.ring_chunks
    update = client.ring_update()
    assert update is not None and update.kind == "ring" and update.request is not None
    assert update.request["n_predict"] == 0 and update.request["input_extra"][0]["filename"] == "helpers.py"
    assert len(client.ring_chunks) == 1 and not client.ring_queued and client.ring_update() is None

    result = client.complete(DOC, (1, 4), FILENAME, auto=False, speculative=False)
    assert result is not None and result.request is not None
    assert result.request["input_extra"] == [
        {"text": "\n".join(other) + "\n", "time": client.ring_chunks[0].time, "filename": "helpers.py"}]
    # the ring update already put the extra context into the KV cache
    assert result.tokens_cached and result.prompt_n is not None and result.prompt_n < result.tokens_cached


def test_corrupt_model_is_one_line_user_error(binary: Path, tmp_path: Path) -> None:
    bad = tmp_path / "corrupt.gguf"
    bad.write_bytes(b"GGML" + bytes(4096))
    server = LlamaServer(bad, n_ctx=2048, threads=2, binary=binary, startup_timeout=60)
    with pytest.raises(UserError) as caught:
        server.start()
    message = str(caught.value)
    assert "\n" not in message and "corrupt.gguf" in message
    assert "invalid magic characters" in message  # llama.cpp's own reason, not its generic last words
    assert server.log_path is None and server._proc is None


def test_failed_build_waits_for_the_lock_then_is_one_line_user_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real configure run on a broken source tree, started while another process holds the build lock."""
    version, _ = llama_cpp_python()
    monkeypatch.setenv("CODECOMPLETE_PEER_DIR", str(tmp_path))
    sdist_dir = tmp_path / ".sdist" / version
    sdist_dir.mkdir(parents=True)
    top = f"llama_cpp_python-{version}"
    with tarfile.open(sdist_dir / f"{top}.tar.gz", "w:gz") as tar:  # found there, so pip is not asked
        header = b"#error not a real llama.cpp\n"
        info = tarfile.TarInfo(f"{top}/vendor/llama.cpp/include/llama.h")
        info.size = len(header)
        tar.addfile(info, io.BytesIO(header))
    holder = subprocess.Popen([sys.executable, "-c", (
        "import filelock, sys, time; lock = filelock.FileLock(sys.argv[1]); lock.acquire(); print('held', flush=True);"
        " time.sleep(1.5); lock.release()"), str(tmp_path / f"{version}.lock")], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    messages: list[str] = []
    started = time.monotonic()
    with pytest.raises(UserError) as caught:
        ensure_llama_server(progress=messages.append)
    holder.wait(timeout=30)
    assert time.monotonic() - started >= 1.0 and "waiting" in messages[0]
    message = str(caught.value)
    assert "\n" not in message and "configuring" in message and "CMake Error" in message
    assert (tmp_path / f"build-{version}.log").is_file()
    assert not (tmp_path / version).exists()
    assert not list(tmp_path.glob(".build-*"))  # the temporary tree is gone


def test_2023_layout_model_infills_too(binary: Path, make_gguf: Callable[..., Path]) -> None:
    """The 2023 layout has no FIM metadata: llama.cpp still finds the markers by text, so /infill works."""
    model = make_gguf(layout="2023", bigrams=FIM_DEMO_BIGRAMS)
    with LlamaServer(model, n_ctx=2048, threads=2, binary=binary) as srv:
        result = LlamaVimClient(srv.url).complete(DOC, (1, 4), FILENAME, auto=False, speculative=False)
    assert result is not None and result.content.startswith(" return x")


def test_no_automatic_request_with_more_than_8_characters_right_of_the_cursor() -> None:
    # nothing listens on this port: any request would raise
    client = LlamaVimClient(f"http://127.0.0.1:{free_port()}")
    doc = ["def f(x):", "    return (x + 1)  # done", ""]
    assert client.complete(doc, (1, 11), FILENAME) is None
    with pytest.raises(UserError):
        client.complete(doc, (1, 11), FILENAME, auto=False)  # the trigger key always asks


def test_chunk_similarity_is_llama_vims_word_dice() -> None:
    assert chunk_similarity(["a b c"], ["a b c"]) == 1.0
    assert chunk_similarity([], []) == 1.0
    assert chunk_similarity(["foo(bar)"], ["baz qux"]) == 0.0
    assert chunk_similarity(["x = y"], ["x + z"]) == pytest.approx(0.5)
