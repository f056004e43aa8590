"""`codecomplete bench`: replay a person typing real files through the language server, against a baseline.

What an editor user feels is keystroke → suggestion latency, so that is what is measured: the real server
runs as a subprocess and a real LSP client (pygls) sends one ``didChange`` per keystroke and asks for an
inline completion at every pause, cancelling it when typing resumes before the answer, as editors do. The
same replay then runs against a second server with ``reuse: false`` (a fresh prompt evaluation for every
request, like a naive llama-cpp-python server), and the report gives the ratios ours/baseline.

The typist waits for the suggestion after Enter (that is where latency is felt, and both servers then
answer the same requests); a pause after a word lasts what it lasts, and a suggestion later than that is
cancelled when typing resumes, as an editor does. Simulated time is compressed by default: keystrokes
between pauses are sent back to back (after a round trip that lets the server catch up, as the typing
interval would), and a pause ends as soon as its answer arrives. The ratios compare the requests both
servers answered; cancelled requests are counted separately.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import random
import signal
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import click
import numpy as np
from lsprotocol import types
from pygls.lsp.client import LanguageClient

from codecomplete import __version__
from codecomplete.core.languages import language_for_path
from codecomplete.core.source import units
from codecomplete.errors import UserError

SERVER_CMD = (sys.executable, "-m", "codecomplete.cli", "lsp")
STATUS = "codecomplete/status"
# The JavaScript and Go sources shipped with the repository's test data.
BENCH_DATA = Path(__file__).resolve().parents[2] / "tests" / "data" / "bench"
DEFAULT_STDLIB = ("textwrap.py", "json/encoder.py")
LARGE_FILE_SOURCES = ("_pydecimal.py", "inspect.py", "typing.py", "argparse.py", "textwrap.py")
LARGE_FILE_LINES = 3000
LARGE_FILE_STATEMENTS = ("total = compute(value, scale) + offset", "if total > limit:", "    return None",
                         "result.append(total)")

# The typist: pauses long enough to look at a suggestion after Enter and now and then after a word.
LINE_PAUSE_S = (0.8, 2.0)
LINE_PATIENCE_S = 120.0  # after Enter the typist looks for the suggestion: waits for it, within reason
WORD_PAUSE_S = (0.4, 0.9)
WORD_PAUSE_CHANCE = 0.15
_WORD_END = set(" ,(=:[{")
START_FRACTION = 0.4  # the typed slice starts at the first paragraph this far into the file
SEED = 4

FULL_LINES, QUICK_LINES = 40, 4
FULL_OVERHEAD_REQUESTS, QUICK_OVERHEAD_REQUESTS = 100, 8
QUICK_TOKEN_BUDGET = 384
# A naive server has no time budget; with one, a slow baseline would answer "nothing" fast and look good.
BENCH_TIME_BUDGET_MS = 60_000
READ_AHEAD_PATIENCE_S = 30.0

TARGETS = {"latency_p50": 0.35, "latency_p99": 0.6, "reuse_ratio": 0.85, "large_file_overhead_p99_ms": 5.0}
LOAD_TIMEOUT_S = 600.0


# --- the replay script -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Keystroke:
    text: str  # inserted text: one character, or a newline plus the editor's auto-indent; "" = no edit
    pause_s: float  # idle time after the key
    trigger: str | None  # "start", "line" or "word": the pause makes the editor ask for a completion


@dataclass(frozen=True)
class Replay:
    """One file: the text already there when typing starts and the keys that type the missing slice."""

    name: str
    uri: str
    language: str
    before: str
    after: str
    keys: tuple[Keystroke, ...]
    first_line: int  # 1-based
    n_lines: int


def stdlib_file(relative: str) -> Path:
    return Path(sysconfig.get_paths()["stdlib"]) / relative


def default_files() -> list[Path]:
    """A couple of standard library modules (present on every machine) plus the shipped JS and Go files."""
    files = [stdlib_file(r) for r in DEFAULT_STDLIB]
    files += sorted(BENCH_DATA.glob("*.js")) + sorted(BENCH_DATA.glob("*.go"))
    return [f for f in files if f.is_file()]


def parse_file_spec(spec: str) -> tuple[Path, int | None]:
    """``PATH`` or ``PATH:LINE`` (1-based first line of the typed slice)."""
    path, _, line = spec.rpartition(":")
    if path and line.isdigit():
        return Path(path), int(line)
    return Path(spec), None


def slice_start(lines: Sequence[str], n_lines: int) -> int:
    """0-based first typed line: the first paragraph start (after a blank line) past START_FRACTION."""
    last = max(0, len(lines) - n_lines)
    for i in range(max(1, int(len(lines) * START_FRACTION)), last + 1):
        if lines[i].strip() and not lines[i - 1].strip():
            return i
    return min(last, int(len(lines) * START_FRACTION))


def build_replay(path: Path, n_lines: int, rate: float, first_line: int | None = None,
                 slot: int = 0) -> Replay:
    """Keys that retype ``n_lines`` lines of ``path`` at ``rate`` characters per second.

    ``slot`` keeps documents apart when one file is replayed twice (another slice).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read {path}: {exc}") from None
    language = language_for_path(str(path))
    if language is None:
        raise UserError(f"{path}: unknown language (use a source file with a known extension)")
    lines = text.splitlines(keepends=True)
    if len(lines) < 2:
        raise UserError(f"{path}: too short to replay")
    start = slice_start(lines, n_lines) if first_line is None else first_line - 1
    if not 0 <= start < len(lines):
        raise UserError(f"{path}: line {first_line} is outside the file (1..{len(lines)})")
    typed = "".join(lines[start : start + n_lines])
    tail = "\n" if typed.endswith("\n") else ""
    body = typed[: len(typed) - len(tail)]
    rng = random.Random(f"{SEED}:{path.name}")
    return Replay(
        name=path.name,
        uri=f"file:///codecomplete-bench/{slot}/{path.name}",
        language=language,
        before="".join(lines[:start]),
        after=tail + "".join(lines[start + n_lines :]),
        keys=tuple(keystrokes(body, rate, rng)),
        first_line=start + 1,
        n_lines=min(n_lines, len(lines) - start),
    )


