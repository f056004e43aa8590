"""Remote engines: send the formatted prompt to a completion server that is already running.

Context gathering, prompt building and post-processing stay in this process; only the prompt crosses the wire.
``RemoteEngine`` offers what ``Completer`` uses of ``Engine`` (``info``, ``tokenize``, ``count_tokens``,
``token_text``, ``find_token``, ``piece``, ``detokenize``, ``generate``), so the pipeline runs unchanged.

Backends:
- ``llama-server``: ``POST /completion`` with our exact token ids (an id-array prompt gets no BOS added and no
  rewriting), tokenized by the server's own ``/tokenize`` and ``/detokenize``.
- ``llama-server-infill``: ``POST /infill`` with ``input_prefix``/``input_suffix``; the server lays the FIM
  prompt out with the model's FIM tokens.
- ``openai``: any OpenAI-compatible ``POST /v1/completions`` (vLLM, llama-cpp-python's ``llama_cpp.server``):
  a text prompt with the FIM family's markers written as text, which these servers parse as special tokens.
- ``ollama``: ``POST /api/generate`` with ``prompt`` and ``suffix``; Ollama applies the model's FIM template.

Text backends share no token ids with us. Their engine uses a character "vocabulary" (an id per code point,
three ids past Unicode for the FIM markers) so that ``build_prompt`` still lays the prompt out and
``generate`` reads prefix and suffix back exactly. Token counts are local estimates (characters per token,
learnt from what the server tokenized or reports), because the context builder counts line by line and a
round trip per line would cost more than the completion.

Every request streams. The stop callback, ``cancel`` and the time budget are checked per chunk and while
waiting for the first one; stopping shuts the connection down, which is how the servers notice that the client
left and stop generating. Only the configured URL is contacted: no proxy from the environment, no redirects.
"""

from __future__ import annotations

import contextlib
import json
import math
import queue
import re
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any
from urllib.parse import urlsplit

import httpx2 as httpx

from codecomplete.config import FIM_FAMILIES, REMOTE_BACKENDS
from codecomplete.errors import UserError
from codecomplete.types import Generation, ModelInfo, StopCheck, StopReason

BACKENDS = REMOTE_BACKENDS
DEFAULT_URLS = {
    "llama-server": "http://127.0.0.1:8080",
    "llama-server-infill": "http://127.0.0.1:8080",
    "openai": "http://127.0.0.1:8000",
    "ollama": "http://127.0.0.1:11434",
}
CONNECT_TIMEOUT_S = 2.0
READ_TIMEOUT_S = 30.0  # a JSON answer, or the longest silence tolerated inside a stream
LOAD_TIMEOUT_S = 300.0  # Ollama loading a model into memory
_POLL_S = 0.02  # how often cancel is looked at while the server is silent

# Vocabulary texts of each family's FIM markers (prefix, suffix, middle), as prompt.detect_family knows them.
_MARKERS: dict[str, tuple[str, str, str | None]] = {
    "codellama": ("<PRE>", "<SUF>", "<MID>"),
    "starcoder": ("<fim_prefix>", "<fim_suffix>", "<fim_middle>"),
    "deepseek": ("<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>"),
    "qwen": ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"),
    "codestral": ("[PREFIX]", "[SUFFIX]", None),
}
# Servers that lay the FIM prompt out themselves get markers no family uses: detect_family calls that "generic",
# which allows PSM (prefix and suffix sent apart) and prefix-only, never SPM.
_SERVER_MARKERS = ("<PREFIX>", "<SUFFIX>", "<MIDDLE>")
# Code Llama's `▁<EOT>` is an ordinary piece in the 2023 GGUF conversions: servers do not stop on it themselves.
_EOT_TEXTS = ("▁<EOT>", "<EOT>")
_TEXT_STOPS = {"codellama": [" <EOT>"]}
# Greedy, like the local engine: top-k 1 and no other sampler (so no repetition penalty either).
_LLAMA_GREEDY = {"temperature": 0, "top_k": 1, "samplers": ["top_k"]}
_OPENAI_STOP = {"stop": "eos", "length": "max_tokens"}
_CACHE_REUSE_MIN = 256  # llama.vim's --cache-reuse: shorter moved runs are evaluated again
# Text that tokenizers split badly when the prompt ends in it: indentation, or a word being typed.
_HEAL_RUN = re.compile(r"(?:[ \t]?\w+|[ \t]+)$")
_MARK = 0x110000  # the first id past Unicode: the character vocabulary's FIM markers
_HEAL_MISMATCH = "heal_mismatch"  # internal: the answer did not re-type the healed text


# --- HTTP ------------------------------------------------------------------------------------------------


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _error_text(response: httpx.Response) -> str:
    """The server's own message: OpenAI/llama-server `error.message`, Ollama `error`, FastAPI `detail`, vLLM
    `message`."""
    try:
        data = response.json()
    except ValueError:
        return _one_line(response.text) or response.reason_phrase
    if isinstance(data, dict):
        error = data.get("error", data.get("detail", data.get("message")))
        if isinstance(error, dict):
            error = error.get("message", error)
        if error is not None:
            return _one_line(error if isinstance(error, str) else json.dumps(error))
    return _one_line(json.dumps(data))


