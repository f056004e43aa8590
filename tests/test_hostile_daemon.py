"""Hostile input, and the daemon's private places: one request, one workspace or one other local user must never take
the shared daemon (or every editor with it) down.

The fast part checks the runtime dir (symlinks, foreign owners, unsafe parents, where it falls back to) and source
files that are not files (FIFOs, devices, huge or unnameable paths). The slow part (`@pytest.mark.slow`) talks raw
HTTP to a real daemon on its Unix socket: after every hostile request the daemon must still give a real completion
(a model run, not a cached answer) to a well-formed one. It also starts daemons from a planted workspace and from
a long-lived parent, as an editor does.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import itertools
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import PINNED_CONFIG
from test_daemon import daemon_pids

from codecomplete.core import source
from codecomplete.errors import UserError
from codecomplete.serving import runtime
from codecomplete.serving.app import MAX_BODY_BYTES, MAX_TEXT_CHARS
from codecomplete.serving.client import DaemonClient, _absolute_model, daemon_command, ensure_daemon, find_daemon
from codecomplete.serving.runtime import ENDPOINT_NAME, RUNTIME_ENV, START_LOCK_NAME, make_private_dir, runtime_dir

BODY_TIMEOUT_S = 3.0  # pinned for the daemon under test (`serve --body-timeout`), not its 10 s default


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


# --- the runtime dir: private by construction ------------------------------------------------------------------


def test_the_runtime_dir_is_created_private_and_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(RUNTIME_ENV, "rel/rt")
    path = runtime_dir()
    assert path == tmp_path / "rel" / "rt" and path.is_absolute()
    assert path.is_dir() and _mode(path) == 0o700

    path.chmod(0o755)  # a careless chmod: fixed through the directory's own descriptor
    assert runtime_dir() == path and _mode(path) == 0o700


def test_a_symlinked_runtime_dir_is_refused_and_its_target_untouched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    victim = tmp_path / "victims-project"
    victim.mkdir(mode=0o755)
    victim.chmod(0o755)
    link = tmp_path / "rt"
    link.symlink_to(victim)
    monkeypatch.setenv(RUNTIME_ENV, str(link))
    with pytest.raises(UserError, match="is a symlink") as exc:
        runtime_dir()
    assert len(str(exc.value).splitlines()) == 1 and RUNTIME_ENV in str(exc.value)
    with pytest.raises(UserError, match="is a symlink"):
        ensure_daemon(link)
    with pytest.raises(UserError, match="is a symlink"):
        make_private_dir(link)
    assert _mode(victim) == 0o755 and list(victim.iterdir()) == []  # no chmod, no lock, no socket, no log
    assert not (victim / START_LOCK_NAME).exists()


def test_a_file_in_place_of_the_runtime_dir_is_refused(tmp_path: Path) -> None:
    (tmp_path / "rt").write_text("not a directory")
    with pytest.raises(UserError, match="not a directory"):
        make_private_dir(tmp_path / "rt")


def test_a_runtime_dir_of_another_user_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    directory = tmp_path / "rt"
    directory.mkdir(mode=0o700)
    real_uid = os.getuid()
    monkeypatch.setattr(os, "getuid", lambda: real_uid + 4242)  # as if another user had created it first
    with pytest.raises(UserError, match="belongs to another user") as exc:
        make_private_dir(directory)
    assert RUNTIME_ENV in str(exc.value)
    assert find_daemon(directory) is None  # a client never trusts an endpoint file there


@pytest.mark.skipif(os.getuid() != 0, reason="giving a directory to another user needs root")
def test_a_parent_of_another_user_is_refused(tmp_path: Path) -> None:
    parent = tmp_path / "theirs"
    parent.mkdir(mode=0o755)
    os.chown(parent, 4242, 4242)
    with pytest.raises(UserError, match="parent .* belongs to another user"):
        make_private_dir(parent / "rt")
    assert not (parent / "rt").exists()


def test_a_parent_others_may_write_to_is_refused_unless_sticky_and_roots(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    for mode in (0o777, 0o775, 0o757):
        shared.chmod(mode)
        with pytest.raises(UserError, match="writable by other users") as exc:
            make_private_dir(shared / "rt")
        assert f"{mode:04o}" in str(exc.value)
        assert not (shared / "rt").exists()
    shared.chmod(0o1777)  # sticky, like /tmp: nobody else can move or replace our entry ...
    if os.getuid() == 0:  # ... when the directory is root's
        make_private_dir(shared / "rt")
        assert _mode(shared / "rt") == 0o700
    else:
        with pytest.raises(UserError, match="writable by other users"):
            make_private_dir(shared / "rt")


def test_find_daemon_ignores_an_endpoint_file_in_a_dir_others_may_write_to(tmp_path: Path) -> None:
    directory = tmp_path / "rt"
    make_private_dir(directory)
    (directory / ENDPOINT_NAME).write_text(json.dumps(
        {"transport": "unix", "pid": os.getpid(), "version": "0", "path": str(tmp_path / "theirs.sock")}))
    directory.chmod(0o777)  # anyone could have written that endpoint file
    assert find_daemon(directory) is None


def test_without_xdg_runtime_dir_the_fallback_is_in_the_users_own_cache_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(RUNTIME_ENV)
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    monkeypatch.setenv("HOME", str(home))
    path = runtime_dir()
    assert path == home / ".cache" / "codecomplete" / "run"  # never a fixed name in the shared temp dir
    assert _mode(path) == 0o700 and path.stat().st_uid == os.getuid()
    assert len(os.fsencode(path / "daemon.sock")) < 104  # a Unix socket's path limit (macOS)

    path.parent.chmod(0o775)  # our cache dir, as another tool of ours made it under a umask of 002: tightened
    assert runtime_dir() == path and _mode(path.parent) == 0o755

    monkeypatch.setattr(sys, "platform", "darwin")  # macOS: the cache dir even with XDG_RUNTIME_DIR set
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert runtime.default_runtime_dir() == path

    monkeypatch.setattr(sys, "platform", "linux")
    xdg = tmp_path / "xdg"
    xdg.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(xdg))
    assert runtime_dir() == xdg / "codecomplete" and _mode(xdg / "codecomplete") == 0o700
    monkeypatch.setenv("XDG_RUNTIME_DIR", "relative/not/per/spec")
    assert runtime.default_runtime_dir() == path


# --- source files that are not source files -----------------------------------------------------------------


def _refused_at_once(location: str) -> str:
    """read_source's one-line error, which must come without blocking (a FIFO's open would wait for a writer)."""
    caught: list[BaseException] = []
    worker = threading.Thread(target=lambda: _catch(caught, location), daemon=True)
    worker.start()
    worker.join(timeout=10)
    assert not worker.is_alive(), f"read_source({location[:40]!r}) blocked"
    (error,) = caught
    assert isinstance(error, UserError), error
    message = str(error)
    assert len(message.splitlines()) == 1 and len(message) < 400, message
    return message


def _catch(caught: list[BaseException], location: str) -> None:
    try:
        source.read_source(location)
    except BaseException as exc:  # handed to the test thread
        caught.append(exc)


def test_a_model_path_relative_to_the_editors_folder_reaches_the_daemon_absolute(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The daemon runs from its runtime dir: `models/x.gguf` in an editor's settings means the editor's folder."""
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "x.gguf").write_bytes(b"GGUF")
    monkeypatch.chdir(tmp_path)
    assert _absolute_model({"model": "models/x.gguf", "n_ctx": 4})["model"] == str(tmp_path / "models" / "x.gguf")
    assert _absolute_model({"model": "smollm2-135m", "n_ctx": 4}) == {"model": "smollm2-135m", "n_ctx": 4}
    assert _absolute_model({"model": None}) == {"model": None}


