"""`codecomplete tray`: a tray icon that starts or attaches to the shared daemon and shows what it is doing.

Three parts, so the interesting logic is testable without a desktop:

- ``TrayController``: status dict in, menu texts, enabled actions and icon out; emits what the user asked for.
  It owns the ``QSystemTrayIcon`` object but never talks to the daemon.
- ``DaemonLink``: every daemon request runs in a small thread pool; answers come back as Qt signals (queued to
  the UI thread), so a slow daemon or a model load never freezes the menu.
- ``TrayApp``: wires the two with a poll timer; on quit it stops the daemon only if it started it.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import signal
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import platformdirs

from codecomplete.config import config_path
from codecomplete.errors import UserError
from codecomplete.serving.client import DaemonClient, ensure_daemon, find_daemon
from codecomplete.serving.runtime import LOG_NAME, runtime_dir

try:
    from PySide6.QtCore import QObject, QPointF, QRectF, Qt, QTimer, QUrl, Signal
    from PySide6.QtGui import QAction, QBrush, QColor, QDesktopServices, QIcon, QPainter, QPen, QPixmap
    from PySide6.QtWidgets import QApplication, QFileDialog, QMenu, QSystemTrayIcon
except ImportError as exc:  # an optional part: the CLI must say what to install, not show a traceback
    raise UserError(f"the tray needs PySide6: pip install PySide6-Essentials ({exc})") from None

POLL_MS = 1000
RECENT_MAX = 8
ICON_PX = 64

# state → (colour, glyph). Filled discs for a model that is there, rings for one that is not (yet).
_LOOK: dict[str, tuple[str, str]] = {
    "ready": ("#2e9d4f", "disc"),
    "busy": ("#2f6fd6", "dots"),
    "loading": ("#e0a100", "ring"),
    "unloaded": ("#2e9d4f", "ring"),
    "paused": ("#808080", "bars"),
    "error": ("#d23a2f", "cross"),
}
# What the daemon's daemon_state (and our own connection states) look like.
_ICON_FOR = {"starting": "loading", "disconnected": "error"}

CONFIG_TEMPLATE = """\
# codecomplete settings (TOML). Every key is optional; editors may override them per session.
# model = "codellama-7b-q4_k_m"   # catalog name or a .gguf path; default: the embedded model
# n_gpu_layers = -1               # -1: all layers on the GPU when llama.cpp has CUDA/Metal; 0: CPU only
# n_threads = 4
# n_ctx = 4096
# max_tokens = 128
# time_budget_ms = 2000
"""


def draw_icon(state: str) -> QIcon:
    """A simple icon per state, drawn (no image files): a coloured disc or ring with a glyph."""
    colour, glyph = _LOOK[state]
    pixmap = QPixmap(ICON_PX, ICON_PX)
    pixmap.fill(Qt.GlobalColor.transparent)
    painter = QPainter(pixmap)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    box = QRectF(6, 6, ICON_PX - 12, ICON_PX - 12)
    if glyph == "ring":
        painter.setPen(QPen(QColor(colour), 9))
        painter.drawEllipse(box)
    else:
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(QBrush(QColor(colour)))
        painter.drawEllipse(box)
    white = QColor("white")
    if glyph == "bars":
        painter.setBrush(QBrush(white))
        painter.drawRect(QRectF(22, 20, 7, 24))
        painter.drawRect(QRectF(35, 20, 7, 24))
    elif glyph == "cross":
        painter.setPen(QPen(white, 7))
        painter.drawLine(QPointF(23, 23), QPointF(41, 41))
        painter.drawLine(QPointF(41, 23), QPointF(23, 41))
    elif glyph == "dots":
        painter.setBrush(QBrush(white))
        for x in (20, 32, 44):
            painter.drawEllipse(QPointF(x, 32), 4, 4)
    painter.end()
    return QIcon(pixmap)


# --- models to switch to ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelChoice:
    label: str
    spec: str  # what POST /model gets: a catalog name or a file path
    path: str  # the file, to tick the one the daemon serves


def recent_path() -> Path:
    return Path(platformdirs.user_data_dir("codecomplete")) / "tray.json"


class RecentModels:
    """Local GGUF files the user switched to, newest first, in a small JSON file in the user's data dir."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or recent_path()

    def load(self) -> list[str]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return []
        recent = data.get("recent") if isinstance(data, dict) else None
        return [p for p in recent if isinstance(p, str)] if isinstance(recent, list) else []

    def add(self, path: str) -> None:
        recent = [path, *(p for p in self.load() if p != path)][:RECENT_MAX]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        tmp.write_text(json.dumps({"recent": recent}, indent=1), encoding="utf-8")
        os.replace(tmp, self.path)


