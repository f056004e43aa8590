"""The benchmark's peer: llama.cpp's own `llama-server`, driven the way llama.vim drives it.

Why: a user who does not pick codecomplete picks llama.vim (or llama.vscode) talking to `llama-server`. To
compare against that honestly we run the real C++ server, built from exactly the llama.cpp sources that the
installed llama-cpp-python vendors, and replay llama.vim's real `/infill` protocol against it.

Building (`ensure_llama_server`)
--------------------------------
A full llama.cpp build of the `llama-server` target compiles ggml and libllama again (about 30 min on two busy
cores). We do not: the installed llama-cpp-python wheel already ships `libllama`, `libggml*` and `libmtmd` as
shared libraries, with every symbol exported. So we compile only the server's own code (tools/server, common,
cpp-httplib and the header-only vendor libs) from the sdist's `vendor/llama.cpp` with a small CMakeLists of
our own (`_CMAKE_LISTS`: imported targets for the wheel's `.so` files, headers from `include/`,
`ggml/include/`, `tools/mtmd/`) and link against those libraries. Consequences:

- the peer runs the very same ggml/llama binaries (same CPU kernels, same `GGML_NATIVE` choice that pip made
  when it built the wheel) as codecomplete does in-process: a fair speed comparison by construction;
- measured on the 2-core project machine, with other work running: 5 min 21 s cold in all (`pip download`
  of the sdist 5-55 s, depending on pip's cache; compiling 78 steps with Ninja, `nlohmann/json.hpp`
  precompiled), 8 min 23 s with Make under a load average of 4-5; a cached call takes 12 ms (it runs
  `llama-server --version` once);
- the binary finds the libraries through an rpath to the wheel's `llama_cpp/lib`, and `LlamaServer` also puts
  the *current* interpreter's `llama_cpp/lib` first on `LD_LIBRARY_PATH`, so a cached binary always runs the
  libraries of the venv that benchmarks it.

`LLAMA_USE_SYSTEM_GGML` was not enough: it skips ggml only, libllama (src/, with its hundreds of model files)
would still be compiled. No UI is embedded (`LLAMA_BUILD_UI`/`LLAMA_USE_PREBUILT_UI` off: nothing is fetched)
and no OpenSSL is linked (the server only listens on 127.0.0.1). The cache lives in
`platformdirs.user_cache_dir("codecomplete")/llama-server/<llama-cpp-python version>/bin/llama-server`
(`$CODECOMPLETE_PEER_DIR/<version>/...` when that variable is set). A file lock serialises concurrent builds;
the tree is built in a temporary directory and renamed into place, so a half-built binary is never seen.

Server flags (`LlamaServer`)
----------------------------
What llama.vim's README recommends (`llama-server ... -ngl 99 -fa -ub 1024 -b 1024 -dt 0.1 --ctx-size 0
--cache-reuse 256`) and what llama.cpp's `--fim-qwen-*-default` presets set (common/arg.cpp:
`n_ubatch = 1024`, `n_batch = 1024`, `n_ctx = 0`, `n_cache_reuse = 256`), adapted to a fair CPU comparison:

- `-b 1024 -ub 1024`: as both sources. This also sizes the FIM window: the server keeps at most
  3*(n_batch/4) = 768 prefix tokens and n_batch/4 suffix tokens (format_prompt_infill in server-common.cpp).
- `--cache-reuse 256`: as both sources (KV chunks of at least 256 tokens that moved are shifted, not recomputed).
- `-c n_ctx`: the same context size as the codecomplete run it is compared with (the presets' 0 means "the
  model's training context", which would give the peer a different memory footprint).
- `-t threads -tb threads`: the same thread count as codecomplete, for prompt and generation alike.
- `-fa auto`: llama.cpp's own default, which is what the presets leave; the README's bare `-fa` (on) predates
  the on/off/auto switch. `auto` turns flash attention on where the backend supports it (the CPU backend does),
  and never makes a model fail to load.
- `-ngl n_gpu_layers` (default 0): the README's `-ngl 99` is for GPUs; pass codecomplete's own value.
- `-np 1`: llama.vim pins every request to `id_slot` 0, so one slot gets the whole context, as in a
  single-editor session. `-dt 0.1` is left out: it is deprecated and does nothing in this llama.cpp.
- `--offline`: the peer must never try to reach a model hub.

llama.vim's protocol (`LlamaVimClient`)
---------------------------------------
Replayed from ggml-org/llama.vim `autoload/llama.vim`, the current version (with `endpoint_fim`/`model_fim`,
the instruct feature, the LRU result cache and `id_slot` 0); "l." are line numbers in that file:

- defaults, `s:default_config` (l. 65-96): n_prefix 256, n_suffix 64, n_predict 128, stop_strings [],
  t_max_prompt_ms 500, t_max_predict_ms 1000, max_line_suffix 8, max_cache_keys 250, ring_n_chunks 16,
  ring_chunk_size 64, ring_scope 1024, ring_update_ms 1000;
- local context, `s:fim_ctx_local` (l. 607-679): prefix = the n_prefix lines above joined with "\n" plus
  "\n"; prompt (middle) = the cursor line up to the cursor; suffix = the rest of the line, "\n", the n_suffix
  lines below joined, "\n"; a whitespace-only cursor line sends "" for both halves and n_indent 0, otherwise
  n_indent is the line's leading whitespace; with a previous suggestion (speculative request) the context is
  built as if it had been accepted, and n_indent is the last request's;
- the completion request, `llama#fim` (l. 701-891, the body l. 796-825): id_slot 0, input_prefix,
  input_suffix, input_extra (the ring chunks as {text, time, filename}, `s:ring_get_extra` l. 511-523), prompt,
  n_predict, stop, n_indent, top_k 40, top_p 0.90, samplers ["top_k", "top_p", "infill"], stream false,
  cache_prompt true, t_max_prompt_ms, t_max_predict_ms (250 for a first request, l. 741-745; 1000 for a
  speculative one), response_fields (content, timings/prompt_n, _ms, _per_token_ms, _per_second,
  timings/predicted_n, _ms, _per_token_ms, _per_second, truncated, tokens_cached), plus `model` (l. 837-839:
  the test `len("g:llama_config.model_fim") > 0` measures the literal string, so `"model": ""` is always sent)
  and, for the same reason, an `Authorization: Bearer ` header (l. 841-843);
- no automatic request when more than max_line_suffix characters follow the cursor (l. 737-739);
- result cache (`s:cache_insert`/`s:cache_get` l. 135-165, keys l. 748-772, lookup `s:fim_try_hint`
  l. 953-1017): an LRU of max_cache_keys raw responses keyed by sha256(prefix + middle + "Î" + suffix), also
  stored under the same key with the first 1-3 prefix lines dropped; a lookup tries the exact key, then the up
  to 128 typed characters back (l. 980-1008: the cached content must start with what was typed since); an
  automatic request is skipped when any of its keys is cached (l. 766-772);
- ring buffer (`s:pick_chunk` l. 429-509, `s:chunk_sim` l. 397-422): chunks are picked on yank, buffer
  enter/leave and save (the lines within ring_chunk_size/2 of the cursor, l. 340-348), and after an automatic
  request once the cursor has moved more than 32 lines since the last pick (one chunk from up to ring_scope lines
  above the prefix, one from below the suffix, l. 876-889); a chunk of more than ring_chunk_size - 1 lines is
  cut to a random run of ring_chunk_size/2 + 1 lines; a new chunk evicts queued or ring chunks more than 0.9
  similar (Dice coefficient over word tokens), at most 16 chunks wait in the queue (l. 502), and before every
  request ring chunks more than 0.5 similar to a random run of lines around the cursor are evicted (l. 776-791);
- ring update, `s:ring_update` (l. 527-598): every ring_update_ms, in normal mode or after 3 s without cursor
  movement, one queued chunk moves into the ring (dropping the oldest beyond ring_n_chunks) and an
  `n_predict: 0` request (l. 552-566: empty prefix/suffix/prompt, temperature 0, samplers [], t_max_prompt_ms
  1, t_max_predict_ms 1, response_fields [""]) makes the server evaluate the new extra context;
- when a suggestion is shown (from the cache or from an answer, l. 921-930, when nothing acceptable is shown) a
  speculative request for the position after accepting it follows at once (l. 1011-1016);
- what the user sees, `s:fim_render` (l. 1020 ff.): trailing empty lines dropped, leading whitespace trimmed
  on a blank line, and the suggestion discarded when it only repeats the line suffix or the next lines.

Simplified: requests are sent synchronously, one after another, in the order llama.vim would send them (it
defers a request while another is in flight, so the server sees the same sequence); keystrokes that come while
a request is in flight leave only the last position's request in llama.vim (one 100 ms retry timer, l. 713-722),
which a caller models by choosing the positions it calls `complete` at; the curl process llama.vim spawns per
request is not modelled (we open a fresh HTTP connection per request, as curl does);
the caller says when the editor is idle (`ring_update`), when a buffer is entered, left or saved and whether it
is modified (`filereadable`/`buflisted` are not checked); the cursor column and the look-back count characters
where Vim counts bytes (the same for ASCII); `rand()` is a seeded `random.Random`.

Exactly N tokens (`exact_n_predict=True`): on random-weight models llama.cpp's `infill` sampler ends at once
(when no candidate reaches p 0.2 it returns EOT even against `ignore_eos`'s -inf bias, src/llama-sampler.cpp,
llama_sampler_infill_apply). For speed comparisons the client then sends `ignore_eos: true`, drops "infill" from
the samplers (top_k 40 and top_p 0.90 stay), and disables the three other early stops (n_indent 0,
t_max_predict_ms 0, no stop strings), so `timings.predicted_n == n_predict`.

Use::

    with LlamaServer(model, n_ctx=4096, threads=2) as server:
        editor = LlamaVimClient(server.url)
        shown = editor.complete(text, (row, col), "src/app.py")  # cache hit or answer; .background: the rest
        speed = LlamaVimClient(server.url, n_predict=64, exact_n_predict=True)
        timed = speed.complete(text, (row, col), "src/app.py", auto=False, speculative=False)  # 64 tokens
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import importlib.metadata
import importlib.util
import json
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import filelock
import platformdirs

from codecomplete.errors import UserError

PEER_DIR_ENV = "CODECOMPLETE_PEER_DIR"
BINARY_NAME = "llama-server"
BUILD_LOCK_TIMEOUT_S = 3600.0
STARTUP_TIMEOUT_S = 120.0
# Parts of the sdist's vendor/llama.cpp the server build reads: ggml's and llama's sources are not among them.
_SOURCE_DIRS = ("include", "ggml/include", "common", "tools/server", "tools/mtmd", "tools/ui", "vendor", "cmake",
                "scripts", "src", "LICENSE")

Progress = Callable[[str], None]

# Our own top-level CMakeLists: llama.cpp's common/, vendor/ and tools/server/ CMakeLists are reused as they are,
# the targets they link (llama, ggml, mtmd) are the wheel's shared libraries.
_CMAKE_LISTS = r"""
cmake_minimum_required(VERSION 3.16)
project(codecomplete_llama_server C CXX)