def test_read_source_refuses_fifos_devices_and_unnameable_paths(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.py"
    os.mkfifo(fifo)
    assert "not a regular file" in _refused_at_once(str(fifo))
    assert "not a regular file" in _refused_at_once("/dev/zero")
    assert "is a directory" in _refused_at_once(str(tmp_path))
    assert "no such file" in _refused_at_once(str(tmp_path / "missing.py"))
    assert "no such file" in _refused_at_once(str(tmp_path / "pipe.py" / "below.py"))
    assert "too long" in _refused_at_once("a" * 5000 + ".py")
    assert "too long" in _refused_at_once("d/" * 3000 + "x.py")
    server = socket.socket(socket.AF_UNIX)
    try:
        server.bind(str(tmp_path / "sock.py"))
        assert "not a regular file" in _refused_at_once(str(tmp_path / "sock.py"))
    finally:
        server.close()


def test_read_source_refuses_files_over_the_size_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    huge = tmp_path / "huge.py"
    with huge.open("wb") as f:  # sparse: the size is refused from the stat, nothing is read
        f.truncate(source.MAX_SOURCE_BYTES + 1)
    assert "too large" in _refused_at_once(str(huge))

    monkeypatch.setattr(source, "MAX_SOURCE_BYTES", 16)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"x = 1\n" * 100)))
    with pytest.raises(UserError, match="standard input: is too large"):
        source.read_source("-")
    small = tmp_path / "small.py"
    small.write_text("x = 1\n")
    assert source.read_source(str(small)) == "x = 1\n"


