"""Settings shared by the CLI, the language server and the daemon.

Precedence, lowest first: built-in defaults, the user's TOML config file, then per-call overrides (CLI options,
LSP ``initializationOptions`` / ``workspace/didChangeConfiguration``). Editors send camelCase keys, the TOML file
uses snake_case; both are accepted everywhere so one vocabulary serves every entry point.
"""

from __future__ import annotations

import os
import re
import stat
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import platformdirs

from codecomplete.errors import UserError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

FORMATS = ("auto", "psm", "spm", "prefix")
REMOTE_BACKENDS = ("llama-server", "llama-server-infill", "openai", "ollama")
FIM_FAMILIES = ("auto", "none", "codellama", "starcoder", "deepseek", "qwen", "codestral")
# Settings that need the model loaded again when they change; the daemon keeps its own for every editor.
MODEL_KEYS = (
    "model", "n_ctx", "n_threads", "n_gpu_layers", "main_gpu", "flash_attn", "kv_slots", "backend", "remote_url", "fim",
)


@dataclass(frozen=True)
class Settings:
    model: str | None = None  # catalog name or GGUF path; None → the embedded default model
    format: str = "auto"  # FIM layout: auto (from the model), psm, spm or prefix
    max_tokens: int = 128  # generation cap for multi-line suggestions
    max_tokens_single_line: int = 48  # a single line rarely needs more; saves time on CPU
    token_budget: int = 3000  # prompt tokens for prefix + suffix windows (sized for a 4k context)
    time_budget_ms: int = 2000  # wall time for prompt evaluation plus generation
    n_ctx: int = 4096
    n_threads: int | None = None  # None → llama.cpp's choice
    n_gpu_layers: int | None = None  # None → all layers when llama.cpp has a GPU backend, else 0
    main_gpu: int = 0  # the GPU for the whole model / small tensors when several are present
    flash_attn: bool = False  # llama.cpp's flash attention (CUDA/Metal); off disables nothing on CPU
    kv_slots: int = 0  # documents whose prompts stay in the KV cache side by side; 0: what 512 MiB hold (1-4)
    postprocess: bool = True
    postprocess_skip: list[str] = field(default_factory=list)  # post-processing rules left out (names: eval --ablate)
    reuse: bool = True  # KV-cache reuse and cached answers; off = a fresh evaluation per request (baseline)
    kv_shift: bool = False  # also shift moved cached chunks into place (faster, approximate: may change output)
    prefetch: bool = True  # after a suggestion, compute the next one for where accepting it leaves the cursor
    enabled: bool = True
    # local: llama.cpp in this process (or the shared daemon); else a running server that gets the prompt:
    # llama-server, llama-server-infill, openai (/v1/completions) or ollama. `model` is then the server's name.
    backend: str = "local"
    remote_url: str | None = None  # that server's base URL; None → its loopback default
    fim: str = "auto"  # FIM family of remote text prompts: auto (ask the server), none, codellama, starcoder, ...
    languages: dict[str, bool] = field(default_factory=dict)  # per-language enable/disable
    repo_context: bool = True  # snippets from other workspace files in the prompt
    repo_context_budget: int = 1024  # prompt tokens for them (taken from the context window's room)
    repo_include: list[str] = field(default_factory=list)  # globs the workspace index keeps (empty: all)
    repo_exclude: list[str] = field(default_factory=list)  # globs it leaves out (besides .gitignore etc.)

    def with_overrides(self, overrides: Mapping[str, Any] | None) -> Settings:
        """Apply overrides given in snake_case or camelCase; None values mean "leave as is"."""
        if not overrides:
            return self
        known = {f.name: f for f in fields(self)}
        changes: dict[str, Any] = {}
        for raw_key, value in overrides.items():
            key = _snake(raw_key)
            if key not in known:
                raise UserError(f"unknown setting {raw_key!r} (known: {', '.join(sorted(known))})")
            if value is None:
                continue
            changes[key] = _check_type(key, value)
        return replace(self, **changes) if changes else self

    def language_enabled(self, language: str | None) -> bool:
        return self.enabled and self.languages.get(language or "", True)