set(LLAMA_SRC "" CACHE PATH "llama.cpp sources (the sdist's vendor/llama.cpp)")
set(WHEEL_LIB "" CACHE PATH "llama_cpp/lib of the installed llama-cpp-python")
set(LLAMA_BUILD_NUMBER 0 CACHE STRING "build number shown by --version")
set(LLAMA_BUILD_COMMIT unknown CACHE STRING "llama.cpp commit shown by --version")
if (NOT CMAKE_BUILD_TYPE)
    set(CMAKE_BUILD_TYPE Release CACHE STRING "" FORCE)
endif()

# the sub-CMakeLists expect to be part of the llama.cpp project
set(PROJECT_SOURCE_DIR ${LLAMA_SRC})
set(CMAKE_RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/bin)
set(BUILD_SHARED_LIBS OFF)
set(LLAMA_VERSION_MAJOR 0)
set(LLAMA_VERSION_BASE 0.0.0)
set(LLAMA_BUILD_COMMON ON)
set(LLAMA_OPENSSL OFF)
set(LLAMA_SUBPROCESS ON)
set(LLAMA_BUILD_UI OFF)
set(LLAMA_USE_PREBUILT_UI OFF)
set(BUILD_COMPILER "${CMAKE_C_COMPILER_ID} ${CMAKE_C_COMPILER_VERSION}")
set(BUILD_TARGET "${CMAKE_SYSTEM_NAME} ${CMAKE_SYSTEM_PROCESSOR}")
find_package(Threads REQUIRED)
include(${LLAMA_SRC}/cmake/license.cmake)
# llama.cpp's warning flags are left out: that code is not ours to fix, and they cost compile time
function(llama_add_compile_flags)
endfunction()

foreach(name ggml-base ggml llama mtmd)
    add_library(${name} SHARED IMPORTED)
    set_target_properties(${name} PROPERTIES
        IMPORTED_LOCATION "${WHEEL_LIB}/lib${name}${CMAKE_SHARED_LIBRARY_SUFFIX}")
endforeach()
set_target_properties(ggml PROPERTIES
    INTERFACE_INCLUDE_DIRECTORIES "${LLAMA_SRC}/ggml/include"
    INTERFACE_LINK_LIBRARIES ggml-base)