def model_choices(recent: list[str]) -> list[ModelChoice]:
    """Catalog models present on disk, then recent local files that still exist."""
    from codecomplete.models import describe_models

    choices = [ModelChoice(f"{row['name']} ({row['params']}, {row['quant']})", row["name"], row["path"])
               for row in describe_models() if row["present"]]
    known = {Path(c.path) for c in choices}
    for path in recent:
        if Path(path).is_file() and Path(path) not in known:
            choices.append(ModelChoice(Path(path).name, path, path))
            known.add(Path(path))
    return choices


# --- state → menu ----------------------------------------------------------------------------------------


def _short(text: str, limit: int = 100) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class TrayController(QObject):
    """The menu and icon for a daemon status; no I/O except opening the log and config files on request."""

    pause_requested = Signal(bool)  # True: pause, False: resume
    switch_requested = Signal(str)  # a catalog name or a .gguf path
    start_requested = Signal()
    quit_requested = Signal()

    def __init__(self, choices: Callable[[], list[ModelChoice]], log_path: Path, parent: QObject | None = None):
        super().__init__(parent)
        self._choices = choices
        self.log_path = log_path
        self.icons = {state: draw_icon(state) for state in _LOOK}
        self.state = "starting"
        self.paused = False
        self.current_model: str | None = None
        self.last_message: str | None = None

        self.menu = QMenu()
        self.state_action = self._label("codecomplete: starting")
        self.model_action = self._label("Model: –")
        self.backend_action = self._label("Backend: –")
        self.latency_action = self._label("Last completion: –")
        self.menu.addSeparator()
        self.pause_action = self.menu.addAction("Pause completions")
        self.pause_action.triggered.connect(lambda: self.pause_requested.emit(not self.paused))
        self.models_menu = self.menu.addMenu("Switch model")
        self.models_menu.aboutToShow.connect(self.rebuild_models_menu)
        self.menu.addSeparator()
        self.open_log_action = self.menu.addAction("Open log")
        self.open_log_action.triggered.connect(self.open_log)
        self.open_config_action = self.menu.addAction("Open config file")
        self.open_config_action.triggered.connect(self.open_config)
        self.start_action = self.menu.addAction("Start daemon")
        self.start_action.triggered.connect(self.start_requested.emit)
        self.menu.addSeparator()
        self.quit_action = self.menu.addAction("Quit")
        self.quit_action.triggered.connect(self.quit_requested.emit)

        self.tray = QSystemTrayIcon()
        self.tray.setContextMenu(self.menu)
        self._show("starting", "codecomplete: starting the daemon")
        self.rebuild_models_menu()

    def _label(self, text: str) -> QAction:
        action = self.menu.addAction(text)
        action.setEnabled(False)
        return action

    def _show(self, state: str, tooltip: str) -> None:
        self.state = state
        self.tray.setIcon(self.icons[_ICON_FOR.get(state, state)])
        self.tray.setToolTip(tooltip)
        connected = state not in ("starting", "disconnected")
        self.pause_action.setEnabled(connected)
        self.models_menu.setEnabled(connected)
        self.start_action.setVisible(state == "disconnected")

    def apply_status(self, status: dict[str, Any]) -> None:
        """Show a ``GET /status`` answer."""
        state = status.get("daemon_state") or status.get("state") or "error"
        if state not in _LOOK:
            state = "error"
        self.paused = bool(status.get("paused"))
        self.pause_action.setText("Resume completions" if self.paused else "Pause completions")
        model = status.get("model") or (status.get("settings") or {}).get("model")
        self.current_model = model
        name = Path(model).name if model else "default (embedded)"
        self.model_action.setText(f"Model: {name}")
        self.backend_action.setText(f"Backend: {self._backend(status)}")
        latency = status.get("last_latency_ms")
        self.latency_action.setText("Last completion: –" if latency is None else f"Last completion: {latency:.0f} ms")
        line = f"codecomplete: {state}"
        if state == "error" and status.get("error"):
            line += f" – {status['error']}"
        self.state_action.setText(_short(line))
        tooltip = " · ".join(p for p in (line, name, self._backend(status),
                                         None if latency is None else f"{latency:.0f} ms") if p)
        self._show(state, tooltip)

    @staticmethod
    def _backend(status: dict[str, Any]) -> str:
        backend = status.get("backend")
        if not backend:
            return "–"
        layers = status.get("n_gpu_layers")
        if backend == "CPU" or not layers:
            return backend
        return f"{backend} ({'all layers' if layers < 0 else f'{layers} layers'})"

    def apply_unreachable(self, message: str) -> None:
        """No daemon answers: show it, and offer to start one."""
        self.paused = False
        self.pause_action.setText("Pause completions")
        self.state_action.setText(_short(f"codecomplete: daemon not running – {message}"))
        for action, text in ((self.model_action, "Model: –"), (self.backend_action, "Backend: –"),
                             (self.latency_action, "Last completion: –")):
            action.setText(text)
        self._show("disconnected", f"codecomplete: daemon not running ({message})")

    def notify(self, message: str) -> None:
        """A refused action (bad model file, daemon gone): one balloon, kept for whoever asks."""
        self.last_message = message
        if self.tray.isVisible():
            self.tray.showMessage("codecomplete", message, QSystemTrayIcon.MessageIcon.Warning)

    def rebuild_models_menu(self) -> None:
        """Catalog models on disk and recent files, rebuilt each time the submenu opens (a pull adds one)."""
        self.models_menu.clear()
        current = Path(self.current_model) if self.current_model else None
        for choice in self._choices():
            action = self.models_menu.addAction(choice.label)
            action.setCheckable(True)
            action.setChecked(current is not None and Path(choice.path) == current)
            action.setData(choice.spec)
            action.triggered.connect(lambda _=False, spec=choice.spec: self.switch_requested.emit(spec))
        self.models_menu.addSeparator()
        other = self.models_menu.addAction("Other GGUF file…")
        other.triggered.connect(self._pick_file)

    def _pick_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(None, "Model file", str(Path.home()), "GGUF models (*.gguf)")
        if path:
            self.switch_requested.emit(path)

    def open_log(self) -> None:
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(self.log_path)))

    def open_config(self) -> None:
        """Open the config file, creating a commented one first: an editor cannot open a file that is not there."""
        path = config_path()
        if not path.exists():
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(CONFIG_TEMPLATE, encoding="utf-8")
            except OSError as exc:
                self.notify(f"cannot create {path}: {exc.strerror or exc}")
                return
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(path)))