def keystrokes(body: str, rate: float, rng: random.Random) -> Iterable[Keystroke]:
    """One key per character; Enter brings the next line's indentation (auto-indent) and a pause."""
    interval = 1 / rate
    rows = body.split("\n")
    for i, row in enumerate(rows):
        content = row.lstrip(" \t")
        indent = row[: len(row) - len(content)]
        pause = rng.uniform(*LINE_PAUSE_S)
        if i == 0:
            yield Keystroke(indent, pause, "start")
        for j, ch in enumerate(content):
            word_end = ch in _WORD_END and j > 0 and (content[j - 1].isalnum() or content[j - 1] in "_)]")
            if word_end and j < len(content) - 1 and rng.random() < WORD_PAUSE_CHANCE:
                yield Keystroke(ch, rng.uniform(*WORD_PAUSE_S), "word")
            else:
                yield Keystroke(ch, interval, None)
        if i + 1 < len(rows):
            nxt = rows[i + 1]
            auto_indent = nxt[: len(nxt) - len(nxt.lstrip(" \t"))]
            yield Keystroke("\n" + auto_indent, rng.uniform(*LINE_PAUSE_S), "line")


def large_python_text(n_lines: int = LARGE_FILE_LINES) -> str:
    """A real ~3,000-line Python file from the standard library (long modules, concatenated if needed)."""
    lines: list[str] = []
    for rel in LARGE_FILE_SOURCES:
        path = stdlib_file(rel)
        if path.is_file():
            lines += path.read_text(encoding="utf-8").splitlines(keepends=True)
        if len(lines) >= n_lines:
            break
    while len(lines) < n_lines:  # a trimmed standard library: repeat what there is
        lines += lines or ["x = 1\n"]
    return "".join(lines[:n_lines])


# --- one server, driven like an editor ------------------------------------------------------------------


OUTCOMES = ("answered", "empty", "cancelled", "error")


@dataclass
class RequestRecord:
    file: str
    line: int  # 0-based position of the request
    character: int
    trigger: str
    outcome: str  # answered, empty, cancelled or error
    latency_ms: float | None  # keystroke → answer, client side
    suggestion: str | None = None
    server: dict[str, Any] | None = None  # the server's own record (source, tokens, timings_ms, latency_ms)


@dataclass
class RunResult:
    requests: list[RequestRecord] = field(default_factory=list)
    server_entries: list[dict[str, Any]] = field(default_factory=list)  # every completion the server ran
    peak_rss_mb: float | None = None
    status: dict[str, Any] = field(default_factory=dict)
    large_file: list[RequestRecord] = field(default_factory=list)
    read_ahead_ms: dict[str, float] = field(default_factory=dict)  # per opened file: open → read ahead


