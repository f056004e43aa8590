"""The typing replay: a person retyping real files, through a real editor client, and the scenarios built on it.

What an editor user feels is keystroke → suggestion latency, so that is what is measured: the real language server
runs as a subprocess and a real LSP client (pygls) sends one ``didChange`` per keystroke and asks for an inline
completion at every pause, cancelling it when typing resumes before the answer, as editors do. The same script
drives the peer (``tools.peer``: llama-server through llama.vim's protocol), so both sides get the same requests.

The typist waits for the suggestion after Enter (that is where latency is felt, and every server then answers the
same requests); a pause after a word lasts what it lasts, and a suggestion later than that is not shown (the
request is cancelled when typing resumes). In real time (the default) keystrokes come at the typing rate and
pauses last their length, as a person types; compressed (``--compressed``), keystrokes between pauses are sent
back to back (after a round trip that lets the server catch up) and a pause ends as soon as its answer arrives.

Scenarios besides retyping files one after another: typing alternately in two files every few lines; two editors
typing at once through one shared daemon; the first suggestion after opening a 3,000-line file (cold daemon, and
warm daemon with a new file); and the server's own cost per keystroke on a 3,000-line file.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import random
import signal
import sys
import sysconfig
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol

from lsprotocol import types
from pygls.lsp.client import LanguageClient

from codecomplete import __version__
from codecomplete.core.languages import language_for_path
from codecomplete.core.source import units
from codecomplete.errors import UserError
from codecomplete.tools.machine import CpuMeter
from codecomplete.tools.scoring import Spot

SERVER_CMD = (sys.executable, "-m", "codecomplete.cli", "lsp")
STATUS = "codecomplete/status"
LAST_COMPLETION = "codecomplete/lastCompletion"
STATUS_CHANGED = "codecomplete/statusChanged"
# The JavaScript, Go and C sources shipped with the repository's test data.
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
READ_AHEAD_PATIENCE_S = 30.0
LOAD_TIMEOUT_S = 600.0
# The first suggestion in a newly opened file: the typist keeps typing (and asking) until one shows, up to this.
FIRST_SUGGESTION_PATIENCE_S = 120.0


# --- the replay script -----------------------------------------------------------------------------------------


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

    @property
    def typed(self) -> str:
        """The slice the keys type."""
        return "".join(k.text for k in self.keys)

    @property
    def requests(self) -> int:
        return sum(1 for k in self.keys if k.trigger)


def stdlib_file(relative: str) -> Path:
    return Path(sysconfig.get_paths()["stdlib"]) / relative


def default_files() -> list[Path]:
    """A couple of standard library modules (present on every machine) plus the shipped JS, Go and C files."""
    files = [stdlib_file(r) for r in DEFAULT_STDLIB]
    files += sorted(BENCH_DATA.glob("*.js")) + sorted(BENCH_DATA.glob("*.go")) + sorted(BENCH_DATA.glob("*.c"))
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
    return replay_from_text(path.name, text, language, n_lines, rate, first_line, slot)


def replay_from_text(name: str, text: str, language: str, n_lines: int, rate: float, first_line: int | None = None,
                     slot: int = 0) -> Replay:
    lines = text.splitlines(keepends=True)
    if len(lines) < 2:
        raise UserError(f"{name}: too short to replay")
    start = slice_start(lines, n_lines) if first_line is None else first_line - 1
    if not 0 <= start < len(lines):
        raise UserError(f"{name}: line {first_line} is outside the file (1..{len(lines)})")
    typed = "".join(lines[start : start + n_lines])
    tail = "\n" if typed.endswith("\n") else ""
    body = typed[: len(typed) - len(tail)]
    rng = random.Random(f"{SEED}:{name}")
    return Replay(
        name=name,
        uri=f"file:///codecomplete-bench/{slot}/{name}",
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


def large_python_text(n_lines: int = LARGE_FILE_LINES, rotate: int = 0) -> str:
    """A real ~3,000-line Python file from the standard library (long modules, concatenated if needed);
    ``rotate`` starts from another module, for a second file no server has seen."""
    k = rotate % len(LARGE_FILE_SOURCES)
    sources = LARGE_FILE_SOURCES[k:] + LARGE_FILE_SOURCES[:k]
    lines: list[str] = []
    for rel in sources:
        path = stdlib_file(rel)
        if path.is_file():
            lines += path.read_text(encoding="utf-8").splitlines(keepends=True)
        if len(lines) >= n_lines:
            break
    while len(lines) < n_lines:  # a trimmed standard library: repeat what there is
        lines += lines or ["x = 1\n"]
    return "".join(lines[:n_lines])


def line_chunks(keys: Sequence[Keystroke], every: int) -> list[tuple[Keystroke, ...]]:
    """The keys cut after every ``every``-th Enter: the pieces an alternating typist types in one go."""
    chunks: list[tuple[Keystroke, ...]] = []
    current: list[Keystroke] = []
    enters = 0
    for key in keys:
        current.append(key)
        if "\n" in key.text:
            enters += 1
            if enters % every == 0:
                chunks.append(tuple(current))
                current = []
    if current:
        chunks.append(tuple(current))
    return chunks


# --- what a replay records ---------------------------------------------------------------------------------------


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
    language: str | None = None
    reason: str | None = None  # why nothing was shown (scoring.NOT_SHOWN), for the other outcomes
    detail: str | None = None  # the stop reason or rule behind ``reason``
    score: dict[str, Any] | None = None  # scoring.score
    spot: Spot | None = field(default=None, repr=False)  # kept for scoring; not part of the JSON

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "spot"}


@dataclass
class RunResult:
    label: str = ""
    requests: list[RequestRecord] = field(default_factory=list)
    server_entries: list[dict[str, Any]] = field(default_factory=list)  # every completion the server ran
    peak_rss_mb: float | None = None
    status: dict[str, Any] = field(default_factory=dict)
    large_file: list[RequestRecord] = field(default_factory=list)
    read_ahead_ms: dict[str, float] = field(default_factory=dict)  # per opened file: open → read ahead
    cpu_s: float | None = None  # CPU seconds of the process(es) holding the model during the replay
    wall_s: float | None = None
    settings: dict[str, Any] = field(default_factory=dict)


class Cursor:
    """Where the typist's cursor is, as an LSP position in the negotiated encoding."""

    def __init__(self, before: str, encoding: str) -> None:
        self.encoding = encoding
        self.line = before.count("\n")
        self.line_text = before[before.rfind("\n") + 1 :]

    @property
    def position(self) -> types.Position:
        return types.Position(line=self.line, character=units(self.line_text, self.encoding))

    @property
    def column(self) -> int:
        """In characters (llama.vim counts bytes: the same for ASCII)."""
        return len(self.line_text)

    def advance(self, text: str) -> None:
        if "\n" in text:
            self.line += text.count("\n")
            self.line_text = text[text.rfind("\n") + 1 :]
        else:
            self.line_text += text


