"""The daemon's wire format: every request and answer body as a dataclass, read and written here for both ends.

The daemon parses bodies with ``from_json`` (a bad field is a one-line ``UserError``, HTTP 400) and the client
builds them with ``to_json``, so the two cannot drift apart. ``/infill`` speaks llama-server's shape, so
llama.vim / llama.vscode-style clients work too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from codecomplete.config import MODEL_KEYS
from codecomplete.core.pipeline import Completion, Placement
from codecomplete.core.snippets import Snippet
from codecomplete.core.source import offset_at
from codecomplete.errors import UserError
from codecomplete.types import StopReason

CLIENT_HEADER = "X-Codecomplete-Client"

_REQUIRED = object()
_TYPE_NAMES = {str: "a string", int: "an integer", bool: "true or false", list: "a list", dict: "an object"}


def field_of(body: dict[str, Any], key: str, kind: type, default: Any = _REQUIRED) -> Any:
    """``body[key]`` checked to be a ``kind``; missing or null gives ``default`` (an error when there is none)."""
    if key not in body or body[key] is None:
        if default is _REQUIRED:
            raise UserError(f"missing field {key!r}")
        return default
    value = body[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise UserError(f"field {key!r} must be {_TYPE_NAMES[kind]}, got {value!r}"[:200])
    return value


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise UserError("request body must be a JSON object")
    return body


@dataclass(frozen=True)
class CompleteRequest:
    """``POST /v1/complete``: a document (or a window of it), the cursor, and how to complete there.

    ``doc`` names the document across requests (with the client, the daemon's key for supersession, sticky
    windows and caches); ``placed`` says where ``text`` lies in that document (wire: ``span`` [start, length]).
    """

    text: str
    offset: int
    language: str | None = None
    doc: str = ""
    settings: dict[str, Any] | None = None
    placed: Placement | None = None
    snippets: tuple[Snippet, ...] | None = None  # cross-file context chosen by the editor's process
    path: str | None = None  # the document's path relative to its workspace, for the snippets' headers
    id: str | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"text": self.text, "offset": self.offset, "language": self.language,
                                "doc": self.doc, "settings": self.settings}
        if self.placed is not None:
            data["span"] = [self.placed.start, self.placed.length]
        if self.snippets is not None:
            data["snippets"] = [{"path": s.path, "text": s.text} for s in self.snippets]
        if self.path is not None:
            data["path"] = self.path
        if self.id is not None:
            data["id"] = self.id
        return data

    @classmethod
    def from_json(cls, body: Any) -> CompleteRequest:
        """The cursor is ``offset`` (characters) or ``position`` {line, character} (0-based, in characters)."""
        body = _object(body)
        text = field_of(body, "text", str)
        if body.get("offset") is not None:
            offset = field_of(body, "offset", int)
            if not 0 <= offset <= len(text):
                raise UserError(f"offset {offset} is outside the text (0..{len(text)})")
        else:
            position = field_of(body, "position", dict)
            offset = offset_at(text, field_of(position, "line", int), field_of(position, "character", int))
        settings = field_of(body, "settings", dict, None)
        return cls(text=text, offset=offset, language=field_of(body, "language", str, None),
                   doc=field_of(body, "doc", str, ""), settings=settings, placed=_placement(body, text),
                   snippets=_snippets(body), path=field_of(body, "path", str, None), id=field_of(body, "id", str, None))


def _placement(body: dict[str, Any], text: str) -> Placement | None:
    span = field_of(body, "span", list, None)
    if span is None:
        return None
    if (len(span) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in span)
            or not 0 <= span[0] <= span[0] + len(text) <= span[1]):
        raise UserError(f"field 'span' must be [start, length] placing the text in its document, got {span!r}"[:200])
    return Placement(span[0], span[1])


def _snippets(body: dict[str, Any]) -> tuple[Snippet, ...] | None:
    raw = body.get("snippets")
    if raw is None:
        return None
    if not isinstance(raw, list) or not all(isinstance(s, dict) for s in raw):
        raise UserError("snippets must be a list of {path, text} objects")
    return tuple(Snippet(field_of(s, "path", str), 0, 0, field_of(s, "text", str), 0.0) for s in raw)


@dataclass(frozen=True)
class CompleteResponse:
    """The answer to ``/v1/complete``: the completion's JSON, the request id, and the scheduler's outcome as
    ``stop_reason`` when it ended the request (then with no suggestion, unless it was preempted)."""

    id: str
    completion: Completion | None
    outcome: StopReason | None = None

    def to_json(self) -> dict[str, Any]:
        data = self.completion.to_json() if self.completion is not None else {"completion": ""}
        if self.outcome is not None:
            data["stop_reason"] = self.outcome.value
            if self.outcome != StopReason.PREEMPTED:
                data["completion"] = ""  # cancelled or superseded: nothing stale reaches an editor
        data["id"] = self.id
        return data

    @classmethod
    def from_json(cls, data: Any) -> CompleteResponse:
        data = _object(data)
        reason = StopReason(data.get("stop_reason") or StopReason.CANCELLED)
        if "prompt" not in data:  # ended before it ran: no completion, only the outcome
            return cls(str(data.get("id", "")), None, reason)
        completion = Completion.from_json(data)
        scheduler_ended = reason in (StopReason.SUPERSEDED, StopReason.DISCONNECTED, StopReason.PAUSED,
                                     StopReason.SHUTDOWN)
        return cls(str(data.get("id", "")), completion, reason if scheduler_ended else None)


@dataclass(frozen=True)
class InfillRequest:
    """llama-server's ``POST /infill``: prefix, the typed part of the cursor line, suffix, extra chunks."""

    prefix: str
    suffix: str
    extra: str  # the input_extra chunks, joined as llama-server joins them
    overrides: dict[str, Any]  # settings: n_predict, t_max_predict_ms, cache_prompt
    language: str | None = None  # ours, not llama-server's; optional
    stream: bool = False

    @classmethod
    def from_json(cls, body: Any) -> InfillRequest:
        body = _object(body)
        extra = ""
        for chunk in field_of(body, "input_extra", list, []):
            if not isinstance(chunk, dict):
                raise UserError("input_extra must be a list of {filename, text} objects")
            extra += "\n\n--- snippet ---\n\n" + field_of(chunk, "text", str, "")  # llama-server's separator
        if extra:
            extra += "\n\n"
        overrides: dict[str, Any] = {}
        n_predict = field_of(body, "n_predict", int, -1)
        if n_predict > 0:
            overrides["max_tokens"] = overrides["max_tokens_single_line"] = n_predict
        t_max = field_of(body, "t_max_predict_ms", int, 0)
        if t_max > 0:
            overrides["time_budget_ms"] = t_max
        overrides["reuse"] = field_of(body, "cache_prompt", bool, True)
        return cls(prefix=field_of(body, "input_prefix", str, "") + field_of(body, "prompt", str, ""),
                   suffix=field_of(body, "input_suffix", str, ""), extra=extra, overrides=overrides,
                   language=field_of(body, "language", str, None), stream=field_of(body, "stream", bool, False))

    @property
    def text(self) -> str:
        return self.extra + self.prefix + self.suffix

    @property
    def offset(self) -> int:
        return len(self.extra) + len(self.prefix)


