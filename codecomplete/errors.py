"""Errors that are the user's to fix: shown as one line, never as a traceback; and background failures."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger("codecomplete")


class UserError(Exception):
    """Bad input (path, position, model, option). The CLI prints it on one line and exits 2."""


class ModelLoadError(UserError):
    """A model file that exists but cannot be loaded; the message names the file and the reason."""


def quietly(work: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run background work nobody waits for (a prefetch): a failure is logged, not raised into an unread future."""
    try:
        return work(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - nobody is there to receive it
        log.info("background work failed: %s", exc)
        return None