def _plain(obj: Any) -> Any:
    """pygls turns results of custom methods into namedtuples; the report wants plain JSON values."""
    if hasattr(obj, "_asdict"):
        return {k: _plain(v) for k, v in obj._asdict().items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


class Cursor:
    """Where the typist's cursor is, as an LSP position in the negotiated encoding."""

    def __init__(self, before: str, encoding: str) -> None:
        self.encoding = encoding
        self.line = before.count("\n")
        self.line_text = before[before.rfind("\n") + 1 :]

    @property
    def position(self) -> types.Position:
        return types.Position(line=self.line, character=units(self.line_text, self.encoding))

    def advance(self, text: str) -> None:
        if "\n" in text:
            self.line += text.count("\n")
            self.line_text = text[text.rfind("\n") + 1 :]
        else:
            self.line_text += text


class Session:
    """A language server subprocess and the client talking to it over stdio.

    With ``daemon_dir`` the server hands completions to a shared daemon, as editors get by default; the
    daemon is private to this session (its own runtime directory) and is stopped with it.
    """

    def __init__(self, options: dict[str, Any], label: str, daemon_dir: Path | None = None) -> None:
        self.options = options
        self.label = label
        self.daemon_dir = daemon_dir
        self.client = LanguageClient("codecomplete-bench", __version__)
        self.encoding = types.PositionEncodingKind.Utf16
        self.stderr_tail: list[str] = []
        self.errors: list[str] = []  # error messages the server showed the user
        self.model_pid: int | None = None  # the process holding the model: the server or its daemon
        self._completions = 0
        self._ids = 0
        self._versions: dict[str, int] = {}
        self._tasks: list[asyncio.Task] = []

        @self.client.feature(types.WINDOW_SHOW_MESSAGE)
        def _show(params: types.ShowMessageParams) -> None:
            if params.type == types.MessageType.Error:
                self.errors.append(params.message)

    async def start(self) -> None:
        env = dict(os.environ)
        if self.daemon_dir is None:
            cmd = (*SERVER_CMD, "--no-daemon")
        else:
            from codecomplete.serving.runtime import RUNTIME_ENV

            cmd = SERVER_CMD
            env[RUNTIME_ENV] = str(self.daemon_dir)
        await self.client.start_io(*cmd, env=env)
        self._tasks.append(asyncio.create_task(self._drain_stderr()))
        caps = types.ClientCapabilities(
            general=types.GeneralClientCapabilities(
                position_encodings=[types.PositionEncodingKind.Utf8, types.PositionEncodingKind.Utf16]
            ),
            text_document=types.TextDocumentClientCapabilities(
                inline_completion=types.InlineCompletionClientCapabilities(dynamic_registration=False)
            ),
        )
        result = await self._guard(
            self.client.initialize_async(
                types.InitializeParams(capabilities=caps, initialization_options=self.options,
                                       process_id=os.getpid())
            ),
            timeout=60,
        )
        self.encoding = result.capabilities.position_encoding or types.PositionEncodingKind.Utf16
        self.client.initialized(types.InitializedParams())
        status = await self._wait_ready()
        if self.errors:  # e.g. a rejected setting: the run would not measure what was asked
            raise UserError(f"{self.label} server: {self.errors[0]}")
        self.model_pid = status.get("pid") or self.client._server.pid  # pygls keeps its subprocess there

    async def _drain_stderr(self) -> None:
        """The server's stderr is a pipe: read it so it never blocks, keep the end for error messages."""
        stream = self.client._server.stderr
        while line := await stream.readline():
            self.stderr_tail = [*self.stderr_tail[-19:], line.decode("utf-8", "replace").rstrip()]

    async def _guard(self, awaitable: Any, timeout: float) -> Any:
        try:
            return await asyncio.wait_for(awaitable, timeout)
        except asyncio.TimeoutError:
            raise UserError(f"{self.label} server did not answer within {timeout:.0f}s") from None
        except RuntimeError as exc:  # pygls fails pending requests this way when the server exits
            raise self._died(exc) from None

    def _died(self, exc: Exception) -> UserError:
        tail = " | ".join(self.stderr_tail[-3:])
        return UserError(f"{self.label} server stopped: {exc}{': ' + tail if tail else ''}")

    async def status(self) -> dict[str, Any]:
        return _plain(await self._guard(self.client.protocol.send_request_async(STATUS, {}), timeout=60))

    async def _wait_ready(self) -> dict[str, Any]:
        deadline = time.monotonic() + LOAD_TIMEOUT_S
        while time.monotonic() < deadline:
            status = await self.status()
            if status["state"] == "ready":
                return status
            if status["state"] == "error":
                raise UserError(f"{self.label} server cannot load the model: {status['error']}")
            await asyncio.sleep(0.1)
        raise UserError(f"{self.label} server did not load the model within {LOAD_TIMEOUT_S:.0f}s")

    async def open(self, uri: str, language: str, text: str) -> float:
        """Open a document and wait while the server reads it ahead, as a person looks at a file before typing
        in it; returns how long that took (ms)."""
        self._versions[uri] = 1
        self.client.text_document_did_open(
            types.DidOpenTextDocumentParams(types.TextDocumentItem(uri=uri, language_id=language, version=1,
                                                                   text=text))
        )
        opened = time.perf_counter()
        while (await self.status()).get("reading_ahead") and time.perf_counter() - opened < READ_AHEAD_PATIENCE_S:
            await asyncio.sleep(0.005)
        return (time.perf_counter() - opened) * 1000

    def insert(self, uri: str, position: types.Position, text: str) -> None:
        self._versions[uri] += 1
        self.client.text_document_did_change(
            types.DidChangeTextDocumentParams(
                text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=self._versions[uri]),
                content_changes=[
                    types.TextDocumentContentChangePartial(range=types.Range(position, position), text=text)
                ],
            )
        )

    async def new_entries(self) -> list[dict[str, Any]]:
        """The server's records of completions it ran since the last call."""
        status = await self.status()
        done = status["stats"]["completions"]
        fresh, self._completions = done - self._completions, done
        return status["recent"][-fresh:] if fresh > 0 else []

    async def request(self, uri: str, position: types.Position, keyed_at: float, patience_s: float,
                      file: str, trigger: str) -> RequestRecord:
        """An automatic inline completion, cancelled as an editor does when not answered in ``patience_s``."""
        self._ids += 1
        msg_id = f"bench-{self._ids}"
        params = types.InlineCompletionParams(
            context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic),
            text_document=types.TextDocumentIdentifier(uri=uri),
            position=position,
        )
        future = asyncio.wrap_future(
            self.client.protocol.send_request(types.TEXT_DOCUMENT_INLINE_COMPLETION, params, msg_id=msg_id)
        )
        done, _ = await asyncio.wait({future}, timeout=patience_s)
        record = RequestRecord(file, position.line, position.character, trigger, "cancelled", None)
        if done:
            record.latency_ms = (time.perf_counter() - keyed_at) * 1000
            try:
                answer = future.result()
            except RuntimeError as exc:  # pygls fails pending requests this way when the server exits
                raise self._died(exc) from None
            except Exception:  # an LSP error response
                record.outcome = "error"
            else:
                if answer is not None and answer.items:
                    record.outcome, record.suggestion = "answered", answer.items[0].insert_text
                else:
                    record.outcome = "empty"
        else:
            self.client.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id=msg_id))
            with contextlib.suppress(Exception):  # the cancellation error (or a late answer) is expected
                await self._guard(future, timeout=60)
        return record

    def peak_rss_mb(self) -> float | None:
        try:
            status = Path(f"/proc/{self.model_pid}/status").read_text()
        except OSError:  # not Linux
            return None
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return None

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.client.shutdown_async(None), 30)
            self.client.exit(None)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.client.stop(), 30)
        if self.client._server is not None and self.client._server.returncode is None:
            self.client._server.kill()
        for task in self._tasks:
            task.cancel()
        if self.daemon_dir is not None:
            await asyncio.to_thread(stop_daemon, self.daemon_dir, self.model_pid)