class _Http:
    """JSON over HTTP to one server; every failure becomes one line that names the server."""

    def __init__(self, backend: str, url: str) -> None:
        self.label = f"{backend} at {url}"
        # trust_env=False: source code must not travel through a proxy named by the environment. Plain http
        # needs no TLS context (building one loads the system's certificates: ~0.1 s).
        self._client = httpx.Client(base_url=url, timeout=httpx.Timeout(READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S),
                                    trust_env=False, verify=url.startswith("https:"))

    def get(self, path: str) -> Any:
        return self._call("GET", path, None, False, None)

    def post(self, path: str, body: Any, *, optional: bool = False, timeout: float | None = None) -> Any:
        return self._call("POST", path, body, optional, timeout)

    def _call(self, method: str, path: str, body: Any, optional: bool, timeout: float | None) -> Any:
        """The decoded answer; None when ``optional`` and the server has no such endpoint (or rejects the shape)."""
        with self._errors(path):
            response = self._client.request(method, path, json=body,
                                            timeout=httpx.USE_CLIENT_DEFAULT if timeout is None else timeout)
        if optional and response.status_code in (400, 404, 405, 422, 501):
            return None
        self._check(response, path)
        try:
            return response.json()
        except ValueError:
            raise UserError(f"{self.label} answered {path} with something that is not JSON") from None

    @contextlib.contextmanager
    def stream(self, path: str, body: Any) -> Iterator[httpx.Response]:
        with self._errors(path), self._client.stream("POST", path, json=body) as response:
            if response.status_code >= 400:
                response.read()
                self._check(response, path)
            yield response

    @contextlib.contextmanager
    def _errors(self, path: str) -> Iterator[None]:
        try:
            yield
        except httpx.ConnectTimeout:
            raise UserError(f"cannot reach {self.label}: no answer within {CONNECT_TIMEOUT_S:g} s "
                            "(check the remote URL)") from None
        except httpx.ConnectError as exc:
            raise UserError(f"cannot reach {self.label}: {_one_line(str(exc))} "
                            "(is the server running? check the remote URL)") from None
        except httpx.TimeoutException:
            raise UserError(f"{self.label} did not answer {path} within {READ_TIMEOUT_S:g} s") from None
        except httpx.HTTPError as exc:
            raise UserError(f"{self.label} failed on {path}: {_one_line(str(exc)) or type(exc).__name__}") from None

    def _check(self, response: httpx.Response, path: str) -> None:
        if response.status_code >= 400:
            raise UserError(f"{self.label} answered {response.status_code} to {path}: {_error_text(response)}")

    def close(self) -> None:
        self._client.close()


_END = object()


class _Stream:
    """A streamed answer read line by line on a worker thread.

    Waiting for the server (prompt evaluation can take seconds) then never delays a cancel or the end of the time
    budget. ``close`` shuts the socket down: the server sees the client leave and stops generating.
    """

    def __init__(self, http: _Http, path: str, body: Any) -> None:
        self._lines: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._response: httpx.Response | None = None
        self._closed = False
        threading.Thread(target=self._read, args=(http, path, body), name="remote-stream", daemon=True).start()

    def _read(self, http: _Http, path: str, body: Any) -> None:
        try:
            with http.stream(path, body) as response:
                with self._lock:
                    if self._closed:
                        return
                    self._response = response
                for line in response.iter_lines():
                    self._lines.put(line)
                with self._lock:  # finished normally: the connection goes back to the pool intact
                    self._response = None
        except UserError as exc:
            self._lines.put(exc)
        except Exception as exc:  # noqa: BLE001 - the reader must always post _END
            self._lines.put(UserError(f"{http.label}: {_one_line(str(exc)) or type(exc).__name__}"))
        finally:
            self._lines.put(_END)

    def get(self, timeout: float) -> Any:
        """The next line, a UserError, ``_END``, or None when nothing came within ``timeout`` seconds."""
        try:
            return self._lines.get(timeout=max(timeout, 0.001))
        except queue.Empty:
            return None

    def close(self) -> None:
        with self._lock:
            self._closed = True
            response, self._response = self._response, None
            if response is None:
                return
            network = response.extensions.get("network_stream")
            sock = network.get_extra_info("socket") if network is not None else None
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


def _sse_data(line: str, label: str) -> dict[str, Any] | None:
    """The JSON of a server-sent `data:` line; None for blank lines, comments, other fields and `[DONE]`."""
    line = line.strip()
    field, _, payload = line.partition(":")
    if field not in ("data", "error"):
        return None
    payload = payload.strip()
    if payload == "[DONE]":
        return None
    try:
        data = json.loads(payload)
    except ValueError:
        raise UserError(f"{label} sent an unreadable stream line: {_one_line(line, 120)}") from None
    if field == "error":
        data = {"error": data}
    return data if isinstance(data, dict) else None


def _raise_error(data: dict[str, Any], label: str) -> None:
    error = data.get("error")
    if error:
        if isinstance(error, dict):
            error = error.get("message", error)
        raise UserError(f"{label} failed while generating: {_one_line(str(error))}")


