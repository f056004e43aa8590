"""The VS Code extension in a real VS Code, used as a person would, against the real `codecomplete lsp`.

code-server 4.100.3 (VS Code 1.100.3, the newest that runs on Node.js 20) serves the workbench; headless
Chromium shows it and tests/cdp.py drives it over the DevTools protocol: open a real file nobody on this
project wrote (a standard-library module), type inside a function, wait for the ghost text, accept it with Tab,
save, read the file back from disk, read the status bar item, toggle completion by a click and by the command
palette, and read the extension's output. Each step leaves a screenshot under the test's tmp dir and in
tests/artifacts/vscode-e2e/.

`.ci/vscode-e2e-setup` installs what this needs (cached); the test is skipped only when it says Chromium or
Node.js cannot be installed here (exit 3). $CODECOMPLETE_E2E_SERVER overrides the codecomplete executable
(default: the one in this venv).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from cdp import Browser, Page

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
EXTENSION_DIR = ROOT / "editors" / "vscode"
SETUP = ROOT / ".ci" / "vscode-e2e-setup"
ARTIFACTS = ROOT / "tests" / "artifacts" / "vscode-e2e"
VENV = Path(sys.prefix)

# The file and the spot: the end of `w = TextWrapper(...)` in textwrap.wrap(), then Enter and typing.
MODULE = "textwrap.py"
ANCHOR = "    w = TextWrapper(width=width, **kwargs)"
ANCHOR_IN = "def wrap("
TYPED_FIRST = "ret"
# Typed on, one key at a time, while no suggestion shows (each keystroke is a new request, and the server
# keeps what it has read of the file, so a slow first request is not wasted).
TYPED_MORE = "urn w.wrap(text)"

# The status bar item VS Code makes for this extension's createStatusBarItem.
ITEM = "[id='codecomplete.codecomplete']"
QUICK_INPUT_OPEN = (
    "(() => { const w = document.querySelector('.quick-input-widget');"
    " return !!w && getComputedStyle(w).display !== 'none'; })()"
)
# The messages of the notifications on screen.
TOASTS = "[...document.querySelectorAll('.notification-toast .notification-list-item-message')].map(m => m.textContent)"
GHOST = "(() => { const g = document.querySelector('.monaco-editor .ghost-text-decoration');"
GHOST += " return g ? g.textContent.replace(/\\u00a0/g, ' ') : ''; })()"

# Bounded waits, generous for a busy 2-core machine.
STARTUP_S = 120  # code-server up, the workbench loaded, the trust prompt shown
READY_S = 180  # the extension activated and the model loaded
KEYSTROKE_S = 8  # one suggestion request (the time budget is 2 s) and its rendering
GHOST_S = 300  # all the typing
UI_S = 30  # a click or a key and what it opens


def step_log(message: str) -> None:
    print(f"[vscode-e2e {time.strftime('%H:%M:%S')}] {message}", flush=True)


@dataclass
class Tools:
    code_server: str
    chromium: str


@pytest.fixture(scope="module")
def tools() -> Tools:
    """Run the setup script; skip only when it reports that Chromium or Node.js cannot be had here."""
    started = time.monotonic()
    done = subprocess.run(
        ["bash", str(SETUP), str(VENV)],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=1800,  # cold, on a slow network: apt, npm, native builds
    )
    output = (done.stdout + done.stderr).strip()
    if done.returncode == 3:
        pytest.skip(done.stdout.strip().splitlines()[-1] if done.stdout.strip() else output)
    if done.returncode != 0:
        pytest.fail(f"{SETUP.name} exited {done.returncode}:\n{output[-4000:]}")
    found = dict(re.findall(r"^(CODE_SERVER|CHROMIUM)=(.+)$", done.stdout, re.MULTILINE))
    assert set(found) == {"CODE_SERVER", "CHROMIUM"}, output
    step_log(f"setup done in {time.monotonic() - started:.1f} s")
    return Tools(code_server=found["CODE_SERVER"], chromium=found["CHROMIUM"])


def run(*command: str, cwd: Path = EXTENSION_DIR, timeout: float = 300) -> str:
    done = subprocess.run(command, cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
    output = done.stdout + done.stderr
    if done.returncode != 0:
        pytest.fail(f"`{' '.join(command)}` exited {done.returncode}:\n{output[-4000:]}")
    return output


@pytest.fixture(scope="module")
def vsix(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The extension built from a clean install and packaged (vsce runs `vscode:prepublish`: the compile)."""
    npm, npx = shutil.which("npm"), shutil.which("npx")
    if npm is None or npx is None:
        pytest.fail("npm not found: install Node.js >= 20 with npm")
    run(npm, "ci", "--no-audit", "--no-fund")
    target = tmp_path_factory.mktemp("vsix") / "codecomplete.vsix"
    output = run(npx, "--no-install", "vsce", "package", "--out", str(target))
    assert "DONE" in output, output
    return target


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def server_executable() -> str:
    override = os.environ.get("CODECOMPLETE_E2E_SERVER")
    path = Path(override) if override else VENV / "bin" / "codecomplete"
    assert os.access(path, os.X_OK), f"no codecomplete executable at {path}"
    return str(path)


