"""`codecomplete soak`: several editors type real files through one shared daemon for a long time.

Each editor is a real `codecomplete lsp` process (the thin server editors start) driven by an LSP client: it
opens a standard-library file, types its next lines key by key (25 of them, then closes it and opens the
next); after each line's Enter (the next line indented as the file has it, as an editor does) it asks for a
suggestion, waits for the answer and pauses 1-2 s, as a person does.
Printed at intervals and at the end: pauses, answers, non-empty answers, errors (error answers and error
messages the server showed), and the memory (RSS) of the daemon and of each editor's server, so a leak or a
stall shows as a trend, not an anecdote.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
import sysconfig
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import click
from lsprotocol import types
from pygls.lsp.client import LanguageClient

from codecomplete import __version__
from codecomplete.errors import UserError
from codecomplete.serving.client import find_daemon
from codecomplete.serving.runtime import RUNTIME_ENV, read_endpoint

FILES = ("textwrap.py", "json/encoder.py", "argparse.py", "tarfile.py", "inspect.py", "difflib.py")
KEYS_PER_S = 10.0
PAUSE_S = (1.0, 2.0)
LINES_PER_VISIT = 25  # lines typed in a file before the editor moves on to the next
ANSWER_PATIENCE_S = 120.0  # a request still unanswered after this is counted as unanswered
STATUS = "codecomplete/status"
STATUS_CHANGED = "codecomplete/statusChanged"


@dataclass
class Tally:
    """One editor's counts."""

    pauses: int = 0
    answered: int = 0
    non_empty: int = 0
    errors: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    empty_because: dict[str, int] = field(default_factory=dict)  # the status's stop reason after an empty answer


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