# --- vocabularies ----------------------------------------------------------------------------------------


class _Ratio:
    """Characters per token, to count tokens without a round trip; learnt from the server's own counts."""

    def __init__(self) -> None:
        self._chars, self._tokens = 35.0, 10.0  # the prior: 3.5 characters per token

    def observe(self, chars: int, tokens: int) -> None:
        if chars >= 64 and tokens > 0:  # short texts say more about their boundaries than about the ratio
            self._chars = self._chars * 0.8 + chars
            self._tokens = self._tokens * 0.8 + tokens

    def count(self, text: str) -> int:
        return math.ceil(len(text) * self._tokens / self._chars) if text else 0


class _CharVocab:
    """One id per character plus the FIM markers: exact round trips, so a text backend reads the layout back."""

    vocab_type = "none"

    def __init__(self, markers: tuple[str, str, str | None] | None) -> None:
        self.markers = markers

    @property
    def marker_ids(self) -> tuple[int | None, int | None, int | None]:
        if self.markers is None:
            return None, None, None
        return _MARK, _MARK + 1, None if self.markers[2] is None else _MARK + 2

    def tokenize(self, text: str, *, add_bos: bool = False, special: bool = False) -> list[int]:
        return [ord(c) for c in text]

    def token_text(self, token: int) -> str:
        if token < _MARK:
            return chr(token)
        if self.markers is None or token - _MARK >= len(self.markers):
            raise ValueError(f"token {token} is not in this vocabulary")
        return self.markers[token - _MARK] or ""

    def find_token(self, text: str) -> int | None:
        if len(text) == 1:
            return ord(text)
        if self.markers is not None and text in self.markers:
            return _MARK + self.markers.index(text)
        return None

    def piece(self, token: int) -> bytes:
        return self.token_text(token).encode("utf-8")

    def detokenize(self, tokens: Sequence[int]) -> str:
        return "".join(map(self.token_text, tokens))

    def split(self, ids: list[int]) -> tuple[str, str, str]:
        """(layout, prefix, suffix) from ids laid out by build_prompt: prefix-only, PSM or SPM."""
        pre, suf, mid = self.marker_ids

        def text(a: int, b: int) -> str:
            return "".join(map(chr, ids[a:b]))

        marks = [i for i, t in enumerate(ids) if t >= _MARK]
        if not marks:
            return "prefix", text(0, len(ids)), ""
        if len(marks) == 3 and ids[0] == pre and ids[-1] == mid and ids[marks[1]] == suf:
            return "psm", text(1, marks[1]), text(marks[1] + 1, len(ids) - 1)
        if len(marks) == 3 and ids[:2] == [pre, suf] and ids[marks[2]] == mid:
            return "spm", text(marks[2] + 1, len(ids)), text(2, marks[2])
        if len(marks) == 2 and ids[0] == suf and ids[marks[1]] == pre:  # Codestral: [SUFFIX]s[PREFIX]p
            return "spm", text(marks[1] + 1, len(ids)), text(1, marks[1])
        raise ValueError("the prompt ids are not laid out as build_prompt lays them out")


def _piece_text(piece: Any) -> str:
    """llama-server writes a piece as a string, or as a list of bytes when it is not valid UTF-8 on its own."""
    return bytes(piece).decode("utf-8", "replace") if isinstance(piece, list) else str(piece)


class _ServerVocab:
    """The model's own tokenizer behind llama-server's ``/tokenize`` and ``/detokenize``: the ids are exact."""

    def __init__(self, http: _Http, ratio: _Ratio) -> None:
        self._http = http
        self._ratio = ratio
        self._texts: dict[int, str] = {}
        # SentencePiece vocabularies put a dummy space in front of text tokenized on its own ("a" → "▁a").
        first = self._pieces("a", special=False)
        self.vocab_type = "spm" if first and first[0][1].startswith(" ") else "bpe"

    def tokenize(self, text: str, *, add_bos: bool = False, special: bool = False) -> list[int]:
        if not text and not add_bos:
            return []
        ids = self._http.post("/tokenize", {"content": text, "add_special": add_bos, "parse_special": special})
        ids = [int(t) for t in ids["tokens"]]
        self._ratio.observe(len(text), len(ids))
        return ids

    def _pieces(self, text: str, *, special: bool = True) -> list[tuple[int, str]]:
        answer = self._http.post("/tokenize", {"content": text, "parse_special": special, "with_pieces": True})
        return [(int(t["id"]), _piece_text(t["piece"])) for t in answer["tokens"]]

    def detokenize(self, tokens: Sequence[int]) -> str:
        if not tokens:
            return ""
        return str(self._http.post("/detokenize", {"tokens": list(tokens)})["content"])

    def piece(self, token: int) -> bytes:
        return self.detokenize([token]).encode("utf-8")

    def vocab_text(self, piece: str) -> str:
        """A piece as the vocabulary writes it (SentencePiece: spaces as `▁`)."""
        return piece.replace(" ", "▁") if self.vocab_type == "spm" else piece

    def token_text(self, token: int) -> str:
        """The vocabulary text, rebuilt from the piece (SentencePiece writes spaces as `▁`); cached per id."""
        text = self._texts.get(token)
        if text is None:
            text = self._texts[token] = self.vocab_text(self.detokenize([token]))
        return text

    def find_token(self, text: str) -> int | None:
        """The id whose vocabulary text is ``text``, when the tokenizer makes that text one token."""
        plain = text.replace("▁", " ")
        if self.vocab_type == "spm":
            plain = plain.removeprefix(" ")  # the tokenizer puts its dummy space back
        for candidate in dict.fromkeys((plain, text)):  # then as written: CONTROL tokens match their literal text
            pieces = self._pieces(candidate) if candidate else []
            if len(pieces) == 1 and self.vocab_text(pieces[0][1]) == text:
                self._texts[pieces[0][0]] = text
                return pieces[0][0]
        return None


