"""Remote engines against servers on 127.0.0.1.

llama-cpp-python's own OpenAI-compatible server (`llama_cpp.server`) runs for real, with the embedded SmolLM2 and
with a Code-Llama-shaped fixture model. llama-server and Ollama cannot run here (no binaries): small fake servers
check that requests have the shape their documented APIs expect and answer with realistic streams. The fake
llama-server tokenizes with llama.cpp itself (a local LlamaEngine on the fixture model), so ids are the model's own.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from gguf_factory import FIM_EOT, FIM_MID, FIM_PRE, FIM_SUF, SPACE, piece_id

from codecomplete.config import Settings
from codecomplete.core.pipeline import Completer
from codecomplete.core.prompt import detect_family
from codecomplete.engines.llama import LlamaEngine
from codecomplete.engines.remote import RemoteEngine, check_url, render_fim
from codecomplete.errors import UserError
from codecomplete.types import StopReason

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]

DOC = 'import math\n\n\ndef area(radius):\n    """Area of a circle."""\n    return \n\n\nprint(area(2))\n'
OFFSET = DOC.index("return ") + len("return ")
FIM_DOC = "def f(x):\n    y = x\n    retu\n    return y\n"  # the prefix ends mid-word: auto picks PSM
FIM_OFFSET = FIM_DOC.index("retu") + len("retu")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- llama-cpp-python's server, for real -------------------------------------------------------------------


@dataclass
class LlamaCppServer:
    url: str
    model: Path
    process: subprocess.Popen


def start_llama_cpp_server(model: Path, log: Path) -> Iterator[LlamaCppServer]:
    port = free_port()
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--host", "127.0.0.1",
             "--port", str(port), "--n_ctx", "2048", "--n_threads", "1", "--verbose", "False"],
            stdout=out, stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 45
        while True:
            if process.poll() is not None:
                pytest.fail(f"llama_cpp.server exited: {log.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("llama_cpp.server did not start within 45 s")
                time.sleep(0.2)
        yield LlamaCppServer(url, model, process)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture(scope="module")
def smol_server(embedded_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaCppServer]:
    yield from start_llama_cpp_server(embedded_model, tmp_path_factory.mktemp("smol") / "server.log")


@pytest.fixture(scope="module")
def smol_remote(smol_server: LlamaCppServer) -> Iterator[RemoteEngine]:
    engine = RemoteEngine("openai", smol_server.url + "/v1", n_ctx=2048)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def smol_local(embedded_model: Path) -> Iterator[LlamaEngine]:
    engine = LlamaEngine(embedded_model, n_ctx=2048, n_threads=1)
    yield engine
    engine.close()


def test_openai_backend_reads_the_model_from_the_server(smol_remote: RemoteEngine, smol_server) -> None:
    info = smol_remote.info
    assert info.path == str(smol_server.model)  # llama_cpp.server names the model by its path
    assert info.n_ctx == 2048 and info.backend == f"openai {smol_server.url}"
    assert smol_remote.family == "none" == detect_family(smol_remote)  # SmolLM2 has no FIM tokens
    with pytest.raises(UserError, match="does not serve model 'other'"):
        RemoteEngine("openai", smol_server.url, model="other")


CLASS_DOC = "class P:\n    def __init__(self, x, y):\n        self.x = x\n        self.y\n"


@pytest.mark.parametrize("doc,offset", [(DOC, OFFSET), (CLASS_DOC, CLASS_DOC.index("self.y") + 6)])
def test_openai_completion_matches_the_local_engine(smol_remote, smol_local, doc: str, offset: int) -> None:
    settings = Settings(n_ctx=2048, time_budget_ms=30_000)
    remote = Completer(smol_remote, settings).complete(doc, offset, "python")
    local = Completer(smol_local, settings).complete(doc, offset, "python")
    assert remote.format == local.format == "prefix"
    assert remote.suggestion and remote.suggestion == local.suggestion
    assert remote.raw == local.raw and remote.stop_reason == local.stop_reason
    assert remote.timings_ms["prompt_eval"] > 0 and remote.timings_ms["total"] < 30_000


def test_stop_callback_ends_the_stream_early(smol_remote: RemoteEngine) -> None:
    prompt = smol_remote.tokenize("def fib(n):\n")
    seen: list[str] = []

    def stop(text: str) -> str | None:
        seen.append(text)
        return StopReason.SINGLE_LINE if "\n" in text else None

    gen = smol_remote.generate(prompt, max_tokens=300, stop=stop)
    assert gen.stop_reason == StopReason.SINGLE_LINE and gen.text == seen[-1]
    assert gen.text.count("\n") == 1 and len(seen) < 30
    assert smol_remote.detokenize(gen.token_ids) == gen.text
    # The stream was closed, not drained: the server is free for the next request at once.
    start = time.perf_counter()
    again = smol_remote.generate(prompt, max_tokens=3)
    assert again.stop_reason == "max_tokens" and time.perf_counter() - start < 5


def test_cancel_and_time_budget_stop_a_remote_generation(smol_remote: RemoteEngine) -> None:
    """Both land mid-stream, on cue (from the stop callback, after the first text): no race with the model's EOS."""
    prompt = smol_remote.tokenize("# A long story about a programmer\n")
    cancel = threading.Event()

    def cancel_at_first_text(text: str) -> None:
        cancel.set()

    gen = smol_remote.generate(prompt, max_tokens=1000, cancel=cancel, stop=cancel_at_first_text)
    assert gen.stop_reason == "cancelled" and 0 < len(gen.token_ids) < 1000

    def outlast_the_budget(text: str) -> None:
        time.sleep(0.3)

    gen = smol_remote.generate(prompt, max_tokens=1000, time_budget_s=0.2, stop=outlast_the_budget)
    assert gen.stop_reason == "time_budget" and 0 < len(gen.token_ids) < 1000

    start = time.perf_counter()
    gen = smol_remote.generate(prompt, max_tokens=1000, cancel=cancel)  # already cancelled: nothing is sent
    assert (gen.stop_reason, gen.text) == ("cancelled", "") and time.perf_counter() - start < 5