def write_machine_settings(data: Path, server_path: str) -> None:
    """The Machine settings: where a remote window (code-server is one) reads machine-scoped settings."""
    settings = {"codecomplete.serverPath": server_path, "editor.inlineSuggest.enabled": True}
    (data / "Machine" / "settings.json").write_text(json.dumps(settings, indent=2))


@dataclass
class Workbench:
    url: str
    data: Path
    workspace: Path
    file: Path
    log: Path


@pytest.fixture
def workbench(request: pytest.FixtureRequest, tools: Tools, vsix: Path, tmp_path: Path) -> Iterator[Workbench]:
    """code-server with the packaged extension, isolated extension and user-data dirs, serving a folder
    that holds a copy of a standard-library module. Parametrized indirectly: the serverPath to set."""
    extensions, data, workspace = tmp_path / "extensions", tmp_path / "data", tmp_path / "workspace"
    workspace.mkdir()
    file = workspace / MODULE
    shutil.copyfile(Path(sysconfig.get_paths()["stdlib"]) / MODULE, file)
    config = tmp_path / "code-server.yaml"  # code-server otherwise writes one into ~/.config
    common = ["--config", str(config), "--extensions-dir", str(extensions), "--user-data-dir", str(data)]
    output = run(tools.code_server, *common, "--install-extension", str(vsix), cwd=tmp_path, timeout=120)
    assert "successfully installed" in output, output
    (data / "Machine").mkdir(parents=True, exist_ok=True)
    write_machine_settings(data, getattr(request, "param", None) or server_executable())
    port = free_port()
    log = tmp_path / "code-server.log"
    command = [
        tools.code_server, *common, "--auth", "none", "--bind-addr", f"127.0.0.1:{port}",
        "--disable-telemetry", "--disable-update-check", str(workspace),
    ]
    with log.open("wb") as sink:
        # Its own process group: the extension host and the language server go with it at the end.
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=sink, stderr=sink, start_new_session=True)
    try:
        deadline = time.monotonic() + STARTUP_S
        while "HTTP server listening" not in log.read_text(errors="replace"):
            assert process.poll() is None, f"code-server exited {process.returncode}:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"code-server did not listen within {STARTUP_S} s:\n{log.read_text()}"
            time.sleep(0.1)
        yield Workbench(url=f"http://127.0.0.1:{port}/?folder={workspace}", data=data, workspace=workspace,
                        file=file, log=log)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)


@pytest.fixture
def browser(tools: Tools, tmp_path: Path) -> Iterator[Browser]:
    from cdp import Browser  # websocket-client comes with the setup

    launched = Browser.launch(tools.chromium, tmp_path / "chromium-profile", log=tmp_path / "chromium.log")
    try:
        yield launched
    finally:
        launched.close()


class Shots:
    """Numbered screenshots in the test's tmp dir, copied to tests/artifacts/vscode-e2e/ (`prefix` names the
    test: each test replaces its own earlier copies)."""

    def __init__(self, page: Page, directory: Path, prefix: str = "") -> None:
        self.page, self.directory, self.prefix, self.taken = page, directory, prefix, []
        self.count = 0
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        for old in ARTIFACTS.glob(f"{prefix}[0-9][0-9]-*.png"):
            old.unlink()

    @contextlib.contextmanager
    def on_failure(self) -> Iterator[None]:
        """A last screenshot when the test fails, of what the page showed then."""
        try:
            yield
        except BaseException:
            with contextlib.suppress(Exception):
                self("failed")
            raise

    def __call__(self, name: str) -> Path:
        self.count += 1
        path = self.page.screenshot(self.directory / f"{self.prefix}{self.count:02d}-{name}.png")
        shutil.copyfile(path, ARTIFACTS / path.name)
        self.taken.append(path)
        step_log(f"screenshot {path} (copy: {ARTIFACTS / path.name})")
        return path


