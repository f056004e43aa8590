"""The sandbox contains runaway, greedy and dangerous programs and classifies how each one ended."""

from __future__ import annotations

import os
import resource
import socket
import time
from pathlib import Path

import pytest

from codecomplete.errors import UserError
from codecomplete.tools.sandbox import DETAIL_CHARS, _network_isolation, run_many, run_program

pytestmark = pytest.mark.slow  # loads a model or starts processes


def sandbox_processes() -> list[int]:
    """Live processes started by the sandbox: their command line names a codecomplete-sandbox- temp dir."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
                status = (entry / "status").read_text()
            except OSError:
                continue
            if b"codecomplete-sandbox-" in cmdline and "State:\tZ" not in status:
                pids.append(int(entry.name))
    return pids


def test_passing_program_passes():
    outcome = run_program("def f(x):\n    return x + 1\n\nassert f(1) == 2\nprint('ok')\n")
    assert outcome.passed and outcome.status == "passed" and outcome.detail == ""


def test_failed_assertion_is_failed_with_traceback():
    outcome = run_program("assert 1 + 1 == 3, 'arithmetic'\n")
    assert not outcome.passed and outcome.status == "failed"
    assert "AssertionError: arithmetic" in outcome.detail and 'File "program.py", line 1' in outcome.detail


@pytest.mark.parametrize("source, expected", [
    ("def f(:\n", "SyntaxError"),
    ("undefined_name\n", "NameError"),
    ("input()\n", "EOFError"),  # stdin is closed, so a program waiting for input cannot hang
])
def test_other_problems_are_errors(source, expected):
    outcome = run_program(source)
    assert outcome.status == "error" and expected in outcome.detail


@pytest.mark.parametrize("source", ["import sys\nsys.exit(0)\nassert False\n", "exit(0)\nassert False\n",
                                    "import os\nos._exit(0)\nassert False\n"])
def test_exiting_early_with_status_0_is_not_a_pass(source):
    # A completion that exits before the tests run must not count as passing them.
    assert not run_program(source).passed


def test_infinite_loop_times_out_and_is_killed():
    start = time.monotonic()
    outcome = run_program("while True:\n    pass\n", timeout_s=1.0)
    elapsed = time.monotonic() - start
    assert outcome.status == "timeout" and not outcome.passed
    assert 1.0 <= elapsed < 2.0
    assert sandbox_processes() == []


@pytest.mark.parametrize("source", ["x = bytearray(10**11)\n",
                                    "x = []\nwhile True:\n    x.append(' ' * 10**6)\n"])
def test_huge_allocation_is_contained(source):
    before = resource.getrlimit(resource.RLIMIT_AS)
    start = time.monotonic()
    outcome = run_program(source, timeout_s=10, memory_mb=256)
    assert outcome.status == "error" and "MemoryError" in outcome.detail
    assert time.monotonic() - start < 5  # stopped by the memory limit, not by the timeout
    assert resource.getrlimit(resource.RLIMIT_AS) == before  # our own limits are untouched
    assert bytearray(50 << 20)  # and we can still allocate


@pytest.mark.parametrize("call", ["import os\nos.system('echo hi > {target}')",
                                  "import subprocess\nsubprocess.run(['sh', '-c', 'echo hi > {target}'])",
                                  "import posix\nposix.system('echo hi > {target}')",
                                  "import os\nos.popen('echo hi > {target}').read()"])
def test_shell_and_subprocess_are_blocked(tmp_path, call):
    target = tmp_path / "created"
    outcome = run_program(call.format(target=target) + "\n")
    assert outcome.status == "error" and "blocked in the sandbox" in outcome.detail
    assert not target.exists()


def test_fork_bomb_is_contained_and_leaves_no_process():
    outcome = run_program("import os\nwhile True:\n    os.fork()\n", timeout_s=2)
    assert not outcome.passed and "os.fork is blocked" in outcome.detail
    assert sandbox_processes() == []


def test_file_deletion_is_blocked(tmp_path):
    victim = tmp_path / "keep.txt"
    victim.write_text("precious")
    for call in (f"import os\nos.remove({str(victim)!r})", f"import shutil\nshutil.rmtree({str(tmp_path)!r})"):
        assert run_program(call + "\n").status == "error"
    assert victim.read_text() == "precious"


def test_socket_to_localhost_is_blocked():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        server.settimeout(0.5)
        port = server.getsockname()[1]
        attempts = {
            "socket": f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1).send(b'x')\n",
            "_socket": f"import _socket\n_socket.socket().connect(('127.0.0.1', {port}))\n",
        }
        for name, source in attempts.items():
            outcome = run_program(source)
            assert outcome.status == "error", name
            with pytest.raises(TimeoutError):
                server.accept()


@pytest.mark.skipif(not _network_isolation(), reason="unshare cannot create a network namespace here")
def test_network_namespace_is_separate(tmp_path):
    # The kernel layer under the socket guard: the child sees a different (empty) network namespace.
    report = tmp_path / "netns"
    run_program(f"import os\nopen({str(report)!r}, 'w').write(os.readlink('/proc/self/ns/net'))\n")
    assert report.read_text() != os.readlink("/proc/self/ns/net")


def test_runs_in_fresh_temp_dir_with_minimal_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("CODECOMPLETE_TEST_SECRET", "leak")
    report = tmp_path / "cwd"
    outcome = run_program(
        "import os, sys\n"
        f"open({str(report)!r}, 'w').write(os.getcwd())\n"
        "assert 'CODECOMPLETE_TEST_SECRET' not in os.environ\n"
        "assert sys.flags.isolated\n"
        "assert sorted(os.listdir('.')) == ['program.py', 'stderr', 'stdout']\n")
    assert outcome.passed, outcome.detail
    workdir = report.read_text()
    assert "codecomplete-sandbox-" in workdir and not os.path.exists(workdir)  # removed afterwards


def test_flood_of_output_is_capped():
    outcome = run_program("while True:\n    print('x' * 1000)\n", timeout_s=10)
    assert outcome.status == "error" and "File too large" in outcome.detail
    assert len(outcome.detail) <= DETAIL_CHARS


def test_run_many_keeps_order_and_runs_in_parallel():
    sources = ["import time\ntime.sleep(0.5)\n", "assert False\n"] * 2
    start = time.monotonic()
    outcomes = run_many(sources, jobs=4)
    assert [o.status for o in outcomes] == ["passed", "failed", "passed", "failed"]
    assert time.monotonic() - start < 1.0  # two sleeps of 0.5 s ran side by side


def test_bad_limits_are_user_errors():
    with pytest.raises(UserError):
        run_program("pass\n", timeout_s=0)
    with pytest.raises(UserError):
        run_many(["pass\n"], jobs=0)