set_target_properties(llama PROPERTIES
    INTERFACE_INCLUDE_DIRECTORIES "${LLAMA_SRC}/include"
    INTERFACE_COMPILE_DEFINITIONS LLAMA_SHARED
    INTERFACE_LINK_LIBRARIES ggml)
set_target_properties(mtmd PROPERTIES
    INTERFACE_INCLUDE_DIRECTORIES "${LLAMA_SRC}/tools/mtmd"
    INTERFACE_LINK_LIBRARIES llama)

add_subdirectory(${LLAMA_SRC}/vendor/nlohmann vendor/nlohmann)
add_subdirectory(${LLAMA_SRC}/vendor/sheredom vendor/sheredom)
add_subdirectory(${LLAMA_SRC}/vendor/cpp-httplib vendor/cpp-httplib)
add_subdirectory(${LLAMA_SRC}/common common)
add_subdirectory(${LLAMA_SRC}/tools/ui ui)
add_subdirectory(${LLAMA_SRC}/tools/server server)
set_target_properties(llama-server PROPERTIES BUILD_RPATH "${WHEEL_LIB}")
# nlohmann/json is parsed by nearly every file: precompiling it saves about an eighth of the compile time
foreach(target llama-common server-context llama-server-impl)
    target_precompile_headers(${target} PRIVATE <nlohmann/json.hpp> <string> <vector> <map> <unordered_map>
                              <memory> <functional>)
endforeach()
"""


# --------------------------------------------------------------------------------------------------------------
# Building the binary
# --------------------------------------------------------------------------------------------------------------


def llama_cpp_python() -> tuple[str, Path]:
    """The installed llama-cpp-python's version and its `llama_cpp/lib` directory (found without importing it)."""
    try:
        version = importlib.metadata.version("llama-cpp-python")
    except importlib.metadata.PackageNotFoundError:
        raise UserError("llama-cpp-python is not installed: the peer server links its libraries") from None
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("llama-cpp-python is installed but its llama_cpp package cannot be found")
    lib_dir = Path(next(iter(spec.submodule_search_locations))) / "lib"
    return version, lib_dir


def peer_root() -> Path:
    """Where built servers are cached, one directory per llama-cpp-python version."""
    override = os.environ.get(PEER_DIR_ENV)
    if override:
        return Path(override).expanduser()
    return Path(platformdirs.user_cache_dir("codecomplete")) / "llama-server"


def runtime_env(lib_dir: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for running the binary: the current venv's libllama/libggml come first."""
    env = dict(os.environ if base is None else base)
    key = "DYLD_LIBRARY_PATH" if sys.platform == "darwin" else "LD_LIBRARY_PATH"
    env[key] = os.pathsep.join(p for p in (str(lib_dir), env.get(key, "")) if p)
    return env


def _binary_works(binary: Path, lib_dir: Path) -> bool:
    """True when `binary --version` runs against these libraries (a moved or broken venv makes it fail)."""
    if not binary.is_file():
        return False
    try:
        done = subprocess.run([str(binary), "--version"], env=runtime_env(lib_dir), capture_output=True,
                              timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def ensure_llama_server(progress: Progress = print) -> Path:
    """Path of a working `llama-server` for the installed llama-cpp-python; built (once, ~5 min) if missing."""
    if sys.platform == "win32":
        raise UserError("building the llama-server peer is supported on Linux and macOS only")
    version, lib_dir = llama_cpp_python()
    root = peer_root()
    dest = root / version
    binary = dest / "bin" / BINARY_NAME
    if _binary_works(binary, lib_dir):
        return binary
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the llama-server cache {root}: {exc.strerror}") from None
    lock = filelock.FileLock(str(root / f"{version}.lock"))
    try:
        try:
            lock.acquire(timeout=0)
        except filelock.Timeout:
            progress(f"llama-server: another process is building it, waiting (lock {lock.lock_file})")
            lock.acquire(timeout=BUILD_LOCK_TIMEOUT_S)
    except filelock.Timeout:
        raise UserError(f"timed out waiting for another llama-server build (lock {lock.lock_file})") from None
    try:
        if _binary_works(binary, lib_dir):  # the other process finished it
            return binary
        _build(version, lib_dir, root, dest, progress)
    finally:
        lock.release()
    if not _binary_works(binary, lib_dir):
        raise UserError(f"the llama-server built in {dest} does not run (`{binary} --version` fails)")
    return binary


def _check_toolchain(lib_dir: Path) -> None:
    """Fail early, in one line, on what the build cannot work without."""
    missing = [tool for tool in ("cmake",) if shutil.which(tool) is None]
    if not any(shutil.which(cxx) for cxx in (os.environ.get("CXX", "c++"), "c++", "g++", "clang++")):
        missing.append("a C++ compiler")
    if missing:
        raise UserError(f"building llama-server needs {' and '.join(missing)} (e.g. apt-get install cmake g++)")
    suffix = ".dylib" if sys.platform == "darwin" else ".so"
    absent = [name for name in ("llama", "ggml", "ggml-base", "mtmd") if not (lib_dir / f"lib{name}{suffix}").exists()]
    if absent:
        raise UserError(f"llama-cpp-python's {lib_dir} lacks lib{', lib'.join(absent)}{suffix}: cannot link the peer")


def _build(version: str, lib_dir: Path, root: Path, dest: Path, progress: Progress) -> None:
    """Download the sdist, compile the server against the wheel's libraries, move the result into `dest`."""
    _check_toolchain(lib_dir)
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix=f".build-{version}-", dir=root))
    log_path = work / "build.log"
    kept_log = root / f"build-{version}.log"
    try:
        with log_path.open("w", encoding="utf-8") as log:
            sdist = _download_sdist(version, root / ".sdist" / version, log, progress, kept_log)
            progress(f"llama-server: unpacking {sdist.name}")
            source, commit = _unpack_llama_cpp(sdist, work / "src")
            project = work / "project"
            project.mkdir()
            (project / "CMakeLists.txt").write_text(_CMAKE_LISTS, encoding="utf-8")
            build = work / "build"
            # Ninja when it is there (a little faster), unless the user picked a generator through CMake's own variable
            generator = ["-G", "Ninja"] if shutil.which("ninja") and not os.environ.get("CMAKE_GENERATOR") else []
            _run(["cmake", "-S", str(project), "-B", str(build), *generator, "-DCMAKE_BUILD_TYPE=Release",
                  f"-DLLAMA_SRC={source}", f"-DWHEEL_LIB={lib_dir}", f"-DLLAMA_BUILD_COMMIT={commit}"],
                 log, "configuring", progress, kept_log)
            jobs = max(1, os.cpu_count() or 1)
            progress(f"llama-server: compiling the server only, against the wheel's libllama ({jobs} jobs; "
                     "about 5 minutes on 2 cores)")
            _run(["cmake", "--build", str(build), "--target", BINARY_NAME, "--parallel", str(jobs)],
                 log, "compiling", progress, kept_log)
            stage = work / "install"
            (stage / "bin").mkdir(parents=True)
            shutil.copy2(build / "bin" / BINARY_NAME, stage / "bin" / BINARY_NAME)
            info = {"llama_cpp_python": version, "llama_cpp_commit": commit, "linked_against": str(lib_dir),
                    "build_seconds": round(time.monotonic() - started, 1)}
            (stage / "build.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        if dest.exists():  # a broken earlier build: we hold the lock, nobody else uses it
            shutil.rmtree(dest)
        os.rename(stage, dest)  # atomic: a reader sees no binary or a whole one
        shutil.rmtree(root / ".sdist" / version, ignore_errors=True)
        with contextlib.suppress(OSError):
            (root / ".sdist").rmdir()  # only when no other version's download is kept there
        kept_log.unlink(missing_ok=True)
        progress(f"llama-server: built in {time.monotonic() - started:.0f} s: {dest / 'bin' / BINARY_NAME}")
    except BaseException:
        with contextlib.suppress(OSError):
            shutil.copyfile(log_path, kept_log)
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _download_sdist(version: str, into: Path, log: Any, progress: Progress, log_hint: Path) -> Path:
    """The llama-cpp-python sdist of exactly this version, through pip (kept until a build succeeds)."""
    found = sorted(into.glob("llama_cpp_python-*.tar.gz")) if into.is_dir() else []
    if found:
        return found[0]
    into.mkdir(parents=True, exist_ok=True)
    progress(f"llama-server: downloading the llama-cpp-python {version} source with pip")
    _run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
          f"llama-cpp-python=={version}", "--dest", str(into), "--progress-bar", "off"],
         log, "downloading the llama-cpp-python sdist", progress, log_hint)
    found = sorted(into.glob("llama_cpp_python-*.tar.gz"))
    if not found:
        raise UserError(f"pip download left no llama_cpp_python-{version}.tar.gz in {into}")
    return found[0]


