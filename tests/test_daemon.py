"""The shared daemon: real `codecomplete serve` processes, real sockets, thin language servers, the embedded model.

Every test gets its own runtime dir (CODECOMPLETE_RUNTIME_DIR), and every daemon started in it is killed at the
end, whoever started it.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import pytest
import test_lsp
from lsprotocol import types
from procs import wait_gone

from codecomplete.errors import UserError
from codecomplete.serving.client import DaemonClient, document_window, ensure_daemon, find_daemon
from codecomplete.serving.runtime import ENDPOINT_NAME, SOCKET_NAME, read_endpoint

pytestmark = pytest.mark.slow


def complete(client: DaemonClient, body: dict) -> dict:
    """``POST /v1/complete`` with a raw body: the wire format as any client may send it."""
    return client.request("POST", "/v1/complete", body, wait=True)

SERVE = [sys.executable, "-m", "codecomplete.cli", "serve"]
LONG = {"maxTokens": 1500, "maxTokensSingleLine": 1500, "timeBudgetMs": 120000, "postprocess": False}
NUMBERS = "numbers = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, "


def daemon_pids(directory: Path) -> list[int]:
    """`codecomplete serve` processes whose runtime dir is ``directory`` (from /proc: cmdline and environment)."""
    marker = f"CODECOMPLETE_RUNTIME_DIR={directory}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"serve" in cmdline and b"codecomplete.cli" in cmdline and marker in environ:
            pids.append(int(entry.name))
    return pids


@pytest.fixture
def runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private runtime dir, set for this process and every child; its daemons are killed afterwards."""
    directory = tmp_path / "rt"
    monkeypatch.setenv("CODECOMPLETE_RUNTIME_DIR", str(directory))  # the config stays the session's pinned one
    yield directory
    for pid in daemon_pids(directory):
        os.kill(pid, signal.SIGKILL)