def item_text(page: Page) -> str:
    return (page.text_of(ITEM) or "").strip()


def item_tooltip(page: Page) -> str:
    return page.evaluate(f"document.querySelector({json.dumps(ITEM)})?.getAttribute('aria-label') ?? ''")


def run_command(page: Page, title: str, closes: bool = True) -> None:
    """Run a command from the command palette (F1), as a person would; `closes`: the command opens no other
    quick pick."""
    page.press("F1")
    page.wait_for(QUICK_INPUT_OPEN, UI_S, "the command palette")
    page.type(title)
    page.wait_for(
        f"[...document.querySelectorAll('.quick-input-list .monaco-list-row')]"
        f".some(r => (r.getAttribute('aria-label') || '').startsWith({json.dumps(title)}))",
        UI_S,
        f"{title!r} in the command palette",
    )
    page.press("Enter")
    if closes:
        page.wait_for(f"!{QUICK_INPUT_OPEN}", UI_S, "the command palette to close")


def line_js(number: int) -> str:
    """A JS expression: the text of editor line `number` as VS Code renders it, without ghost text drawn into
    it (null when not on screen)."""
    return f"""(() => {{
        const editor = document.querySelector('.editor-instance .monaco-editor');
        const gutter = [...editor.querySelectorAll('.margin-view-overlays > div')]
            .find(d => d.querySelector('.line-numbers')?.textContent.trim() === '{number}');
        if (!gutter) return null;
        const line = [...editor.querySelectorAll('.view-lines > .view-line')]
            .find(l => l.style.top === gutter.style.top);
        if (!line) return null;
        const text = line.cloneNode(true);
        text.querySelectorAll('[class*="ghost-text"]').forEach(g => g.remove());
        return text.textContent.replace(/\\u00a0/g, ' ');
    }})()"""


def item_matching(pattern: str) -> str:
    """A JS expression: the status item's text when it matches the regular expression, else ''."""
    return (
        f"(() => {{ const t = document.querySelector({json.dumps(ITEM)})?.textContent.trim() ?? '';"
        f" return new RegExp({json.dumps(pattern)}).test(t) ? t : ''; }})()"
    )


def extension_logs(data: Path) -> list[Path]:
    return sorted(data.glob("logs/*/exthost*/codecomplete.codecomplete/*.log"))


def open_trusted(page: Page, shots: Shots) -> None:
    """The workbench, and VS Code's question on first opening a folder: trust it, or extensions stay off."""
    page.wait_for("document.querySelector('.monaco-workbench .part.statusbar')", STARTUP_S, "the workbench")
    # VS Code asks once the user is active: a person's mouse is over the window.
    page.move_mouse(700, 400)
    trust = "Yes, I trust the authors"
    page.wait_for(
        "[...document.querySelectorAll('.monaco-dialog-box .monaco-button')]"
        f".some(b => b.textContent.trim() === {json.dumps(trust)})",
        STARTUP_S,
        "the workspace trust prompt",
    )
    shots("trust-prompt")
    page.click(".monaco-dialog-box .monaco-button", trust)
    page.wait_for("!document.querySelector('.monaco-dialog-box')", UI_S, "the trust prompt to close")


def error_lines(data: Path, shown: str = "") -> list[str]:
    """Error lines and tracebacks in the extension's output: its log files and what the panel showed."""
    logs = extension_logs(data)
    assert logs, f"no codecomplete output log under {data / 'logs'}"
    text = "\n".join(path.read_text(errors="replace") for path in logs) + "\n" + shown
    return [line for line in text.splitlines() if "[error]" in line or "Traceback" in line]


def test_completion_in_real_vscode(workbench: Workbench, browser: Browser, tmp_path: Path) -> None:
    started = time.monotonic()
    page = browser.open(workbench.url)
    shots = Shots(page, tmp_path / "screenshots")
    with shots.on_failure():
        use_completion(page, shots, workbench, started)