# --- backends --------------------------------------------------------------------------------------------


@dataclass
class _Chunk:
    """One streamed event, in the terms of ``Generation``."""

    text: str = ""
    tokens: list[int] | None = None  # the server's ids for ``text`` (llama-server)
    done: str | None = None  # the server's stop reason: eos or max_tokens
    n_prompt: int | None = None  # prompt tokens as the server counted them
    n_cached: int | None = None
    n_evaluated: int | None = None


@dataclass
class _Request:
    path: str
    body: dict[str, Any]
    sent_chars: int = 0  # length of a text prompt, to learn characters per token from the server's count


@dataclass
class _Setup:
    vocab: _CharVocab | _ServerVocab
    family: str
    model: str
    n_ctx: int
    n_ctx_train: int | None = None
    fim_ids: tuple[int | None, int | None, int | None] = (None, None, None)
    bos: int | None = None
    eot: int | None = None


class _Backend:
    """How one server API is reached: what to ask at start, how to send a prompt, how to read the stream."""

    def __init__(self, http: _Http, ratio: _Ratio) -> None:
        self.http = http
        self.ratio = ratio
        self.family = "none"
        self.model = ""
        self.n_ctx = 0

    def connect(self, model: str | None, fim: str, n_ctx: int) -> _Setup:
        raise NotImplementedError

    def request(self, prompt: list[int], split: tuple[str, str, str], max_tokens: int, reuse: bool,
                shift: bool) -> _Request:
        raise NotImplementedError

    def parse(self, line: str) -> _Chunk | None:
        raise NotImplementedError


def _fim_in_vocab(vocab: _ServerVocab, fim: str, label: str) -> tuple[str, tuple[int | None, ...]]:
    """The configured family's marker ids in the server's vocabulary, or the first family whose markers exist."""
    if fim == "none":
        return "none", (None, None, None)
    for family in _MARKERS if fim == "auto" else (fim,):
        texts = _MARKERS[family]
        if family == "codellama" and vocab.vocab_type == "spm":
            texts = tuple(None if t is None else "▁" + t for t in texts)
        pre, suf = vocab.find_token(texts[0]), vocab.find_token(texts[1])
        if pre is not None and suf is not None:
            return family, (pre, suf, None if texts[2] is None else vocab.find_token(texts[2]))
    if fim != "auto":
        raise UserError(f"the model of {label} has no {fim} FIM tokens: set fim to auto or none")
    return "none", (None, None, None)


class _LlamaServer(_Backend):
    """llama-server's native ``/completion``, fed our exact token ids."""

    def connect(self, model: str | None, fim: str, n_ctx: int) -> _Setup:
        props = self.http.get("/props")
        self.n_ctx = int((props.get("default_generation_settings") or {}).get("n_ctx") or n_ctx)
        vocab = _ServerVocab(self.http, self.ratio)
        self.family, fim_ids = _fim_in_vocab(vocab, fim, self.http.label)
        bos = vocab.tokenize("", add_bos=True)  # [BOS] when the model wants one, [] otherwise
        eot = next((t for t in map(vocab.find_token, _EOT_TEXTS) if t is not None), None)
        self.model = str(props.get("model_path") or props.get("model_alias") or model or "llama-server")
        return _Setup(vocab, self.family, self.model, self.n_ctx, fim_ids=fim_ids, bos=bos[0] if bos else None,
                      eot=eot)

    def _common(self, max_tokens: int, reuse: bool, shift: bool) -> dict[str, Any]:
        body = {"n_predict": max_tokens, "stream": True, "cache_prompt": reuse, "return_tokens": True,
                "timings_per_token": True, **_LLAMA_GREEDY}
        if reuse and shift:  # the server's own shifting of moved cached chunks (its --cache-reuse)
            body["n_cache_reuse"] = _CACHE_REUSE_MIN
        return body

    def request(self, prompt: list[int], split: tuple[str, str, str], max_tokens: int, reuse: bool,
                shift: bool) -> _Request:
        if len(prompt) >= self.n_ctx:
            raise UserError(f"a prompt of {len(prompt)} tokens does not fit the {self.n_ctx}-token context of "
                            f"{self.http.label}: lower token_budget")
        max_tokens = min(max_tokens, self.n_ctx - len(prompt))
        return _Request("/completion", {"prompt": prompt, **self._common(max_tokens, reuse, shift)})

    def parse(self, line: str) -> _Chunk | None:
        data = _sse_data(line, self.http.label)
        if data is None:
            return None
        _raise_error(data, self.http.label)
        timings = data.get("timings") or {}
        cached, evaluated = timings.get("cache_n", data.get("tokens_cached")), timings.get("prompt_n")
        return _Chunk(
            text=str(data.get("content") or ""),
            tokens=[int(t) for t in data["tokens"]] if isinstance(data.get("tokens"), list) else None,
            done=("max_tokens" if data.get("stop_type") == "limit" else "eos") if data.get("stop") else None,
            n_prompt=cached + evaluated if cached is not None and evaluated is not None else None,
            n_cached=cached,
            n_evaluated=evaluated,
        )