def stop_daemon(directory: Path, pid: int | None) -> None:
    """Shut down the private daemon a session started (by its API; by its pid if it does not answer)."""
    from codecomplete.serving.client import find_daemon

    with contextlib.suppress(Exception):
        client = find_daemon(directory)
        if client is not None:
            client.request("POST", "/shutdown")
            client.close()
            return
    if pid:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)


async def replay_file(session: Session, replay: Replay, realtime: bool, result: RunResult) -> None:
    """Type one file's slice; ask at every pause; record each request with the server's own account."""
    result.read_ahead_ms[replay.name] = await session.open(replay.uri, replay.language,
                                                           replay.before + replay.after)
    await session.new_entries()
    cursor = Cursor(replay.before, session.encoding)
    due = time.perf_counter()
    for key in replay.keys:
        if realtime:
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
        elif key.trigger:
            await session.status()  # the typing interval would have let the server process earlier keys
        if key.text:
            session.insert(replay.uri, cursor.position, key.text)
            cursor.advance(key.text)
        keyed_at = time.perf_counter()
        due = keyed_at + key.pause_s
        if not key.trigger:
            continue
        patience = key.pause_s if key.trigger == "word" else LINE_PATIENCE_S
        record = await session.request(replay.uri, cursor.position, keyed_at, patience, replay.name,
                                       key.trigger)
        entries = await session.new_entries()
        result.server_entries += entries
        if record.outcome != "cancelled" and entries:
            record.server = entries[-1]
        result.requests.append(record)