def test_a_stream_that_ends_without_an_answer_is_one_line(smol_remote: RemoteEngine) -> None:
    # llama_cpp.server answers 200 to a streamed request whose prompt overflows its context, then ends the
    # stream with no event at all.
    with pytest.raises(UserError) as info:
        smol_remote.generate(smol_remote.tokenize("word " * 3000), max_tokens=4)
    message = str(info.value)
    assert message.startswith(f"openai at {smol_remote.url} ended the stream without finishing")
    assert "\n" not in message


def test_unreachable_server_fails_fast_with_one_line() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    for backend in ("openai", "llama-server", "ollama"):
        start = time.perf_counter()
        with pytest.raises(UserError) as info:
            RemoteEngine(backend, url, model="m")
        assert time.perf_counter() - start < 1
        assert str(info.value).startswith(f"cannot reach {backend} at {url}") and "\n" not in str(info.value)


def test_bad_settings_are_refused() -> None:
    with pytest.raises(UserError, match="must look like http://host:port"):
        RemoteEngine("openai", "localhost:8000")
    with pytest.raises(UserError, match="unknown backend 'vllm'"):
        RemoteEngine("vllm")
    with pytest.raises(UserError, match="unknown fim family"):
        RemoteEngine("openai", fim="llama")
    assert check_url("http://h:1/v1/", "openai") == "http://h:1"
    assert check_url("http://h:1/v1", "ollama") == "http://h:1/v1"


# --- the FIM text prompt on llama_cpp.server, with a Code-Llama-shaped model -------------------------------


@pytest.fixture(scope="module")
def codellama_server(codellama_2023_gguf: Path, tmp_path_factory) -> Iterator[LlamaCppServer]:
    yield from start_llama_cpp_server(codellama_2023_gguf, tmp_path_factory.mktemp("cl") / "server.log")