def _unpack_llama_cpp(sdist: Path, into: Path) -> tuple[Path, str]:
    """Extract the parts of vendor/llama.cpp the server build reads; also its commit (for `--version`)."""
    commit = "unknown"
    with tarfile.open(sdist) as tar:
        members = tar.getmembers()
        top = members[0].name.split("/", 1)[0]
        base = f"{top}/vendor/llama.cpp/"
        wanted = tuple(base + d for d in _SOURCE_DIRS)
        chosen = [m for m in members if m.name.startswith(wanted) and (m.isfile() or m.isdir())]
        if not chosen:
            raise UserError(f"{sdist.name} has no vendor/llama.cpp: not a llama-cpp-python sdist")
        head = f"{top}/.git/modules/vendor/llama.cpp/HEAD"
        with contextlib.suppress(KeyError):
            handle = tar.extractfile(head)
            text = handle.read().decode("ascii", "replace").strip() if handle else ""
            if re.fullmatch(r"[0-9a-f]{40}", text):
                commit = text[:8]
        if hasattr(tarfile, "data_filter"):  # Python >= 3.10.12 / 3.11.4: refuse paths outside `into`
            tar.extractall(into, members=chosen, filter="data")
        else:
            tar.extractall(into, members=chosen)  # noqa: S202 - members are the sdist's own vendor/llama.cpp
    return into / top / "vendor" / "llama.cpp", commit


def _run(cmd: Sequence[str], log: Any, step: str, progress: Progress, log_hint: Path) -> None:
    """Run a build step with its output in the log; on failure one line names the step and the first error."""
    log.write(f"\n$ {' '.join(cmd)}\n")
    log.flush()
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
    except OSError as exc:
        raise UserError(f"building llama-server failed while {step}: cannot run {cmd[0]}: {exc.strerror}") from None
    assert proc.stdout is not None
    first_error, continued = "", False
    last_report = time.monotonic()
    for line in proc.stdout:
        log.write(line)
        stripped = line.strip()
        if first_error.endswith(":") and stripped and not continued:  # CMake: the reason is on the next line
            first_error, continued = f"{first_error} {stripped}", True
        elif not first_error and re.search(r"\berror\b|FAILED|fatal", stripped, re.IGNORECASE):
            first_error = stripped
        step_match = re.match(r"\[(\d+)/(\d+)\]", stripped) or re.match(r"\[\s*(\d+)%\]", stripped)
        if step_match and time.monotonic() - last_report > 60:
            last_report = time.monotonic()
            progress(f"llama-server: {step} {step_match.group(0)}")
    rc = proc.wait()
    log.flush()
    if rc != 0:
        detail = " ".join(first_error.split()) or f"exit status {rc}"
        raise UserError(f"building llama-server failed while {step}: {detail[:300]} (full log: {log_hint})")


# --------------------------------------------------------------------------------------------------------------
# Running it
# --------------------------------------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _failure_line(log_text: str) -> str:
    """The most telling line of llama-server's log, without its timestamp: the first error-level line (the root
    cause, e.g. `gguf_init_from_reader: invalid magic characters`), else the last line that reads like an error
    (argument errors are printed bare), else the last line."""
    errors = [m.group(1) for m in re.finditer(r"^[\d.]+ E (.+)$", log_text, re.MULTILINE)]
    if errors:
        return " ".join(errors[0].split())
    lines = [" ".join(re.sub(r"^[\d.]+ [A-Z] ", "", ln).split()) for ln in log_text.splitlines()]
    lines = [ln for ln in lines if ln]
    for line in reversed(lines):
        if re.search(r"error|failed|invalid|unable|cannot|not found|no such", line, re.IGNORECASE):
            return line
    return lines[-1] if lines else "it exited without a word"


