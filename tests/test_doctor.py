"""`codecomplete doctor` on this machine, as a user runs it: the verdicts that must hold here (CPU build, the
embedded model, all grammars), a broken config, and a running daemon's private socket."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import llama_cpp
import pytest

from codecomplete.core.languages import KNOWN_LANGUAGES
from codecomplete.serving.client import ensure_daemon, find_daemon
from codecomplete.tools import doctor

pytestmark = pytest.mark.slow  # loads a model or starts processes

# llama.cpp's system info as CUDA and Metal builds print it (llama_print_system_info): those builds cannot
# exist on this machine, so the GPU lines are checked against these strings.
CUDA_INFO = (b"CUDA : ARCHS = 520,610,700,750,800,860,890 | USE_GRAPHS = 1 | PEER_MAX_BATCH_SIZE = 128 | "
             b"CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | OPENMP = 1 | REPACK = 1 | ")
METAL_INFO = (b"Metal : EMBED_LIBRARY = 1 | CPU : NEON = 1 | ARM_FMA = 1 | FP16_VA = 1 | DOTPROD = 1 | "
              b"LLAMAFILE = 1 | ACCELERATE = 1 | REPACK = 1 | ")


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """No config file, a runtime dir and models dir that do not exist yet: a fresh install."""
    values = {
        "CODECOMPLETE_RUNTIME_DIR": str(tmp_path / "rt"),
        "CODECOMPLETE_CONFIG": str(tmp_path / "config.toml"),
        "CODECOMPLETE_MODELS_DIR": str(tmp_path / "models"),
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    yield values
    client = find_daemon(Path(values["CODECOMPLETE_RUNTIME_DIR"]))
    if client is not None:
        client.request("POST", "/shutdown")


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "codecomplete.cli", "doctor", *args], capture_output=True,
                          text=True, timeout=120, env=dict(os.environ))


def checks(proc: subprocess.CompletedProcess) -> dict[str, dict]:
    return {c["name"]: c for c in json.loads(proc.stdout)["checks"]}


def line(text: str, name: str) -> str:
    return next(row for row in text.splitlines() if row[8:].startswith(name + " "))


def test_doctor_on_this_machine(env: dict[str, str], embedded_model: Path) -> None:
    proc = run()
    print(proc.stdout)  # for the README: pytest -s tests/test_doctor.py
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stderr == ""  # llama.cpp's chatter from the vocabulary-only load stays out
    lines = proc.stdout.splitlines()
    assert lines[0] == "codecomplete 0.1.0 doctor" and len(lines) <= 24  # one screen
    assert all(row[:8].strip() in ("ok", "warn", "fail") for row in lines[1:-1])
    assert lines[-1].endswith(" 0 fail")

    found = checks(run("--json"))
    assert list(found) == ["python", "llama-cpp-python", "llama.cpp backend", "config", "model", "FIM family",
                           "GPU layers", "context", "threads", "tree-sitter", "runtime dir", "daemon", "models dir"]
    verdicts = {name: c["verdict"] for name, c in found.items()}
    assert verdicts == {name: "ok" for name in found} | {"FIM family": "warn"}  # SmolLM2 has no FIM tokens
    assert found["llama-cpp-python"]["detail"] == llama_cpp.__version__
    assert found["llama.cpp backend"]["data"]["backends"] == ["CPU"]
    assert found["llama.cpp backend"]["data"]["gpu_offload"] is False
    assert found["config"]["detail"] == f"{env['CODECOMPLETE_CONFIG']}: none, using defaults"
    model = found["model"]["data"]
    assert model["path"] == str(embedded_model) and model["bytes"] == embedded_model.stat().st_size
    assert "embedded default" in found["model"]["detail"]
    assert found["FIM family"]["data"]["family"] == "none"
    assert found["GPU layers"]["detail"].startswith("0 of 30 layers on the GPU: CPU build")
    assert found["context"]["data"] == {"n_ctx": 4096, "n_ctx_train": 8192}
    assert found["tree-sitter"]["data"]["broken"] == {}
    assert found["tree-sitter"]["detail"].startswith(f"{len(KNOWN_LANGUAGES)} of {len(KNOWN_LANGUAGES)} parse")
    assert "not created yet" in found["runtime dir"]["detail"]
    assert found["daemon"]["data"] == {"running": False}
    assert found["models dir"]["data"]["models"] == []
    assert not Path(env["CODECOMPLETE_RUNTIME_DIR"]).exists()  # doctor looks, it never creates


def test_broken_config_fails_and_settings_show_in_their_lines(env: dict[str, str]) -> None:
    config = Path(env["CODECOMPLETE_CONFIG"])
    config.write_text("model = [1\n")
    proc = run()
    assert proc.returncode == 1
    assert line(proc.stdout, "config").startswith("  fail  config")
    assert "Unclosed array" in line(proc.stdout, "config") and proc.stdout.splitlines()[-1].endswith(" 1 fail")

    config.write_text('n_ctx = "big"\n')
    assert checks(run("--json"))["config"]["verdict"] == "fail"

    config.write_text(f"n_threads = {(os.cpu_count() or 1) + 1}\n")
    found = checks(run("--json"))
    assert found["config"]["verdict"] == "fail" and "logical CPUs" in found["config"]["detail"]

    config.write_text('format = "psm"\nn_gpu_layers = 12\nn_threads = 1\nn_ctx = 16384\n')
    proc = run("--json")
    found = checks(proc)
    assert proc.returncode == 1 and found["config"]["verdict"] == "ok"
    assert found["FIM family"]["verdict"] == "fail" and "no fill-in-the-middle tokens" in found["FIM family"]["detail"]
    assert found["GPU layers"]["verdict"] == "warn" and "no GPU backend" in found["GPU layers"]["detail"]
    assert found["threads"]["verdict"] == "ok" and found["threads"]["data"]["n_threads"] == 1
    assert found["context"]["verdict"] == "fail" and "8192" in found["context"]["detail"]


def test_running_daemon_shows_its_private_socket(env: dict[str, str]) -> None:
    directory = Path(env["CODECOMPLETE_RUNTIME_DIR"])
    client = ensure_daemon(directory, args=("--lazy",))
    socket_path = directory / "daemon.sock"
    found = checks(run("--json"))
    assert found["runtime dir"]["verdict"] == "ok" and found["runtime dir"]["data"]["mode"] == "0700"
    daemon = found["daemon"]
    assert daemon["verdict"] == "ok" and daemon["data"]["running"] is True
    assert daemon["data"]["pid"] == client.endpoint.pid
    assert f"unix:{socket_path} (0600)" in daemon["detail"]
    print(line(run().stdout, "daemon"))

    socket_path.chmod(0o666)  # what a careless umask would do: every user could talk to the model
    proc = run()
    assert proc.returncode == 1
    assert line(proc.stdout, "daemon").startswith("  fail  daemon")
    assert f"{socket_path} is 0666" in proc.stdout
    directory.chmod(0o755)
    assert "chmod 700" in line(run().stdout, "runtime dir")


@pytest.mark.parametrize(("info", "backend"), [(CUDA_INFO, "CUDA"), (METAL_INFO, "Metal")])
def test_gpu_builds_offload_every_layer_by_default(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, info: bytes, backend: str
) -> None:
    """What doctor says after a CUDA or Metal build of llama-cpp-python (the README shows this output)."""
    monkeypatch.setattr(llama_cpp, "llama_print_system_info", lambda: info)
    monkeypatch.setattr(llama_cpp, "llama_supports_gpu_offload", lambda: True)
    found = {c.name: c for c in doctor.run_checks()}
    print(click.unstyle(doctor.render(list(found.values()))))
    assert found["llama.cpp backend"].verdict == "ok"
    assert found["llama.cpp backend"].detail == f"{backend}, CPU: GPU offload supported"
    layers = found["GPU layers"]
    assert layers.verdict == "ok" and layers.data["offloaded"] == 31  # 30 blocks + the output layer
    assert layers.detail == f"all 30 layers + output on {backend} (n_gpu_layers = auto)"

    config = Path(env["CODECOMPLETE_CONFIG"])
    for setting, verdict, offloaded in ((12, "warn", 12), (0, "warn", 0), (30, "warn", 30), (31, "ok", 31)):
        config.write_text(f"n_gpu_layers = {setting}\n")
        layers = next(c for c in doctor.run_checks() if c.name == "GPU layers")
        assert (layers.verdict, layers.data["offloaded"]) == (verdict, offloaded), setting


@pytest.mark.parametrize("layout", ["2023", "tidy"])
def test_fim_family_of_a_code_llama_file(env: dict[str, str], make_gguf, layout: str) -> None:
    """A Code-Llama-shaped file (both GGUF conversions): family found from the vocabulary, SPM allowed."""
    path = make_gguf(layout=layout)
    Path(env["CODECOMPLETE_CONFIG"]).write_text(f'model = "{path}"\nformat = "spm"\n')
    found = {c.name: c for c in doctor.run_checks()}
    assert found["model"].verdict == "ok" and found["model"].data["path"] == str(path)
    assert (found["FIM family"].verdict, found["FIM family"].detail) == ("ok", "codellama (format spm)")
    assert found["GPU layers"].data["block_count"] >= 1


def test_a_catalog_file_with_another_family_is_flagged(env: dict[str, str], codellama_tidy_gguf: Path) -> None:
    models = Path(env["CODECOMPLETE_MODELS_DIR"])
    models.mkdir()
    (models / "qwen2.5-coder-1.5b-q8_0.gguf").write_bytes(codellama_tidy_gguf.read_bytes())
    Path(env["CODECOMPLETE_CONFIG"]).write_text('model = "qwen2.5-coder-1.5b-q8_0"\n')
    found = {c.name: c for c in doctor.run_checks()}
    assert found["model"].verdict == "ok" and "qwen2.5-coder-1.5b-q8_0" in found["model"].detail
    assert found["FIM family"].verdict == "warn"
    assert found["FIM family"].detail.startswith("codellama, but the catalog says qwen")
    assert found["models dir"].data["models"] == ["qwen2.5-coder-1.5b-q8_0.gguf"]