class Document:
    """One replay being typed in one editor: what is typed so far, where the cursor is, what is left."""

    def __init__(self, replay: Replay, encoding: str, uri: str | None = None) -> None:
        self.replay = replay
        self.uri = uri or replay.uri
        self.cursor = Cursor(replay.before, encoding)
        self.typed = ""
        self._slice = replay.typed

    @property
    def text(self) -> str:
        return self.replay.before + self.typed + self.replay.after

    def type(self, text: str) -> None:
        self.typed += text
        self.cursor.advance(text)

    def spot(self) -> Spot:
        return Spot(language=self.replay.language, prefix=self.replay.before + self.typed, suffix=self.replay.after,
                    truth=self._slice[len(self.typed):] + self.replay.after)


class Editor(Protocol):
    """What the typist needs from a client: ours (``Session``, LSP) or the peer's (``tools.peer``)."""

    label: str
    encoding: str

    async def open(self, doc: Document) -> float: ...

    def insert(self, doc: Document, text: str) -> None: ...

    async def sync(self) -> None: ...

    async def request(self, doc: Document, keyed_at: float, patience_s: float, trigger: str) -> RequestRecord: ...

    async def account(self, record: RequestRecord, result: RunResult) -> None: ...


# --- our side: a language server driven like an editor -------------------------------------------------------