class LlamaServer:
    """A `llama-server` child process on 127.0.0.1 with llama.vim's recommended flags, for one model.

    Use as a context manager: it is ready (`/health` ok) inside the block and stopped (terminate, then kill) after.
    """

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        *,
        n_ctx: int,
        threads: int,
        port: int | None = None,
        extra_args: Iterable[str] = (),
        n_gpu_layers: int = 0,
        flash_attn: str = "auto",
        binary: str | os.PathLike[str] | None = None,
        startup_timeout: float = STARTUP_TIMEOUT_S,
        progress: Progress = print,
    ) -> None:
        self.model_path = Path(model_path)
        self.n_ctx = n_ctx
        self.threads = threads
        self.port = port
        self.extra_args = tuple(extra_args)
        self.n_gpu_layers = n_gpu_layers
        self.flash_attn = flash_attn
        self.binary = Path(binary) if binary is not None else None
        self.startup_timeout = startup_timeout
        self.progress = progress
        self.args: list[str] = []
        self.log_path: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_dir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def url(self) -> str:
        """Base URL, e.g. http://127.0.0.1:41234 (llama.vim's endpoint is this plus /infill)."""
        if self.port is None:
            raise RuntimeError("the server is not started")
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        """Process id of the running server."""
        if self._proc is None:
            raise RuntimeError("the server is not started")
        return self._proc.pid

    def command(self, binary: Path, port: int) -> list[str]:
        """The full command line (flags and their reasons: module docstring)."""
        threads = str(self.threads)
        return [str(binary), "--model", str(self.model_path), "--host", "127.0.0.1", "--port", str(port),
                "--ctx-size", str(self.n_ctx), "--threads", threads, "--threads-batch", threads,
                "--parallel", "1", "--batch-size", "1024", "--ubatch-size", "1024", "--cache-reuse", "256",
                "--flash-attn", self.flash_attn, "--n-gpu-layers", str(self.n_gpu_layers), "--offline",
                *self.extra_args]

    def __enter__(self) -> LlamaServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Start the server and wait until it answers `/health`; a model it cannot load is a UserError."""
        if self._proc is not None:
            raise RuntimeError("the server is already running")
        if not self.model_path.is_file():
            raise UserError(f"model file not found: {self.model_path}")
        binary = self.binary or ensure_llama_server(self.progress)
        _, lib_dir = llama_cpp_python()
        self._log_dir = tempfile.TemporaryDirectory(prefix="codecomplete-peer-")
        chosen_port = self.port
        for attempt in range(3):  # a free port can be taken between our probe and the server's bind
            port = chosen_port or free_port()
            self.args = self.command(binary, port)
            self.log_path = Path(self._log_dir.name) / f"llama-server-{attempt}.log"
            try:
                with self.log_path.open("wb") as log:
                    self._proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                                  env=runtime_env(lib_dir), start_new_session=True)
            except OSError as exc:
                self._cleanup_log()
                raise UserError(f"cannot start {binary}: {exc.strerror}") from None
            self.port = port
            failure = self._wait_ready()
            if failure is None:
                return
            self.stop(keep_log=True)
            self.port = chosen_port
            if chosen_port is None and re.search(r"bind|address already in use", failure, re.IGNORECASE):
                continue
            break
        self._cleanup_log()
        raise UserError(f"llama-server could not serve {self.model_path.name}: {failure}")

    def _wait_ready(self) -> str | None:
        """None once /health says ok; else the reason (the server's telling log line, or a timeout)."""
        assert self._proc is not None and self.log_path is not None
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                text = self.log_path.read_text(encoding="utf-8", errors="replace")
                return _failure_line(text)
            with contextlib.suppress(OSError, http.client.HTTPException):
                status, _ = _http("GET", self.url, "/health", None, timeout=2.0)
                if status == 200:
                    return None
            time.sleep(0.05)
        return f"not ready after {self.startup_timeout:.0f} s"

    def stop(self, *, keep_log: bool = False) -> None:
        """Terminate the server (SIGTERM, then SIGKILL after 10 s) and reap it."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if not keep_log:
            self._cleanup_log()

    def _cleanup_log(self) -> None:
        if self._log_dir is not None:
            self._log_dir.cleanup()
            self._log_dir = None
            self.log_path = None


def _http(method: str, base_url: str, path: str, body: dict[str, Any] | None, *, timeout: float,
          headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """One request on a fresh connection (as llama.vim's one curl per request); returns (status, parsed JSON)."""
    host_port = base_url.split("://", 1)[-1].rstrip("/")
    conn = http.client.HTTPConnection(host_port, timeout=timeout)
    try:
        payload = None if body is None else json.dumps(body, ensure_ascii=False).encode("utf-8")
        all_headers = {"Content-Type": "application/json", **(headers or {})}
        conn.request(method, path, body=payload, headers=all_headers)
        resp = conn.getresponse()
        raw = resp.read()
    finally:
        conn.close()
    try:
        data = json.loads(raw) if raw else None
    except ValueError:
        data = raw.decode("utf-8", "replace")
    return resp.status, data


# --------------------------------------------------------------------------------------------------------------
# llama.vim's client behaviour
# --------------------------------------------------------------------------------------------------------------

RESPONSE_FIELDS = [
    "content",
    "timings/prompt_n",
    "timings/prompt_ms",
    "timings/prompt_per_token_ms",
    "timings/prompt_per_second",
    "timings/predicted_n",
    "timings/predicted_ms",
    "timings/predicted_per_token_ms",
    "timings/predicted_per_second",
    "truncated",
    "tokens_cached",
]
CACHE_SEPARATOR = "\u00ce"  # 'Î', between prefix+middle and suffix in llama.vim's cache keys
FIRST_REQUEST_T_MAX_PREDICT_MS = 250
LOOK_BACK_CHARS = 128
PICK_DISTANCE_LINES = 32
QUEUE_MAX = 16


@dataclass
class InfillResult:
    """One suggestion as llama.vim would get it: from the server (with its timings) or from its own cache."""

    content: str  # what the server sent (or the rest of a cached answer after the typed-through characters)
    text: str  # what would be inserted on accept, after llama.vim's render rules ("" when it discards it)
    can_accept: bool
    wall_ms: float  # request round trip, or the cache lookup
    from_cache: bool
    kind: str  # "fim" (first request at a spot), "speculative", "manual", "ring" or "cache"
    prompt_n: int | None = None
    prompt_ms: float | None = None
    predicted_n: int | None = None
    predicted_ms: float | None = None
    predicted_per_second: float | None = None
    tokens_cached: int | None = None
    truncated: bool = False
    request: dict[str, Any] | None = field(default=None, repr=False)
    response: dict[str, Any] | None = field(default=None, repr=False)
    shown_lines: list[str] = field(default_factory=list, repr=False)  # s:fim_data['content'], suffix appended
    background: list[InfillResult] = field(default_factory=list)  # requests this event also sent, in order


@dataclass
class RingChunk:
    """One entry of llama.vim's ring buffer: its lines, the text sent as input_extra, reltime(), the buffer name."""

    data: list[str]
    text: str
    time: list[int]
    filename: str


def _lines_of(document: str | Sequence[str]) -> list[str]:
    """Buffer lines as Vim has them: a final newline does not start another line."""
    if isinstance(document, str):
        lines = document.split("\n")
        if len(lines) > 1 and lines[-1] == "":
            lines.pop()
        return lines
    return list(document)


def _getline(lines: Sequence[str], lnum: int) -> str:
    """Vim's getline(lnum): 1-based, "" outside the buffer."""
    return lines[lnum - 1] if 1 <= lnum <= len(lines) else ""


def _getlines(lines: Sequence[str], first: int, last: int) -> list[str]:
    """Vim's getline(first, last): inclusive, [] when last < first."""
    first = max(first, 1)
    last = min(last, len(lines))
    return list(lines[first - 1:last]) if first <= last else []


def _leading_ws(text: str) -> int:
    return len(text) - len(text.lstrip(" \t"))


def chunk_similarity(c0: Sequence[str], c1: Sequence[str]) -> float:
    """llama.vim's s:chunk_sim: Dice coefficient over word tokens (1.0 for two empty chunks)."""
    tokens0 = [t for t in re.split(r"[^0-9A-Za-z_]+", "\n".join(c0)) if t]
    tokens1 = [t for t in re.split(r"[^0-9A-Za-z_]+", "\n".join(c1)) if t]
    if not tokens0 and not tokens1:
        return 1.0
    seen = set(tokens0)
    common = sum(1 for t in tokens1 if t in seen)
    return 2.0 * common / (len(tokens0) + len(tokens1))


def _cache_key(prefix: str, middle: str, suffix: str) -> str:
    return hashlib.sha256((prefix + middle + CACHE_SEPARATOR + suffix).encode("utf-8")).hexdigest()


class LlamaVimClient:
    """Replays llama.vim's requests to a `llama-server` (the details and sources: module docstring).

    One client is one editor session: it keeps llama.vim's ring buffer of extra context and its result cache.
    Cursor positions are (row, col), both 0-based, col in characters.
    """

    def __init__(
        self,
        url: str,
        *,
        n_prefix: int = 256,
        n_suffix: int = 64,
        n_predict: int = 128,
        stop_strings: Sequence[str] = (),
        t_max_prompt_ms: int = 500,
        t_max_predict_ms: int = 1000,
        max_line_suffix: int = 8,
        max_cache_keys: int = 250,
        ring_n_chunks: int = 16,
        ring_chunk_size: int = 64,
        ring_scope: int = 1024,
        model: str = "",
        api_key: str = "",
        exact_n_predict: bool = False,
        seed: int = 0,
        timeout: float = 600.0,
    ) -> None:
        self.url = url.rstrip("/")
        if self.url.endswith("/infill"):
            self.url = self.url[: -len("/infill")]
        self.n_prefix = n_prefix
        self.n_suffix = n_suffix
        self.n_predict = n_predict
        self.stop_strings = list(stop_strings)
        self.t_max_prompt_ms = t_max_prompt_ms
        self.t_max_predict_ms = t_max_predict_ms
        self.max_line_suffix = max_line_suffix
        self.max_cache_keys = max_cache_keys
        self.ring_n_chunks = ring_n_chunks
        self.ring_chunk_size = ring_chunk_size
        self.ring_scope = ring_scope
        self.model = model
        self.api_key = api_key
        self.exact_n_predict = exact_n_predict
        self.timeout = timeout
        self.rng = random.Random(seed)
        self.ring_chunks: list[RingChunk] = []
        self.ring_queued: list[RingChunk] = []
        self.ring_n_evict = 0
        self.cache: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._pos_y_pick = -9999
        self._indent_last = -1

    # ---- editor events ---------------------------------------------------------------------------------------

    def complete(
        self,
        document: str | Sequence[str],
        cursor: tuple[int, int],
        filename: str,
        *,
        auto: bool = True,
        speculative: bool = True,
    ) -> InfillResult | None:
        """The cursor arrived at `cursor` in insert mode (auto) or the user pressed the trigger key (not auto).

        Returns what the user is shown first: a cache hit (look-back included) or the server's answer; None when
        llama.vim shows nothing and sends nothing (more than max_line_suffix characters right of the cursor, or
        a cache key hit without a renderable entry). Every request the event sent is on `.background` of the
        result (the speculative request, the refresh behind a typed-through cache hit) with its own timings.
        """
        lines = _lines_of(document)
        row, col = cursor
        pos_x, pos_y = col, row + 1
        shown: InfillResult | None = None
        background: list[InfillResult | None] = []  # None: llama.vim skipped that request (cached already)
        if auto:  # s:on_move -> s:fim_try_hint, then the CursorMovedI llama#fim
            shown = self._try_hint(lines, pos_x, pos_y)
            if shown is not None and speculative:
                background.append(self._fim(lines, pos_x, pos_y, filename, auto=True, prev=shown.shown_lines,
                                            use_cache=True))
        main = self._fim(lines, pos_x, pos_y, filename, auto=auto, prev=[], use_cache=auto)
        if main is not None:
            if shown is None or not shown.can_accept:  # s:fim_on_response renders it
                shown = main
                if speculative:
                    background.append(self._fim(lines, pos_x, pos_y, filename, auto=True, prev=main.shown_lines,
                                                use_cache=True))
            else:
                background.append(main)
        if shown is None:
            return None
        shown.background = [r for r in background if r is not None]
        return shown

    def on_buffer_enter(self, document: str | Sequence[str], row: int, filename: str, *,
                        modified: bool = False) -> None:
        """BufEnter (and BufLeave, BufWritePost): queue a chunk around the cursor of an unmodified file."""
        if modified:
            return
        lines = _lines_of(document)
        half = self.ring_chunk_size // 2
        line = row + 1
        self.pick_chunk(_getlines(lines, max(1, line - half), min(line + half, len(lines))), filename,
                        do_evict=True)

    on_buffer_leave = on_buffer_enter

    def on_save(self, document: str | Sequence[str], row: int, filename: str) -> None:
        """BufWritePost: the saved buffer is unmodified, so a chunk around the cursor is queued."""
        self.on_buffer_enter(document, row, filename, modified=False)

    def on_yank(self, text: str | Sequence[str], filename: str) -> None:
        """TextYankPost with operator y: the yanked lines become a chunk (even in a modified buffer)."""
        self.pick_chunk(_lines_of(text), filename, do_evict=True)

    def ring_update(self) -> InfillResult | None:
        """One tick of llama.vim's idle timer: move a queued chunk into the ring and let the server evaluate it."""
        if not self.ring_queued:
            return None
        if len(self.ring_chunks) == self.ring_n_chunks:
            self.ring_chunks.pop(0)
        self.ring_chunks.append(self.ring_queued.pop(0))
        request = {
            "id_slot": 0,
            "input_prefix": "",
            "input_suffix": "",
            "input_extra": self._extra(),
            "prompt": "",
            "n_predict": 0,
            "temperature": 0.0,
            "samplers": [],
            "stream": False,
            "cache_prompt": True,
            "t_max_prompt_ms": 1,
            "t_max_predict_ms": 1,
            "response_fields": [""],
            "model": self.model,
        }
        return self._post(request, kind="ring", lines=[], pos_x=0, pos_y=1)

    # ---- llama.vim internals ---------------------------------------------------------------------------------

    def pick_chunk(self, text: Sequence[str], filename: str, *, do_evict: bool) -> None:
        """s:pick_chunk: queue a random run of `text` unless it is small, known, or (without evict) too similar."""
        if self.ring_n_chunks <= 0 or len(text) < 3:
            return
        half = self.ring_chunk_size // 2
        if len(text) + 1 < self.ring_chunk_size:
            chunk = list(text)
        else:
            l0 = self.rng.randint(0, max(0, len(text) - half))
            l1 = min(l0 + half, len(text))
            chunk = list(text[l0:l1 + 1])
        if any(c.data == chunk for c in self.ring_chunks) or any(c.data == chunk for c in self.ring_queued):
            return
        for pool in (self.ring_queued, self.ring_chunks):
            for i in range(len(pool) - 1, -1, -1):
                if chunk_similarity(pool[i].data, chunk) > 0.9:
                    if not do_evict:
                        return
                    pool.pop(i)
                    self.ring_n_evict += 1
        if len(self.ring_queued) == QUEUE_MAX:
            self.ring_queued.pop(0)
        now = time.time()
        self.ring_queued.append(RingChunk(chunk, "\n".join(chunk) + "\n", [int(now), int(now % 1 * 1e6)], filename))

    def context(self, lines: Sequence[str], pos_x: int, pos_y: int, prev: Sequence[str]) -> dict[str, Any]:
        """s:fim_ctx_local: prefix, middle, suffix and indent at (pos_x, pos_y), as if `prev` were accepted."""
        if not prev:
            line_cur = _getline(lines, pos_y)
            line_cur_prefix, line_cur_suffix = line_cur[:pos_x], line_cur[pos_x:]
            lines_prefix = _getlines(lines, max(1, pos_y - self.n_prefix), pos_y - 1)
            lines_suffix = _getlines(lines, pos_y + 1, min(len(lines), pos_y + self.n_suffix))
            if line_cur.strip(" \t") == "":
                indent = 0
                line_cur_prefix = line_cur_suffix = ""
            else:
                indent = _leading_ws(line_cur)
        else:
            line_cur = _getline(lines, pos_y) + prev[0] if len(prev) == 1 else prev[-1]
            line_cur_prefix, line_cur_suffix = line_cur, ""
            lines_prefix = _getlines(lines, max(1, pos_y - self.n_prefix + len(prev) - 1), pos_y - 1)
            if len(prev) > 1:
                lines_prefix.append(_getline(lines, pos_y) + prev[0])
                lines_prefix.extend(prev[1:-1])
            lines_suffix = _getlines(lines, pos_y + 1, min(len(lines), pos_y + self.n_suffix))
            indent = self._indent_last
        return {
            "prefix": "\n".join(lines_prefix) + "\n",
            "middle": line_cur_prefix,
            "suffix": line_cur_suffix + "\n" + "\n".join(lines_suffix) + "\n",
            "indent": indent,
            "line_cur_suffix": line_cur_suffix,
        }

    def build_request(self, ctx: dict[str, Any], *, first: bool) -> dict[str, Any]:
        """The /infill body llama#fim sends for this context (plus the exact-N switches when asked for)."""
        request: dict[str, Any] = {
            "id_slot": 0,
            "input_prefix": ctx["prefix"],
            "input_suffix": ctx["suffix"],
            "input_extra": self._extra(),
            "prompt": ctx["middle"],
            "n_predict": self.n_predict,
            "stop": list(self.stop_strings),
            "n_indent": ctx["indent"],
            "top_k": 40,
            "top_p": 0.90,
            "samplers": ["top_k", "top_p", "infill"],
            "stream": False,
            "cache_prompt": True,
            "t_max_prompt_ms": self.t_max_prompt_ms,
            "t_max_predict_ms": FIRST_REQUEST_T_MAX_PREDICT_MS if first else self.t_max_predict_ms,
            "response_fields": list(RESPONSE_FIELDS),
            "model": self.model,
        }
        if self.exact_n_predict:
            request.update(ignore_eos=True, samplers=["top_k", "top_p"], n_indent=0, t_max_predict_ms=0, stop=[])
        return request

    def _extra(self) -> list[dict[str, Any]]:
        """s:ring_get_extra."""
        return [{"text": c.text, "time": c.time, "filename": c.filename} for c in self.ring_chunks]

    def _cache_get(self, key: str) -> dict[str, Any] | None:
        value = self.cache.get(key)
        if value is not None:
            self.cache.move_to_end(key)
        return value

    def _cache_insert(self, key: str, value: dict[str, Any]) -> None:
        if key not in self.cache and len(self.cache) > self.max_cache_keys - 1:
            self.cache.popitem(last=False)
        self.cache[key] = value
        self.cache.move_to_end(key)

    def _try_hint(self, lines: Sequence[str], pos_x: int, pos_y: int) -> InfillResult | None:
        """s:fim_try_hint: the exact cache key, else a cached answer up to 128 typed characters back."""
        started = time.perf_counter()
        ctx = self.context(lines, pos_x, pos_y, [])
        raw = self._cache_get(_cache_key(ctx["prefix"], ctx["middle"], ctx["suffix"]))
        if raw is None:
            pm = ctx["prefix"] + ctx["middle"]
            best = 0
            for i in range(LOOK_BACK_CHARS):
                if i + 1 > len(pm):
                    break
                removed = pm[len(pm) - (i + 1):]
                cached = self._cache_get(_cache_key(pm[: len(pm) - (i + 1)], "", ctx["suffix"]))
                if cached is None:
                    continue
                content = str(cached.get("content", ""))
                if content[: i + 1] != removed:
                    continue
                rest = content[i + 1:]
                if rest:
                    if raw is None:
                        raw = {**cached, "content": rest}
                    elif len(rest) > best:
                        best = len(rest)
                        raw = {**cached, "content": rest}
        if raw is None:
            return None
        wall_ms = (time.perf_counter() - started) * 1000.0
        content = str(raw.get("content", ""))
        text, can_accept, shown_lines = self._render(content, lines, pos_x, pos_y)
        return InfillResult(content=content, text=text, can_accept=can_accept, wall_ms=wall_ms, from_cache=True,
                            kind="cache", response=raw, shown_lines=shown_lines)

    def _fim(self, lines: Sequence[str], pos_x: int, pos_y: int, filename: str, *, auto: bool,
             prev: Sequence[str], use_cache: bool) -> InfillResult | None:
        """llama#fim: build and send the request unless it is cached or suppressed; then gather ring chunks."""
        ctx = self.context(lines, pos_x, pos_y, prev)
        if auto and len(ctx["line_cur_suffix"]) > self.max_line_suffix:
            return None
        prefix, middle, suffix = ctx["prefix"], ctx["middle"], ctx["suffix"]
        keys = [_cache_key(prefix, middle, suffix)]
        trimmed = prefix
        for _ in range(3):
            trimmed = trimmed.split("\n", 1)[1] if "\n" in trimmed else ""
            if not trimmed:
                break
            keys.append(_cache_key(trimmed, middle, suffix))
        if use_cache and any(self._cache_get(k) is not None for k in keys):
            return None
        self._indent_last = ctx["indent"]
        half = self.ring_chunk_size // 2
        around = _getlines(lines, max(1, pos_y - half), min(pos_y + half, len(lines)))
        l0 = self.rng.randint(0, max(0, len(around) - half))
        probe = around[l0:min(l0 + half, len(around)) + 1]
        for i in range(len(self.ring_chunks) - 1, -1, -1):
            if chunk_similarity(self.ring_chunks[i].data, probe) > 0.5:
                self.ring_chunks.pop(i)
                self.ring_n_evict += 1
        request = self.build_request(ctx, first=not prev)
        kind = "speculative" if prev else ("fim" if auto else "manual")
        result = self._post(request, kind=kind, lines=lines, pos_x=pos_x, pos_y=pos_y, cache_keys=keys)
        if auto and abs(pos_y - self._pos_y_pick) > PICK_DISTANCE_LINES:
            max_y = len(lines)
            self.pick_chunk(_getlines(lines, max(1, pos_y - self.ring_scope), max(1, pos_y - self.n_prefix)),
                            filename, do_evict=False)
            self.pick_chunk(_getlines(lines, min(max_y, pos_y + self.n_suffix),
                                      min(max_y, pos_y + self.n_suffix + self.ring_chunk_size)),
                            filename, do_evict=False)
            self._pos_y_pick = pos_y
        return result

    def _post(self, request: dict[str, Any], *, kind: str, lines: Sequence[str], pos_x: int, pos_y: int,
              cache_keys: Sequence[str] = ()) -> InfillResult:
        """POST /infill, time it, cache the answer under `cache_keys`, and read llama.vim's response fields."""
        headers = {"Authorization": f"Bearer {self.api_key}"}
        started = time.perf_counter()
        try:
            status, data = _http("POST", self.url, "/infill", request, timeout=self.timeout, headers=headers)
        except (OSError, http.client.HTTPException) as exc:
            raise UserError(f"llama-server at {self.url} did not answer /infill: {exc}") from None
        wall_ms = (time.perf_counter() - started) * 1000.0
        if status != 200 or not isinstance(data, dict):
            message = data.get("error", {}).get("message") if isinstance(data, dict) else data
            raise UserError(f"llama-server /infill answered {status}: {str(message)[:300]}")
        content = str(data.get("content") or "")
        if "content" in data:  # s:fim_on_response caches only answers that carry content
            for key in cache_keys:
                self._cache_insert(key, data)
        text, can_accept, shown_lines = ("", False, []) if kind == "ring" else self._render(content, lines, pos_x,
                                                                                            pos_y)

        def num(name: str) -> Any:
            return data.get(f"timings/{name}", (data.get("timings") or {}).get(name))

        return InfillResult(
            content=content, text=text, can_accept=can_accept, wall_ms=wall_ms, from_cache=False, kind=kind,
            prompt_n=num("prompt_n"), prompt_ms=num("prompt_ms"), predicted_n=num("predicted_n"),
            predicted_ms=num("predicted_ms"), predicted_per_second=num("predicted_per_second"),
            tokens_cached=data.get("tokens_cached"), truncated=bool(data.get("truncated", False)),
            request=request, response=data, shown_lines=shown_lines)

    def render(self, content: str, lines: Sequence[str], pos_x: int, pos_y: int) -> tuple[str, bool]:
        """s:fim_render's text rules: what accepting the suggestion inserts at (pos_x, pos_y), and whether it may."""
        text, can_accept, _ = self._render(content, lines, pos_x, pos_y)
        return text, can_accept

    @staticmethod
    def _render(content: str, lines: Sequence[str], pos_x: int, pos_y: int) -> tuple[str, bool, list[str]]:
        """render() plus the shown lines (the line suffix appended to the last), which a speculative request gets."""
        parts = content.split("\n")
        while parts and parts[-1] == "":
            parts.pop()
        can_accept = True
        if not parts:
            parts, can_accept = [""], False
        line_cur = _getline(lines, pos_y)
        if line_cur.strip(" \t") == "":
            lead = min(_leading_ws(parts[0]), len(line_cur))
            line_cur, parts[0] = parts[0][:lead], parts[0][lead:]
        line_cur_prefix, line_cur_suffix = line_cur[:pos_x], line_cur[pos_x:]
        if len(parts) > 1 and parts[0] == "" and parts[1:] == _getlines(lines, pos_y + 1, pos_y + len(parts) - 1):
            parts = [""]
        if len(parts) == 1 and parts[0] == line_cur_suffix:
            parts = [""]
        cmp_y = pos_y + 1
        while cmp_y < len(lines) and _getline(lines, cmp_y).strip(" \t") == "":
            cmp_y += 1
        if line_cur_prefix + parts[0] == _getline(lines, cmp_y):  # it repeats the next non-blank line(s)
            repeats = (len(parts) == 1
                       or (len(parts) == 2 and parts[-1] == _getline(lines, cmp_y + 1)[: len(parts[-1])])
                       or (len(parts) > 2 and parts[1:] == _getlines(lines, cmp_y + 1, cmp_y + len(parts) - 1)))
            if repeats:
                parts = [""]
        text = "\n".join(parts)
        shown = [*parts[:-1], parts[-1] + line_cur_suffix]
        if re.fullmatch(r"[ \t]*", "\n".join(shown)):  # Vim's '^\s*$': a newline is not \s
            can_accept = False
        return text, can_accept, shown


def print_made_path(make: Callable[[Callable[[str], None]], Path]) -> int:
    """A `python -m` entry that makes a cached artifact: progress on stderr, the path on stdout (for scripts and
    make), a user error as one line and exit status 2."""
    try:
        path = make(lambda message: print(message, file=sys.stderr, flush=True))
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(path)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m codecomplete.tools.llama_server`: build (if needed) and print the binary's path."""
    del argv
    return print_made_path(lambda progress: ensure_llama_server(progress=progress))


if __name__ == "__main__":
    sys.exit(main())