def use_completion(page: Page, shots: Shots, workbench: Workbench, started: float) -> None:
    open_trusted(page, shots)

    # Open the file with Quick Open.
    page.press("p", "Control")
    page.wait_for(QUICK_INPUT_OPEN, UI_S, "Quick Open")
    page.type(MODULE)
    page.wait_for(
        "[...document.querySelectorAll('.quick-input-list .monaco-list-row')]"
        f".some(r => r.textContent.includes({json.dumps(MODULE)}))",
        UI_S,
        f"{MODULE} in Quick Open",
    )
    page.press("Enter")
    page.wait_for(
        f"document.querySelector('.tab.active')?.textContent.includes({json.dumps(MODULE)})"
        " && document.activeElement?.closest('.editor-instance .monaco-editor')",
        UI_S,
        f"{MODULE} open and focused",
    )

    # The extension starts the server, which loads the model: the item says so.
    text = page.wait_for(item_matching("· (ready|error)"), READY_S, "the codecomplete status item to say ready")
    step_log(f"status item: {text!r} after {time.monotonic() - started:.1f} s")
    shots("file-open-model-ready")
    assert "· ready" in text, f"status item: {text!r}; tooltip: {item_tooltip(page)!r}"

    # The cursor to the end of a line inside textwrap.wrap(), then a new line and a few characters.
    lines = workbench.file.read_text().splitlines()
    function = next(i for i, line in enumerate(lines) if line.startswith(ANCHOR_IN))
    anchor = lines.index(ANCHOR, function) + 1  # 1-based
    page.press("g", "Control")
    page.wait_for(QUICK_INPUT_OPEN, UI_S, "Go to Line")
    page.type(str(anchor))
    page.press("Enter")
    page.wait_for(
        f"document.querySelector(\"[id='status.editor.selection']\")?.textContent.includes('Ln {anchor},')",
        UI_S,
        f"the cursor on line {anchor}",
    )
    page.press("End")
    page.press("Enter")
    page.type(TYPED_FIRST)
    typed = TYPED_FIRST
    ghost = ""
    deadline = time.monotonic() + GHOST_S
    more = iter(TYPED_MORE)
    while True:
        try:
            ghost = page.wait_for(GHOST, KEYSTROKE_S, "ghost text")
            break
        except TimeoutError:
            assert time.monotonic() < deadline, (
                f"no ghost text within {GHOST_S} s of typing {typed!r}; status item: {item_text(page)!r}, "
                f"tooltip: {item_tooltip(page)!r}"
            )
        key = next(more, None)
        if key is None:
            # Typed all: nudge with a space taken back, two more requests (a person would retype).
            page.press(" ")
            page.press("Backspace")
        else:
            page.type(key)
            typed += key
    step_log(f"ghost text {ghost!r} after typing {typed!r} ({time.monotonic() - started:.1f} s in)")
    shots("ghost-text")

    # Tab accepts it; Ctrl+S saves; the file on disk has the typed text followed by the suggestion.
    page.press("Tab")
    expected = typed + ghost
    accepted = page.wait_for(
        f"(t => t && t.trim().startsWith({json.dumps(expected)}) ? t : '')({line_js(anchor + 1)})",
        UI_S,
        f"line {anchor + 1} to read {expected!r}…",
    )
    # Taken in, not still shown; the next suggestion may already be there (after "retu" + "rn": " wrap(…").
    assert page.evaluate(GHOST) != ghost, "the ghost text was not taken in"
    shots("suggestion-accepted")
    page.press("s", "Control")
    page.wait_for("!document.querySelector('.tab.active.dirty')", UI_S, "the file to be saved")
    deadline = time.monotonic() + UI_S
    while (saved := workbench.file.read_text().splitlines())[anchor] != accepted:
        assert time.monotonic() < deadline, f"line {anchor + 1} on disk: {saved[anchor]!r}, shown: {accepted!r}"
        time.sleep(0.1)
    assert saved[anchor].strip().startswith(typed + ghost)
    shots("saved")

    # The status item: the model's name, ready, and the last completion's latency.
    text = page.wait_for(item_matching("· ready · \\d"), UI_S, "the status item to show a latency")
    match = re.fullmatch(r"(?P<name>.+?) · ready · (?P<latency>\d+(\.\d)? (ms|s))", text)
    assert match, text
    assert match["name"] not in ("", "codecomplete"), f"the model is named: {text!r}"
    tooltip = item_tooltip(page)
    assert "Last completion:" in tooltip and "Model:" in tooltip, tooltip
    step_log(f"status item: {text!r}")

    # Toggle by clicking the item, and back by the command palette.
    page.click(ITEM)
    off = page.wait_for(item_matching("· disabled"), UI_S, "the item to say disabled")
    shots("toggled-off")
    user_settings = json.loads((workbench.data / "User" / "settings.json").read_text())
    assert user_settings.get("codecomplete.enabled") is False, user_settings
    run_command(page, "codecomplete: Toggle Inline Completion")
    on = page.wait_for(item_matching("· ready"), UI_S, "the item to say ready again")
    shots("toggled-on")
    step_log(f"toggled: {text!r} → {off!r} → {on!r}")

    # The extension's output: shown from the command palette, and its log files: no errors, no tracebacks.
    run_command(page, "Output: Show Output Channels...", closes=False)
    page.wait_for(
        "[...document.querySelectorAll('.quick-input-list .monaco-list-row')]"
        ".some(r => r.getAttribute('aria-label') === 'codecomplete')",
        UI_S,
        "the codecomplete output channel in the list",
    )
    page.type("codecomplete")
    page.press("Enter")
    page.wait_for(
        "[...document.querySelectorAll('.part.panel select')]"
        ".some(s => s.options[s.selectedIndex]?.text === 'codecomplete')",
        UI_S,
        "the codecomplete output in the panel",
    )
    shown = page.evaluate("document.querySelector('.part.panel .view-lines')?.textContent ?? ''")
    shots("output")
    problems = error_lines(workbench.data, shown)
    assert problems == [], "\n".join(problems[:40])
    toasts = page.evaluate(TOASTS)
    assert not [t for t in toasts if "codecomplete" in t.lower()], toasts
    errors = [e for e in page.console_errors() if "codecomplete" in e.lower()]
    assert errors == [], errors

    step_log(f"passed in {time.monotonic() - started:.1f} s; screenshots: {[str(p) for p in shots.taken]}")


