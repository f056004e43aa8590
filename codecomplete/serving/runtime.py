"""The daemon's private place: the runtime dir holding its socket, endpoint file, locks and log.

The daemon listens on a Unix socket (0600) inside the user's runtime dir (0700), or on loopback TCP with a random
token kept in a 0600 file where Unix sockets are missing (Windows). ``daemon.json`` beside the socket says which,
so every client finds the same daemon.
"""

from __future__ import annotations

import json
import os
import secrets
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import platformdirs

from codecomplete.errors import UserError

RUNTIME_ENV = "CODECOMPLETE_RUNTIME_DIR"
SOCKET_NAME = "daemon.sock"
ENDPOINT_NAME = "daemon.json"  # where the daemon listens (and its TCP token): 0600
SERVE_LOCK_NAME = "serve.lock"  # held by the daemon for its whole life: one daemon per runtime dir
START_LOCK_NAME = "start.lock"  # held by a client while it starts a daemon: two editors make one daemon
LOG_NAME = "daemon.log"


def runtime_dir(create: bool = True) -> Path:
    """The private directory holding the socket, endpoint file, locks and log (``CODECOMPLETE_RUNTIME_DIR``)."""
    env = os.environ.get(RUNTIME_ENV)
    if env:
        path = Path(env).expanduser()
    else:
        with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset and falls back to /tmp
            warnings.simplefilter("ignore")
            path = Path(platformdirs.user_runtime_dir("codecomplete"))
    if create:
        try:
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create the runtime dir {path}: {exc.strerror}") from None
        if os.name == "posix":
            st = path.stat()
            if st.st_uid != os.getuid():
                raise UserError(f"runtime dir {path} belongs to another user; set {RUNTIME_ENV}")
            if st.st_mode & 0o077:
                path.chmod(0o700)
    return path


@dataclass(frozen=True)
class Endpoint:
    """Where a daemon listens, as written to ``daemon.json``."""

    transport: str  # "unix" or "tcp"
    pid: int
    version: str
    path: str | None = None  # unix socket
    host: str | None = None  # tcp
    port: int | None = None
    token: str | None = None  # tcp only: the socket itself is not private

    @property
    def base_url(self) -> str:
        return "http://codecomplete" if self.transport == "unix" else f"http://{self.host}:{self.port}"

    def describe(self) -> str:
        return f"unix:{self.path}" if self.transport == "unix" else f"tcp:{self.host}:{self.port}"


def read_endpoint(directory: Path) -> Endpoint | None:
    try:
        data = json.loads((directory / ENDPOINT_NAME).read_text(encoding="utf-8"))
        return Endpoint(**data)
    except (OSError, ValueError, TypeError):
        return None


def write_endpoint(directory: Path, endpoint: Endpoint) -> None:
    """Atomically, created 0600 (the TCP token must never be readable by others, not even for a moment)."""
    tmp = directory / f".{ENDPOINT_NAME}.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(asdict(endpoint), f)
    os.replace(tmp, directory / ENDPOINT_NAME)


def new_token() -> str:
    return secrets.token_urlsafe(32)