async def large_file_overhead(session: Session, n_requests: int, result: RunResult) -> None:
    """The daemon's own cost per request on a 3,000-line file: type at two places, ask after each key."""
    text = large_python_text()
    uri = "file:///codecomplete-bench/large_file.py"
    result.read_ahead_ms["large_file.py"] = await session.open(uri, "python", text)
    lines = text.splitlines()
    spots = [len(lines) - 40, len(lines) // 2]  # bottom first: typing there does not move the other spot
    per_spot = -(-n_requests // len(spots))
    await session.new_entries()
    for row in spots:
        indent = lines[row][: len(lines[row]) - len(lines[row].lstrip())]
        cursor = Cursor("\n".join(lines[: row + 1]), session.encoding)
        typed = "".join(f"\n{indent}{s}" for s in LARGE_FILE_STATEMENTS)
        for ch in typed[:per_spot]:
            await session.status()
            session.insert(uri, cursor.position, ch)
            cursor.advance(ch)
            keyed_at = time.perf_counter()
            record = await session.request(uri, cursor.position, keyed_at, LINE_PATIENCE_S, "large_file.py",
                                           "key")
            entries = await session.new_entries()
            if record.outcome != "cancelled" and entries:
                record.server = entries[-1]
            result.large_file.append(record)


async def run_server(options: dict[str, Any], label: str, replays: Sequence[Replay], realtime: bool,
                     overhead_requests: int, daemon: bool) -> RunResult:
    result = RunResult()
    with tempfile.TemporaryDirectory(prefix="codecomplete-bench-") as tmp:
        session = Session(options, label, Path(tmp) if daemon else None)
        try:
            await session.start()
            for replay in replays:
                await replay_file(session, replay, realtime, result)
            if overhead_requests:
                await large_file_overhead(session, overhead_requests, result)
            result.status = await session.status()
            result.peak_rss_mb = session.peak_rss_mb()
        finally:
            await session.stop()
    return result


# --- figures ---------------------------------------------------------------------------------------------


def percentiles(values: Sequence[float], qs: Sequence[int] = (50, 90, 99)) -> dict[str, float | None]:
    if not values:
        return {f"p{q}": None for q in qs}
    arr = np.asarray(values, dtype=float)
    return {f"p{q}": round(float(np.percentile(arr, q)), 2) for q in qs}


def _overhead(record: RequestRecord) -> dict[str, float] | None:
    """Split a model-served request's time: llama.cpp's part and everything the daemon adds around it."""
    entry = record.server
    if record.latency_ms is None or not entry or entry.get("source") != "model":
        return None
    t = entry["timings_ms"]
    llama = t["prompt_eval"] + t["generate"]
    return {
        "keystroke": t.get("keystroke"),  # measured by the server: its own time for the keystroke, minus llama.cpp's
        "server": t["total"] - llama,
        "protocol": record.latency_ms - entry["latency_ms"],
        "total": record.latency_ms - llama,
        "context": t["context"],
        "tokenize": t["tokenize"],
        "postprocess": t["postprocess"],
    }


def summarize(result: RunResult) -> dict[str, Any]:
    reqs = result.requests
    answered = [r for r in reqs if r.latency_ms is not None]
    model = [e for e in result.server_entries if e.get("source") == "model"]
    sources: dict[str, int] = {}
    for r in answered:
        source = r.server["source"] if r.server else "skipped"
        sources[source] = sources.get(source, 0) + 1
    tok = {k: sum(e["tokens"].get(k, 0) for e in model)
           for k in ("prompt", "evaluated", "reused", "shifted", "generated")}
    eval_s = sum(e["timings_ms"]["prompt_eval"] for e in model) / 1000
    gen_s = sum(e["timings_ms"]["generate"] for e in model) / 1000
    overheads = [o for r in answered if (o := _overhead(r))]
    latencies = [r.latency_ms for r in answered]
    return {
        "requests": len(reqs),
        "outcomes": {k: sum(r.outcome == k for r in reqs) for k in OUTCOMES},
        "latency_ms": {**percentiles(latencies),
                       "mean": round(float(np.mean(latencies)), 2) if latencies else None},
        "served_by": sources,
        "tokens": {
            **tok,
            "reuse_ratio": round(tok["reused"] / tok["prompt"], 4) if tok["prompt"] else None,
            "evaluated_per_request": percentiles([e["tokens"]["evaluated"] for e in model]),
            "reused_per_request": percentiles([e["tokens"]["reused"] for e in model]),
            "model_requests": len(model),
        },
        "tokens_per_s": {
            "prompt_eval": round(tok["evaluated"] / eval_s, 1) if eval_s else None,
            "generate": round(tok["generated"] / gen_s, 1) if gen_s else None,
        },
        "overhead_ms": {part: _part_percentiles(overheads, part)
                        for part in ("keystroke", "server", "protocol", "total")},
        "peak_rss_mb": round(result.peak_rss_mb, 1) if result.peak_rss_mb else None,
        "read_ahead_ms": {name: round(ms, 1) for name, ms in result.read_ahead_ms.items()},
    }


def large_file_summary(records: Sequence[RequestRecord], read_ahead_ms: float | None) -> dict[str, Any]:
    overheads = [o for r in records if (o := _overhead(r))]
    return {
        "lines": LARGE_FILE_LINES,
        "requests": len(records),
        "model_requests": len(overheads),
        "read_ahead_ms": round(read_ahead_ms, 1) if read_ahead_ms is not None else None,
        **{part: _part_percentiles(overheads, part)
           for part in ("keystroke", "total", "context", "tokenize", "postprocess", "server", "protocol")},
    }


def _part_percentiles(overheads: Sequence[dict[str, Any]], part: str) -> dict[str, float | None]:
    return percentiles([o[part] for o in overheads if o[part] is not None], (50, 99))


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def compare(ours: RunResult, base: RunResult, ours_s: dict[str, Any], base_s: dict[str, Any],
            large: dict[str, Any] | None) -> dict[str, Any]:
    """Ratios ours/baseline over the requests both answered (the replays send the same requests in order)."""
    both = [(a, b) for a, b in zip(ours.requests, base.requests)
            if a.latency_ms is not None and b.latency_ms is not None]
    pairs = [(a.latency_ms, b.latency_ms) for a, b in both]
    # Reuse should never change a completion: count the requests both sent to the model that agree.
    model_pairs = [(a, b) for a, b in both if a.server and a.server["source"] == "model" and b.server]
    identical = sum(a.suggestion == b.suggestion for a, b in model_pairs)
    mine, theirs = percentiles([a for a, _ in pairs]), percentiles([b for _, b in pairs])
    ratios: dict[str, Any] = {f"latency_{p}": _ratio(mine[p], theirs[p]) for p in ("p50", "p90", "p99")}
    ratios["evaluated_tokens"] = _ratio(ours_s["tokens"]["evaluated"], base_s["tokens"]["evaluated"])
    values = {
        "latency_p50": ratios["latency_p50"],
        "latency_p99": ratios["latency_p99"],
        "reuse_ratio": ours_s["tokens"]["reuse_ratio"],
        "large_file_overhead_p99_ms": large["keystroke"]["p99"] if large else None,
    }
    targets = {}
    for name, goal in TARGETS.items():
        value = values[name]
        met = None if value is None else (value >= goal if name == "reuse_ratio" else value <= goal)
        targets[name] = {"target": goal, "value": value, "met": met}
    return {"paired_requests": len(pairs), "ours_latency_ms": mine, "baseline_latency_ms": theirs,
            "same_answer": {"model_pairs": len(model_pairs), "identical": identical},
            "ratios": ratios, "targets": targets}


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    try:
        llama = metadata.version("llama-cpp-python")
    except metadata.PackageNotFoundError:
        llama = None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": cpu, "cores": cores, "platform": platform.platform(), "python": platform.python_version(),
            "llama_cpp_python": llama}


# --- output ----------------------------------------------------------------------------------------------


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.1f}{unit}" if abs(value) >= 10 else f"{value:.2f}{unit}"
    return f"{value}{unit}"