def _snake(key: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower()


def split_known(options: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Editors send their own keys too (e.g. a server path): keep ours, name the rest."""
    known = {f.name for f in fields(Settings)}
    ours = {k: v for k, v in options.items() if _snake(k) in known}
    return ours, sorted(set(options) - set(ours))


# Checked by their declared types, so a new setting cannot be forgotten here.
_INT_KEYS = frozenset(f.name for f in fields(Settings) if f.type in ("int", "int | None"))
_BOOL_KEYS = frozenset(f.name for f in fields(Settings) if f.type == "bool")


# Integer settings' ranges: one editor's setting reaches the shared daemon, and an absurd one (n_threads 100000
# segfaulted llama.cpp; n_ctx 10^9 grew memory without bound) must be refused where it enters. n_threads is also
# bounded by the machine (logical CPUs); n_ctx by the model and by memory when it loads (engines/llama.py).
_RANGES: dict[str, tuple[int, int]] = {
    "max_tokens": (1, 4096),
    "max_tokens_single_line": (1, 4096),
    "token_budget": (16, 1 << 17),
    "time_budget_ms": (1, 3_600_000),
    "n_ctx": (256, 1 << 17),
    "n_threads": (1, 1024),
    "n_gpu_layers": (-1, 100_000),
    "main_gpu": (0, 64),
    "kv_slots": (0, 16),
    "repo_context_budget": (0, 1 << 16),
}
_MAX_STRING = 4096  # a model path or a URL; longer is garbage


def _check_type(key: str, value: Any) -> Any:
    if key in _INT_KEYS:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"setting {key} must be an integer, got {value!r}"[:200])
        low, high = _RANGES[key]
        if key == "n_threads":
            high = os.cpu_count() or 1
        if not low <= value <= high:
            raise UserError(f"setting {key} must be between {low} and {high}, got {value}"
                            + (" (the logical CPUs of this machine)" if key == "n_threads" else ""))
        return value
    if key in _BOOL_KEYS:
        if not isinstance(value, bool):
            raise UserError(f"setting {key} must be true or false, got {value!r}")
        return value
    if key == "format":
        if value not in FORMATS:
            raise UserError(f"setting format must be one of {', '.join(FORMATS)}, got {value!r}")
        return value
    if key == "backend":
        if value not in ("local", *REMOTE_BACKENDS):
            raise UserError(f"setting backend must be one of local, {', '.join(REMOTE_BACKENDS)}, got {value!r}")
        return value
    if key == "fim":
        if value not in FIM_FAMILIES:
            raise UserError(f"setting fim must be one of {', '.join(FIM_FAMILIES)}, got {value!r}")
        return value
    if key in ("repo_include", "repo_exclude", "postprocess_skip"):
        if not isinstance(value, list) or not all(isinstance(v, str) and len(v) <= _MAX_STRING for v in value):
            raise UserError(f"setting {key} must be a list of strings")
        if len(value) > 1000:
            raise UserError(f"setting {key} has {len(value)} entries; at most 1000")
        return list(value)
    if key == "languages":
        if not isinstance(value, Mapping) or not all(isinstance(v, bool) for v in value.values()):
            raise UserError("setting languages must map language names to true/false")
        if len(value) > 1000:
            raise UserError(f"setting languages has {len(value)} entries; at most 1000")
        return dict(value)
    if not isinstance(value, str):
        raise UserError(f"setting {key} must be a string, got {value!r}"[:200])
    if len(value) > _MAX_STRING or "\0" in value:
        raise UserError(f"setting {key} is not a usable value ({len(value)} characters)")
    return value


def config_path() -> Path:
    """The user's config file; CODECOMPLETE_CONFIG points elsewhere (tests, several setups)."""
    env = os.environ.get("CODECOMPLETE_CONFIG")
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_config_dir("codecomplete")) / "config.toml"


def load_settings(overrides: Mapping[str, Any] | None = None) -> Settings:
    """Defaults, then the config file (if any), then ``overrides``."""
    path = config_path()
    from_file: dict[str, Any] = {}
    try:
        st = path.stat()
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise UserError(f"config file {path}: cannot read ({exc.strerror or exc})") from None
    if st is not None:
        if not stat.S_ISREG(st.st_mode):
            raise UserError(f"config file {path} is not a file (a directory or a device); set CODECOMPLETE_CONFIG "
                            "to a TOML file or remove it")
        if st.st_size > 1 << 20:
            raise UserError(f"config file {path} is {st.st_size >> 20} MiB: not a config file")
        try:
            from_file = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise UserError(f"config file {path}: {exc}") from None
        except OSError as exc:
            raise UserError(f"config file {path}: cannot read ({exc.strerror or exc})") from None
    try:
        settings = Settings().with_overrides(from_file)
    except UserError as exc:
        raise UserError(f"config file {path}: {exc}") from None
    return settings.with_overrides(overrides)
