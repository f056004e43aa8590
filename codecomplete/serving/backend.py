"""What the language server completes with: the ``CompletionBackend`` seam and its in-process implementation.

The LSP layer talks to one ``CompletionBackend`` and never asks which: ``LocalBackend`` (the model in the editor's
own server, through the same scheduler the daemon uses, with one client) or ``client.DaemonBackend`` (the shared
daemon). Where one side has nothing to do, its method is a real no-op.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Protocol

from codecomplete.config import MODEL_KEYS, Settings
from codecomplete.serving.request import Answer, Deliver, Request
from codecomplete.serving.scheduler import Scheduler
from codecomplete.serving.service import CompletionService


class CompletionBackend(Protocol):
    """Completions for one editor's language server."""

    wants_tree: bool  # requests should carry the document's syntax tree (it is used in this process)

    @property
    def settings(self) -> Settings: ...

    @property
    def state(self) -> str: ...  # idle, loading, ready or error

    @property
    def error(self) -> str | None: ...

    @property
    def ready(self) -> bool: ...

    def set_notifier(self, notify: Callable[[str], None]) -> None:
        """Where to report trouble the editor should see (the daemon went away); thread-safe callers only."""

    def update_settings(self, settings: Settings) -> bool:
        """Switch settings; True when the model must be (re)loaded for them."""

    async def load(self) -> None:
        """Get the model ready (here, or in the daemon); failures end in ``state == "error"``, except a switch to
        settings that cannot load, which leaves the previous model serving and raises UserError with the reason."""

    async def complete(self, request: Request, *, deliver: Deliver | None = None) -> Answer: ...

    def warm(self, key: str, text: str, prepare: Callable[[threading.Event], None] | None,
             done: Callable[[], None]) -> None:
        """A document was opened: read it ahead while the model is idle (``prepare`` first); ``done`` at the end."""

    def forget(self, key: str) -> None:
        """A document was closed: drop what is kept for it and stop its request."""

    async def status(self) -> dict[str, Any]: ...

    def summary(self) -> dict[str, Any]:
        """state, error, model, model_name and family, without a round trip (for status notifications)."""

    def last_completion(self) -> dict[str, Any] | None:
        """The last completion's JSON: the exact prompt, tokens, timings and stop reason."""

    def close(self) -> None: ...


class LocalBackend:
    """The model in this process, through a scheduler with a single client."""

    wants_tree = True
    CLIENT = "lsp"

    def __init__(self, settings: Settings) -> None:
        self.service = CompletionService(settings)
        self.scheduler = Scheduler(self.service)
        self.scheduler.start()
        self._switch_to: Settings | None = None  # settings the next load switches to (the model serves others)

    @property
    def settings(self) -> Settings:
        return self.service.settings

    @property
    def state(self) -> str:
        return self.service.state

    @property
    def error(self) -> str | None:
        return self.service.error

    @property
    def ready(self) -> bool:
        return self.service.ready

    def set_notifier(self, notify: Callable[[str], None]) -> None:
        """Nothing here goes away behind the editor's back."""

    def update_settings(self, settings: Settings) -> bool:
        if self.service.completer is None:  # nothing loaded yet: the first load takes these
            return self.service.update_settings(settings)
        reload = any(getattr(settings, k) != getattr(self.service.settings, k) for k in MODEL_KEYS)
        if reload:
            self._switch_to = settings
        else:
            self.service.update_settings(settings)
        return reload or self.service.state == "error"

    async def load(self) -> None:
        switch_to, self._switch_to = self._switch_to, None
        if switch_to is not None:
            await self.scheduler.switch(self.CLIENT, switch_to)
        else:
            await self.scheduler.load(self.CLIENT)

    async def complete(self, request: Request, *, deliver: Deliver | None = None) -> Answer:
        return await self.scheduler.complete(self.CLIENT, request, deliver=deliver)

    def warm(self, key: str, text: str, prepare: Callable[[threading.Event], None] | None,
             done: Callable[[], None]) -> None:
        self.scheduler.warm(self.CLIENT, key, text, prepare, done)

    def forget(self, key: str) -> None:
        self.service.forget(key)
        self.scheduler.cancel_key(self.CLIENT, key)

    async def status(self) -> dict[str, Any]:
        return self.service.status()

    def summary(self) -> dict[str, Any]:
        return self.service.summary()

    def last_completion(self) -> dict[str, Any] | None:
        last = self.service.last
        return last.to_json() if last else None

    def close(self) -> None:
        self.scheduler.stop()