class _LlamaServerInfill(_LlamaServer):
    """llama-server's ``/infill``: prefix and suffix as text, laid out by the server with the model's FIM tokens."""

    def connect(self, model: str | None, fim: str, n_ctx: int) -> _Setup:
        setup = super().connect(model, fim, n_ctx)
        self.stops = _TEXT_STOPS.get(setup.family, [])
        self.family = "generic" if setup.family != "none" else "none"
        markers = _SERVER_MARKERS if self.family == "generic" else None
        return _Setup(_CharVocab(markers), self.family, self.model, self.n_ctx)

    def request(self, prompt: list[int], split: tuple[str, str, str], max_tokens: int, reuse: bool,
                shift: bool) -> _Request:
        layout, prefix, suffix = split
        common = self._common(max_tokens, reuse, shift)
        if layout == "prefix":  # a plain continuation; a string prompt gets the model's BOS from the server
            return _Request("/completion", {"prompt": prefix, **common}, len(prefix))
        body = {"input_prefix": prefix, "input_suffix": suffix, "input_extra": [], **common}
        if self.stops:
            body["stop"] = self.stops
        return _Request("/infill", body, len(prefix) + len(suffix))


class _OpenAI(_Backend):
    """An OpenAI-compatible ``/v1/completions``: the prompt as text, FIM markers written as the family's text."""

    def connect(self, model: str | None, fim: str, n_ctx: int) -> _Setup:
        entries = [e for e in (self.http.get("/v1/models").get("data") or []) if isinstance(e, dict)]
        served = [str(e.get("id")) for e in entries]
        if model is not None and served and model not in served:
            raise UserError(f"{self.http.label} does not serve model {model!r} (it serves: {', '.join(served)})")
        self.model = model or (served[0] if served else "")
        entry = next((e for e in entries if e.get("id") == self.model), {})
        # vLLM reports the context as max_model_len; llama-server only the training context (meta.n_ctx_train).
        server_ctx = entry.get("max_model_len") or (entry.get("meta") or {}).get("n_ctx_train")
        self.n_ctx = min(n_ctx, int(server_ctx)) if server_ctx else n_ctx
        self.family = self._probe_family() if fim == "auto" else fim
        markers = _MARKERS.get(self.family)
        return _Setup(_CharVocab(markers), self.family, self.model, self.n_ctx,
                      n_ctx_train=int(server_ctx) if server_ctx else None)

    def _probe_family(self) -> str:
        """The family whose prefix and suffix markers the server's tokenizer reads as one token each."""
        for path, key in (("/extras/tokenize", "input"), ("/tokenize", "prompt")):  # llama_cpp.server, vLLM
            base = self._count(path, key, "")  # a BOS, if the tokenizer adds one
            if base is None:
                continue
            for family, (pre, suf, _) in _MARKERS.items():
                if self._count(path, key, pre) == base + 1 and self._count(path, key, suf) == base + 1:
                    return family
            return "none"
        return "none"  # no tokenizer to ask: plain continuation unless the fim setting names the family

    def _count(self, path: str, key: str, text: str) -> int | None:
        answer = self.http.post(path, {"model": self.model, key: text}, optional=True)
        tokens = answer.get("tokens") if isinstance(answer, dict) else None
        return len(tokens) if isinstance(tokens, list) else None

    def request(self, prompt: list[int], split: tuple[str, str, str], max_tokens: int, reuse: bool,
                shift: bool) -> _Request:
        layout, prefix, suffix = split
        text = render_fim(self.family, layout, prefix, suffix)
        body: dict[str, Any] = {"prompt": text, "max_tokens": max_tokens, "temperature": 0, "top_p": 1,
                                "stream": True, "repeat_penalty": 1.0}  # llama_cpp.server penalises by default
        if self.model:
            body["model"] = self.model
        if layout != "prefix" and self.family in _TEXT_STOPS:
            body["stop"] = _TEXT_STOPS[self.family]
        return _Request("/v1/completions", body, len(text))

    def parse(self, line: str) -> _Chunk | None:
        data = _sse_data(line, self.http.label)
        if data is None:
            return None
        _raise_error(data, self.http.label)
        usage = data.get("usage") or {}
        choices = data.get("choices") or [{}]
        finish = choices[0].get("finish_reason")
        return _Chunk(text=str(choices[0].get("text") or ""),
                      done=_OPENAI_STOP.get(finish, "eos") if finish else None,
                      n_prompt=usage.get("prompt_tokens"))


