"""`codecomplete models pull`: download a catalog model from its hub, fail fast offline, verify what arrived."""

from __future__ import annotations

import hashlib
import itertools
import os
import socket
import threading
import time
import urllib.request
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from codecomplete.errors import UserError
from codecomplete.models.catalog import (
    CatalogEntry,
    embedded_model_or_error,
    load_catalog,
    models_dir,
    unknown_model_error,
)
from codecomplete.models.gguf import validate_gguf

DEFAULT_ENDPOINT = "https://huggingface.co"
# Budget for the reachability probe (DNS + TCP connect) so `pull` fails in well under 2 s when offline.
PROBE_TIMEOUT_S = 1.5
# Under models_dir(): downloads that failed a check are kept here for inspection, never overwritten.
REJECTED_DIR = "rejected"


def hub_endpoint() -> str:
    """The hub base URL, read at call time (huggingface_hub reads HF_ENDPOINT once, at import)."""
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def _hf_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")


def check_reachable(url: str, timeout: float = PROBE_TIMEOUT_S) -> None:
    """Raise UserError unless a TCP connection to ``url``'s host (or its proxy) opens within ``timeout``.

    huggingface_hub retries an unreachable hub for ~20 s; this answers in ``timeout``. DNS runs in a
    daemon thread because getaddrinfo ignores socket timeouts and can hang far longer.
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    target_host, target_port = _proxy_for(parts.scheme, host) or (host, port)
    deadline = time.monotonic() + timeout
    found: dict[str, Any] = {}

    def resolve() -> None:
        try:
            found["addrs"] = socket.getaddrinfo(target_host, target_port, type=socket.SOCK_STREAM)
        except OSError as exc:
            found["error"] = exc

    thread = threading.Thread(target=resolve, name="codecomplete-dns-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    if "addrs" not in found:
        reason = found.get("error") or "DNS lookup timed out"
        raise UserError(f"cannot reach {host} (offline?): {_one_line(reason)}")
    last: object = "connection timed out"
    for family, kind, proto, _, address in found["addrs"]:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        try:
            with socket.socket(family, kind, proto) as sock:
                sock.settimeout(remaining)
                sock.connect(address)
            return
        except OSError as exc:
            last = exc
    raise UserError(f"cannot reach {host} (offline?): {_one_line(last)}")


def _proxy_for(scheme: str, host: str) -> tuple[str, int] | None:
    """The (host, port) of the proxy the HTTP client would use for ``host``, if any (env settings)."""
    proxy = urllib.request.getproxies().get(scheme)
    if not proxy or urllib.request.proxy_bypass(host):
        return None
    parts = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    if not parts.hostname:
        return None
    return parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)


def _one_line(reason: object) -> str:
    text = str(reason).strip() or type(reason).__name__
    return text.splitlines()[0]


def pull(name: str, *, progress: bool = True, catalog: Mapping[str, CatalogEntry] | None = None) -> Path:
    """Download catalog model ``name`` into ``models_dir()`` and check it; return its path.

    A file already present with the catalog size is returned without touching the network. After
    a download the size (and sha256, when the catalog knows it) must match and the GGUF structure must
    be whole, else the file is moved to ``models_dir()/rejected/`` and a UserError says which check failed.
    """
    catalog = load_catalog() if catalog is None else catalog
    entry = catalog.get(name)
    if entry is None:
        raise unknown_model_error(name, catalog)
    if entry.source == "wheel":
        return embedded_model_or_error()
    dest = models_dir() / entry.file
    if dest.is_file() and entry.size in (None, dest.stat().st_size):
        return dest
    if _hf_offline():
        raise UserError(f"model {name} is not downloaded and HF_HUB_OFFLINE is set")
    endpoint = hub_endpoint()
    check_reachable(endpoint)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create models directory {dest.parent}: {exc.strerror or exc}") from None
    _download(entry, endpoint, progress=progress, force=dest.exists())
    _verify_download(entry, dest, progress=progress)
    return dest


def _download(entry: CatalogEntry, endpoint: str, *, progress: bool, force: bool) -> None:
    """hf_hub_download into models_dir(), with the hub's errors turned into one-line UserErrors."""
    import httpx2
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
        XetDownloadError,
    )

    options: dict[str, Any] = {
        "repo_id": entry.repo,
        "filename": entry.file,
        "revision": entry.revision,
        "local_dir": models_dir(),
        "endpoint": endpoint,
        "tqdm_class": None if progress else _quiet_tqdm(),
    }
    where = f"{entry.repo}/{entry.file}"
    try:
        if entry.size is not None:
            # One HEAD call first: a stale catalog fails now, not after gigabytes of download.
            info = hf_hub_download(**options, dry_run=True)
            remote_size = getattr(info, "file_size", None)
            if info.will_download and remote_size is not None and remote_size != entry.size:
                raise UserError(
                    f"{where} is {remote_size} bytes on the hub but the catalog expects {entry.size}; "
                    "not downloading (the catalog may be out of date)"
                )
        hf_hub_download(**options, force_download=force)
    except LocalEntryNotFoundError as exc:  # before OSError: the hub went away mid-way
        cause = exc.__cause__ or exc
        raise UserError(f"cannot download {where} (offline?): {_one_line(cause)}") from None
    except GatedRepoError:
        raise UserError(f"{entry.repo} is gated: accept its license on the hub and log in (hf auth login)") from None
    except RepositoryNotFoundError:
        raise UserError(f"repository {entry.repo} not found on {endpoint}") from None
    except RevisionNotFoundError:
        raise UserError(f"revision {entry.revision} of {entry.repo} not found on {endpoint}") from None
    except RemoteEntryNotFoundError:
        raise UserError(f"{where} not found on {endpoint}") from None
    except (HfHubHTTPError, httpx2.HTTPError, XetDownloadError) as exc:
        raise UserError(f"cannot download {where}: {_one_line(exc)}") from None
    except OSError as exc:  # disk full, permissions, size consistency check
        raise UserError(f"cannot download {where}: {_one_line(exc)}") from None