def test_openai_fim_text_prompt_on_a_codellama_shaped_model(codellama_server, codellama_2023_gguf) -> None:
    remote = RemoteEngine("openai", codellama_server.url, n_ctx=2048)
    local = LlamaEngine(codellama_2023_gguf, n_ctx=2048, n_threads=1)
    try:
        # The server's /extras/tokenize reads `<PRE>` and `<SUF>` as one token each: the family is found.
        assert remote.family == "codellama" == detect_family(remote)
        # PSM asked for: the fixture's answer follows `<MID>` (auto picks SPM for Code Llama)
        settings = Settings(n_ctx=2048, time_budget_ms=30_000, postprocess=False, format="psm")
        got = Completer(remote, settings).complete(FIM_DOC, FIM_OFFSET, "python")
        want = Completer(local, settings).complete(FIM_DOC, FIM_OFFSET, "python")
        assert got.format == want.format == "psm"
        # After `▁<MID>` the fixture says `▁return ▁x ▁<EOT>`; the server stops at our " <EOT>" stop string
        # (the 2023 layout's <EOT> is no end-of-generation token for llama.cpp).
        assert got.raw == want.raw == " return x"
        assert got.stop_reason == "eos" and want.stop_reason == "eot"
    finally:
        remote.close()
        local.close()


def test_render_fim_writes_each_family_as_documented() -> None:
    assert render_fim("codellama", "psm", "p", "s") == "<PRE> p <SUF>s <MID>"
    assert render_fim("codellama", "spm", "p", "s") == "<PRE> <SUF>s <MID> p"
    assert render_fim("codellama", "psm", "", "s") == "<PRE> <SUF>s <MID>"
    assert render_fim("starcoder", "spm", "p", "s") == "<fim_prefix><fim_suffix>s<fim_middle>p"
    assert render_fim("qwen", "psm", "p", "s") == "<|fim_prefix|>p<|fim_suffix|>s<|fim_middle|>"
    assert render_fim("deepseek", "psm", "p", "s") == "<｜fim▁begin｜>p<｜fim▁hole｜>s<｜fim▁end｜>"
    assert render_fim("codestral", "spm", "p", "s") == "[SUFFIX]s[PREFIX]p"
    assert render_fim("none", "prefix", "p", "") == "p"


# --- fake servers ----------------------------------------------------------------------------------------


@dataclass
class Stream:
    lines: list[str]
    delay: float = 0.005


class FakeServer:
    """An HTTP/1.0 server on 127.0.0.1 that answers through ``handle`` and records every request."""

    def __init__(self, handle: Callable[[str, str, Any], tuple[int, Any]]) -> None:
        self.requests: list[tuple[str, str, Any]] = []
        self.disconnected = threading.Event()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                self._answer("GET")

            def do_POST(self) -> None:
                self._answer("POST")

            def _answer(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                fake.requests.append((method, self.path, body))
                status, answer = handle(method, self.path, body)
                self.send_response(status)
                if isinstance(answer, Stream):
                    self.send_header("Content-Type", "text/event-stream")
                    self.end_headers()
                    try:
                        for line in answer.lines:
                            self.wfile.write(line.encode() + b"\n")
                            self.wfile.flush()
                            time.sleep(answer.delay)
                    except (BrokenPipeError, ConnectionResetError):
                        fake.disconnected.set()
                    return
                data = json.dumps(answer).encode()
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_port}"
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()

    def posted(self, path: str) -> list[Any]:
        return [body for method, p, body in self.requests if p == path and method == "POST"]

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def sse(data: Any) -> list[str]:
    return [f"data: {json.dumps(data)}", ""]