class Editor:
    """One editor: its own language server process, typing real files one after another."""

    def __init__(self, number: int, paths: list[Path], env: dict[str, str], rng: random.Random) -> None:
        self.number = number
        self.paths = paths
        self.env = env
        self.rng = rng
        self.tally = Tally()
        self.client = LanguageClient("codecomplete-soak", __version__)
        self.errors_shown: list[str] = []
        self.version = 0
        self.uri = ""

        @self.client.feature(types.WINDOW_SHOW_MESSAGE)
        def _shown(params: types.ShowMessageParams) -> None:
            if params.type == types.MessageType.Error:
                self.errors_shown.append(params.message)

        @self.client.feature(STATUS_CHANGED)
        def _status(_params: Any) -> None:
            """The status item's feed; the soak asks for the status itself when it wants it."""

    @property
    def pid(self) -> int:
        return self.client._server.pid  # type: ignore[union-attr]

    async def start(self) -> None:
        await self.client.start_io(sys.executable, "-m", "codecomplete.cli", "lsp", env=self.env)
        await self.client.initialize_async(types.InitializeParams(capabilities=types.ClientCapabilities(
            general=types.GeneralClientCapabilities(position_encodings=[types.PositionEncodingKind.Utf16]))))
        self.client.initialized(types.InitializedParams())
        deadline = time.monotonic() + 300
        while (await self.client.protocol.send_request_async(STATUS, {})).state != "ready":
            if time.monotonic() > deadline:
                raise UserError(f"editor {self.number}'s server did not get ready in 300 s")
            await asyncio.sleep(0.2)

    async def type_until(self, deadline: float) -> None:
        """Visit the files in turn: open one, retype ``LINES_PER_VISIT`` of its lines from somewhere past 40 %
        in, close it, go on to the next (opening and closing is where per-document state could pile up)."""
        visit = 0
        while time.monotonic() < deadline:
            path = self.paths[visit % len(self.paths)]
            lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
            first = self.rng.randrange(len(lines) * 2 // 5, max(len(lines) - LINES_PER_VISIT, len(lines) * 2 // 5 + 1))
            self.uri = f"file:///soak/editor{self.number}/{path.name}"
            self._open(first, lines)
            last = min(first + LINES_PER_VISIT, len(lines))
            await self._insert(first, 0, _indent(lines[first]))
            for row in range(first, last):
                if time.monotonic() >= deadline:
                    break
                await self._type_line(row, lines[row].rstrip("\n"), "" if row + 1 >= last else lines[row + 1])
            self.client.text_document_did_close(types.DidCloseTextDocumentParams(
                types.TextDocumentIdentifier(self.uri)))
            visit += 1

    def _open(self, first: int, lines: list[str]) -> None:
        """The file as it was before the typed part: every line from ``first`` on is blank, to be retyped."""
        shown = "".join(lines[:first]) + "".join("\n" for _ in lines[first:])
        self.version += 1
        self.client.text_document_did_open(types.DidOpenTextDocumentParams(types.TextDocumentItem(
            uri=self.uri, language_id="python", version=self.version, text=shown)))

    async def _insert(self, row: int, column: int, text: str) -> None:
        """Type ``text`` at a spot, a key at a time (an editor's auto-indent comes as one change)."""
        self.version += 1
        at = types.Position(row, column)
        self.client.text_document_did_change(types.DidChangeTextDocumentParams(
            types.VersionedTextDocumentIdentifier(uri=self.uri, version=self.version),
            [types.TextDocumentContentChangePartial(range=types.Range(at, at), text=text)]))
        await asyncio.sleep(1 / KEYS_PER_S)

    async def _type_line(self, row: int, line: str, following: str) -> None:
        """The rest of the line after its indent, then Enter: the editor indents the next line as the file
        does, and the pause comes there, where a suggestion for the next line is wanted."""
        indent = len(_indent(line))
        for column in range(indent, len(line)):
            await self._insert(row, column, line[column])
        if following:
            await self._insert(row + 1, 0, _indent(following))
            await self._pause(types.Position(row + 1, len(_indent(following))))

    async def _pause(self, position: types.Position) -> None:
        self.tally.pauses += 1
        started = time.monotonic()
        try:
            answer = await asyncio.wait_for(self.client.text_document_inline_completion_async(
                types.InlineCompletionParams(
                    text_document=types.TextDocumentIdentifier(self.uri), position=position,
                    context=types.InlineCompletionContext(types.InlineCompletionTriggerKind.Automatic))),
                ANSWER_PATIENCE_S)
        except asyncio.TimeoutError:
            answer = None
        except Exception:  # an error answer
            self.tally.errors += 1
            answer = None
        else:
            self.tally.answered += 1
            self.tally.latencies_ms.append(round((time.monotonic() - started) * 1000, 1))
            items = answer.items if isinstance(answer, types.InlineCompletionList) else (answer or [])
            if items and items[0].insert_text.strip():
                self.tally.non_empty += 1
            else:
                status = await self.client.protocol.send_request_async(STATUS, {})
                why = getattr(status, "last_stop_reason", None) or "none"
                self.tally.empty_because[why] = self.tally.empty_because.get(why, 0) + 1
        await asyncio.sleep(self.rng.uniform(*PAUSE_S))

    async def stop(self) -> None:
        try:
            await asyncio.wait_for(self.client.shutdown_async(None), 10)
            self.client.exit(None)
        finally:
            await self.client.stop()


def _indent(line: str) -> str:
    return line[: len(line) - len(line.lstrip(" \t"))] if line.strip() else ""


def stdlib_files() -> list[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    found = [root / name for name in FILES if (root / name).is_file()]
    if not found:
        raise UserError(f"no standard-library source files found under {root}")
    return found


async def soak(editors: int, minutes: float, interval_s: float, echo: Any) -> dict[str, Any]:
    rng = random.Random(7)
    with tempfile.TemporaryDirectory(prefix="cc-soak-") as tmp:
        runtime = Path(tmp) / "rt"
        env = {**os.environ, RUNTIME_ENV: str(runtime)}
        files = stdlib_files()
        team = [Editor(i + 1, files[i % len(files):] + files[: i % len(files)], env, random.Random(rng.random()))
                for i in range(editors)]
        for editor in team:  # one after the other: the first starts the daemon, the others find it
            await editor.start()
        endpoint = read_endpoint(runtime)
        daemon_pid = endpoint.pid if endpoint else None
        samples: list[dict[str, Any]] = []
        started = time.monotonic()
        deadline = started + minutes * 60

        def sample() -> dict[str, Any]:
            row = {"t_s": round(time.monotonic() - started),
                   "daemon_rss_mb": rss_mb(daemon_pid) if daemon_pid else None,
                   "editors_rss_mb": [rss_mb(e.pid) for e in team],
                   "pauses": sum(e.tally.pauses for e in team), "answered": sum(e.tally.answered for e in team),
                   "non_empty": sum(e.tally.non_empty for e in team),
                   "errors": sum(e.tally.errors + len(e.errors_shown) for e in team)}
            samples.append(row)
            echo(json.dumps(row))
            return row

        async def monitor() -> None:
            while time.monotonic() < deadline:
                sample()
                await asyncio.sleep(interval_s)

        watcher = asyncio.ensure_future(monitor())
        try:
            await asyncio.gather(*(e.type_until(deadline) for e in team))
        finally:
            watcher.cancel()
            final = sample()
            for editor in team:
                await editor.stop()
            client = find_daemon(runtime)
            if client is not None:
                client.request("POST", "/shutdown")
                client.close()
    return {"editors": editors, "minutes": minutes, "final": final, "samples": samples,
            "per_editor": [{"files": [p.name for p in e.paths], **asdict(e.tally), "errors_shown": e.errors_shown}
                           for e in team]}


def verdict(report: dict[str, Any], warm_up_s: float) -> dict[str, Any]:
    """What the issue asks of a soak: every pause answered, >= 80 % non-empty, no errors, flat RSS after warm-up."""
    final = report["final"]
    settled = [s for s in report["samples"] if s["t_s"] >= warm_up_s] or report["samples"][-1:]
    first, last = settled[0], settled[-1]
    growth = {"daemon": round((last["daemon_rss_mb"] or 0) - (first["daemon_rss_mb"] or 0), 1)}
    for i, (a, b) in enumerate(zip(first["editors_rss_mb"], last["editors_rss_mb"])):
        growth[f"editor{i + 1}"] = round((b or 0) - (a or 0), 1)
    share = final["non_empty"] / final["pauses"] if final["pauses"] else 0.0
    return {"all_answered": final["answered"] == final["pauses"], "non_empty_share": round(share, 3),
            "errors": final["errors"], "rss_growth_mb": growth,
            "flat": all(g <= 5.0 for g in growth.values())}


@click.command("soak")
@click.option("--editors", type=click.IntRange(1, 8), default=3, show_default=True, help="Editors typing at once.")
@click.option("--minutes", type=click.FloatRange(0.1, 600), default=10.0, show_default=True)
@click.option("--interval", "interval_s", type=click.FloatRange(1), default=60.0, show_default=True,
              help="Seconds between printed samples.")
@click.option("--warm-up", "warm_up_s", type=click.FloatRange(0), default=120.0, show_default=True,
              help="Seconds before RSS growth is counted.")
@click.option("--json", "json_path", metavar="PATH", help="Write the report as JSON.")
def command(editors: int, minutes: float, interval_s: float, warm_up_s: float, json_path: str | None) -> None:
    """Several editors type real files through one daemon; counts and memory at intervals."""
    report = asyncio.run(soak(editors, minutes, interval_s, click.echo))
    report["verdict"] = verdict(report, warm_up_s)
    click.echo(json.dumps(report["verdict"]))
    if json_path:
        try:
            Path(json_path).write_text(json.dumps(report, indent=2), encoding="utf-8")
        except OSError as exc:
            raise UserError(f"cannot write {json_path}: {exc.strerror or exc}") from None
