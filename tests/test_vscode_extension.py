"""Build, unit-test and package the VS Code extension (editors/vscode) with the real npm toolchain.

VS Code itself cannot run here, so the extension's own tests use a mocked `vscode` module; what this file adds is
that the committed lockfile installs, the TypeScript compiles, and the packaged .vsix holds a working extension:
its unpacked copy is run end to end (real language client, a stub LSP server) with only its bundled node_modules.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

EXTENSION_DIR = Path(__file__).resolve().parent.parent / "editors" / "vscode"
RUNTIME_MODULES = (
    "vscode-languageclient",
    "vscode-languageserver-protocol",
    "vscode-jsonrpc",
    "vscode-languageserver-types",
    "minimatch",
    "semver",
)
COMPILED = ("extension.js", "server.js", "settings.js", "status.js", "statusBar.js")

pytestmark = pytest.mark.slow


def run(*command: str, env: dict[str, str] | None = None, timeout: float = 240) -> str:
    """Run in editors/vscode; fail the test with the command's output tail when it fails."""
    try:
        done = subprocess.run(
            command,
            cwd=EXTENSION_DIR,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
        )
    except FileNotFoundError:
        pytest.fail(f"{command[0]} not found: install Node.js >= 20 with npm to build the VS Code extension")
    output = done.stdout + done.stderr
    if done.returncode != 0:
        pytest.fail(f"`{' '.join(command)}` exited {done.returncode}:\n{output[-4000:]}")
    return output


@pytest.fixture(scope="module")
def npm() -> str:
    found = shutil.which("npm")
    if found is None:
        pytest.fail("npm not found: install Node.js >= 20 with npm to build the VS Code extension")
    return found


@pytest.fixture(scope="module")
def built(npm: str) -> Path:
    """A clean install from package-lock.json, then a compile."""
    run(npm, "ci", "--no-audit", "--no-fund")
    run(npm, "run", "compile")
    assert (EXTENSION_DIR / "out" / "extension.js").is_file()
    return EXTENSION_DIR


@pytest.fixture(scope="module")
def vsix(built: Path, npm: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("vsix") / "codecomplete.vsix"
    output = run(shutil.which("npx") or "npx", "--no-install", "vsce", "package", "--out", str(target))
    assert "DONE" in output, output
    return target


def counts(output: str) -> tuple[int, int]:
    """(passed, failed) from node's test runner summary."""
    found = {k: int(v) for k, v in re.findall(r"^# (pass|fail) (\d+)$", output, re.MULTILINE)}
    assert set(found) == {"pass", "fail"}, f"no test summary in:\n{output[-4000:]}"
    return found["pass"], found["fail"]


def test_unit_tests_pass(built: Path, npm: str) -> None:
    output = run(npm, "test")
    passed, failed = counts(output)
    assert failed == 0 and passed >= 40, output[-4000:]


def test_vsix_holds_the_extension_and_its_runtime_modules(vsix: Path) -> None:
    with zipfile.ZipFile(vsix) as archive:
        names = set(archive.namelist())
        manifest = json.loads(archive.read("extension/package.json"))
    for name in ("extension/package.json", "extension/readme.md", "extension/LICENSE.txt"):
        assert name in names
    for name in COMPILED:
        assert f"extension/out/{name}" in names
    for module in RUNTIME_MODULES:
        assert f"extension/node_modules/{module}/package.json" in names, module
    assert "extension/node_modules/vscode-languageclient/lib/node/main.js" in names
    assert manifest["main"] == "./out/extension.js"
    assert manifest["engines"]["vscode"] == "^" + manifest["devDependencies"]["@types/vscode"]
    leaked = [n for n in names if n.startswith(("extension/src/", "extension/out/test/")) or n.endswith(".ts")]
    assert leaked == [], leaked
    dev_only = [n for n in names if n.startswith(("extension/node_modules/typescript/", "extension/node_modules/@"))]
    assert dev_only == [], dev_only[:5]
    assert vsix.stat().st_size < 1_000_000


def test_packaged_extension_runs_end_to_end(vsix: Path, built: Path, tmp_path: Path) -> None:
    """The unpacked .vsix, outside the source tree, resolves everything from its own node_modules."""
    with zipfile.ZipFile(vsix) as archive:
        archive.extractall(tmp_path)
    main = tmp_path / "extension" / "out" / "extension.js"
    env = {**os.environ, "CODECOMPLETE_EXTENSION_MAIN": str(main)}
    output = run(
        "node", "--require", "./out/test/register.js", "--test", "out/test/endToEnd.test.js", env=env, timeout=120
    )
    passed, failed = counts(output)
    assert failed == 0 and passed >= 4, output[-4000:]
