"""The `codecomplete` command as a user runs it: real completions, --json, and one-line errors for bad input."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # loads a model or starts processes

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "tests" / "data" / "example.py"


def run(
    *args: str, stdin: bytes | None = None, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}  # the session's pinned config (conftest)
    return subprocess.run(
        [sys.executable, "-m", "codecomplete.cli", *args], input=stdin, capture_output=True, timeout=timeout,
        env=full_env,
    )


def test_readme_demo_command_prints_a_real_completion() -> None:
    """`make demo` is the README's first command; after setup it must print the model's suggestion."""
    if shutil.which("make") is None:
        pytest.fail("make is not installed")
    proc = subprocess.run(["make", "-s", "demo"], cwd=ROOT, capture_output=True, timeout=900)
    assert proc.returncode == 0, proc.stderr.decode()
    out = proc.stdout.decode().splitlines()
    assert out[0].startswith("--- tests/data/example.py")
    suggestion = "\n".join(out[1:]).strip()
    assert suggestion, "the demo printed no completion"
    assert "Traceback" not in proc.stderr.decode()


def test_json_fields_are_present_and_consistent() -> None:
    proc = run("infill", f"{EXAMPLE}:9:5", "--json", "--no-daemon")  # the model itself, not a cached answer
    assert proc.returncode == 0, proc.stderr.decode()
    data = json.loads(proc.stdout)
    for key in ("completion", "model", "format", "prompt", "prompt_token_ids", "tokens", "timings_ms", "stop_reason"):
        assert key in data, key
    assert data["format"] == "prefix" and data["family"] == "none"  # SmolLM2 has no FIM tokens
    assert data["tokens"]["prompt"] == len(data["prompt_token_ids"]) > 0
    assert data["tokens"]["evaluated"] + data["tokens"]["reused"] == data["tokens"]["prompt"]
    assert data["tokens"]["generated"] > 0
    for key in ("context", "tokenize", "prompt_eval", "generate", "total"):
        assert data["timings_ms"][key] >= 0
    assert data["timings_ms"]["total"] >= data["timings_ms"]["prompt_eval"] + data["timings_ms"]["generate"]
    text = EXAMPLE.read_text()
    cursor = text.index("    \n\ndef main") + 4
    assert (data["prompt"] + data["token_healing"]).endswith(text[:cursor][-40:])
    assert data["stop_reason"] in ("eot", "eos", "max_tokens", "time_budget", "single_line", "block_end",
                                   "suffix_overlap", "repetition")
    assert data["completion"].strip()


def test_stdin_with_lang() -> None:
    proc = run("infill", "-:9:5", "--lang", "python", stdin=EXAMPLE.read_bytes())
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout.strip()


def test_fim_model_through_the_cli(codellama_2023_gguf: Path, tmp_path: Path) -> None:
    src = tmp_path / "f.py"
    src.write_text("def f(x):\n    \n")
    proc = run("infill", f"{src}:2:5", "--model", str(codellama_2023_gguf), "--format", "psm", "--json")
    assert proc.returncode == 0, proc.stderr.decode()
    data = json.loads(proc.stdout)
    assert data["family"] == "codellama" and data["format"] == "psm"
    assert data["prompt_token_ids"][:2] == [1, 32007] and data["prompt_token_ids"][-1] == 32009
    assert data["stop_reason"] == "eot" and "<EOT>" not in data["completion"]


def _bad_inputs(tmp_path: Path, embedded: Path) -> list[tuple[list[str], str]]:
    binary = tmp_path / "blob.py"
    binary.write_bytes(b"\x7fELF\x00\x00\x01")
    latin1 = tmp_path / "latin.py"
    latin1.write_bytes("x = 'caf\xe9'\n".encode("latin-1"))
    not_gguf = tmp_path / "model.gguf"
    not_gguf.write_text("not a model")
    truncated = tmp_path / "truncated.gguf"
    with embedded.open("rb") as f:
        truncated.write_bytes(f.read(1_000_000))
    fifo = tmp_path / "pipe.py"  # opening it would wait for a writer: refused before opening
    os.mkfifo(fifo)
    return [
        (["infill", f"{tmp_path}/missing.py:1:1"], "no such file"),
        (["infill", f"{tmp_path}:1:1"], "is a directory"),
        (["infill", f"{binary}:1:1"], "binary"),
        (["infill", f"{fifo}:1:1"], "not a regular file"),
        (["infill", "/dev/zero:1:1"], "not a regular file"),  # would grow without end
        (["infill", "a" * 5000 + ".py:1:1"], "too long"),
        (["infill", "/" + "d/" * 3000 + "x.py:1:1"], "too long"),
        (["infill", f"{latin1}:1:1"], "not UTF-8"),
        (["infill", f"{EXAMPLE}:99:1"], "line 99 is out of range"),
        (["infill", f"{EXAMPLE}:9:80"], "column 80 is out of range"),
        (["infill", f"{EXAMPLE}:0:1"], "start at 1"),
        (["infill", f"{EXAMPLE}"], "PATH:LINE:COLUMN"),
        (["infill", f"{EXAMPLE}:9:5", "--lang", "cobol"], "unknown language"),
        (["infill", f"{EXAMPLE}:9:5", "--model", str(not_gguf)], "model.gguf"),
        (["infill", f"{EXAMPLE}:9:5", "--model", str(truncated)], "truncated.gguf"),
        (["infill", f"{EXAMPLE}:9:5", "--model", str(fifo)], "not a regular file"),
        (["infill", f"{EXAMPLE}:9:5", "--model", "no-such-model"], "no-such-model"),
        (["models", "path", "codellama-7b-q4_k_m"], "not downloaded"),
    ]


def test_bad_input_gets_one_line_and_exit_2(tmp_path: Path, embedded_model: Path) -> None:
    for args, expected in _bad_inputs(tmp_path, embedded_model):
        proc = run(*args, env={"CODECOMPLETE_MODELS_DIR": str(tmp_path / "models")}, timeout=60)
        err = proc.stderr.decode()
        assert proc.returncode == 2, (args, err)
        assert expected in err, (args, err)
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, (args, err)
        assert proc.stdout == b"", args


def test_models_list_shows_the_catalog() -> None:
    proc = run("models", "list")
    assert proc.returncode == 0, proc.stderr.decode()
    out = proc.stdout.decode()
    for name in ("codellama-7b-q4_k_m", "codellama-13b-q8_0", "smollm2-135m"):
        assert name in out
    assert "on disk" in out.splitlines()[[n.split()[0] for n in out.splitlines()].index("smollm2-135m")]