def _plain(obj: Any) -> Any:
    """pygls turns results of custom methods into namedtuples; the report wants plain JSON values."""
    if hasattr(obj, "_asdict"):
        return {k: _plain(v) for k, v in obj._asdict().items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


class Session:
    """A language server subprocess and the client talking to it over stdio.

    With ``daemon_dir`` the server hands completions to a shared daemon, as editors get by default; the daemon is
    private to the benchmark (its own runtime directory) and is stopped with the session that ``owns_daemon``.
    """

    def __init__(self, options: dict[str, Any], label: str, daemon_dir: Path | None = None, *,
                 owns_daemon: bool = True, shared: bool = False, track_prompts: bool = False) -> None:
        self.options = options
        self.label = label
        self.daemon_dir = daemon_dir
        self.owns_daemon = owns_daemon
        # Another editor uses the same daemon: its status lists both editors' completions, so each request's
        # account comes from this editor's own last completion instead.
        self.shared = shared
        self.track_prompts = track_prompts  # note a digest of each model request's prompt ids (the reuse check)
        self.client = LanguageClient("codecomplete-bench", __version__)
        self.encoding = types.PositionEncodingKind.Utf16
        self.stderr_tail: list[str] = []
        self.errors: list[str] = []  # error messages the server showed the user
        self.model_pid: int | None = None  # the process holding the model: the server or its daemon
        self.server_pid: int | None = None
        self.ready_status: dict[str, Any] = {}
        self._completions = 0
        self._ids = 0
        self._versions: dict[str, int] = {}
        self._tasks: list[asyncio.Task] = []

        @self.client.feature(types.WINDOW_SHOW_MESSAGE)
        def _show(params: types.ShowMessageParams) -> None:
            if params.type == types.MessageType.Error:
                self.errors.append(params.message)

        @self.client.feature(STATUS_CHANGED)
        def _status_changed(params: Any) -> None:
            """The server tells editors its state (for a status bar); the benchmark asks when it needs to know."""

    async def start(self) -> None:
        env = dict(os.environ)
        if self.daemon_dir is None:
            cmd = (*SERVER_CMD, "--no-daemon")
        else:
            from codecomplete.serving.runtime import RUNTIME_ENV

            cmd = SERVER_CMD
            env[RUNTIME_ENV] = str(self.daemon_dir)
        await self.client.start_io(*cmd, env=env)
        self.server_pid = self.client._server.pid  # pygls keeps its subprocess there
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
        self.ready_status = status
        self.model_pid = status.get("pid") or self.server_pid

    @property
    def pids(self) -> list[int]:
        """The processes doing this session's work: the server, and its daemon if it has one."""
        return sorted({p for p in (self.server_pid, self.model_pid) if p})

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

    async def last_completion(self) -> dict[str, Any] | None:
        return _plain(await self._guard(self.client.protocol.send_request_async(LAST_COMPLETION, {}), timeout=60))

    async def _wait_ready(self) -> dict[str, Any]:
        deadline = time.monotonic() + LOAD_TIMEOUT_S
        while time.monotonic() < deadline:
            status = await self.status()
            if status["state"] == "ready":
                return status
            if status["state"] == "error":
                raise UserError(f"{self.label} server cannot load the model: {status['error']}")
            await asyncio.sleep(0.05)
        raise UserError(f"{self.label} server did not load the model within {LOAD_TIMEOUT_S:.0f}s")

    async def open(self, doc: Document, wait_read_ahead: bool = True) -> float:
        """Open a document and wait while the server reads it ahead, as a person looks at a file before typing
        in it; returns how long that took (ms)."""
        self._versions[doc.uri] = 1
        self.client.text_document_did_open(
            types.DidOpenTextDocumentParams(types.TextDocumentItem(uri=doc.uri, language_id=doc.replay.language,
                                                                   version=1, text=doc.text))
        )
        opened = time.perf_counter()
        while (wait_read_ahead and (await self.status()).get("reading_ahead")
               and time.perf_counter() - opened < READ_AHEAD_PATIENCE_S):
            await asyncio.sleep(0.005)
        waited = (time.perf_counter() - opened) * 1000
        if wait_read_ahead:
            await self.new_entries()  # what ran before typing starts is not part of the replay
        return waited

    def insert(self, doc: Document, text: str) -> None:
        position = doc.cursor.position
        self._versions[doc.uri] += 1
        self.client.text_document_did_change(
            types.DidChangeTextDocumentParams(
                text_document=types.VersionedTextDocumentIdentifier(uri=doc.uri, version=self._versions[doc.uri]),
                content_changes=[
                    types.TextDocumentContentChangePartial(range=types.Range(position, position), text=text)
                ],
            )
        )

    async def sync(self) -> None:
        await self.status()  # the typing interval would have let the server process earlier keys

    async def new_entries(self) -> list[dict[str, Any]]:
        """The server's records of completions it ran since the last call."""
        status = await self.status()
        done = status["stats"]["completions"]
        fresh, self._completions = done - self._completions, done
        return status["recent"][-fresh:] if fresh > 0 else []

    async def request(self, doc: Document, keyed_at: float, patience_s: float, trigger: str) -> RequestRecord:
        """An automatic inline completion, cancelled as an editor does when not answered in ``patience_s``."""
        self._ids += 1
        msg_id = f"bench-{self._ids}"
        position = doc.cursor.position
        params = types.InlineCompletionParams(
            context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic),
            text_document=types.TextDocumentIdentifier(uri=doc.uri),
            position=position,
        )
        future = asyncio.wrap_future(
            self.client.protocol.send_request(types.TEXT_DOCUMENT_INLINE_COMPLETION, params, msg_id=msg_id)
        )
        done, _ = await asyncio.wait({future}, timeout=max(0.0, patience_s - (time.perf_counter() - keyed_at)))
        record = RequestRecord(doc.replay.name, position.line, position.character, trigger, "cancelled", None,
                               language=doc.replay.language)
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

    async def account(self, record: RequestRecord, result: RunResult) -> None:
        """The server's own record of the request, and why nothing was shown when nothing was."""
        if self.shared:
            if record.outcome in ("answered", "empty"):
                last = await self.last_completion()
                if last and last.get("completion", "") == (record.suggestion or ""):
                    record.server = {k: last.get(k) for k in ("source", "tokens", "timings_ms", "stop_reason",
                                                             "next_choices")}
                    if record.server["source"] == "model":
                        result.server_entries.append(record.server)
        else:
            entries = await self.new_entries()
            result.server_entries += entries
            if record.outcome != "cancelled" and entries:
                record.server = entries[-1]
        if self.track_prompts and record.server and record.server.get("source") == "model":
            last = await self.last_completion()
            if last and last.get("completion", "") == (record.suggestion or ""):
                ids = ",".join(map(str, last.get("prompt_token_ids") or []))
                record.server["prompt_digest"] = hashlib.sha1(ids.encode()).hexdigest()[:16]
        if record.outcome == "cancelled":
            record.reason = "late"
        elif record.outcome == "error":
            record.reason = "error"
        elif record.outcome == "empty":
            record.reason, record.detail = await self._why_empty(record)

    async def _why_empty(self, record: RequestRecord) -> tuple[str, str | None]:
        entry = record.server
        if entry is None:
            return "skipped", None  # answered without a completion: e.g. text right of the cursor
        if entry.get("source") != "model":
            return "empty", entry.get("source")
        last = await self.last_completion()
        if not last or last.get("completion"):
            return "empty", entry.get("stop_reason")
        stop = last.get("stop_reason")
        if stop in ("time_budget", "cancelled", "preempted"):
            return "time_budget", stop
        return ("cut" if (last.get("raw") or "").strip() else "empty"), stop

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
        if self.daemon_dir is not None and self.owns_daemon:
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