class FakeLlamaServer:
    """llama-server's /props, /tokenize, /detokenize, /completion and /infill, on a local LlamaEngine's vocabulary.

    /completion and /infill stream ``scripts.pop(0)`` (token ids) the way llama-server does: one token per event
    and, like llama-server with a 2023 Code Llama file, straight past `▁<EOT>`, which is no EOG token there.
    """

    def __init__(self, engine: LlamaEngine) -> None:
        self.engine = engine
        self.scripts: list[list[int]] = []
        self.server = FakeServer(self.handle)
        self.url = self.server.url

    def piece(self, token: int) -> str:
        """Like llama-server's common_token_to_piece(special=true): control tokens as their text."""
        return (self.engine.piece(token) or self.engine.token_text(token).encode()).decode("utf-8", "replace")

    def handle(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        if (method, path) == ("GET", "/props"):
            return 200, {"default_generation_settings": {"n_ctx": 4096, "params": {"n_predict": -1}},
                         "total_slots": 1, "model_path": "/models/codellama-7b.Q4_K_M.gguf", "build_info": "b0-fake"}
        if path == "/tokenize":
            ids = self.engine.tokenize(body["content"], add_bos=body.get("add_special", False),
                                       special=body.get("parse_special", True))
            if body.get("with_pieces"):
                return 200, {"tokens": [{"id": t, "piece": self.piece(t)} for t in ids]}
            return 200, {"tokens": ids}
        if path == "/detokenize":
            return 200, {"content": "".join(map(self.piece, body["tokens"]))}
        if path in ("/completion", "/infill"):
            problem = self.check(path, body)
            if problem:
                return 400, {"error": {"code": 400, "message": problem, "type": "invalid_request_error"}}
            return 200, Stream(self.stream(self.scripts.pop(0), body))
        return 404, {"error": {"code": 404, "message": "File Not Found", "type": "not_found_error"}}

    @staticmethod
    def check(path: str, body: dict[str, Any]) -> str | None:
        if path == "/completion" and not (isinstance(body.get("prompt"), (str, list))):
            return "\"prompt\" must be a string or a list of tokens"
        if path == "/infill" and not (isinstance(body.get("input_prefix"), str)
                                      and isinstance(body.get("input_suffix"), str)):
            return "\"input_prefix\" and \"input_suffix\" must be strings"
        if not isinstance(body.get("n_predict"), int) or body.get("stream") is not True:
            return "fake: expected an integer n_predict and stream: true"
        return None

    def stream(self, script: list[int], body: dict[str, Any]) -> list[str]:
        n_prompt = len(body["prompt"]) if isinstance(body.get("prompt"), list) else 20
        lines: list[str] = []
        sent = script[: body["n_predict"]]
        for i, token in enumerate(sent):
            lines += sse({"index": 0, "content": self.piece(token), "tokens": [token], "stop": False, "id_slot": 0,
                          "tokens_predicted": i + 1, "tokens_evaluated": n_prompt,
                          "timings": {"cache_n": 0, "prompt_n": n_prompt, "prompt_ms": 3.0,
                                      "predicted_n": i + 1, "predicted_ms": 2.0 * (i + 1)}})
        lines += sse({"index": 0, "content": "", "tokens": [], "id_slot": 0, "stop": True, "model": "codellama",
                      "tokens_predicted": len(sent), "tokens_evaluated": n_prompt, "truncated": False,
                      "stop_type": "limit" if len(sent) == body["n_predict"] else "eos", "stopping_word": "",
                      "tokens_cached": n_prompt + len(sent),
                      "timings": {"cache_n": 0, "prompt_n": n_prompt, "prompt_ms": 3.0}})
        return lines

    def close(self) -> None:
        self.server.close()


def ids(*pieces: str) -> list[int]:
    return [piece_id(p) for p in pieces]


@pytest.fixture(scope="module")
def codellama_local(codellama_2023_gguf: Path) -> Iterator[LlamaEngine]:
    engine = LlamaEngine(codellama_2023_gguf, n_ctx=4096, n_threads=1)
    yield engine
    engine.close()


@pytest.fixture
def fake_llama(codellama_local: LlamaEngine) -> Iterator[FakeLlamaServer]:
    fake = FakeLlamaServer(codellama_local)
    yield fake
    fake.close()


@pytest.mark.parametrize("layout", ["2023", "tidy"])  # FIM pieces NORMAL without metadata, or CONTROL
def test_llama_server_model_facts_come_from_its_tokenizer(layout, codellama_local, codellama_tidy_gguf) -> None:
    engine = codellama_local if layout == "2023" else LlamaEngine(codellama_tidy_gguf, n_ctx=512, n_threads=1)
    fake = FakeLlamaServer(engine)
    try:
        remote = RemoteEngine("llama-server", fake.url)
        info = remote.info
        assert (info.fim_pre, info.fim_suf, info.fim_mid, info.eot) == tuple(ids(FIM_PRE, FIM_SUF, FIM_MID,
                                                                                 FIM_EOT))
        assert (info.bos, info.add_bos, info.vocab_type, info.n_ctx) == (1, True, "spm", 4096)
        assert info.stop_ids == {piece_id(FIM_EOT)} and detect_family(remote) == "codellama"
        assert info.path == "/models/codellama-7b.Q4_K_M.gguf" and info.name == "codellama-7b.Q4_K_M"
        assert remote.token_text(piece_id(FIM_PRE)) == FIM_PRE
        assert remote.tokenize("    return x") == engine.tokenize("    return x")
    finally:
        fake.close()
        if engine is not codellama_local:
            engine.close()


def test_llama_server_gets_our_exact_prompt_ids_and_stops_at_eot(fake_llama: FakeLlamaServer) -> None:
    remote = RemoteEngine("llama-server", fake_llama.url)
    fake_llama.scripts.append(ids(f"{SPACE}return", f"{SPACE}x", FIM_EOT) + ids("a") * 300)
    settings = Settings(postprocess=False, time_budget_ms=10_000, format="psm")  # no token healing in PSM
    got = Completer(remote, settings).complete(FIM_DOC, FIM_OFFSET, "python")
    want = Completer(fake_llama.engine, settings).complete(FIM_DOC, FIM_OFFSET, "python")

    (body,) = fake_llama.server.posted("/completion")
    assert got.format == want.format == "psm"
    assert body["prompt"] == want.prompt_token_ids == got.prompt_token_ids  # BOS, ▁<PRE>, …, ▁<MID>
    assert body["n_predict"] == settings.max_tokens_single_line and body["cache_prompt"] is True
    assert (body["temperature"], body["top_k"], body["samplers"]) == (0, 1, ["top_k"])
    assert got.raw == want.raw == " return x"
    assert got.stop_reason == want.stop_reason == "eot"
    assert got.tokens["generated"] == 2 and got.tokens["evaluated"] == len(body["prompt"])
    # We closed the stream at <EOT>; the server noticed instead of streaming all 300 `a`s.
    assert fake_llama.server.disconnected.wait(3)


def test_llama_server_soft_token_healing(fake_llama: FakeLlamaServer) -> None:
    """No API constrains the first tokens: the answer must re-type the healed token, or we ask again."""
    remote = RemoteEngine("llama-server", fake_llama.url)
    prompt = remote.tokenize("def f(x):\n    return x", add_bos=True)
    healed, last = prompt[:-1], prompt[-1]
    assert remote.piece(last) == b" x"
    fake_llama.scripts.append(ids(f"{SPACE}x", "a"))  # re-types " x", then "a"
    gen = remote.generate(healed, max_tokens=2, heal=b" x")
    assert (gen.text, gen.stop_reason) == ("a", "max_tokens")
    assert fake_llama.server.posted("/completion")[-1]["prompt"] == healed

    fake_llama.scripts += [ids(f"{SPACE}return"), ids("a", "a")]  # does not re-type " x": asked again
    gen = remote.generate(healed, max_tokens=2, heal=b" x")
    assert (gen.text, gen.stop_reason) == ("aa", "max_tokens")
    assert fake_llama.server.posted("/completion")[-1]["prompt"] == prompt  # the healed token put back


def test_llama_server_errors_become_one_line(fake_llama: FakeLlamaServer) -> None:
    remote = RemoteEngine("llama-server", fake_llama.url)
    with pytest.raises(UserError, match="does not fit the 4096-token context"):
        remote.generate([1] * 5000, max_tokens=8)
    fake_llama.server.requests.clear()
    fake_llama.check = lambda path, body: "the request exceeds the available context size"  # type: ignore
    with pytest.raises(UserError) as info:
        remote.generate([1, 2, 3], max_tokens=8)
    assert str(info.value) == (f"llama-server at {fake_llama.url} answered 400 to /completion: "
                               "the request exceeds the available context size")


def test_llama_server_infill_sends_prefix_and_suffix(fake_llama: FakeLlamaServer) -> None:
    remote = RemoteEngine("llama-server-infill", fake_llama.url)
    assert remote.family == "generic"  # the server lays the FIM prompt out itself
    fake_llama.scripts.append(ids(f"{SPACE}return", f"{SPACE}x") + ids("a") * 50)
    settings = Settings(postprocess=False, time_budget_ms=10_000, max_tokens_single_line=5)
    got = Completer(remote, settings).complete(FIM_DOC, FIM_OFFSET, "python")
    (body,) = fake_llama.server.posted("/infill")
    assert FIM_DOC.startswith(body["input_prefix"]) and body["input_prefix"].endswith("    retu")
    assert FIM_DOC.endswith(body["input_suffix"]) and body["input_suffix"].startswith("\n    return y")
    assert body["input_extra"] == [] and body["stop"] == [" <EOT>"] and body["n_predict"] == 5
    assert got.prompt == f"<PREFIX>{body['input_prefix']}<SUFFIX>{body['input_suffix']}<MIDDLE>"
    assert (got.raw, got.stop_reason) == (" return xaaa", "max_tokens")


class FakeOllama:
    """Ollama's /api/show and streamed /api/generate (NDJSON), for one FIM-capable code model."""

    MODEL = "codellama:7b-code"

    def __init__(self, pieces: list[str], done_reason: str = "stop", delay: float = 0.005) -> None:
        self.pieces, self.done_reason, self.delay = pieces, done_reason, delay
        self.server = FakeServer(self.handle)
        self.url = self.server.url

    def handle(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        if path == "/api/show":
            if body.get("model") != self.MODEL:
                return 404, {"error": f"model '{body.get('model')}' not found"}
            return 200, {
                "template": "{{- if .Suffix }}<PRE> {{ .Prompt }} <SUF>{{ .Suffix }} <MID>\n"
                            "{{- else }}{{ .Prompt }}\n{{- end }}",
                "details": {"format": "gguf", "family": "llama", "parameter_size": "7B"},
                "model_info": {"general.architecture": "llama", "llama.context_length": 16384},
                "capabilities": ["completion", "insert"],
            }
        if path == "/api/generate":
            if "prompt" not in body:  # loading the model
                return 200, {"model": self.MODEL, "response": "", "done": True, "done_reason": "load"}
            options = body.get("options") or {}
            if options.get("temperature") != 0 or not isinstance(options.get("num_predict"), int):
                return 400, {"error": "fake: expected options.temperature 0 and an integer num_predict"}
            if "suffix" in body and body.get("raw"):
                return 400, {"error": "fake: raw prompts cannot have a suffix (the template is not applied)"}
            stamp = "2024-07-22T20:47:51.147561Z"
            lines = [json.dumps({"model": self.MODEL, "created_at": stamp, "response": p, "done": False})
                     for p in self.pieces[: options["num_predict"]]]
            lines.append(json.dumps({"model": self.MODEL, "created_at": stamp, "response": "", "done": True,
                                     "done_reason": self.done_reason, "total_duration": 1162761250,
                                     "prompt_eval_count": 17, "eval_count": len(lines)}))
            return 200, Stream(lines, self.delay)
        return 404, {"error": "404 page not found"}

    def close(self) -> None:
        self.server.close()


def test_ollama_gets_prompt_and_suffix_and_applies_its_template() -> None:
    fake = FakeOllama(["\n", "  ", "  if", " a", " ==", " 0", ":\n"], done_reason="length")
    try:
        remote = RemoteEngine("ollama", fake.url, model=FakeOllama.MODEL, n_ctx=4096)
        assert fake.server.posted("/api/generate") == [{"model": FakeOllama.MODEL, "options": {"num_ctx": 4096}}]
        assert remote.family == "generic" and remote.info.n_ctx_train == 16384
        doc = "def gcd(a, b):\n    \n    return result\n"
        offset = doc.index("\n    \n") + 5
        settings = Settings(postprocess=False, time_budget_ms=10_000)
        got = Completer(remote, settings).complete(doc, offset, "python")
        body = fake.server.posted("/api/generate")[-1]
        assert doc.startswith(body["prompt"]) and body["prompt"].endswith("b):\n    ")
        assert doc.endswith(body["suffix"]) and body["suffix"].startswith("\n    return result")
        assert body["raw"] is False and body["stream"] is True and body["model"] == FakeOllama.MODEL
        assert body["options"] == {"temperature": 0, "top_k": 1, "num_predict": settings.max_tokens,
                                   "num_ctx": 4096}
        assert got.format == "psm" and got.prompt == f"<PREFIX>{body['prompt']}<SUFFIX>{body['suffix']}<MIDDLE>"
        assert (got.raw, got.stop_reason) == ("\n    if a == 0:\n", "max_tokens")
        assert got.tokens["evaluated"] == 17
    finally:
        fake.close()


def test_ollama_prefix_only_is_a_raw_prompt_and_a_stop_closes_the_stream() -> None:
    fake = FakeOllama(["x = 1\n"] * 200, delay=0.01)
    try:
        remote = RemoteEngine("ollama", fake.url, model=FakeOllama.MODEL)
        prompt = remote.tokenize("import os\n")
        gen = remote.generate(prompt, max_tokens=200,
                              stop=lambda text: StopReason.BLOCK_END if text.count("\n") == 2 else None)
        assert (gen.text, gen.stop_reason) == ("x = 1\nx = 1\n", StopReason.BLOCK_END)
        body = fake.server.posted("/api/generate")[-1]
        assert body["raw"] is True and "suffix" not in body and body["prompt"] == "import os\n"
        assert fake.server.disconnected.wait(3)
    finally:
        fake.close()


def test_ollama_model_errors_are_one_line() -> None:
    fake = FakeOllama([])
    try:
        with pytest.raises(UserError) as info:
            RemoteEngine("ollama", fake.url, model="nope:7b")
        assert str(info.value) == f"ollama at {fake.url} answered 404 to /api/show: model 'nope:7b' not found"
        with pytest.raises(UserError, match="needs the model's name"):
            RemoteEngine("ollama", fake.url)
    finally:
        fake.close()


def fake_openai(pieces: list[str]) -> FakeServer:
    """An OpenAI-compatible server without a tokenizer endpoint (so the FIM family must be configured)."""

    def handle(method: str, path: str, body: Any) -> tuple[int, Any]:
        if path == "/v1/models":
            return 200, {"object": "list", "data": [{"id": "qwen-coder", "object": "model", "max_model_len": 32768}]}
        if path == "/v1/completions":
            if body.get("temperature") != 0 or body.get("stream") is not True:
                return 400, {"object": "error", "message": "fake: expected temperature 0 and stream",
                             "type": "BadRequestError", "code": 400}
            lines = []
            for p in pieces:
                lines += sse({"id": "cmpl-1", "object": "text_completion", "model": "qwen-coder",
                              "choices": [{"index": 0, "text": p, "logprobs": None, "finish_reason": None}]})
            lines += sse({"id": "cmpl-1", "object": "text_completion", "model": "qwen-coder",
                          "choices": [{"index": 0, "text": "", "logprobs": None, "finish_reason": "stop"}],
                          "usage": {"prompt_tokens": 30, "completion_tokens": len(pieces), "total_tokens": 40}})
            return 200, Stream([*lines, "data: [DONE]", ""])
        return 404, {"detail": "Not Found"}

    return FakeServer(handle)


@pytest.mark.parametrize("fim,fmt,expected", [
    ("qwen", "psm", "<|fim_prefix|>{p}<|fim_suffix|>{s}<|fim_middle|>"),
    ("codestral", "spm", "[SUFFIX]{s}[PREFIX]{p}"),
    ("none", "prefix", "{p}"),
])
def test_openai_text_prompt_follows_the_configured_family(fim: str, fmt: str, expected: str) -> None:
    # SPM and prefix-only prompts end in the prefix: its half-typed word " retu" is healed (kept off the prompt)
    # and the answer must re-type it first. PSM prompts end in the middle marker: nothing to heal.
    fake = fake_openai(["rn y", "\n"] if fmt == "psm" else [" return y", "\n"])
    try:
        remote = RemoteEngine("openai", fake.url + "/v1", fim=fim, n_ctx=8192)
        assert remote.info.n_ctx == 8192 and remote.info.n_ctx_train == 32768
        settings = Settings(format=fmt, postprocess=False, time_budget_ms=10_000)
        got = Completer(remote, settings).complete(FIM_DOC, FIM_OFFSET, "python")
        (body,) = fake.posted("/v1/completions")
        prefix, suffix = FIM_DOC[:FIM_OFFSET], FIM_DOC[FIM_OFFSET:]
        if fmt != "psm":
            prefix = prefix.removesuffix(" retu")
        assert body["prompt"] == expected.replace("{p}", prefix).replace("{s}", suffix if fmt != "prefix" else "")
        assert body["model"] == "qwen-coder" and body["max_tokens"] == settings.max_tokens_single_line
        assert "stop" not in body
        assert (got.raw, got.stop_reason) == ("rn y\n", "eos")
    finally:
        fake.close()