def render_table(report: dict[str, Any]) -> str:
    runs = {"ours": report["ours"], "baseline": report["baseline"]}
    rows: list[tuple[str, ...]] = [("", "ours", "baseline", "ours/baseline")]

    def row(label: str, get: Any, ratio: Any = None, unit: str = "") -> None:
        rows.append((label, *(_fmt(get(r), unit) for r in runs.values()), _fmt(ratio)))

    comparison = report["comparison"]
    r = comparison["ratios"]
    row("requests", lambda s: s["requests"])
    for outcome in ("answered", "empty", "cancelled"):
        row(f"  {outcome}", lambda s, o=outcome: s["outcomes"][o])
    for p in ("p50", "p90", "p99"):
        row(f"latency {p}, all answered", lambda s, p=p: s["latency_ms"][p], unit=" ms")
    paired = {"ours": comparison["ours_latency_ms"], "baseline": comparison["baseline_latency_ms"]}
    for p in ("p50", "p90", "p99"):
        rows.append((f"latency {p}, both answered ({comparison['paired_requests']})",
                     *(_fmt(paired[k][p], " ms") for k in runs), _fmt(r[f"latency_{p}"])))
    for source in ("model", "typing_through", "lru", "prefetch"):
        row(f"served by {source}", lambda s, x=source: s["served_by"].get(x, 0))
    row("prompt tokens", lambda s: s["tokens"]["prompt"])
    row("  evaluated", lambda s: s["tokens"]["evaluated"], r["evaluated_tokens"])
    row("  reused", lambda s: s["tokens"]["reused"])
    row("    of which shifted", lambda s: s["tokens"]["shifted"])
    row("  reuse ratio", lambda s: s["tokens"]["reuse_ratio"])
    row("  evaluated/request p50", lambda s: s["tokens"]["evaluated_per_request"]["p50"])
    row("generated tokens", lambda s: s["tokens"]["generated"])
    row("prompt eval tok/s", lambda s: s["tokens_per_s"]["prompt_eval"])
    row("generation tok/s", lambda s: s["tokens_per_s"]["generate"])
    for part in ("keystroke", "server", "protocol", "total"):
        for p in ("p50", "p99"):
            row(f"overhead {part} {p}", lambda s, a=part, p=p: s["overhead_ms"][a][p], unit=" ms")
    row("peak RSS", lambda s: s["peak_rss_mb"], unit=" MB")
    widths = [max(len(x[i]) for x in rows) for i in range(4)]
    out = [f"codecomplete bench — {report['model']} — {report['machine']['cpu']}, "
           f"{report['machine']['cores']} cores"]
    for cells in rows:
        padded = [cells[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(cells[1:], widths[1:])]
        out.append("  ".join(padded))
    large = report.get("large_file")
    if large:
        out.append(f"overhead on a {large['lines']}-line file ({large['model_requests']} requests): "
                   + ", ".join(f"{part} p50 {_fmt(large[part]['p50'])} / p99 {_fmt(large[part]['p99'])} ms"
                               for part in ("keystroke", "context", "tokenize", "postprocess", "total", "protocol"))
                   + f"; read ahead on open in {_fmt(large['read_ahead_ms'])} ms")
        out.append("  (keystroke: the server's own time per keystroke, measured by it; total: keystroke to answer "
                   "at this Python client, less llama.cpp; protocol: total less the completion service)")
    same = comparison["same_answer"]
    out.append(f"same answer with and without reuse: {same['identical']} of {same['model_pairs']} "
               "requests both answered from the model")
    for name, t in comparison["targets"].items():
        verdict = {True: "met", False: "NOT met", None: "n/a"}[t["met"]]
        out.append(f"target {name}: {_fmt(t['value'])} (goal {'≥' if name == 'reuse_ratio' else '≤'} "
                   f"{t['target']}) {verdict}")
    return "\n".join(out)


def plot_cdf(report: dict[str, Any], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UserError("--plot needs matplotlib: pip install matplotlib") from None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label in ("ours", "baseline"):
        values = sorted(r["latency_ms"] for r in report["requests"][label] if r["latency_ms"] is not None)
        if values:
            ax.step(values, np.arange(1, len(values) + 1) / len(values), where="post", label=label)
    ax.set_xscale("log")
    ax.set_xlabel("keystroke → answer latency (ms)")
    ax.set_ylabel("share of answered requests")
    ax.set_title(f"codecomplete bench: {report['model']}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=120)
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc}") from None
    finally:
        plt.close(fig)


# --- command ---------------------------------------------------------------------------------------------


def build_replays(specs: Sequence[str], n_lines: int, rate: float) -> list[Replay]:
    picked = [parse_file_spec(s) for s in specs] if specs else [(p, None) for p in default_files()]
    if not picked:
        raise UserError("no source files to replay: pass --files")
    replays = []
    for slot, (path, line) in enumerate(picked):
        if not path.is_file():
            raise UserError(f"file not found: {path}")
        replays.append(build_replay(path, n_lines, rate, line, slot))
    if not any(k.trigger for r in replays for k in r.keys):
        raise UserError("the replay makes no completion requests: choose more lines or other files")
    return replays


async def bench(replays: Sequence[Replay], options: dict[str, Any], *, realtime: bool, daemon: bool,
                overhead_requests: int, echo: Any) -> dict[str, Any]:
    runs: dict[str, RunResult] = {}
    for label, reuse in (("ours", True), ("baseline", False)):
        echo(f"{label}: replaying {sum(len(r.keys) for r in replays)} keystrokes "
             f"({sum(1 for r in replays for k in r.keys if k.trigger)} requests)…")
        started = time.monotonic()
        runs[label] = await run_server({**options, "reuse": reuse}, label, replays, realtime,
                                       overhead_requests if reuse else 0, daemon)
        echo(f"{label}: done in {time.monotonic() - started:.0f}s")
    ours, base = summarize(runs["ours"]), summarize(runs["baseline"])
    large = (large_file_summary(runs["ours"].large_file, runs["ours"].read_ahead_ms.get("large_file.py"))
             if overhead_requests else None)
    status = runs["ours"].status
    return {
        "model": status.get("model_name") or status.get("model"),
        "model_path": status.get("model"),
        "backend": status.get("backend"),
        "machine": machine(),
        "command": ["codecomplete", "bench", *sys.argv[2:]] if sys.argv[1:2] == ["bench"] else sys.argv,
        "settings": options,
        "served_through": "daemon" if daemon else "language server",
        "files": [{"name": r.name, "language": r.language, "first_line": r.first_line, "lines": r.n_lines,
                   "keystrokes": len(r.keys), "requests": sum(1 for k in r.keys if k.trigger)}
                  for r in replays],
        "ours": ours,
        "baseline": base,
        "comparison": compare(runs["ours"], runs["baseline"], ours, base, large),
        "large_file": large,
        "requests": {label: [asdict(r) for r in run.requests] for label, run in runs.items()},
    }


@click.command("bench")
@click.option("--model", help="Catalog name or .gguf path; default: the configured or embedded model.")
@click.option("--files", "files", multiple=True, metavar="PATH[:LINE]",
              help="Source to retype (repeatable); LINE is the first typed line. Default: two standard "
                   "library modules plus the shipped JavaScript and Go files.")
@click.option("--lines", "n_lines", type=click.IntRange(1, 10000), help="Lines typed per file (default 40).")
@click.option("--rate", type=click.FloatRange(0.5, 100), default=8.0, show_default=True,
              help="Typing speed in characters per second.")
@click.option("--realtime", is_flag=True, help="Wait between keystrokes for real, not skip idle time.")
@click.option("--quick", is_flag=True, help="A short replay (well under 2 minutes on a 2-core CPU).")
@click.option("--json", "json_path", metavar="PATH", help="Write the full report as JSON ('-' for stdout).")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), help="Draw latency CDFs (matplotlib).")
@click.option("--time-budget-ms", type=click.IntRange(1), default=BENCH_TIME_BUDGET_MS, show_default=True,
              help="Both servers' budget per request; the default lets every answer finish, so both sides "
                   "give the same answers and only the cost differs.")