# --- the typist ----------------------------------------------------------------------------------------------


class Typist:
    """One person at the keyboard: one clock across every document they type in."""

    def __init__(self, realtime: bool) -> None:
        self.realtime = realtime
        self.due = time.perf_counter()

    async def type(self, editor: Editor, doc: Document, keys: Sequence[Keystroke], result: RunResult) -> None:
        """Type ``keys`` into ``doc``; at every pause ask for a suggestion and record it with the server's account."""
        for key in keys:
            if self.realtime:
                await asyncio.sleep(max(0.0, self.due - time.perf_counter()))
            elif key.trigger:
                await editor.sync()
            if key.text:
                editor.insert(doc, key.text)
                doc.type(key.text)
            keyed_at = time.perf_counter()
            self.due = keyed_at + key.pause_s
            if not key.trigger:
                continue
            patience = key.pause_s if key.trigger == "word" else LINE_PATIENCE_S
            record = await editor.request(doc, keyed_at, patience, key.trigger)
            record.spot = doc.spot()
            await editor.account(record, result)
            result.requests.append(record)


async def replay_files(editor: Editor, replays: Sequence[Replay], realtime: bool, result: RunResult) -> None:
    """Each file in turn: open it, wait while it is read ahead, retype its slice."""
    typist = Typist(realtime)
    for replay in replays:
        doc = Document(replay, editor.encoding)
        result.read_ahead_ms[replay.name] = await editor.open(doc)
        typist.due = time.perf_counter()
        await typist.type(editor, doc, replay.keys, result)