_STOP_TYPES = {"eot": "eos", "eos": "eos", "max_tokens": "limit", "time_budget": "limit"}


def infill_answer(result: Completion | None, outcome: StopReason | None, n_ctx: int, n_predict: int) -> dict[str, Any]:
    """A completion in llama-server's ``/infill`` answer shape (the fields llama.vim and others read)."""
    data = result.to_json() if result is not None else {}
    content = "" if outcome not in (None, StopReason.PREEMPTED) else data.get("completion", "")
    reason = outcome.value if outcome is not None else data.get("stop_reason", "")
    tokens = data.get("tokens", {})
    timings = data.get("timings_ms", {})
    prompt_n, prompt_ms = tokens.get("evaluated", 0), timings.get("prompt_eval", 0.0)
    predicted_n, predicted_ms = tokens.get("generated", 0), timings.get("generate", 0.0)
    stop_type = "none" if outcome else _STOP_TYPES.get(reason, "eos")  # post-processing stops end the answer
    return {
        "content": content,
        "id_slot": 0,
        "stop": True,
        "model": data.get("model", ""),
        "tokens_predicted": predicted_n,
        "tokens_evaluated": tokens.get("prompt", 0),
        "tokens_cached": tokens.get("reused", 0),
        "prompt": data.get("prompt", ""),
        "has_new_line": "\n" in content,
        "truncated": False,
        "stop_type": stop_type,
        "stopped_eos": stop_type == "eos",
        "stopped_limit": stop_type == "limit",
        "stopped_word": False,
        "stopping_word": "",
        "stop_reason": reason,  # ours: the exact reason (eot, block end, time budget, cancelled, ...)
        "generation_settings": {"n_ctx": n_ctx, "n_predict": n_predict, "temperature": 0.0, "top_k": 1,
                                "model": data.get("model", "")},
        "timings": {
            "prompt_n": prompt_n,
            "prompt_ms": prompt_ms,
            "prompt_per_token_ms": prompt_ms / prompt_n if prompt_n else 0.0,
            "prompt_per_second": prompt_n * 1000 / prompt_ms if prompt_ms else 0.0,
            "predicted_n": predicted_n,
            "predicted_ms": predicted_ms,
            "predicted_per_token_ms": predicted_ms / predicted_n if predicted_n else 0.0,
            "predicted_per_second": predicted_n * 1000 / predicted_ms if predicted_ms else 0.0,
        },
    }


@dataclass(frozen=True)
class ModelRequest:
    """``POST /model``: model-level settings to switch every editor to."""

    overrides: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return dict(self.overrides)

    @classmethod
    def from_json(cls, body: Any) -> ModelRequest:
        body = _object(body)
        unknown = sorted(set(body) - set(MODEL_KEYS))
        if unknown:
            raise UserError(f"POST /model takes {', '.join(MODEL_KEYS)}; not {', '.join(unknown)}")
        return cls(body)


@dataclass(frozen=True)
class CancelRequest:
    """``POST /cancel``: stop the request with this id."""

    id: str

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id}

    @classmethod
    def from_json(cls, body: Any) -> CancelRequest:
        return cls(field_of(_object(body), "id", str))


@dataclass(frozen=True)
class ForgetRequest:
    """``POST /v1/forget``: a document was closed; its on-screen suggestion is gone."""

    doc: str

    def to_json(self) -> dict[str, Any]:
        return {"doc": self.doc}

    @classmethod
    def from_json(cls, body: Any) -> ForgetRequest:
        return cls(field_of(_object(body), "doc", str))