# --- talking to the daemon off the UI thread -------------------------------------------------------------


class DaemonLink(QObject):
    """Daemon requests in worker threads; results as signals, delivered in the UI thread (queued)."""

    status_received = Signal(object)  # the /status dict
    unreachable = Signal(str)  # no daemon answers
    refused = Signal(str)  # the daemon (or starting one) said no: one line

    def __init__(self, directory: Path, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.directory = directory
        self.client_id = f"tray-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.started_pid: int | None = None  # the daemon this tray started, if it did
        self._client: DaemonClient | None = None
        self._polling = False
        self._pool = concurrent.futures.ThreadPoolExecutor(3, thread_name_prefix="codecomplete-tray")

    @property
    def client(self) -> DaemonClient | None:
        return self._client

    def _submit(self, fn: Callable[..., None], *args: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the pool is shut down: the tray is quitting
            self._pool.submit(fn, *args)

    def attach(self, start: bool) -> None:
        """Attach to the running daemon, or (``start``) start one; then report its status."""
        self._submit(self._attach, start)

    def _attach(self, start: bool) -> None:
        try:
            client = find_daemon(self.directory, self.client_id)
            if client is None and start:
                client = ensure_daemon(self.directory, client_id=self.client_id)
                # (an editor starting one in the same instant makes this tray its owner too: a harmless race)
                self.started_pid = client.endpoint.pid
            self._client = client
        except UserError as exc:
            self.refused.emit(f"cannot start the daemon: {exc}")
        self._poll()

    def poll(self) -> None:
        if not self._polling:
            self._polling = True
            self._submit(self._poll)

    def _poll(self) -> None:
        try:
            client = self._client
            if client is None:  # an editor may have started one meanwhile: attach, never start, here
                client = self._client = find_daemon(self.directory, self.client_id)
            if client is None:
                self.unreachable.emit("no daemon answers")
                return
            try:
                self.status_received.emit(client.request("GET", "/status"))
            except UserError as exc:
                self._client = None
                client.close()
                self.unreachable.emit(str(exc))
        finally:
            self._polling = False

    def post(self, path: str, body: dict[str, Any] | None = None, then: Callable[[], None] | None = None) -> None:
        """``POST path``, waiting as long as it takes (a model switch loads the model); then a fresh status."""
        self._submit(self._post, path, body, then)

    def _post(self, path: str, body: dict[str, Any] | None, then: Callable[[], None] | None) -> None:
        client = self._client
        if client is None:
            self.refused.emit("the daemon is not running")
            return
        try:
            client.request("POST", path, body, wait=True)
            if then is not None:
                then()
        except UserError as exc:
            self.refused.emit(str(exc))
        self._poll()

    def close(self, stop_started: bool) -> None:
        """Stop the pool; with ``stop_started``, shut down the daemon this tray started (if it still runs)."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        client = self._client or find_daemon(self.directory, self.client_id)
        if client is None:
            return
        if stop_started and client.endpoint.pid == self.started_pid:
            with contextlib.suppress(UserError):  # gone already
                client.request("POST", "/shutdown")
        client.close()


# --- the app ---------------------------------------------------------------------------------------------


class TrayApp(QObject):
    """The tray: controller + link + poll timer."""

    def __init__(self, directory: Path | None = None, *, recent: RecentModels | None = None,
                 poll_ms: int = POLL_MS) -> None:
        super().__init__()
        self.directory = directory or runtime_dir()
        self.recent = recent or RecentModels()
        self.link = DaemonLink(self.directory, self)
        self.controller = TrayController(lambda: model_choices(self.recent.load()), self.directory / LOG_NAME, self)
        queued = Qt.ConnectionType.QueuedConnection
        self.link.status_received.connect(self.controller.apply_status, queued)
        self.link.unreachable.connect(self.controller.apply_unreachable, queued)
        self.link.refused.connect(self.controller.notify, queued)
        self.controller.pause_requested.connect(lambda pause: self.link.post("/pause" if pause else "/resume"))
        self.controller.switch_requested.connect(self.switch_model)
        self.controller.start_requested.connect(lambda: self.link.attach(start=True))
        self.controller.quit_requested.connect(self.quit)
        self.timer = QTimer(self)
        self.timer.setInterval(poll_ms)
        self.timer.timeout.connect(self.link.poll)

    def start(self) -> None:
        """Attach to or start the daemon, and begin polling; shows the icon where there is a tray."""
        self.link.attach(start=True)
        self.timer.start()
        if QSystemTrayIcon.isSystemTrayAvailable():
            self.controller.tray.show()

    def switch_model(self, spec: str) -> None:
        def remember() -> None:
            if Path(spec).is_file():  # a local file, not a catalog name: offer it again next time
                self.recent.add(str(Path(spec).resolve()))

        self.link.post("/model", {"model": spec}, then=remember)

    def quit(self) -> None:
        """Stop polling, stop the daemon if this tray started it, and leave the event loop."""
        self.timer.stop()
        self.controller.tray.hide()
        self.link.close(stop_started=True)
        app = QApplication.instance()
        if app is not None:
            app.quit()


def wait_for_tray(seconds: float) -> bool:
    """At login the tray app may start before the desktop panel: give the panel a moment."""
    deadline = time.monotonic() + seconds
    while not QSystemTrayIcon.isSystemTrayAvailable():
        if time.monotonic() >= deadline:
            return False
        QApplication.processEvents()  # the platform plugin learns of a new tray through events
        time.sleep(0.25)
    return True


@click.command("tray")
@click.option("--wait", "wait_s", type=click.FloatRange(0), default=5.0, show_default=True,
              help="Seconds to wait for the desktop's system tray to appear (autostart at login races it).")
def command(wait_s: float) -> None:
    """Tray icon that starts or attaches to the daemon: state, model, backend, pause, switch model."""
    app = QApplication.instance() or QApplication(["codecomplete"])
    app.setQuitOnLastWindowClosed(False)  # closing the file dialog must not end the tray
    if not wait_for_tray(wait_s):
        raise UserError("no system tray available (a desktop panel with a tray area is needed)")
    tray = TrayApp()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: tray.quit())
    wake = QTimer()  # Python runs signal handlers only between Qt events: give it some
    wake.start(250)
    wake.timeout.connect(lambda: None)
    tray.start()
    app.exec()
