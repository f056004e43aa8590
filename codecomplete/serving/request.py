"""A completion request as the serving layer carries it, and what comes back: shared by the scheduler, the
in-process backend and the daemon's client (which must not import an engine)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from codecomplete.config import Settings
from codecomplete.core.pipeline import Completion, Placement
from codecomplete.core.snippets import Snippet, SnippetSource
from codecomplete.types import StopReason

# Called by the worker thread with a finished completion and its cancel flag before the event loop hears of it
# (the language server writes the answer from there: a thread wake-up less per keystroke).
Deliver = Callable[[Completion, threading.Event], None]


@dataclass(frozen=True)
class Request:
    """One completion request at a cursor, as the serving layer carries it to the model thread.

    ``key`` names the document across requests (supersession, sticky windows, the caches): an LSP URI in an
    editor's own server, the client and URI in the daemon.
    """

    key: str
    text: str
    offset: int
    language: str | None
    settings: Settings | None = None
    tree: Any = None  # a tree-sitter tree of ``text`` when the caller keeps one
    path: str | None = None  # the file, for the workspace index
    index: SnippetSource | None = None
    snippets: Sequence[Snippet] | None = None  # cross-file context chosen elsewhere
    placed: Placement | None = None  # where ``text`` lies in its document when it is a window of it

    def accepted(self, suggestion: str) -> Request:
        """The request for where accepting ``suggestion`` leaves the cursor (the prefetch's)."""
        text = self.text[: self.offset] + suggestion + self.text[self.offset :]
        placed = None if self.placed is None else Placement(self.placed.start, self.placed.length + len(suggestion))
        return Request(self.key, text, self.offset + len(suggestion), self.language, self.settings, None, self.path,
                       self.index, self.snippets, placed)


@dataclass(frozen=True)
class Answer:
    """What a request got: the completion (None when it never ran) and why the scheduler ended it, if it did.

    ``shown`` is the suggestion to give the editor: nothing stale from a cancelled or superseded request; a
    preempted one keeps its complete lines."""

    completion: Completion | None
    outcome: StopReason | None = None

    @property
    def shown(self) -> str:
        if self.completion is None or self.outcome not in (None, StopReason.PREEMPTED):
            return ""
        return self.completion.suggestion