class _Ollama(_Backend):
    """Ollama's ``/api/generate``: ``prompt`` + ``suffix``, the FIM template applied by Ollama."""

    def connect(self, model: str | None, fim: str, n_ctx: int) -> _Setup:
        if not model:
            raise UserError("the ollama backend needs the model's name: set model (e.g. qwen2.5-coder:1.5b-base)")
        self.model = model
        show = self.http.post("/api/show", {"model": model})
        capabilities = show.get("capabilities")
        # Ollama before 0.6 lists no capabilities; its FIM models are those whose template uses the suffix.
        fills = "insert" in capabilities if isinstance(capabilities, list) else ".Suffix" in str(show.get("template"))
        if fim not in ("auto", "none") and not fills:
            raise UserError(f"ollama model {model!r} cannot fill in the middle (no insert capability): "
                            "set fim to none or use a code model")
        self.family = "generic" if fills and fim != "none" else "none"
        trained = next((v for k, v in (show.get("model_info") or {}).items() if k.endswith(".context_length")), None)
        self.n_ctx = min(n_ctx, int(trained)) if trained else n_ctx
        # Load the model now, with our context size, rather than in the first completion's time budget.
        self.http.post("/api/generate", {"model": model, "options": {"num_ctx": self.n_ctx}}, timeout=LOAD_TIMEOUT_S)
        markers = _SERVER_MARKERS if self.family == "generic" else None
        return _Setup(_CharVocab(markers), self.family, model, self.n_ctx,
                      n_ctx_train=int(trained) if trained else None)

    def request(self, prompt: list[int], split: tuple[str, str, str], max_tokens: int, reuse: bool,
                shift: bool) -> _Request:
        layout, prefix, suffix = split
        body: dict[str, Any] = {"model": self.model, "prompt": prefix, "stream": True,
                                "options": {"temperature": 0, "top_k": 1, "num_predict": max_tokens,
                                            "num_ctx": self.n_ctx}}
        if layout == "psm" and suffix:
            body["suffix"] = suffix
            body["raw"] = False
        else:  # no template at all: a plain continuation of the prefix
            body["raw"] = True
        return _Request("/api/generate", body, len(prefix) + len(suffix))

    def parse(self, line: str) -> _Chunk | None:
        if not line.strip():
            return None
        try:
            data = json.loads(line)
        except ValueError:
            raise UserError(f"{self.http.label} sent an unreadable stream line: {_one_line(line, 120)}") from None
        _raise_error(data, self.http.label)
        done = bool(data.get("done"))
        return _Chunk(text=str(data.get("response") or ""),
                      done=("max_tokens" if data.get("done_reason") == "length" else "eos") if done else None,
                      n_evaluated=data.get("prompt_eval_count") if done else None)


_BACKEND_CLASSES: dict[str, type[_Backend]] = {
    "llama-server": _LlamaServer,
    "llama-server-infill": _LlamaServerInfill,
    "openai": _OpenAI,
    "ollama": _Ollama,
}


def render_fim(family: str, layout: str, prefix: str, suffix: str) -> str:
    """The prompt as text in the family's documented form, e.g. Code Llama's `<PRE> {p} <SUF>{s} <MID>`."""
    if layout == "prefix" or family not in _MARKERS:
        return prefix
    if family == "codellama":  # the spaces are the `▁` of `▁<PRE>` etc. and the dummy space of encode(prefix)
        p = f" {prefix}" if prefix else ""
        return f"<PRE>{p} <SUF>{suffix} <MID>" if layout == "psm" else f"<PRE> <SUF>{suffix} <MID>{p}"
    pre, suf, mid = _MARKERS[family]
    if family == "codestral":
        return f"{suf}{suffix}{pre}{prefix}"
    if layout == "psm":
        return f"{pre}{prefix}{suf}{suffix}{mid}"
    return f"{pre}{suf}{suffix}{mid}{prefix}"