def _quiet_tqdm() -> type:
    from huggingface_hub.utils import tqdm

    class QuietTqdm(tqdm):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

    return QuietTqdm


def _verify_download(entry: CatalogEntry, path: Path, *, progress: bool) -> None:
    """Size, then sha256, then GGUF structure; a file that fails one is moved aside, never deleted outright.

    Only a completed download gets here: huggingface_hub keeps an interrupted one in its own
    ``.incomplete`` file (resumed by the next pull), which this never touches.
    """
    actual = path.stat().st_size
    failed = None  # (check, expected, actual)
    if entry.size is not None and actual != entry.size:
        failed = ("size", f"{entry.size} bytes", f"{actual} bytes")
    elif entry.sha256 is not None:
        digest = sha256_file(path, progress=progress)
        if digest != entry.sha256:
            failed = ("sha256", entry.sha256, digest)
    if failed is None:
        try:
            validate_gguf(path)
        except UserError as exc:
            failed = ("GGUF structure", "a complete GGUF model file", str(exc).removesuffix(f": {path}"))
    if failed is None:
        return
    check, expected, got = failed
    try:
        kept = f"kept it as {_move_aside(path)}"
    except OSError as exc:
        path.unlink(missing_ok=True)  # never leave it where pull and resolve_model would take it as good
        kept = f"could not keep it aside ({exc.strerror or exc}), so it was deleted"
    raise UserError(
        f"downloaded {entry.file} failed the {check} check (expected {expected}, got {got}); {kept}; "
        f"run `codecomplete models pull {entry.name}` to download it again"
    )


def _utc_stamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def _move_aside(path: Path) -> Path:
    """Move ``path`` to ``models_dir()/rejected/<name>.<UTC timestamp>`` (``-2``, ``-3``... on a clash); return it.

    The new name is reserved with O_EXCL before the rename, so an earlier rejected file is never overwritten.
    """
    rejected = models_dir() / REJECTED_DIR
    rejected.mkdir(parents=True, exist_ok=True)
    base = f"{path.name}.{_utc_stamp()}"
    for n in itertools.count(1):
        target = rejected / (base if n == 1 else f"{base}-{n}")
        try:
            os.close(os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        except FileExistsError:
            continue
        try:
            os.replace(path, target)
        except OSError:
            target.unlink(missing_ok=True)
            raise
        return target
    raise AssertionError("unreachable")  # pragma: no cover


def sha256_file(path: Path, *, progress: bool = False) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks (optionally with a progress bar)."""
    from huggingface_hub.utils import tqdm

    digest = hashlib.sha256()
    chunk = bytearray(1 << 20)
    view = memoryview(chunk)
    total = path.stat().st_size
    with (
        path.open("rb") as fh,
        tqdm(total=total, unit="B", unit_scale=True, desc=f"sha256 {path.name}", disable=not progress) as bar,
    ):
        while n := fh.readinto(chunk):
            digest.update(view[:n])
            bar.update(n)
    return digest.hexdigest()