# --- a daemon under attack, over raw HTTP ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def hostile_daemon(tmp_path_factory: pytest.TempPathFactory, isolated_runtime_dir: Path) -> Iterator[DaemonClient]:
    """One daemon for the whole suite (its model loaded once), with the body timeout pinned to BODY_TIMEOUT_S.

    Its config is the session's pinned one (conftest) with post-processing off, so a long generation (the
    hung-up client's) runs until it is stopped. Its log is checked at the end: no traceback from any of this.
    """
    home = tmp_path_factory.mktemp("hostile")
    directory = home / "rt"
    config = home / "config.toml"
    config.write_text(PINNED_CONFIG + "postprocess = false\n", encoding="utf-8")
    env = {**os.environ, RUNTIME_ENV: str(directory), "CODECOMPLETE_CONFIG": str(config)}
    log = home / "daemon.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "codecomplete.cli", "serve", "--idle-unload", "0", "--body-timeout",
             str(BODY_TIMEOUT_S)], env=env, stdout=out, stderr=out,
        )
    try:
        client = _wait_for(directory)
        deadline = time.monotonic() + 120
        while client.status()["state"] != "ready":
            assert time.monotonic() < deadline, "the daemon's model did not load"
            time.sleep(0.05)
        yield client
        assert proc.poll() is None, "the daemon died under hostile input"
    finally:
        proc.kill()
        proc.wait(timeout=30)
    written = log.read_text(encoding="utf-8", errors="replace")
    assert "Traceback" not in written and "Exception in ASGI" not in written, written[-4000:]


def _wait_for(directory: Path, timeout: float = 60) -> DaemonClient:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        client = find_daemon(directory)
        if client is not None:
            return client
        time.sleep(0.05)
    raise AssertionError(f"no daemon answered in {directory}")


_probes = itertools.count()


def assert_still_completes(client: DaemonClient) -> None:
    """A well-formed request gets a real completion: new text each time, so the model itself runs."""
    name = f"add_{next(_probes)}"
    text = f"def {name}(a, b):\n    return "
    answer = client.request("POST", "/v1/complete", {
        "text": text, "offset": len(text), "settings": {"maxTokens": 4, "maxTokensSingleLine": 4, "reuse": False},
    }, wait=True)
    assert answer["prompt"].rstrip().endswith("return") and answer["tokens"]["generated"] > 0, answer
    assert answer.get("stop_reason") not in ("cancelled", "disconnected", "shutdown"), answer


def _connect(client: DaemonClient, timeout: float = 60) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX)
    sock.settimeout(timeout)
    sock.connect(client.endpoint.path)
    return sock