def check_url(url: str, backend: str) -> str:
    """An http(s) base URL without trailing slash (and without the `/v1` OpenAI clients like to append)."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UserError(f"remote URL for {backend} must look like http://host:port, got {url!r}")
    url = url.strip().rstrip("/")
    return url.removesuffix("/v1") if backend == "openai" else url


# --- the engine ------------------------------------------------------------------------------------------


class RemoteEngine:
    """An ``Engine`` whose model runs in a server (see the module docstring)."""

    tokenizes_locally = False  # counts are estimates, tokenizing is a round trip: nothing to remember
    avoids_tokens = False  # the servers' APIs cannot constrain the first token: ``avoid`` is never passed

    def __init__(self, backend: str, url: str | None = None, *, model: str | None = None, fim: str = "auto",
                 n_ctx: int = 4096) -> None:
        if backend not in BACKENDS:
            raise UserError(f"unknown backend {backend!r}: use local, {', '.join(BACKENDS)}")
        if fim not in FIM_FAMILIES:
            raise UserError(f"unknown fim family {fim!r}: use {', '.join(FIM_FAMILIES)}")
        self.backend = backend
        self.url = check_url(url or DEFAULT_URLS[backend], backend)
        self._http = _Http(backend, self.url)
        self._ratio = _Ratio()
        self._backend = _BACKEND_CLASSES[backend](self._http, self._ratio)
        try:
            setup = self._backend.connect(model, fim, n_ctx)
        except BaseException:
            self._http.close()
            raise
        self.vocab = setup.vocab
        self.family = setup.family
        self.info = self._info(setup)
        self._stop_texts = {t: self.vocab.detokenize([t]) for t in self.info.stop_ids}

    def _info(self, s: _Setup) -> ModelInfo:
        pre, suf, mid = s.fim_ids if isinstance(s.vocab, _ServerVocab) else s.vocab.marker_ids
        return ModelInfo(
            path=s.model,
            name=PurePath(s.model).name.removesuffix(".gguf") or s.model,
            architecture="remote",
            description=f"{self.backend} at {self.url}",
            vocab_type=s.vocab.vocab_type,
            n_vocab=0,  # not exposed by these APIs
            n_ctx_train=s.n_ctx_train or s.n_ctx,
            n_ctx=s.n_ctx,
            bos=s.bos,
            eos=None,  # the server stops at end-of-generation tokens itself
            add_bos=s.bos is not None,
            eot=s.eot,
            fim_pre=pre,
            fim_suf=suf,
            fim_mid=mid,
            fim_pad=None,
            fim_rep=None,
            fim_sep=None,
            stop_ids=frozenset({s.eot} if s.eot is not None else ()),
            n_gpu_layers=0,  # unknown: the server decides
            backend=f"{self.backend} {self.url}",
        )

    # --- tokens (the Tokenizer protocol of prompt.py) -------------------------------------------------

    def tokenize(self, text: str, *, add_bos: bool = False, special: bool = False) -> list[int]:
        return self.vocab.tokenize(text, add_bos=add_bos, special=special)

    def count_tokens(self, text: str) -> int:
        """An estimate from characters per token: the context builder counts every line, a round trip each
        would cost more than the completion."""
        return self._ratio.count(text)

    def token_text(self, token: int) -> str:
        return self.vocab.token_text(token)

    def find_token(self, text: str) -> int | None:
        return self.vocab.find_token(text)

    def piece(self, token: int) -> bytes:
        return self.vocab.piece(token)

    def detokenize(self, tokens: Sequence[int]) -> str:
        return self.vocab.detokenize(tokens)

    # --- generation ------------------------------------------------------------------------------------

    def generate(
        self,
        prompt: Sequence[int],
        *,
        max_tokens: int,
        time_budget_s: float | None = None,
        cancel: threading.Event | None = None,
        stop: StopCheck | None = None,
        reuse: bool = True,
        shift: bool = False,
        heal: bytes = b"",
        key: str | None = None,
        avoid: frozenset[int] = frozenset(),
    ) -> Generation:
        """Stream a greedy completion of ``prompt``; the same checks and result as ``Engine.generate`` (the server
        keeps its own caches: ``key`` is not used).

        ``reuse`` and ``shift`` become llama-server's ``cache_prompt`` and ``n_cache_reuse``; other servers
        manage their caches themselves. ``heal`` is checked rather than enforced (see ``_plan``). ``avoid`` is
        refused: callers ask ``avoids_tokens`` first.
        Token ids and counts of text backends are in this engine's character vocabulary.
        """
        prompt = list(prompt)
        if not prompt:
            raise ValueError("empty prompt")
        if avoid:
            raise ValueError("a remote engine cannot avoid tokens")
        start = time.perf_counter()
        deadline = None if time_budget_s is None else start + time_budget_s
        heal_text = heal.decode("utf-8", "replace")
        gen, first = self._stream(*self._plan(prompt, heal_text, soft=True), max_tokens, deadline, cancel, stop,
                                  reuse, shift)
        if gen is None:  # the model would not re-type the healed text: ask again without healing
            gen, first = self._stream(*self._plan(prompt, heal_text, soft=False), max_tokens, deadline, cancel,
                                      stop, reuse, shift)
            assert gen is not None  # nothing to re-type: no mismatch
        end = time.perf_counter()
        first = first or end
        gen.timings_ms = {"prompt_eval": (first - start) * 1000, "generate": (end - first) * 1000}
        return gen

    def _plan(self, prompt: list[int], heal: str, *, soft: bool) -> tuple[list[int], tuple[str, str, str], str]:
        """The prompt to send, its (layout, prefix, suffix) for text backends, and the text the answer must
        begin with.

        No API here lets us constrain the first tokens as the local engine does, so healing is checked
        (``soft``): the healed text stays off the prompt and the answer must begin with it. That is worth trying
        where tokenizers split badly (indentation, a half-typed word); other healed text, or a model that does
        not re-type it, gets the text put back on the prompt. The character vocabulary heals one character;
        it is widened to the trailing run (`    `, ` retu`) that a real tokenizer would have made one token.
        """
        if isinstance(self.vocab, _CharVocab):
            layout, prefix, suffix = self.vocab.split(prompt)
            if not heal or layout == "psm":
                return prompt, (layout, prefix, suffix), ""
            full = prefix + heal
            run = _HEAL_RUN.search(full)
            if not soft or run is None or len(run.group()) < len(heal):
                return prompt + self.vocab.tokenize(heal), (layout, full, suffix), ""
            return prompt, (layout, full[: run.start()], suffix), run.group()
        if not heal or (soft and _HEAL_RUN.fullmatch(heal)):
            return prompt, ("", "", ""), heal
        token = self.vocab.find_token(self.vocab.vocab_text(heal))
        if token is None:  # no way to put it back: check it instead
            return prompt, ("", "", ""), heal
        return prompt + [token], ("", "", ""), ""

    def _stream(self, prompt: list[int], split: tuple[str, str, str], expect: str, max_tokens: int,
                deadline: float | None, cancel: threading.Event | None, stop: StopCheck | None,
                reuse: bool, shift: bool) -> tuple[Generation | None, float | None]:
        """One streamed request, and when its first text came (the end of prompt evaluation, as seen here); no
        generation when the answer did not begin with ``expect``."""
        request = self._backend.request(prompt, split, max_tokens, reuse, shift)
        raw, text, ids, n_generated = "", "", [], 0
        last = _Chunk()
        first: float | None = None
        reason = _interrupted(cancel, deadline)
        stream = None if reason else _Stream(self._http, request.path, request.body)
        try:
            while reason is None:
                assert stream is not None
                item = stream.get(_POLL_S if deadline is None else min(_POLL_S, deadline - time.perf_counter()))
                if item is None:
                    reason = _interrupted(cancel, deadline)
                    continue
                if item is _END:  # no final event: llama_cpp.server fails this way (e.g. prompt too long)
                    raise UserError(f"{self._http.label} ended the stream without finishing the answer "
                                    "(its log says why; a prompt longer than its context?)")
                if isinstance(item, UserError):
                    raise item
                chunk = self._backend.parse(item)
                if chunk is None:
                    continue
                last = _merge(last, chunk)
                if first is None and (chunk.text or chunk.tokens):
                    first = time.perf_counter()
                piece, piece_ids, hit_stop = self._accept(chunk)
                raw += piece
                ids += piece_ids
                n_generated += len(chunk.tokens) if chunk.tokens is not None else bool(chunk.text)
                if hit_stop:
                    reason = StopReason.EOT
                elif not raw.startswith(expect):  # still re-typing the healed text, or failed to
                    reason = _HEAL_MISMATCH if not expect.startswith(raw) else None
                    reason = reason or chunk.done or _interrupted(cancel, deadline)
                else:
                    grown, text = len(raw) - len(expect) > len(text), raw[len(expect) :]
                    reason = (stop(text) if stop and grown else None) or chunk.done or _interrupted(cancel, deadline)
                    if reason is None and n_generated >= max_tokens:
                        reason = StopReason.MAX_TOKENS
        finally:
            if stream is not None:
                stream.close()
        if reason == _HEAL_MISMATCH:
            return None, first
        if last.n_prompt and request.sent_chars:
            self._ratio.observe(request.sent_chars, last.n_prompt)
        text_prompt = isinstance(self.vocab, _CharVocab)
        n_prompt = (last.n_prompt or self._ratio.count(split[1] + split[2])) if text_prompt else len(prompt)
        reused = last.n_cached or 0
        evaluated = last.n_evaluated if last.n_evaluated is not None else max(0, n_prompt - reused)
        return Generation(text=text, token_ids=ids, stop_reason=StopReason(reason), n_prompt=n_prompt, n_reused=reused,
                          n_evaluated=evaluated), first

    def _accept(self, chunk: _Chunk) -> tuple[str, list[int], bool]:
        """The chunk's text and ids up to a stop token (llama-server streams ids; Code Llama's <EOT> is one)."""
        if isinstance(self.vocab, _CharVocab):
            return chunk.text, self.vocab.tokenize(chunk.text), False
        tokens = chunk.tokens or []
        for k, token in enumerate(tokens):
            if token in self._stop_texts:
                cut = chunk.text.find(self._stop_texts[token])
                return (chunk.text[:cut] if cut >= 0 else chunk.text), tokens[:k], True
        return chunk.text, tokens, False

    def reusable(self, prompt: Sequence[int], key: str | None = None) -> int:
        """The server keeps its own cache and speed: treated as all cached (windows are never cut for time)."""
        return len(prompt)

    def adopt(self, source: str, target: str) -> None:
        """Nothing to hand over: the server's cache is its own."""

    def close(self) -> None:
        self._http.close()


def _interrupted(cancel: threading.Event | None, deadline: float | None) -> StopReason | None:
    if cancel is not None and cancel.is_set():
        return StopReason.CANCELLED
    if deadline is not None and time.perf_counter() >= deadline:
        return StopReason.TIME_BUDGET
    return None


def _merge(last: _Chunk, chunk: _Chunk) -> _Chunk:
    """The newest server counts seen so far (only some chunks carry them)."""
    return _Chunk(
        n_prompt=chunk.n_prompt if chunk.n_prompt is not None else last.n_prompt,
        n_cached=chunk.n_cached if chunk.n_cached is not None else last.n_cached,
        n_evaluated=chunk.n_evaluated if chunk.n_evaluated is not None else last.n_evaluated,
    )
