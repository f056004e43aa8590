"""`codecomplete doctor`: one screen that says whether this installation can complete code, and how fast.

Each line is a verdict (ok / warn / fail) on one thing a bug report would ask about: versions, the llama.cpp
backend actually compiled in, how many layers go to the GPU, the model file and its FIM family, the grammars,
the daemon's endpoint and its permissions, the config file. Nothing is changed and no model weights are loaded
(the model is opened vocabulary-only, in a fraction of a second). Exit status 1 when any line fails.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import logging
import os
import platform
import shutil
import stat
import sys
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import click

from codecomplete import __version__
from codecomplete.config import Settings, config_path, load_settings
from codecomplete.errors import UserError

OK, WARN, FAIL = "ok", "warn", "fail"
LOW_DISK_BYTES = 5 << 30  # a 7B Q4_K_M model is about 4 GB
LLAMA_CPP_PIN = "0.3.36"

# A few lines each grammar must parse without an error node: proves the wheel loads and matches tree-sitter.
SNIPPETS: dict[str, str] = {
    "python": "def f(x):\n    return x + 1\n",
    "javascript": "function f(x) { return x + 1; }\n",
    "typescript": "function f(x: number): number { return x + 1; }\n",
    "tsx": "const A = (p: {n: number}) => <div>{p.n}</div>;\n",
    "go": "package main\n\nfunc f(x int) int { return x + 1 }\n",
    "rust": "fn f(x: i32) -> i32 { x + 1 }\n",
    "java": "class A { int f(int x) { return x + 1; } }\n",
    "c": "int f(int x) { return x + 1; }\n",
    "cpp": "template <typename T> T f(T x) { return x + 1; }\n",
    "lua": "local function f(x) return x + 1 end\n",
    "bash": "f() { echo $(( $1 + 1 )); }\n",
}

# What to reinstall llama-cpp-python with when a GPU is present but llama.cpp was built for the CPU only.
_GPU_BUILDS = {"NVIDIA": "CUDA", "Apple Silicon": "Metal", "AMD": "Vulkan"}
_CMAKE_FLAGS = {"CUDA": "-DGGML_CUDA=on", "Metal": "-DGGML_METAL=on", "Vulkan": "-DGGML_VULKAN=on"}


@dataclass
class Check:
    name: str
    verdict: str  # ok, warn or fail
    detail: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Model:
    """What the model-dependent lines need, read from a vocabulary-only load (no weights)."""

    path: Path
    architecture: str
    block_count: int | None
    n_ctx_train: int | None
    family: str


def install_hint(build: str) -> str:
    """The pip line that builds llama-cpp-python for ``build`` (CUDA, Metal or Vulkan)."""
    return (f'CMAKE_ARGS="{_CMAKE_FLAGS[build]}" pip install --force-reinstall --no-cache-dir '
            f"llama-cpp-python=={LLAMA_CPP_PIN}")


def gpu_hardware() -> str | None:
    """A GPU this machine has that llama.cpp could use, found without any GPU library: NVIDIA, AMD, Apple."""
    if sys.platform == "darwin" and platform.machine() == "arm64":
        return "Apple Silicon"
    if Path("/proc/driver/nvidia/version").exists() or shutil.which("nvidia-smi"):
        return "NVIDIA"
    if Path("/dev/kfd").exists():  # the ROCm compute device: an AMD GPU with its kernel driver
        return "AMD"
    return None


# --- the checks ------------------------------------------------------------------------------------------


def check_python() -> Check:
    version = platform.python_version()
    verdict = OK if sys.version_info >= (3, 10) else FAIL
    return Check("python", verdict, f"{version} ({sys.executable})", {"version": version, "path": sys.executable})


def check_llama_cpp() -> Check:
    try:
        version = importlib.metadata.version("llama-cpp-python")
        import llama_cpp  # noqa: F401  (a wheel whose shared library fails to load fails here)
    except (importlib.metadata.PackageNotFoundError, ImportError, OSError) as exc:
        return Check("llama-cpp-python", FAIL, f"not importable ({exc}): pip install llama-cpp-python=={LLAMA_CPP_PIN}")
    verdict = OK if version == LLAMA_CPP_PIN else WARN
    detail = version if verdict == OK else f"{version} (tested with {LLAMA_CPP_PIN})"
    return Check("llama-cpp-python", verdict, detail, {"version": version})


def check_backend() -> Check:
    import llama_cpp

    from codecomplete.engines.llama import compiled_backends

    backends = compiled_backends()
    offload = bool(llama_cpp.llama_supports_gpu_offload())
    gpus = [b for b in backends if b.upper() != "CPU"]
    hardware = gpu_hardware()
    data = {"backends": backends, "gpu_offload": offload, "gpu_hardware": hardware}
    if gpus and offload:
        return Check("llama.cpp backend", OK, f"{', '.join(backends)}: GPU offload supported", data)
    if gpus:
        return Check("llama.cpp backend", WARN, f"{', '.join(backends)} compiled in, but GPU offload is not "
                     "available (driver or device missing?)", data)
    if hardware:
        build = _GPU_BUILDS[hardware]
        return Check("llama.cpp backend", WARN, f"CPU only, but this machine has an {hardware} GPU: "
                     f"{install_hint(build)}", data)
    return Check("llama.cpp backend", OK, "CPU (no GPU backend compiled in, no GPU found)", data)


def check_config() -> tuple[Check, Settings]:
    path = config_path()
    data: dict[str, Any] = {"path": str(path), "exists": path.is_file()}
    if not path.is_file():
        return Check("config", OK, f"{path}: none, using defaults", data), load_settings()
    try:
        settings = load_settings()
    except UserError as exc:
        return Check("config", FAIL, f"{exc} (the lines below use the defaults)", data), Settings()
    changed = sorted(k for k, v in asdict(settings).items() if v != getattr(Settings(), k))
    data["settings"] = changed
    shown = f"sets {', '.join(changed)}" if changed else "no changes from the defaults"
    return Check("config", OK, f"{path}: parses, {shown}", data), settings


def read_model(path: Path) -> _Model:
    """Open ``path`` vocabulary-only: metadata and tokens, no tensors (fast even for a 13B file)."""
    import llama_cpp

    from codecomplete.core.prompt import detect_family

    quiet = logging.getLogger("codecomplete.engines.llama")  # a vocab-only context warns of n_ctx_train 0: noise here
    quiet.disabled = True
    try:
        llm = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
    except (ValueError, RuntimeError, OSError) as exc:
        raise UserError(f"llama.cpp cannot open {path}: {exc}") from None
    finally:
        quiet.disabled = False
    try:
        meta = llm.metadata
        vocab = llm._model.vocab

        def token(kind: str) -> int | None:
            value = getattr(llama_cpp, f"llama_vocab_fim_{kind}")(vocab)
            return None if value < 0 else value

        view = SimpleNamespace(  # just enough of prompt.Tokenizer for detect_family
            info=SimpleNamespace(fim_pre=token("pre"), fim_suf=token("suf"), fim_mid=token("mid")),
            token_text=lambda t: llama_cpp.llama_vocab_get_text(vocab, t).decode("utf-8", "replace"),
        )
        arch = meta.get("general.architecture", "unknown")
        return _Model(path=path, architecture=arch, block_count=_int(meta.get(f"{arch}.block_count")),
                      n_ctx_train=_int(meta.get(f"{arch}.context_length")), family=detect_family(view))
    finally:
        llm.close()


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def check_model(settings: Settings) -> tuple[Check, _Model | None]:
    from codecomplete.models import embedded_model_path, resolve_model

    try:
        path = resolve_model(settings.model)
        model = read_model(path)
    except UserError as exc:
        return Check("model", FAIL, str(exc), {"setting": settings.model}), None
    size = path.stat().st_size
    embedded = embedded_model_path()
    which = "embedded default" if embedded is not None and path == embedded else settings.model
    data = {"setting": settings.model, "path": str(path), "bytes": size, "architecture": model.architecture}
    return Check("model", OK, f"{path.name} ({_size(size)}, {which}) in {path.parent}", data), model


def check_family(settings: Settings, model: _Model) -> Check:
    from codecomplete.core.prompt import choose_format
    from codecomplete.models import load_catalog, models_dir

    data = {"family": model.family, "format": settings.format}
    catalog_fim = next((e.fim for e in load_catalog().values()
                        if model.path.name == e.file and (e.source == "wheel" or model.path.parent == models_dir())),
                       None)
    try:
        choose_format(model.family, settings.format)  # a forced layout the model was not trained for fails
    except UserError as exc:
        return Check("FIM family", FAIL, f"{model.family}, but format = {settings.format}: {exc}", data)
    if catalog_fim is not None and catalog_fim != model.family:
        return Check("FIM family", WARN, f"{model.family}, but the catalog says {catalog_fim}: "
                     "the file may not be the model its name says", data)
    if model.family == "none":
        return Check("FIM family", WARN, "none: no fill-in-the-middle tokens, completions see only the code "
                     "before the cursor (pick a FIM model: codecomplete models list)", data)
    return Check("FIM family", OK, f"{model.family} (format {settings.format})", data)


def check_layers(settings: Settings, model: _Model) -> Check:
    import llama_cpp

    from codecomplete.engines.llama import gpu_backend

    offload = bool(llama_cpp.llama_supports_gpu_offload())
    setting = settings.n_gpu_layers
    wanted = setting if setting is not None else (-1 if offload else 0)  # as the Engine chooses
    shown = "auto" if setting is None else str(setting)
    blocks = model.block_count
    data = {"n_gpu_layers": setting, "block_count": blocks, "offloaded": 0}
    if not offload:
        if wanted > 0:
            return Check("GPU layers", WARN, f"n_gpu_layers = {setting}, but llama.cpp has no GPU backend: "
                         f"all {blocks} layers run on the CPU", data)
        return Check("GPU layers", OK, f"0 of {blocks} layers on the GPU: CPU build (n_gpu_layers = {shown})", data)
    backend = gpu_backend()
    if blocks is None:
        return Check("GPU layers", WARN, f"n_gpu_layers = {shown} on {backend}; the model does not say how many "
                     "layers it has", data)
    # llama.cpp offloads the repeating blocks first, then the output layer once n_gpu_layers exceeds them.
    offloaded = blocks + 1 if wanted < 0 or wanted > blocks else wanted
    data["offloaded"] = offloaded
    if offloaded > blocks:
        return Check("GPU layers", OK, f"all {blocks} layers + output on {backend} (n_gpu_layers = {shown})", data)
    if offloaded == blocks:
        return Check("GPU layers", WARN, f"all {blocks} layers on {backend} but the output layer on the CPU "
                     f"(n_gpu_layers = {shown}): set it to -1", data)
    if offloaded == 0:
        return Check("GPU layers", WARN, f"0 of {blocks} layers on {backend} (n_gpu_layers = 0): the GPU is unused",
                     data)
    return Check("GPU layers", WARN, f"{offloaded} of {blocks} layers on {backend} (n_gpu_layers = {shown}), the "
                 "rest on the CPU: raise it if VRAM allows", data)


def check_context(settings: Settings, model: _Model) -> Check:
    trained = model.n_ctx_train
    data = {"n_ctx": settings.n_ctx, "n_ctx_train": trained}
    if trained and settings.n_ctx > trained:
        return Check("context", FAIL, f"n_ctx = {settings.n_ctx} exceeds the {trained} tokens the model was "
                     "trained on: the model will not load with it; lower n_ctx", data)
    return Check("context", OK, f"n_ctx = {settings.n_ctx} (model trained on {trained or '?'})", data)


def check_threads(settings: Settings) -> Check:
    cpus = os.cpu_count() or 1
    threads = settings.n_threads or max(1, cpus // 2)  # as the Engine chooses
    data = {"n_threads": threads, "cpus": cpus}
    how = "n_threads" if settings.n_threads else "default: half the logical CPUs"  # more than the CPUs is refused
    return Check("threads", OK, f"{threads} of {cpus} logical CPUs ({how})", data)


def check_grammars() -> Check:
    from codecomplete.core.languages import KNOWN_LANGUAGES, get_parser

    broken: dict[str, str] = {}
    for language in KNOWN_LANGUAGES:
        try:
            parser = get_parser(language)
            tree = parser.parse(SNIPPETS[language].encode()) if parser else None
            if tree is None or tree.root_node.has_error:
                broken[language] = "parse error"
        except Exception as exc:  # a missing or ABI-incompatible grammar wheel: ImportError, ValueError, ...
            broken[language] = f"{type(exc).__name__}: {exc}"
    good = len(KNOWN_LANGUAGES) - len(broken)
    data = {"languages": list(KNOWN_LANGUAGES), "broken": broken,
            "tree_sitter": importlib.metadata.version("tree-sitter")}
    detail = f"{good} of {len(KNOWN_LANGUAGES)} parse (tree-sitter {data['tree_sitter']})"
    if broken:
        reasons = "; ".join(f"{lang}: {why}" for lang, why in broken.items())
        return Check("tree-sitter", FAIL, f"{detail}; {reasons} (pip install tree-sitter-<language>)", data)
    return Check("tree-sitter", OK, detail, data)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def check_runtime_dir() -> tuple[Check, Path]:
    from codecomplete.serving.runtime import runtime_dir

    directory = runtime_dir(create=False)
    data: dict[str, Any] = {"path": str(directory), "exists": directory.is_dir()}
    if not directory.is_dir():
        return Check("runtime dir", OK, f"{directory}: not created yet (no daemon has run)", data), directory
    if os.name != "posix":
        return Check("runtime dir", OK, str(directory), data), directory
    mode = _mode(directory)
    data["mode"] = f"{mode:04o}"
    if directory.stat().st_uid != os.getuid():
        return Check("runtime dir", FAIL, f"{directory} belongs to another user", data), directory
    if mode & 0o077:
        return Check("runtime dir", FAIL, f"{directory} is {mode:04o}: other users can reach the daemon; "
                     f"chmod 700 {directory}", data), directory
    return Check("runtime dir", OK, f"{directory} ({mode:04o})", data), directory


def check_daemon(directory: Path) -> Check:
    from codecomplete.serving.client import find_daemon
    from codecomplete.serving.runtime import ENDPOINT_NAME, LOG_NAME, read_endpoint

    endpoint = read_endpoint(directory) if directory.is_dir() else None
    if endpoint is None:
        return Check("daemon", OK, "not running (an editor or codecomplete serve starts it)", {"running": False})
    data: dict[str, Any] = {"running": False, "endpoint": endpoint.describe(), "pid": endpoint.pid,
                            "log": str(directory / LOG_NAME)}
    private: list[str] = []  # files that must be 0600: the socket, and the endpoint file (it holds a TCP token)
    if os.name == "posix":
        files = [Path(endpoint.path)] if endpoint.path else []
        for path in [*files, directory / ENDPOINT_NAME]:
            with contextlib.suppress(OSError):
                mode = _mode(path)
                data[f"mode_{path.name}"] = f"{mode:04o}"
                if mode & 0o077:
                    private.append(f"{path} is {mode:04o}")
    client = find_daemon(directory)
    if client is None:
        return Check("daemon", WARN, f"not answering at {endpoint.describe()} (pid {endpoint.pid} gone?); the "
                     "next editor starts a new one", data)
    try:
        health = client.health()
    except UserError as exc:
        return Check("daemon", WARN, f"{endpoint.describe()}: {exc}", data)
    finally:
        client.close()
    data.update(running=True, version=health.get("version"), state=health.get("state"))
    where = endpoint.describe()
    if "mode_daemon.sock" in data:
        where += f" ({data['mode_daemon.sock']})"
    elif endpoint.transport == "tcp":
        where += f" (token in {ENDPOINT_NAME}, {data.get('mode_' + ENDPOINT_NAME, '?')})"
    detail = f"running, pid {endpoint.pid}, {health.get('state')}, {where}"
    if private:
        return Check("daemon", FAIL, f"{detail}; {'; '.join(private)}: should be 0600", data)
    if health.get("version") != __version__:
        return Check("daemon", WARN, f"{detail}; it runs version {health.get('version')}, this is {__version__}: "
                     "restart it (POST /shutdown, or end its process)", data)
    return Check("daemon", OK, detail, data)


def check_models_dir() -> Check:
    from codecomplete.models import models_dir

    directory = models_dir()
    existing = next(p for p in [directory, *directory.parents] if p.exists())
    free = shutil.disk_usage(existing).free
    files = sorted(directory.glob("*.gguf")) if directory.is_dir() else []
    data = {"path": str(directory), "models": [p.name for p in files], "free_bytes": free}
    have = f"{len(files)} model{'s' if len(files) != 1 else ''}" if directory.is_dir() else "not created yet"
    detail = f"{directory}: {have}, {_size(free)} free"
    if free < LOW_DISK_BYTES:
        return Check("models dir", WARN, f"{detail}: a 7B model needs about 4 GB", data)
    return Check("models dir", OK, detail, data)


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB"):
        if n < 1024:
            return f"{n:.0f} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


# --- running them ----------------------------------------------------------------------------------------


def _guard(name: str, run: Callable[[], Check]) -> Check:
    """A check that crashes costs its own line, never the report: doctor runs when things are broken."""
    try:
        return run()
    except Exception as exc:
        return Check(name, FAIL, f"check crashed: {type(exc).__name__}: {exc}")


def run_checks() -> Iterator[Check]:
    """Every check, in screen order; lines that need llama.cpp or a model are left out when those fail."""
    yield check_python()
    llama = check_llama_cpp()
    yield llama
    if llama.verdict != FAIL:
        yield _guard("llama.cpp backend", check_backend)
    config, settings = check_config()
    yield config
    if llama.verdict != FAIL:
        try:
            model_check, model = check_model(settings)
        except Exception as exc:
            model_check, model = Check("model", FAIL, f"check crashed: {type(exc).__name__}: {exc}"), None
        yield model_check
        if model is not None:
            yield _guard("FIM family", lambda: check_family(settings, model))
            yield _guard("GPU layers", lambda: check_layers(settings, model))
            yield _guard("context", lambda: check_context(settings, model))
    yield check_threads(settings)
    yield _guard("tree-sitter", check_grammars)
    runtime, directory = check_runtime_dir()
    yield runtime
    yield _guard("daemon", lambda: check_daemon(directory))
    yield _guard("models dir", check_models_dir)


_COLORS = {OK: "green", WARN: "yellow", FAIL: "red"}


def render(checks: list[Check]) -> str:
    width = max(len(c.name) for c in checks)
    lines = [f"codecomplete {__version__} doctor"]
    for c in checks:
        tag = click.style(f"{c.verdict:<4}", fg=_COLORS[c.verdict], bold=c.verdict != OK)
        lines.append(f"  {tag}  {c.name:<{width}}  {c.detail}")
    counts = {v: sum(c.verdict == v for c in checks) for v in (OK, WARN, FAIL)}
    lines.append(f"{counts[OK]} ok, {counts[WARN]} warn, {counts[FAIL]} fail")
    return "\n".join(lines)


@click.command("doctor")
@click.option("--json", "as_json", is_flag=True, help="Print the checks as one JSON object.")
def command(as_json: bool) -> None:
    """Check the installation: llama.cpp backend, model, grammars, daemon, config (exit 1 when a line fails)."""
    checks = list(run_checks())
    if as_json:
        counts = {v: sum(c.verdict == v for c in checks) for v in (OK, WARN, FAIL)}
        click.echo(json.dumps({"version": __version__, "checks": [asdict(c) for c in checks], "summary": counts},
                              indent=2))
    else:
        click.echo(render(checks))
    if any(c.verdict == FAIL for c in checks):
        sys.exit(1)