@click.option("--editors", type=click.IntRange(1, 16), default=None,
              help="Instead of the replay: memory of N editors sharing the daemon vs N self-contained "
                   "servers.")
@click.option("--daemon", is_flag=True,
              help="Serve through a (private) shared daemon, as editors do by default, not in the server.")
def command(model, files, n_lines, rate, realtime, quick, json_path, plot_path, time_budget_ms,
            editors, daemon) -> None:
    """Replay typing through the language server (ours vs a no-reuse baseline) and measure."""
    if editors is not None:
        _memory(editors, model, json_path)
        return
    if n_lines is None:
        n_lines = QUICK_LINES if quick else FULL_LINES
    if quick and not files:
        files = [str(p) for p in default_files()[:1]] + [str(p) for p in sorted(BENCH_DATA.glob("*.js"))[:1]]
    replays = build_replays(files, n_lines, rate)
    # Quick: a smaller prompt so a cold evaluation (the baseline's every request) stays short on a slow CPU.
    options: dict[str, Any] = {"timeBudgetMs": time_budget_ms}
    if quick:
        options["tokenBudget"] = QUICK_TOKEN_BUDGET
    if model:  # a path is made absolute: the servers resolve it, not this directory's reader
        local = Path(model).expanduser()
        options["model"] = str(local.resolve()) if local.exists() else model
    to_stdout = json_path == "-"

    def echo(msg: str) -> None:
        click.echo(msg, err=True)

    overhead_requests = QUICK_OVERHEAD_REQUESTS if quick else FULL_OVERHEAD_REQUESTS
    report = asyncio.run(bench(replays, options, realtime=realtime, daemon=daemon,
                               overhead_requests=overhead_requests, echo=echo))
    if plot_path:
        plot_cdf(report, Path(plot_path))
    if json_path:
        _write_json(report, json_path)
    if not to_stdout:
        click.echo(render_table(report))


def _memory(editors: int, model: str | None, json_path: str | None) -> None:
    """RSS/PSS of N thin LSPs + one daemon vs N self-contained servers, each with the model loaded."""
    from codecomplete.tools.memory import memory_benchmark

    result = memory_benchmark(editors, model=model)
    click.echo(f"{editors} editors, shared daemon: {result['shared_rss_mb']} MB RSS "
               f"({result['shared_pss_mb']} MB PSS)")
    click.echo(f"{editors} editors, self-contained: {result['self_contained_rss_mb']} MB RSS "
               f"({result['self_contained_pss_mb']} MB PSS)")
    for kind in ("rss", "pss"):
        click.echo(f"self-contained/shared {kind.upper()}: {result[f'ratio_{kind}']:.2f}x")
    if json_path:
        _write_json(result, json_path)


def _write_json(report: dict[str, Any], json_path: str) -> None:
    """The report as JSON on stdout (``-``) or in a file; an unwritable path is a one-line error."""
    text = json.dumps(report, indent=2, ensure_ascii=False)
    if json_path == "-":
        click.echo(text)
        return
    try:
        Path(json_path).write_text(text + "\n", encoding="utf-8")
    except OSError as exc:
        raise UserError(f"cannot write {json_path}: {exc}") from None
