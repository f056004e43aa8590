"""A small Chrome DevTools Protocol driver for headless Chromium, for tests that use a real web UI.

Playwright and Puppeteer need browser builds of their own, which cannot be downloaded here; Debian's Chromium
and the DevTools Protocol over one websocket (``websocket-client``) do what the tests need: open a page,
evaluate JavaScript, wait for a DOM condition, type, press keys and key combinations, click, take screenshots.

    with Browser.launch(chromium, profile_dir) as browser:
        page = browser.open("http://127.0.0.1:8080/")
        page.wait_for("document.querySelector('.monaco-workbench')", timeout=60, what="the workbench")
        page.press("p", "Control")
        page.type("hello")
        page.screenshot(path)
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import shutil
import subprocess
import time
import urllib.request
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import websocket  # websocket-client

# Flags for a quiet headless Chromium on a closed network: no sandbox (root), no GPU, and none of the
# background traffic (QUIC, component updates, sync, first-run pages) that Chromium otherwise keeps retrying.
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--disable-dev-shm-usage",
    "--password-store=basic",
    "--use-mock-keychain",
    "--mute-audio",
)

MODIFIERS = {"Alt": 1, "Control": 2, "Meta": 4, "Shift": 8}


@dataclass(frozen=True)
class Key:
    """What Chromium needs to synthesise one key: its DOM `key` and `code`, the legacy keyCode, the text."""

    key: str
    code: str
    key_code: int
    text: str = ""


SPECIAL_KEYS: dict[str, Key] = {
    "Enter": Key("Enter", "Enter", 13, "\r"),
    "Tab": Key("Tab", "Tab", 9),
    "Escape": Key("Escape", "Escape", 27),
    "Backspace": Key("Backspace", "Backspace", 8),
    "Delete": Key("Delete", "Delete", 46),
    "Home": Key("Home", "Home", 36),
    "End": Key("End", "End", 35),
    "PageUp": Key("PageUp", "PageUp", 33),
    "PageDown": Key("PageDown", "PageDown", 34),
    "ArrowLeft": Key("ArrowLeft", "ArrowLeft", 37),
    "ArrowUp": Key("ArrowUp", "ArrowUp", 38),
    "ArrowRight": Key("ArrowRight", "ArrowRight", 39),
    "ArrowDown": Key("ArrowDown", "ArrowDown", 40),
    **{f"F{n}": Key(f"F{n}", f"F{n}", 111 + n) for n in range(1, 13)},
}

# US layout: punctuation → (code, keyCode) of the key that types it (shifted or not).
_PUNCTUATION = {
    " ": ("Space", 32), "-": ("Minus", 189), "_": ("Minus", 189), "=": ("Equal", 187), "+": ("Equal", 187),
    "[": ("BracketLeft", 219), "{": ("BracketLeft", 219), "]": ("BracketRight", 221), "}": ("BracketRight", 221),
    "\\": ("Backslash", 220), "|": ("Backslash", 220), ";": ("Semicolon", 186), ":": ("Semicolon", 186),
    "'": ("Quote", 222), '"': ("Quote", 222), ",": ("Comma", 188), "<": ("Comma", 188), ".": ("Period", 190),
    ">": ("Period", 190), "/": ("Slash", 191), "?": ("Slash", 191), "`": ("Backquote", 192),
    "~": ("Backquote", 192), "!": ("Digit1", 49), "@": ("Digit2", 50), "#": ("Digit3", 51), "$": ("Digit4", 52),
    "%": ("Digit5", 53), "^": ("Digit6", 54), "&": ("Digit7", 55), "*": ("Digit8", 56), "(": ("Digit9", 57),
    ")": ("Digit0", 48),
}


def key_for(name: str) -> Key:
    """A named key ("Enter", "Tab", "F1", …) or a single character."""
    if name in SPECIAL_KEYS:
        return SPECIAL_KEYS[name]
    if len(name) != 1:
        raise ValueError(f"unknown key {name!r}")
    if name.isascii() and name.isalpha():
        return Key(name, f"Key{name.upper()}", ord(name.upper()), name)
    if name.isdigit():
        return Key(name, f"Digit{name}", ord(name), name)
    if name == "\n":
        return SPECIAL_KEYS["Enter"]
    code, key_code = _PUNCTUATION.get(name, ("", 0))
    return Key(name, code, key_code, name)


class CDPError(RuntimeError):
    """The browser answered a command with an error, or a page script threw."""


class Page:
    """One page target, driven over its own DevTools websocket."""

    def __init__(self, ws_url: str, timeout: float = 30.0) -> None:
        # Chromium refuses DevTools websockets that carry an Origin header it was not told to allow.
        self._ws = websocket.create_connection(ws_url, timeout=timeout, suppress_origin=True)
        self._ids = itertools.count(1)
        self.timeout = timeout
        #: Recent events (console messages, exceptions, …) seen while waiting for answers.
        self.events: deque[dict[str, Any]] = deque(maxlen=500)
        self.send("Page.enable")
        self.send("Runtime.enable")
        # A headless page has no window focus of its own; pages that wait for it (VS Code does) should get it.
        self.send("Emulation.setFocusEmulationEnabled", {"enabled": True})

    # -- protocol -----------------------------------------------------------------------------------------

    def send(self, method: str, params: dict[str, Any] | None = None, timeout: float | None = None) -> Any:
        """Send one command and return its result; events that arrive meanwhile are kept in `events`."""
        message_id = next(self._ids)
        self._ws.send(json.dumps({"id": message_id, "method": method, "params": params or {}}))
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no answer to {method} within {timeout or self.timeout:.0f} s")
            self._ws.settimeout(left)
            message = json.loads(self._ws.recv())
            if message.get("id") == message_id:
                if "error" in message:
                    raise CDPError(f"{method}: {message['error']}")
                return message.get("result", {})
            if "method" in message:
                self.events.append(message)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._ws.close()

    # -- pages and scripts ----------------------------------------------------------------------------------

    def navigate(self, url: str, timeout: float = 60.0) -> None:
        """Open `url` and wait until its document (a new one: the old one is marked) has loaded."""
        self.evaluate("window.__cdpLeft = true")
        answer = self.send("Page.navigate", {"url": url})
        if answer.get("errorText"):
            raise CDPError(f"cannot open {url}: {answer['errorText']}")
        self.wait_for("!window.__cdpLeft && document.readyState === 'complete'", timeout, f"{url} to load")

    def evaluate(self, expression: str, await_promise: bool = False) -> Any:
        """The value of a JavaScript expression in the page (JSON-serialisable values only)."""
        result = self.send(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": await_promise},
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise CDPError(f"{expression[:200]!r} threw: {text}")
        return result.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout: float, what: str | None = None, interval: float = 0.1) -> Any:
        """Evaluate `expression` until it is truthy and return its value; TimeoutError after `timeout` s.

        The error names `what` (or the expression) and the last value seen, so a failing test says what it
        was waiting for and what it saw instead."""
        deadline = time.monotonic() + timeout
        # Truthiness as JavaScript sees it; a DOM node comes back as true (it does not serialise).
        probe = f"(v => [!!v, v instanceof Node ? true : v])(({expression}))"
        last: Any = None
        while True:
            try:
                truthy, last = self.evaluate(probe)
            except CDPError as error:
                # A page between two documents has no context to evaluate in for a moment.
                if "context" not in str(error).lower():
                    raise
                truthy = False
            if truthy:
                return last
            if time.monotonic() >= deadline:
                raise TimeoutError(f"waited {timeout:.0f} s for {what or expression}; last value: {last!r}")
            time.sleep(interval)

    def exists(self, selector: str) -> bool:
        return bool(self.evaluate(f"!!document.querySelector({json.dumps(selector)})"))

    def text_of(self, selector: str) -> str | None:
        """The text of the first element matching `selector` (None when there is none)."""
        return self.evaluate(f"document.querySelector({json.dumps(selector)})?.textContent ?? null")

    # -- input --------------------------------------------------------------------------------------------

    def press(self, name: str, *modifiers: str) -> None:
        """Press and release one key, holding the named modifiers ("Control", "Shift", "Alt", "Meta")."""
        key = key_for(name)
        mask = 0
        for modifier in modifiers:
            mask |= MODIFIERS[modifier]
        # A key pressed with Control/Alt/Meta types nothing: it is a shortcut.
        text = key.text if not mask & ~MODIFIERS["Shift"] else ""
        down: dict[str, Any] = {
            "type": "keyDown" if text else "rawKeyDown",
            "modifiers": mask,
            "key": key.key,
            "code": key.code,
            "windowsVirtualKeyCode": key.key_code,
            "nativeVirtualKeyCode": key.key_code,
        }
        if text:
            down.update(text=text, unmodifiedText=text)
        self.send("Input.dispatchKeyEvent", down)
        up = {k: v for k, v in down.items() if k not in ("text", "unmodifiedText")}
        self.send("Input.dispatchKeyEvent", {**up, "type": "keyUp"})

    def type(self, text: str) -> None:
        """Type `text` one key at a time, as a person would ("\\n" presses Enter)."""
        for char in text:
            self.press(char)

    def move_mouse(self, x: float, y: float) -> None:
        """Move the mouse pointer over the page (some UIs wait for user activity before they prompt)."""
        self.send("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": x, "y": y, "button": "none"})

    def click_at(self, x: float, y: float) -> None:
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.send(
                "Input.dispatchMouseEvent",
                {"type": kind, "x": x, "y": y, "button": "left" if kind != "mouseMoved" else "none",
                 "clickCount": 1},
            )

    def click(self, selector: str, text: str | None = None, timeout: float = 30.0) -> None:
        """Click the middle of the first element matching `selector` (and whose trimmed text is `text`, when
        given) with the mouse, once it is there, has stopped moving (toasts slide in) and is not covered."""
        find = f"""(async () => {{
            const text = {json.dumps(text)};
            const e = [...document.querySelectorAll({json.dumps(selector)})]
                .find(e => text === null || e.textContent.trim() === text);
            if (!e) return null;
            const frame = () => new Promise(r => requestAnimationFrame(() => r()));
            const before = e.getBoundingClientRect();
            await frame(); await frame();
            const r = e.getBoundingClientRect();
            if (r.width === 0 || r.height === 0 || r.x !== before.x || r.y !== before.y) return null;
            const [x, y] = [r.x + r.width / 2, r.y + r.height / 2];
            const hit = document.elementFromPoint(x, y);
            return hit && (e === hit || e.contains(hit)) ? [x, y] : null;
        }})()"""
        deadline = time.monotonic() + timeout
        while (box := self.evaluate(find, await_promise=True)) is None:
            if time.monotonic() >= deadline:
                what = f"{selector!r}" + (f" with text {text!r}" if text is not None else "")
                raise CDPError(f"nothing to click within {timeout:.0f} s: {what} is absent, moving or covered")
            time.sleep(0.05)
        self.click_at(*box)

    # -- output -------------------------------------------------------------------------------------------

    def screenshot(self, path: Path) -> Path:
        """Save a PNG of the viewport to `path` and return it."""
        data = self.send("Page.captureScreenshot", {"format": "png"})["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path

    def console_errors(self) -> list[str]:
        """Uncaught exceptions and console.error messages seen so far (only those read while waiting)."""
        out = []
        for event in self.events:
            if event["method"] == "Runtime.exceptionThrown":
                details = event["params"]["exceptionDetails"]
                out.append(details.get("exception", {}).get("description") or details.get("text", ""))
            elif event["method"] == "Runtime.consoleAPICalled" and event["params"]["type"] == "error":
                out.append(" ".join(str(a.get("value", a.get("description", ""))) for a in event["params"]["args"]))
        return out


class Browser:
    """A headless Chromium process with a DevTools endpoint on a loopback port of its choosing."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, profile: Path) -> None:
        self.process = process
        self.port = port
        self.profile = profile
        self.pages: list[Page] = []

    @classmethod
    def launch(
        cls,
        executable: str | Path,
        profile: Path,
        *,
        size: tuple[int, int] = (1400, 900),
        extra_flags: Iterable[str] = (),
        timeout: float = 60.0,
        log: Path | None = None,
    ) -> Browser:
        """Start Chromium with a fresh profile in `profile` and wait for its DevTools endpoint."""
        found = shutil.which(str(executable))
        if found is None:
            raise FileNotFoundError(f"Chromium not found: {executable}")
        profile.mkdir(parents=True, exist_ok=True)
        port_file = profile / "DevToolsActivePort"
        port_file.unlink(missing_ok=True)
        command = [
            found,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
            f"--window-size={size[0]},{size[1]}",
            *extra_flags,
            "about:blank",
        ]
        output = log.open("ab") if log else subprocess.DEVNULL
        # Chromium keeps crash reports and caches under the XDG dirs whatever --user-data-dir says: keep them
        # in the profile too, so a test leaves nothing in the home directory.
        env = {**os.environ, "XDG_CONFIG_HOME": str(profile / "config"), "XDG_CACHE_HOME": str(profile / "cache")}
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=output, stderr=output, env=env)
        if log:
            output.close()  # type: ignore[union-attr]
        deadline = time.monotonic() + timeout
        # Chromium writes the port it chose (and the browser target's path) once DevTools listens.
        while not (port_file.is_file() and port_file.read_text().strip()):
            if process.poll() is not None:
                raise RuntimeError(f"Chromium exited with {process.returncode} before DevTools was up ({command})")
            if time.monotonic() >= deadline:
                process.kill()
                raise TimeoutError(f"Chromium's DevTools endpoint was not up within {timeout:.0f} s")
            time.sleep(0.05)
        port = int(port_file.read_text().split()[0])
        return cls(process, port, profile)

    def _json(self, path: str, method: str = "GET") -> Any:
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", method=method)
        with urllib.request.urlopen(request, timeout=30) as answer:
            return json.load(answer)

    def open(self, url: str, timeout: float = 60.0) -> Page:
        """The first blank page (or a new one) navigated to `url`."""
        targets = [t for t in self._json("/json/list") if t.get("type") == "page"]
        target = targets[0] if targets else self._json("/json/new?about:blank", method="PUT")
        page = Page(target["webSocketDebuggerUrl"])
        self.pages.append(page)
        page.navigate(url, timeout=timeout)
        return page

    def close(self) -> None:
        for page in self.pages:
            page.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def __enter__(self) -> Browser:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()
