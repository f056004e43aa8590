"""`codecomplete bench --editors N`: memory of one shared daemon with thin editors vs self-contained editors."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from pathlib import Path
from typing import Any

from codecomplete import __version__
from codecomplete.errors import UserError
from codecomplete.serving.client import DaemonClient
from codecomplete.serving.runtime import RUNTIME_ENV, read_endpoint


def process_memory_kb(pid: int) -> dict[str, int]:
    """Resident (RSS) and proportional (PSS: shared pages divided among their users) memory of a process."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        raise UserError("the memory benchmark reads /proc: Linux only") from None

    def field_kb(text: str, name: str) -> int:
        line = next(line for line in text.splitlines() if line.startswith(name + ":"))
        return int(line.split()[1])

    return {"pid": pid, "rss_kb": field_kb(status, "VmRSS"), "pss_kb": field_kb(rollup, "Pss")}


def memory_benchmark(editors: int = 3, *, model: str | None = None) -> dict[str, Any]:
    """Memory of ``editors`` thin language servers plus the daemon vs as many self-contained (``--no-daemon``)
    servers, each with the model loaded and one completion answered. The ratio is what the daemon saves."""
    return asyncio.run(_memory_benchmark(editors, model))


async def _memory_benchmark(editors: int, model: str | None) -> dict[str, Any]:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="cc-mem-") as tmp:
        directory = Path(tmp) / "rt"
        env = {**os.environ, RUNTIME_ENV: str(directory)}
        options = {"model": model} if model else {}
        async with _editors(editors, ["lsp"], env, options) as pids:
            endpoint = read_endpoint(directory)
            assert endpoint is not None
            shared = {"daemon": process_memory_kb(endpoint.pid), "editors": [process_memory_kb(p) for p in pids]}
            DaemonClient(endpoint).request("POST", "/shutdown")
        async with _editors(editors, ["lsp", "--no-daemon"], env, options) as pids:
            alone = {"editors": [process_memory_kb(p) for p in pids]}

    def total(kind: str, group: dict[str, Any]) -> float:
        parts = [*group["editors"], *([group["daemon"]] if "daemon" in group else [])]
        return round(sum(p[kind] for p in parts) / 1024, 1)

    result: dict[str, Any] = {"editors": editors, "shared": shared, "self_contained": alone}
    for kind in ("rss_kb", "pss_kb"):
        mb = kind.replace("_kb", "_mb")
        result[f"shared_{mb}"], result[f"self_contained_{mb}"] = total(kind, shared), total(kind, alone)
        result[f"ratio_{kind[:3]}"] = round(result[f"self_contained_{mb}"] / result[f"shared_{mb}"], 2)
    return result


@contextlib.asynccontextmanager
async def _editors(n: int, args: list[str], env: dict[str, str], options: dict[str, Any]):
    """``n`` language servers driven by real LSP clients: initialized, model ready, one completion answered."""
    from lsprotocol import types
    from pygls.lsp.client import LanguageClient

    async def one(i: int) -> LanguageClient:
        client = LanguageClient("codecomplete-bench", __version__)
        await client.start_io(sys.executable, "-m", "codecomplete.cli", *args, env=env)
        await client.initialize_async(types.InitializeParams(
            capabilities=types.ClientCapabilities(), initialization_options=options))
        client.initialized(types.InitializedParams())
        deadline = time.monotonic() + 300
        while (await client.protocol.send_request_async("codecomplete/status", {})).state != "ready":
            if time.monotonic() > deadline:
                raise UserError("the benchmark's language server did not get ready in 300 s")
            await asyncio.sleep(0.1)
        uri = f"file:///bench/editor{i}.py"
        text = f"def area_{i}(radius):\n    return "
        client.text_document_did_open(types.DidOpenTextDocumentParams(
            types.TextDocumentItem(uri=uri, language_id="python", version=1, text=text)))
        await client.text_document_inline_completion_async(types.InlineCompletionParams(
            text_document=types.TextDocumentIdentifier(uri), position=types.Position(1, 11),
            context=types.InlineCompletionContext(types.InlineCompletionTriggerKind.Invoked)))
        return client

    clients = await asyncio.gather(*(one(i) for i in range(n)))
    try:
        yield [c._server.pid for c in clients]
    finally:
        for client in clients:
            await client.shutdown_async(None)
            client.exit(None)
            await client.stop()
