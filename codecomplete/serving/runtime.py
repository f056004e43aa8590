"""The daemon's private place: the runtime dir holding its socket, endpoint file, locks and log.

The daemon listens on a Unix socket (0600) inside the user's runtime dir (0700), or on loopback TCP with a random
token kept in a 0600 file where Unix sockets are missing (Windows). ``daemon.json`` beside the socket says which,
so every client finds the same daemon.

The runtime dir is private by construction, because whoever controls it controls where editors send their code:
it lives where no other user can create it first (``$XDG_RUNTIME_DIR``, else the user's own cache dir, never a
fixed name in the shared temp dir), and it is refused when it is a symlink, belongs to someone else, or sits in a
parent directory that other users could rename it in. It is created with ``mkdir`` 0700 and fixed through a file
descriptor opened without following symlinks, so no check can be raced by swapping the path.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import stat
import sys
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
_FALLBACK_NAME = "run"  # under the user's cache dir: short, so the socket path stays within sun_path's limit


def default_runtime_dir() -> Path:
    """Where the runtime dir is when ``CODECOMPLETE_RUNTIME_DIR`` does not say: a place only this user can create.

    ``$XDG_RUNTIME_DIR`` (per user, made by the login manager) when it is set; otherwise, and on macOS, the
    user's cache dir, never platformdirs' fallback of a fixed name under the shared temp dir, which another user
    could create first.
    """
    if os.name != "posix":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return Path(platformdirs.user_runtime_dir("codecomplete"))  # under the user's own profile
    xdg = os.environ.get("XDG_RUNTIME_DIR", "")
    if sys.platform != "darwin" and xdg and os.path.isabs(xdg) and os.path.isdir(xdg):
        return Path(xdg) / "codecomplete"
    return Path(platformdirs.user_cache_dir("codecomplete")) / _FALLBACK_NAME


def runtime_dir(create: bool = True) -> Path:
    """The private directory holding the socket, endpoint file, locks and log (``CODECOMPLETE_RUNTIME_DIR``).

    With ``create``, made (or checked) private: a one-line UserError says what is wrong and what to do. The
    path is absolute, so a daemon started elsewhere (another working directory) finds the same place.
    """
    env = os.environ.get(RUNTIME_ENV)
    path = Path(env).expanduser() if env else default_runtime_dir()
    path = Path(os.path.abspath(path))
    if create:
        make_private_dir(path, own_parent=not env)
    return path


def make_private_dir(path: Path, *, own_parent: bool = False) -> None:
    """Create ``path`` 0700, or check an existing one: refused when it is a symlink or not a directory, belongs
    to another user, or lies in a parent other users may write to (they could swap it); fixed to 0700 when its
    mode lets others in.

    Only the parent is opened by name; the runtime dir itself is created and opened relative to the parent's
    descriptor, without following symlinks, and its mode is fixed through its own descriptor. With
    ``own_parent`` (the default location: our own cache dir, which other tools of ours create under a umask of
    002), a parent of this user's that others may write to loses that write permission, through its descriptor,
    instead of being refused; a parent the user chose is never changed.
    """
    path = Path(os.path.abspath(path))
    if os.name != "posix":
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create the runtime dir {path}: {exc.strerror}; set {RUNTIME_ENV}") from None
        return
    parent = path.parent
    try:
        parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        parent_fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        raise UserError(f"cannot create the runtime dir {path}: {exc.strerror}; set {RUNTIME_ENV}") from None
    try:
        parent_st = os.fstat(parent_fd)
        if own_parent and parent_st.st_uid == os.getuid() and parent_st.st_mode & 0o022:
            os.fchmod(parent_fd, stat.S_IMODE(parent_st.st_mode) & ~0o022)
            parent_st = os.fstat(parent_fd)
        _check_parent(parent, parent_st)
        try:
            os.mkdir(path.name, 0o700, dir_fd=parent_fd)
        except FileExistsError:
            pass  # checked below, like any existing directory
        except OSError as exc:
            raise UserError(f"cannot create the runtime dir {path}: {exc.strerror}; set {RUNTIME_ENV}") from None
        fd = _open_dir(path, parent_fd)
        try:
            st = os.fstat(fd)
            _check_owner(path, st)
            if stat.S_IMODE(st.st_mode) != 0o700:
                os.fchmod(fd, 0o700)
        finally:
            os.close(fd)
    finally:
        os.close(parent_fd)


def check_private_dir(path: Path) -> None:
    """The checks of ``make_private_dir`` on an existing directory, changing nothing: a client trusts the
    endpoint file it reads from ``path`` only when this passes (UserError otherwise)."""
    if os.name != "posix":
        return
    path = Path(os.path.abspath(path))
    try:
        parent_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        raise UserError(f"cannot open the runtime dir {path}: {exc.strerror}; set {RUNTIME_ENV}") from None
    try:
        _check_parent(path.parent, os.fstat(parent_fd))
        fd = _open_dir(path, parent_fd)
        try:
            st = os.fstat(fd)
        finally:
            os.close(fd)
    finally:
        os.close(parent_fd)
    _check_owner(path, st)
    if st.st_mode & 0o022:
        raise UserError(f"runtime dir {path} is writable by other users ({stat.S_IMODE(st.st_mode):04o}); "
                        f"run: chmod 700 {path}")


def _open_dir(path: Path, parent_fd: int) -> int:
    """A descriptor of the directory ``path`` (named relative to its parent's descriptor), never of a symlink."""
    try:
        if stat.S_ISLNK(os.lstat(path.name, dir_fd=parent_fd).st_mode):
            raise UserError(f"runtime dir {path} is a symlink; remove it, or set {RUNTIME_ENV} to a private dir")
        return os.open(path.name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent_fd)
    except UserError:
        raise
    except OSError as exc:
        if exc.errno in (errno.ENOTDIR, errno.ELOOP):  # a file, or a symlink swapped in after the lstat
            raise UserError(f"runtime dir {path} is not a directory (or is a symlink); remove it, "
                            f"or set {RUNTIME_ENV} to a private dir") from None
        raise UserError(f"cannot open the runtime dir {path}: {exc.strerror}; set {RUNTIME_ENV}") from None


def _check_owner(path: Path, st: os.stat_result) -> None:
    if st.st_uid != os.getuid():
        raise UserError(f"runtime dir {path} belongs to another user (uid {st.st_uid}); "
                        f"set {RUNTIME_ENV} to a dir of your own")


def _check_parent(parent: Path, st: os.stat_result) -> None:
    """The parent decides who can rename or replace the runtime dir: only this user, or root; a directory
    others may write to only when it is sticky and root's (like /tmp), where nobody else can move our entry."""
    uid = os.getuid()
    if st.st_uid not in (uid, 0):
        raise UserError(f"the runtime dir's parent {parent} belongs to another user (uid {st.st_uid}); "
                        f"set {RUNTIME_ENV} to a dir of your own")
    if st.st_mode & 0o022 and not (st.st_mode & stat.S_ISVTX and st.st_uid == 0):
        raise UserError(f"the runtime dir's parent {parent} is writable by other users "
                        f"({stat.S_IMODE(st.st_mode):04o}); set {RUNTIME_ENV} to a dir of your own")


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