@pytest.mark.parametrize("workbench", ["/nonexistent/bin/codecomplete"], indirect=True)
def test_wrong_server_path_is_explained_and_retried(workbench: Workbench, browser: Browser, tmp_path: Path) -> None:
    """A serverPath that is not there: a message that says what to fix, a button to the setting where it
    takes effect, and a new start as soon as the setting is fixed."""
    started = time.monotonic()
    page = browser.open(workbench.url)
    shots = Shots(page, tmp_path / "screenshots", prefix="bad-path-")
    with shots.on_failure():
        fix_server_path(page, shots, workbench, started)


def fix_server_path(page: Page, shots: Shots, workbench: Workbench, started: float) -> None:
    open_trusted(page, shots)
    text = page.wait_for(item_matching("· error"), READY_S, "the status item to say error")
    message = page.wait_for(
        f"{TOASTS}.find(t => t.includes('codecomplete: the server cannot start')) ?? ''",
        UI_S,
        "the error message",
    )
    shots("error-message")
    assert '"/nonexistent/bin/codecomplete" does not exist' in message, message
    assert "Set codecomplete.serverPath in the Remote settings" in message, message
    assert "/nonexistent/bin/codecomplete" in item_tooltip(page)
    step_log(f"status item {text!r}; message {message!r}")

    page.click(".notification-toast .monaco-button", "Open Settings")
    page.wait_for(
        "document.querySelector('.settings-editor .settings-tabs-widget .action-label.checked')"
        "?.textContent.startsWith('Remote')"
        " && [...document.querySelectorAll('.settings-editor .setting-item-title')]"
        ".some(t => t.textContent.includes('Server Path'))",
        UI_S,
        "the Remote settings tab showing codecomplete.serverPath",
    )
    shots("remote-settings")

    # Fixing the setting (here: the Machine settings file, as the editor would write it) starts the server.
    write_machine_settings(workbench.data, server_executable())
    text = page.wait_for(item_matching("· (ready|loading)"), READY_S, "a new start once the setting is fixed")
    shots("fixed")
    assert error_lines(workbench.data) == []
    step_log(f"status item {text!r}; passed in {time.monotonic() - started:.1f} s")