def serve(*args: str) -> subprocess.Popen:
    return subprocess.Popen([*SERVE, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(directory: Path, timeout: float = 60) -> DaemonClient:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        client = find_daemon(directory)
        if client is not None:
            return client
        time.sleep(0.05)
    raise AssertionError("no daemon answered")


def wait_status(client: DaemonClient, predicate, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = client.status()
        if predicate(status):
            return status
        time.sleep(0.05)
    raise AssertionError(f"status never matched: {status}")


async def start_lsp(options: dict | None = None):
    """A thin language server (daemon mode) driven by a real LSP client."""
    client = test_lsp.make_test_lsp_client()
    await client.start_io(sys.executable, "-m", "codecomplete.cli", "lsp", env=dict(os.environ))
    await client.initialize_session(
        types.InitializeParams(capabilities=test_lsp.client_capabilities("neovim@v0.11.0"),
                               initialization_options=options or {})
    )
    await test_lsp.wait_ready(client)
    return client


# --- one daemon for every editor -----------------------------------------------------------------------------


async def test_three_lsp_clients_share_one_daemon_and_one_model_load(runtime: Path) -> None:
    clients = await asyncio.gather(*(start_lsp({"maxTokens": 32, "maxTokensSingleLine": 32}) for _ in range(3)))
    try:
        answers = []
        for i, client in enumerate(clients):  # three different texts: each one is a model run, none a cache hit
            uri = f"file:///work/editor{i}.py"
            text = test_lsp.PY_TEXT.replace("radius", "r" * (i + 1)) + "    return "
            test_lsp.open_doc(client, text, uri=uri)
            answers.append(client.text_document_inline_completion_async(test_lsp.inline_params(10, 11, uri=uri)))
        for answer in await asyncio.gather(*answers):
            assert answer.items and answer.items[0].insert_text.strip()
        last = await clients[0].protocol.send_request_async("codecomplete/lastCompletion", {})
        assert last.prompt.rstrip().endswith("    return") and last.source == "model"

        assert len(daemon_pids(runtime)) == 1
        status = DaemonClient(read_endpoint(runtime)).status()
        assert status["loads"] == 1 and status["state"] == "ready"
        assert sum(1 for c in status["client_idle_s"] if c.startswith("lsp-")) == 3
        assert status["stats"]["completions"] == 3
        for client in clients:  # every editor sees the same daemon
            seen = await client.protocol.send_request_async("codecomplete/status", {})
            assert seen.daemon.pid == status["pid"]
    finally:
        await asyncio.gather(*(c.shutdown_session() for c in clients))


async def test_killed_daemon_is_restarted_and_the_editor_told_once(runtime: Path) -> None:
    client = await start_lsp({"maxTokens": 32, "maxTokensSingleLine": 32})
    try:
        test_lsp.open_doc(client, test_lsp.PY_TEXT + "    return ")
        first = await client.text_document_inline_completion_async(test_lsp.inline_params(10, 11))
        assert first.items
        (old,) = daemon_pids(runtime)
        os.kill(old, signal.SIGKILL)
        while old in daemon_pids(runtime):
            await asyncio.sleep(0.05)

        test_lsp.insert(client, 10, 11, "r", 2)  # new text: no cached answer in the editor's way
        again = await client.text_document_inline_completion_async(test_lsp.inline_params(10, 12))
        assert again.items and again.items[0].insert_text.strip()  # the restarted daemon answered
        (new,) = daemon_pids(runtime)
        assert new != old
        test_lsp.insert(client, 10, 12, "a", 3)
        later = await client.text_document_inline_completion_async(test_lsp.inline_params(10, 13))
        assert later.items
        status = await client.protocol.send_request_async("codecomplete/status", {})
        assert status.daemon.pid == new and status.stats.completions == 2
        told = [m.message for m in client.messages if "daemon" in m.message]
        assert len(told) == 1 and "stopped" in told[0], told
    finally:
        await client.shutdown_session()


def test_simultaneous_starts_make_one_daemon(runtime: Path) -> None:
    # two `serve` commands at once: one serves, the other exits with a one-line error
    both = [serve("--lazy"), serve("--lazy")]
    client = wait_for(runtime)
    deadline = time.monotonic() + 60
    while all(p.poll() is None for p in both) and time.monotonic() < deadline:
        time.sleep(0.05)
    (loser,) = [p for p in both if p.poll() is not None]
    (winner,) = [p for p in both if p is not loser]
    assert loser.returncode == 2 and "already running" in loser.stderr.read()
    assert daemon_pids(runtime) == [winner.pid] == [client.endpoint.pid]
    client.request("POST", "/shutdown")
    winner.wait(timeout=30)

    # three editors starting the daemon at once: the start lock makes one
    pids: list[int] = []
    errors: list[Exception] = []

    def start() -> None:
        try:
            pids.append(ensure_daemon(runtime, args=("--lazy",)).health()["pid"])
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=90)
    assert not errors and len(set(pids)) == 1 and len(pids) == 3
    assert daemon_pids(runtime) == pids[:1]


def test_socket_is_private_and_the_tcp_token_is_checked(runtime: Path, tmp_path: Path) -> None:
    proc = serve("--lazy")
    try:
        client = wait_for(runtime)
        assert stat.S_IMODE(os.stat(runtime).st_mode) == 0o700
        sock = runtime / SOCKET_NAME
        assert stat.S_ISSOCK(os.stat(sock).st_mode) and stat.S_IMODE(os.stat(sock).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(runtime / ENDPOINT_NAME).st_mode) == 0o600
        assert client.endpoint.token is None  # the socket's mode is the guard
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert not sock.exists() and not (runtime / ENDPOINT_NAME).exists()
    finally:
        proc.kill()

    tcp_dir = tmp_path / "tcp"
    env = {**os.environ, "CODECOMPLETE_RUNTIME_DIR": str(tcp_dir)}
    proc = subprocess.Popen([*SERVE, "--lazy", "--tcp"], env=env, stderr=subprocess.PIPE, text=True)
    try:
        client = wait_for(tcp_dir)
        endpoint = client.endpoint
        assert endpoint.transport == "tcp" and endpoint.host == "127.0.0.1" and len(endpoint.token or "") >= 32
        assert stat.S_IMODE(os.stat(tcp_dir / ENDPOINT_NAME).st_mode) == 0o600
        url = f"http://127.0.0.1:{endpoint.port}/status"
        assert httpx.get(url).status_code == 401
        wrong = httpx.get(url, headers={"Authorization": "Bearer " + "x" * len(endpoint.token)})
        assert wrong.status_code == 401 and "token" in wrong.json()["error"]["message"]
        assert httpx.post(f"http://127.0.0.1:{endpoint.port}/shutdown").status_code == 401
        right = httpx.get(url, headers={"Authorization": f"Bearer {endpoint.token}"})
        assert right.status_code == 200 and right.json()["pid"] == proc.pid
        with pytest.raises(OSError):  # loopback only
            socket.create_connection((_outside_address(), endpoint.port), timeout=1).close()
        client.request("POST", "/shutdown")
        proc.wait(timeout=30)
        assert not (tcp_dir / ENDPOINT_NAME).exists()
    finally:
        proc.kill()
        for pid in daemon_pids(tcp_dir):
            os.kill(pid, signal.SIGKILL)


def _outside_address() -> str:
    """An address of this machine that is not loopback (or one that is unreachable if it has none)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # TEST-NET-1: no packet is sent for a UDP connect
            return s.getsockname()[0]
        except OSError:
            return "192.0.2.1"


# --- the HTTP API ------------------------------------------------------------------------------------------------


@pytest.fixture
def daemon(runtime: Path) -> Iterator[DaemonClient]:
    proc = serve("--idle-unload", "0", "--fair-slice-ms", "300")
    client = wait_for(runtime)
    wait_status(client, lambda s: s["state"] == "ready")
    yield client
    proc.kill()
    proc.wait()


def test_infill_answers_a_llama_server_shaped_request(daemon: DaemonClient) -> None:
    request = {  # as llama.vim sends it: lines above, the typed part of the cursor line, the rest below
        "input_prefix": "def add(a, b):\n",
        "prompt": "    return ",
        "input_suffix": "\n\n\nprint(add(1, 2))\n",
        "input_extra": [{"filename": "util.py", "text": "def sub(a, b):\n    return a - b\n"}],
        "n_predict": 16,
        "t_max_predict_ms": 60000,
        "cache_prompt": False,
        "samplers": ["top_k"], "top_k": 40, "id_slot": -1, "n_indent": 4,  # accepted, not needed
    }
    answer = daemon.request("POST", "/infill", request, wait=True)
    assert isinstance(answer["content"], str) and answer["content"].strip()
    assert answer["stop"] is True and answer["truncated"] is False
    assert answer["stop_type"] in ("eos", "limit")
    assert 1 <= answer["tokens_predicted"] <= 16
    assert answer["tokens_evaluated"] > 0 and answer["tokens_cached"] == 0
    timings = answer["timings"]
    assert timings["predicted_n"] == answer["tokens_predicted"] and timings["prompt_n"] > 0
    assert timings["prompt_ms"] > 0 and timings["predicted_per_second"] > 0
    assert "--- snippet ---" in answer["prompt"] and "return a - b" in answer["prompt"]
    assert answer["prompt"].rstrip().endswith("return")

    # the same cursor through our own API gives the same suggestion
    text = request["input_extra"][0]["text"]
    whole = f"\n\n--- snippet ---\n\n{text}\n\n" + request["input_prefix"] + request["prompt"]
    ours = complete(daemon, {
        "text": whole + request["input_suffix"], "offset": len(whole),
        "settings": {"maxTokens": 16, "maxTokensSingleLine": 16, "timeBudgetMs": 60000, "reuse": False},
    })
    assert ours["completion"] == answer["content"] and ours["prompt"] == answer["prompt"]

    stream = daemon._http.post("/infill", json={**request, "stream": True}, timeout=120)
    assert stream.headers["content-type"].startswith("text/event-stream")
    event = json.loads(stream.text.removeprefix("data: "))
    assert event["stop"] is True and event["content"] == answer["content"]



def test_cli_infill_uses_the_running_daemon(daemon: DaemonClient, tmp_path: Path) -> None:
    source = tmp_path / "add.py"
    source.write_text("def add(a, b):\n    return \n", encoding="utf-8")
    cli = [sys.executable, "-m", "codecomplete.cli", "infill", f"{source}:2:12", "--max-tokens", "8", "--json"]
    via_daemon = json.loads(subprocess.run(cli, capture_output=True, text=True, check=True).stdout)
    assert "id" in via_daemon and via_daemon["completion"].strip()  # only the daemon's answers carry an id
    assert daemon.status()["stats"]["requests"] == 1
    alone = json.loads(subprocess.run([*cli, "--no-daemon"], capture_output=True, text=True, check=True).stdout)
    assert "id" not in alone and alone["completion"] == via_daemon["completion"]
    assert daemon.status()["stats"]["requests"] == 1


def test_infill_rejects_bad_bodies_with_one_line_errors(daemon: DaemonClient) -> None:
    bad = daemon._http.post("/infill", content=b"{not json")
    assert bad.status_code == 400 and "not JSON" in bad.json()["error"]["message"]
    with pytest.raises(UserError, match="field 'input_prefix' must be a string"):
        daemon.request("POST", "/infill", {"input_prefix": 5})
    with pytest.raises(UserError, match="offset 99 is outside"):
        complete(daemon, {"text": "x = 1\n", "offset": 99})
    with pytest.raises(UserError, match="unknown setting 'bogus'"):
        complete(daemon, {"text": "x = 1\n", "offset": 0, "settings": {"bogus": 1}})
    for span in ([0, 3], [-1, 10], [0], "0,6"):
        with pytest.raises(UserError, match="field 'span' must be"):
            complete(daemon, {"text": "x = 1\n", "offset": 0, "span": span})
    with pytest.raises(UserError, match="no such|not found|unknown"):
        daemon.request("POST", "/model", {"model": "/nope/missing.gguf"})


def test_cancel_and_disconnect_stop_the_generation(daemon: DaemonClient) -> None:
    def long_request(request_id: str) -> dict:
        return complete(daemon, {"id": request_id, "doc": "file:///n.py", "text": NUMBERS, "offset": len(NUMBERS),
                                "settings": LONG})

    result: dict = {}
    worker = threading.Thread(target=lambda: result.update(long_request("long-1")))
    worker.start()
    wait_status(daemon, lambda s: (s["running"] or {}).get("id") == "long-1")
    time.sleep(0.3)
    cancelled_at = time.monotonic()
    assert daemon.request("POST", "/cancel", {"id": "long-1"}) == {"cancelled": True}
    worker.join(timeout=60)
    assert result["stop_reason"] == "cancelled" and result["completion"] == ""
    assert time.monotonic() - cancelled_at < 5
    assert result["tokens"]["generated"] < 1500

    # a client that hangs up cancels its request too
    with socket.socket(socket.AF_UNIX) as raw:
        raw.connect(daemon.endpoint.path)
        body = json.dumps({"id": "long-2", "text": NUMBERS, "offset": len(NUMBERS), "settings": LONG}).encode()
        raw.sendall(b"POST /v1/complete HTTP/1.1\r\nHost: codecomplete\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        wait_status(daemon, lambda s: (s["running"] or {}).get("id") == "long-2")
    status = wait_status(daemon, lambda s: s["running"] is None, timeout=10)
    assert status["stats"]["completions"] == 0  # neither cancelled generation counts as an answer


def test_fair_sharing_between_editors(daemon: DaemonClient) -> None:
    hog = DaemonClient(daemon.endpoint, "editor-a")
    other = DaemonClient(daemon.endpoint, "editor-b")
    results: dict[str, dict] = {}

    def run(name: str, client: DaemonClient, payload: dict) -> None:
        results[name] = complete(client, payload)

    long_payload = {"doc": "file:///a.py", "text": NUMBERS, "offset": len(NUMBERS), "settings": LONG}
    first = threading.Thread(target=run, args=("a1", hog, {**long_payload, "id": "a1"}))
    first.start()
    wait_status(daemon, lambda s: (s["running"] or {}).get("id") == "a1")
    # the same document again: the older request is superseded at once
    second = threading.Thread(target=run, args=("a2", hog, {**long_payload, "id": "a2"}))
    second.start()
    first.join(timeout=60)
    assert results["a1"]["stop_reason"] == "superseded" and results["a1"]["completion"] == ""
    wait_status(daemon, lambda s: (s["running"] or {}).get("id") == "a2")

    # another editor's request waits at most one fair slice (300 ms) plus a token, not 120 s
    short = {"id": "b1", "doc": "file:///b.py", "text": "def add(a, b):\n    return ", "offset": 26,
             "settings": {"maxTokens": 4, "maxTokensSingleLine": 4, "timeBudgetMs": 60000}}
    start = time.monotonic()
    run("b1", other, short)
    waited = time.monotonic() - start
    second.join(timeout=60)
    assert results["a2"]["stop_reason"] == "preempted"
    assert results["b1"]["stop_reason"] not in ("cancelled", "superseded", "preempted")
    assert waited < 30 and results["a2"]["tokens"]["generated"] < 1500


def test_idle_unload_and_reload_on_demand(runtime: Path) -> None:
    proc = serve("--idle-unload", "1")
    try:
        client = wait_for(runtime)
        wait_status(client, lambda s: s["state"] == "ready")
        request = {"text": "def add(a, b):\n    return ", "offset": 26,
                   "settings": {"maxTokens": 4, "maxTokensSingleLine": 4, "reuse": False}}
        assert complete(client, request)["prompt"]
        status = wait_status(client, lambda s: s["unloaded"], timeout=30)
        assert status["state"] == "idle" and status["daemon_state"] == "unloaded" and status["unloads"] == 1
        again = complete(client, request)
        assert again["prompt"] and again["stop_reason"] != "cancelled"
        status = client.status()
        assert status["loads"] == 2 and status["state"] == "ready" and not status["unloaded"]
    finally:
        proc.kill()
        proc.wait()


def test_pause_refuses_completions_until_resumed(daemon: DaemonClient) -> None:
    request = {"text": "x = ", "offset": 4, "settings": {"maxTokens": 2, "maxTokensSingleLine": 2}}
    assert daemon.request("POST", "/pause") == {"paused": True}
    assert daemon.status()["daemon_state"] == "paused"
    with pytest.raises(UserError, match="paused"):
        complete(daemon, request)
    daemon.request("POST", "/resume")
    assert "prompt" in complete(daemon, request)


def test_model_switch_reloads_for_every_editor(daemon: DaemonClient, embedded_model: Path) -> None:
    before = daemon.status()
    assert before["settings"]["model"] is None and before["loads"] == 1
    with pytest.raises(UserError, match="POST /model takes"):
        daemon.request("POST", "/model", {"maxTokens": 3})
    after = daemon.request("POST", "/model", {"model": str(embedded_model), "n_ctx": 2048}, wait=True)
    assert after["loads"] == 2 and after["state"] == "ready"
    assert after["settings"]["model"] == str(embedded_model) and after["settings"]["n_ctx"] == 2048
    other = DaemonClient(daemon.endpoint, "editor-b")
    answer = complete(other, {"text": "x = ", "offset": 4, "settings": {"n_ctx": 99999, "maxTokens": 2}})
    assert answer["prompt"]  # a request's model-level settings are ignored: one model for every editor
    assert daemon.status()["settings"]["n_ctx"] == 2048


@pytest.mark.usefixtures("runtime")
def test_memory_benchmark_compares_shared_and_self_contained() -> None:
    from codecomplete.tools.memory import memory_benchmark

    result = memory_benchmark(2)
    assert len(result["shared"]["editors"]) == len(result["self_contained"]["editors"]) == 2
    thin = max(e["rss_kb"] for e in result["shared"]["editors"])
    whole = min(e["rss_kb"] for e in result["self_contained"]["editors"])
    assert thin * 2 < whole  # a thin language server holds no model
    assert result["ratio_rss"] > 1.2 and result["shared_rss_mb"] < result["self_contained_rss_mb"]
    pid = result["shared"]["daemon"]["pid"]
    assert wait_gone(pid, timeout=30), "the benchmark left its daemon running"


def test_document_window_keeps_small_documents_whole_and_large_ones_stable() -> None:
    small = "x = 1\n" * 100
    assert document_window(small, 300, 3000) == (0, len(small))
    big = "".join(f"line_{i} = {i}\n" for i in range(50_000))
    offset = big.index("line_25000 =")
    start, end = document_window(big, offset, 3000)
    assert 0 < start < offset - 3000 * 8 + 1 and offset + 3000 * 8 <= end < len(big)
    assert big[start - 1] == "\n" and big[end - 1] == "\n"  # whole lines
    typed = big[:offset] + "abc" + big[offset:]
    assert document_window(typed, offset + 3, 3000)[0] == start  # typing keeps the window's start


# --- the language server's own scenarios, through a daemon ---------------------------------------------------


@pytest.fixture
def lsp_through_daemon(runtime: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(test_lsp, "SERVER", [sys.executable, "-m", "codecomplete.cli", "lsp"])
    monkeypatch.setattr(test_lsp, "server_env", lambda _tmp: dict(os.environ))


@pytest.mark.parametrize("scenario", [
    test_lsp.test_inline_completion_after_incremental_edits,
    test_lsp.test_cancel_stops_generation_and_next_request_is_prompt,
    test_lsp.test_newer_request_supersedes_older,
    test_lsp.test_bad_requests_get_empty_answers_and_server_keeps_going,
], ids=lambda f: f.__name__.removeprefix("test_"))
async def test_lsp_scenarios_through_the_daemon(scenario, lsp_through_daemon, tmp_path: Path) -> None:
    await scenario(tmp_path)