async def alternate_files(editor: Editor, replays: Sequence[Replay], every: int, realtime: bool,
                          result: RunResult) -> None:
    """Both files open; type ``every`` lines in one, then in the other, until both slices are typed."""
    typist = Typist(realtime)
    docs = [Document(r, editor.encoding) for r in replays]
    for doc in docs:
        result.read_ahead_ms[doc.replay.name] = await editor.open(doc)
    chunks = [line_chunks(doc.replay.keys, every) for doc in docs]
    typist.due = time.perf_counter()
    for turn in range(max(len(c) for c in chunks)):
        for doc, pieces in zip(docs, chunks):
            if turn < len(pieces):
                await typist.type(editor, doc, pieces[turn], result)


async def large_file_overhead(session: Session, n_requests: int, result: RunResult) -> None:
    """The daemon's own cost per request on a 3,000-line file: type at two places, ask after each key."""
    text = large_python_text()
    replay = Replay("large_file.py", "file:///codecomplete-bench/large_file.py", "python", text, "", (), 1, 0)
    doc = Document(replay, session.encoding)
    result.read_ahead_ms["large_file.py"] = await session.open(doc)
    lines = text.splitlines()
    spots = [len(lines) - 40, len(lines) // 2]  # bottom first: typing there does not move the other spot
    per_spot = -(-n_requests // len(spots))
    for row in spots:
        indent = lines[row][: len(lines[row]) - len(lines[row].lstrip())]
        doc.cursor = Cursor("\n".join(lines[: row + 1]), session.encoding)
        typed = "".join(f"\n{indent}{s}" for s in LARGE_FILE_STATEMENTS)
        for ch in typed[:per_spot]:
            await session.status()
            session.insert(doc, ch)
            doc.cursor.advance(ch)
            record = await session.request(doc, time.perf_counter(), LINE_PATIENCE_S, "key")
            entries = await session.new_entries()
            if record.outcome != "cancelled" and entries:
                record.server = entries[-1]
            result.large_file.append(record)


async def first_suggestion(session: Session, replay: Replay, started: float | None = None) -> dict[str, Any]:
    """Open ``replay``'s file and type its slice in real time, asking at every key, until a suggestion shows.

    Returns the time from opening (and from ``started``, e.g. the editor's start, when given) to the first
    non-empty suggestion, and how many requests it took."""
    doc = Document(replay, session.encoding)
    lines = len((replay.before + replay.typed + replay.after).splitlines())
    opened = time.perf_counter()
    await session.open(doc, wait_read_ahead=False)  # the person starts typing at once
    requests = 0
    typist_due = time.perf_counter()
    for key in replay.keys:
        await asyncio.sleep(max(0.0, typist_due - time.perf_counter()))
        if key.text:
            session.insert(doc, key.text)
            doc.type(key.text)
        keyed_at = time.perf_counter()
        typist_due = keyed_at + 1 / 8
        requests += 1
        record = await session.request(doc, keyed_at, FIRST_SUGGESTION_PATIENCE_S, "key")
        if record.outcome == "answered":
            now = time.perf_counter()
            return {"from_open_ms": round((now - opened) * 1000, 1),
                    "from_start_ms": None if started is None else round((now - started) * 1000, 1),
                    "requests": requests, "last_latency_ms": round(record.latency_ms or 0.0, 1),
                    "lines": lines}
        if time.perf_counter() - opened > FIRST_SUGGESTION_PATIENCE_S:
            break
    return {"from_open_ms": None, "from_start_ms": None, "requests": requests, "last_latency_ms": None,
            "lines": lines}


async def run_session(options: dict[str, Any], label: str, replays: Sequence[Replay], realtime: bool, *,
                      daemon_dir: Path | None = None, overhead_requests: int = 0,
                      alternate_every: int | None = None, track_prompts: bool = False) -> RunResult:
    """One server, started fresh: replay the files (or alternate between them), then the 3,000-line overhead."""
    result = RunResult(label=label, settings=dict(options))
    session = Session(options, label, daemon_dir, track_prompts=track_prompts)
    try:
        await session.start()
        meter = CpuMeter()
        meter.start(session.pids)
        started = time.perf_counter()
        if alternate_every:
            await alternate_files(session, replays, alternate_every, realtime, result)
        else:
            await replay_files(session, replays, realtime, result)
        result.wall_s = round(time.perf_counter() - started, 1)
        result.cpu_s = meter.stop()
        if overhead_requests:
            await large_file_overhead(session, overhead_requests, result)
        result.status = await session.status()
        result.peak_rss_mb = session.peak_rss_mb()
    finally:
        await session.stop()
    return result


async def run_two_editors(options: dict[str, Any], replays: Sequence[Replay], realtime: bool,
                          daemon_dir: Path) -> tuple[list[RunResult], float | None]:
    """One editor per replay, all typing at once through one shared daemon (the first editor starts it, as the
    first editor opened on a laptop does). Returns each editor's run and the CPU seconds of all the processes."""
    sessions = [Session(options, f"editor {i + 1}", daemon_dir, owns_daemon=i == 0, shared=True)
                for i in range(len(replays))]
    results = [RunResult(label=s.label, settings=dict(options)) for s in sessions]
    cpu = None
    try:
        for session in sessions:
            await session.start()
        meter = CpuMeter()
        meter.start(sorted({p for s in sessions for p in s.pids}))
        started = time.perf_counter()
        await asyncio.gather(*(replay_files(s, [r], realtime, res) for s, r, res in zip(sessions, replays, results)))
        for result in results:
            result.wall_s = round(time.perf_counter() - started, 1)
        cpu = meter.stop()
    finally:
        for session in reversed(sessions):  # the daemon's owner last
            await session.stop()
    return results, cpu


FIRST_SUGGESTION_LINES = 5  # typed (and asked at every key) until a suggestion shows


def first_suggestion_replay(rotate: int, slot: int) -> Replay:
    """Lines in the middle of a 3,000-line file nobody opened yet, to be typed: from a statement of a function body."""
    text = large_python_text(rotate=rotate)
    lines = text.splitlines()
    row = next((i for i in range(len(lines) // 2, len(lines))
                if lines[i].startswith("        ") and len(lines[i].strip()) >= 24
                and lines[i].strip()[0].isalpha() and lines[i - 1].strip()), len(lines) // 2)
    return replay_from_text(f"new_file_{rotate}.py", text, "python", FIRST_SUGGESTION_LINES, 8.0, first_line=row + 1,
                            slot=slot)


async def run_first_suggestion(options: dict[str, Any], daemon_dir: Path) -> dict[str, Any]:
    """The first suggestion after opening a 3,000-line file: with no daemon running (the editor starts it and its
    model loads), then with that daemon warm and another file nobody opened yet."""
    started = time.perf_counter()
    session = Session(options, "first suggestion", daemon_dir)
    try:
        await session.start()
        ready_ms = round((time.perf_counter() - started) * 1000, 1)
        cold = await first_suggestion(session, first_suggestion_replay(1, 90), started)
        warm = await first_suggestion(session, first_suggestion_replay(3, 91))
    finally:
        await session.stop()
    return {"cold_daemon": {**cold, "editor_start_to_ready_ms": ready_ms}, "warm_daemon_new_file": warm}