def _head(method: str, path: str, headers: dict[str, str] | None = None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: codecomplete", *(f"{k}: {v}" for k, v in (headers or {}).items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _answer(sock: socket.socket, *, closes: bool = False) -> tuple[int, dict]:
    """Status and JSON body of the answer on ``sock``; with ``closes``, the daemon must hang up after it."""
    response = http.client.HTTPResponse(sock)
    response.begin()
    data = json.loads(response.read())
    if closes:
        assert response.getheader("connection") == "close", response.getheaders()
        sock.settimeout(10)
        with contextlib.suppress(ConnectionResetError):  # hung up before all we sent was read: closed too
            assert sock.recv(1) == b"", "the daemon kept a connection open after refusing its body"
    return response.status, data


def send_raw(client: DaemonClient, data: bytes, *, closes: bool = False) -> tuple[int, dict]:
    with _connect(client) as sock:
        sock.sendall(data)
        return _answer(sock, closes=closes)


def post(client: DaemonClient, path: str, body: bytes) -> tuple[int, dict]:
    return send_raw(client, _head("POST", path, {"Content-Length": str(len(body))}) + body)


def assert_one_line_error(data: dict, status: int, *fragments: str) -> str:
    error = data["error"]
    message = error["message"]
    assert error["code"] == status and len(message.splitlines()) == 1 and "Traceback" not in message, data
    for fragment in fragments:
        assert fragment in message, message
    return message


def _health_during(client: DaemonClient, action, timeout: float = 60):
    """Run ``action`` in a thread and, while it runs, check that /health answers at once, again and again."""
    result: dict = {}
    worker = threading.Thread(target=lambda: result.update(value=action()), daemon=True)
    worker.start()
    answered = 0
    while worker.is_alive() or answered == 0:
        started = time.monotonic()
        assert client.health()["status"] == "ok"
        assert time.monotonic() - started < 5, "/health stalled"
        answered += 1
        time.sleep(0.05)
    worker.join(timeout=timeout)
    return result["value"], answered


@pytest.mark.slow
def test_a_body_declared_too_large_is_refused_before_it_is_read(hostile_daemon: DaemonClient) -> None:
    for size in (MAX_BODY_BYTES + 1, 100 << 20):  # the 100 MB /infill, announced, never sent
        status, data = send_raw(hostile_daemon, _head("POST", "/infill", {"Content-Length": str(size)}), closes=True)
        assert status == 413
        assert_one_line_error(data, 413, "too large", str(MAX_BODY_BYTES))
    assert_still_completes(hostile_daemon)


@pytest.mark.slow
def test_a_chunked_body_over_the_limit_is_cut_off_while_streaming(hostile_daemon: DaemonClient) -> None:
    with _connect(hostile_daemon) as sock:
        sock.sendall(_head("POST", "/v1/complete", {"Transfer-Encoding": "chunked"}))
        chunk = b"%x\r\n%s\r\n" % (64 << 10, b"a" * (64 << 10))

        def flood() -> None:  # 16 MiB, far past the limit: the daemon answers and hangs up long before the end
            try:
                for _ in range(256):
                    sock.sendall(chunk)
            except OSError:
                pass

        sender = threading.Thread(target=flood, daemon=True)
        sender.start()
        status, data = _answer(sock, closes=True)
        sender.join(timeout=30)
    assert status == 413
    assert_one_line_error(data, 413, "too large")
    assert_still_completes(hostile_daemon)


@pytest.mark.slow
def test_text_over_the_limit_is_refused_in_one_line(hostile_daemon: DaemonClient) -> None:
    text = "x = 1\n" * (MAX_TEXT_CHARS // 6 + 1)
    body = json.dumps({"text": text, "offset": 0}).encode()
    assert len(body) < MAX_BODY_BYTES  # within the body limit: the text limit refuses it
    status, data = post(hostile_daemon, "/v1/complete", body)
    assert_one_line_error(data, 413, "too long", str(MAX_TEXT_CHARS))
    assert status == 413
    infill = json.dumps({"input_prefix": text, "input_suffix": "", "prompt": ""}).encode()
    status, data = post(hostile_daemon, "/infill", infill)
    assert status == 413 and "too long" in data["error"]["message"]
    snippets = json.dumps({"text": "x = ", "offset": 4, "snippets": [{"path": "a.py", "text": text}]}).encode()
    status, data = post(hostile_daemon, "/v1/complete", snippets)
    assert status == 413
    assert_still_completes(hostile_daemon)


@pytest.mark.slow
@pytest.mark.parametrize(("body", "fragment"), [
    (b"{not json", "not JSON"),
    (b'{"text": "x = 1", "offset": ', "not JSON"),
    (b"\xff\xfe\x00garbage", "not JSON"),
    (b"[" * 200_000, "nested too deeply"),
    (b'{"text": "x", "offset": ' + b"9" * 100_000 + b"}", "not JSON"),
    (b"[1, 2, 3]", "must be a JSON object"),
    (b'{"text": 5, "offset": 0}', "field 'text' must be a string"),
    (b'{"text": "x = \\ud800", "offset": 0}', "lone surrogate"),
    (b'{"text": "x", "offset": -1}', "outside the text"),
    (b'{"text": "x", "position": {"line": 999999999999, "character": 0}}', "out of range"),
    (b'{"text": "x", "offset": 0, "settings": "fast"}', "must be an object"),
    (b'{"text": "x", "offset": 0, "snippets": [1]}', "snippets must be"),
], ids=lambda v: v[:24].decode("latin-1") if isinstance(v, bytes) else None)
def test_malformed_bodies_get_400_and_one_line(hostile_daemon: DaemonClient, body: bytes, fragment: str) -> None:
    status, data = post(hostile_daemon, "/v1/complete", body)
    assert status == 400
    assert_one_line_error(data, 400, fragment)
    assert_still_completes(hostile_daemon)


@pytest.mark.slow
def test_unknown_routes_and_methods_get_json_errors(hostile_daemon: DaemonClient) -> None:
    status, data = send_raw(hostile_daemon, _head("GET", "/../../etc/passwd"))
    assert status == 404 and assert_one_line_error(data, 404, "Not Found")
    with _connect(hostile_daemon) as sock:
        sock.sendall(_head("GET", "/v1/complete"))
        response = http.client.HTTPResponse(sock)
        response.begin()
        assert response.status == 405 and response.getheader("allow") == "POST"
        assert_one_line_error(json.loads(response.read()), 405, "Method Not Allowed")
    assert_still_completes(hostile_daemon)


@pytest.mark.slow
def test_a_stalled_body_gets_408_while_others_are_served(hostile_daemon: DaemonClient) -> None:
    with _connect(hostile_daemon) as stalled:
        started = time.monotonic()
        stalled.sendall(_head("POST", "/v1/complete", {"Content-Length": "1000"}) + b'{"text": "x = ')

        def wait_for_408() -> tuple[int, dict]:
            answer = _answer(stalled, closes=True)
            waited.append(time.monotonic() - started)
            return answer

        waited: list[float] = []
        (status, data), answered = _health_during(hostile_daemon, wait_for_408)
    assert status == 408
    assert_one_line_error(data, 408, "did not arrive")
    assert BODY_TIMEOUT_S - 0.5 <= waited[0] < BODY_TIMEOUT_S + 30
    assert answered >= 2  # the daemon answered others while that body stalled
    with _connect(hostile_daemon) as slow_headers:  # a request line and no more: it holds nobody else up
        slow_headers.sendall(b"POST /v1/complete HTTP/1.1\r\nHost: codec")
        assert_still_completes(hostile_daemon)
    assert_still_completes(hostile_daemon)


@pytest.mark.slow
def test_a_request_whose_client_has_gone_is_cancelled(hostile_daemon: DaemonClient) -> None:
    before = hostile_daemon.status()["stats"]["completions"]
    numbers = "numbers = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, "
    body = json.dumps({"input_prefix": numbers, "prompt": "", "input_suffix": "", "n_predict": 1500,
                       "t_max_predict_ms": 120_000, "cache_prompt": False}).encode()
    with _connect(hostile_daemon) as gone:
        gone.sendall(_head("POST", "/infill", {"Content-Length": str(len(body))}) + body)
        deadline = time.monotonic() + 60
        while hostile_daemon.status()["running"] is None:
            assert time.monotonic() < deadline, "the /infill request never ran"
            time.sleep(0.01)
    hung_up = time.monotonic()
    while hostile_daemon.status()["running"] is not None:
        assert time.monotonic() - hung_up < 10, "the generation went on after its client hung up"
        time.sleep(0.01)
    assert hostile_daemon.status()["stats"]["completions"] == before  # stopped, not answered
    assert_still_completes(hostile_daemon)


@pytest.mark.slow
def test_model_switch_to_a_fifo_is_refused_and_never_blocks_the_loop(
    hostile_daemon: DaemonClient, tmp_path: Path
) -> None:
    fifo = tmp_path / "model.gguf"
    os.mkfifo(fifo)
    for spec, fragment in ((str(fifo), "not a regular file"), ("/dev/zero", "not a regular file"),
                           ("/" + "m" * 5000 + ".gguf", "")):  # too long a name: refused, in one line
        body = json.dumps({"model": spec}).encode()
        started = time.monotonic()
        (status, data), _ = _health_during(hostile_daemon, lambda body=body: post(hostile_daemon, "/model", body))
        assert status == 400 and time.monotonic() - started < 10
        assert_one_line_error(data, 400, fragment)
    assert hostile_daemon.status()["settings"]["model"] is None  # still the embedded model
    assert_still_completes(hostile_daemon)


# --- starting the daemon as an editor does ---------------------------------------------------------------------


_LAUNCHER = """
import sys
from pathlib import Path
from codecomplete.serving.client import ensure_daemon

client = ensure_daemon(Path(sys.argv[1]), args=tuple(sys.argv[2:]))
print(client.endpoint.pid, flush=True)
sys.stdin.read()  # stay alive, as an editor's language server does, until the test is done
"""


def _launch(directory: Path, cwd: Path, *args: str) -> tuple[subprocess.Popen, int]:
    """A long-lived process that starts the daemon through ``ensure_daemon`` (the language server's way) from
    ``cwd``; itself run with ``-P``, as a console script is, so the workspace cannot reach it either."""
    proc = subprocess.Popen([sys.executable, "-P", "-c", _LAUNCHER, str(directory), *args], cwd=cwd,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline() if proc.stdout else ""
    if not line.strip().isdigit():
        proc.kill()
        raise AssertionError(f"the launcher failed: {proc.communicate(timeout=30)[1]}")
    return proc, int(line)


@pytest.fixture
def spawned(tmp_path: Path) -> Iterator[Path]:
    """A runtime dir whose daemons (started by launchers) are killed afterwards."""
    directory = tmp_path / "rt"
    yield directory
    client = find_daemon(directory)
    if client is not None:
        with contextlib.suppress(UserError):  # gone already
            client.request("POST", "/shutdown")
    deadline = time.monotonic() + 10
    while daemon_pids(directory) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in daemon_pids(directory):
        os.kill(pid, signal.SIGKILL)


PLANTED = {
    "marker": textwrap.dedent("""\
        from pathlib import Path
        Path(__file__).with_name("PLANTED-RAN").write_text("the daemon imported the workspace's textwrap.py")
        from textwrap import *  # noqa: F403
    """),
    "syntax-error": "def dedent(text:\n    return text  # half edited\n",
}


@pytest.mark.slow
@pytest.mark.parametrize("planted", sorted(PLANTED))
def test_a_module_in_the_editors_workspace_never_runs_in_the_daemon(
    planted: str, spawned: Path, tmp_path: Path
) -> None:
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    (workspace / "textwrap.py").write_text(PLANTED[planted], encoding="utf-8")
    launcher, pid = _launch(spawned, workspace, "--idle-unload", "0")
    try:
        client = _wait_for(spawned)
        assert client.endpoint.pid == pid
        assert_still_completes(client)  # a real completion: the daemon started, loaded and serves
        assert not (workspace / "PLANTED-RAN").exists()
        assert Path(f"/proc/{pid}/cwd").resolve() == spawned.resolve()  # not the editor's working directory
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert (b"-P" in argv) == (sys.version_info >= (3, 11))
        assert "textwrap" not in " ".join(daemon_command())  # nothing named after the workspace either
    finally:
        launcher.kill()
        launcher.wait(timeout=30)


@pytest.mark.slow
def test_a_daemon_that_exits_is_reaped_by_the_process_that_started_it(spawned: Path, tmp_path: Path) -> None:
    launcher, pid = _launch(spawned, tmp_path, "--lazy")
    try:
        client = _wait_for(spawned)
        assert client.endpoint.pid == pid and _parent(pid) == launcher.pid
        client.request("POST", "/shutdown")
        deadline = time.monotonic() + 30
        while Path(f"/proc/{pid}").exists():  # a zombie would stay until its parent (still running) waits
            state = _state(pid)
            assert time.monotonic() < deadline, f"daemon {pid} is still there, in state {state}"
            time.sleep(0.05)
        assert launcher.poll() is None  # its parent lives on: it reaped the daemon
    finally:
        launcher.kill()
        launcher.wait(timeout=30)


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"
