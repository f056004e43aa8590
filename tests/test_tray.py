"""The tray app, offscreen (QT_QPA_PLATFORM=offscreen): its menu against a real daemon with the embedded model.

There is no system tray offscreen, so the icon is never shown, but the controller, its menu and the icon it sets
are all real; menu actions are triggered as a click would.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from procs import wait_gone

os.environ["QT_QPA_PLATFORM"] = "offscreen"  # before Qt is imported anywhere in this process

from PySide6.QtCore import QObject, QUrl, Slot  # noqa: E402
from PySide6.QtGui import QDesktopServices  # noqa: E402
from PySide6.QtWidgets import QApplication, QSystemTrayIcon  # noqa: E402

from codecomplete.config import load_settings  # noqa: E402
from codecomplete.errors import UserError  # noqa: E402
from codecomplete.serving.client import DaemonClient, ensure_daemon, find_daemon  # noqa: E402
from codecomplete.serving.runtime import read_endpoint  # noqa: E402
from codecomplete.tools.tray import CONFIG_TEMPLATE, RecentModels, TrayApp, TrayController, draw_icon  # noqa: E402


def complete(client: DaemonClient, body: dict) -> dict:
    """``POST /v1/complete`` with a raw body: the wire format as any client may send it."""
    return client.request("POST", "/v1/complete", body, wait=True)


STATES = ("ready", "busy", "loading", "unloaded", "paused", "error")


def request(name: str) -> dict:
    """A completion request the daemon has not answered before (so its caches cannot answer it)."""
    text = f"def {name}(a, b):\n    return "
    return {"text": text, "offset": len(text), "settings": {"maxTokens": 4, "maxTokensSingleLine": 4}}


@pytest.fixture(scope="module")
def qapp() -> QApplication:
    app = QApplication.instance() or QApplication(["codecomplete-test"])
    app.setQuitOnLastWindowClosed(False)
    return app


@pytest.fixture
def runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private runtime dir and config path; any daemon still running in it is stopped afterwards."""
    directory = tmp_path / "rt"
    monkeypatch.setenv("CODECOMPLETE_RUNTIME_DIR", str(directory))
    monkeypatch.setenv("CODECOMPLETE_CONFIG", str(tmp_path / "config" / "config.toml"))
    yield directory
    endpoint = read_endpoint(directory)
    client = find_daemon(directory)
    if client is not None:
        client.request("POST", "/shutdown")
    if endpoint is not None:
        wait_gone(endpoint.pid)


def spin(app: QApplication, predicate: Callable[[], bool], timeout: float = 60, what: str = "") -> None:
    """Run the Qt event loop until ``predicate`` holds (answers from the worker threads arrive as events)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        app.processEvents()
        time.sleep(0.01)


def texts(controller: TrayController) -> list[str]:
    return [a.text() for a in controller.menu.actions() if a.text()]


class UrlSink(QObject):
    """Receives what QDesktopServices.openUrl would hand to the desktop."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[QUrl] = []

    @Slot(QUrl)
    def open(self, url: QUrl) -> None:
        self.urls.append(url)


# --- without a daemon -----------------------------------------------------------------------------------------


def test_each_state_has_its_own_icon(qapp: QApplication) -> None:
    images = {s: draw_icon(s).pixmap(64, 64).toImage() for s in STATES}
    for state, image in images.items():
        assert image.pixelColor(32, 8).alpha() > 0, f"{state}: nothing drawn at the top of the disc or ring"
    for i, a in enumerate(STATES):
        for b in STATES[i + 1:]:
            assert images[a] != images[b], f"{a} and {b} look the same"


def test_controller_turns_status_into_menu_and_icon(qapp: QApplication, tmp_path: Path) -> None:
    c = TrayController(lambda: [], tmp_path / "daemon.log")
    assert c.state == "starting" and not c.pause_action.isEnabled()
    # GPU builds cannot exist here: these are the daemon's status fields as a CUDA build reports them
    c.apply_status({"daemon_state": "busy", "model": "/m/codellama-7b.Q4_K_M.gguf", "backend": "CUDA",
                    "n_gpu_layers": -1, "last_latency_ms": 87.4, "paused": False})
    assert texts(c)[:4] == ["codecomplete: busy", "Model: codellama-7b.Q4_K_M.gguf", "Backend: CUDA (all layers)",
                            "Last completion: 87 ms"]
    assert c.tray.icon().cacheKey() == c.icons["busy"].cacheKey()
    assert c.tray.toolTip() == "codecomplete: busy · codellama-7b.Q4_K_M.gguf · CUDA (all layers) · 87 ms"
    c.apply_status({"daemon_state": "ready", "backend": "Metal", "n_gpu_layers": 20, "model": "/m/x.gguf"})
    assert "Backend: Metal (20 layers)" in texts(c) and "Last completion: –" in texts(c)
    c.apply_status({"daemon_state": "error", "error": "cannot load model /m/x.gguf: llama.cpp rejected it",
                    "settings": {"model": "/m/x.gguf"}})
    assert texts(c)[0] == "codecomplete: error – cannot load model /m/x.gguf: llama.cpp rejected it"
    assert c.tray.icon().cacheKey() == c.icons["error"].cacheKey() and "Backend: –" in texts(c)
    c.apply_status({"daemon_state": "paused", "paused": True, "backend": "CPU", "n_gpu_layers": 0})
    assert c.pause_action.text() == "Resume completions" and "Backend: CPU" in texts(c)
    assert c.tray.icon().cacheKey() == c.icons["paused"].cacheKey()
    assert not c.start_action.isVisible()
    c.apply_unreachable("no daemon answers")
    assert c.state == "disconnected" and c.start_action.isVisible() and not c.pause_action.isEnabled()
    assert c.pause_action.text() == "Pause completions"
    assert texts(c)[1:4] == ["Model: –", "Backend: –", "Last completion: –"]


def test_recent_models_are_remembered_newest_first(tmp_path: Path) -> None:
    recent = RecentModels(tmp_path / "data" / "tray.json")
    assert recent.load() == []
    for name in ("a.gguf", "b.gguf", "a.gguf"):
        recent.add(f"/models/{name}")
    assert recent.load() == ["/models/a.gguf", "/models/b.gguf"]
    for i in range(20):
        recent.add(f"/models/{i}.gguf")
    assert len(recent.load()) == 8 and recent.load()[0] == "/models/19.gguf"
    recent.path.write_text("{not json")
    assert recent.load() == []


@pytest.mark.slow
def test_tray_command_without_a_system_tray_says_so(runtime: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "codecomplete.cli", "tray", "--wait", "0"], capture_output=True,
                          text=True, timeout=60, env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
    assert proc.returncode == 2
    assert "codecomplete: error: no system tray available" in proc.stderr and "Traceback" not in proc.stderr
    assert read_endpoint(runtime) is None  # nothing started for a tray that cannot be shown


# --- with a real daemon ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_tray_reflects_pauses_switches_and_stops_the_daemon_it_started(
    qapp: QApplication, runtime: Path, tmp_path: Path, embedded_model: Path
) -> None:
    assert not QSystemTrayIcon.isSystemTrayAvailable()  # offscreen: everything below runs without a tray
    tray = TrayApp(runtime, recent=RecentModels(tmp_path / "tray.json"), poll_ms=100)
    c = tray.controller
    tray.start()
    spin(qapp, lambda: c.state == "ready", what="the daemon the tray started to be ready")
    endpoint = read_endpoint(runtime)
    assert endpoint is not None and tray.link.started_pid == endpoint.pid
    assert texts(c)[:3] == ["codecomplete: ready", f"Model: {embedded_model.name}", "Backend: CPU"]
    assert c.tray.icon().cacheKey() == c.icons["ready"].cacheKey()

    editor = DaemonClient(endpoint, "editor")  # another client of the same daemon, as an editor would be
    assert complete(editor, request("add"))["prompt"]
    spin(qapp, lambda: re.fullmatch(r"Last completion: \d+ ms", c.latency_action.text()) is not None, what="latency")

    c.pause_action.trigger()
    spin(qapp, lambda: c.state == "paused", what="paused")
    assert editor.status()["daemon_state"] == "paused" and c.pause_action.text() == "Resume completions"
    assert c.tray.icon().cacheKey() == c.icons["paused"].cacheKey()
    with pytest.raises(UserError, match="paused"):
        complete(editor, request("sub"))
    with pytest.raises(UserError, match="paused"):
        editor.request("POST", "/infill", {"input_prefix": "x = ", "n_predict": 4}, wait=True)
    c.pause_action.trigger()
    spin(qapp, lambda: c.state == "ready", what="resumed")
    assert complete(editor, request("sub"))["prompt"]  # answered by the model: the prompt it saw is there
    assert editor.request("POST", "/infill", {"input_prefix": "x = ", "n_predict": 4}, wait=True)["stop"] is True

    # switch to a local file: it is remembered and offered next to the catalog's embedded model
    local = tmp_path / "my-model.gguf"
    shutil.copyfile(embedded_model, local)
    c.switch_requested.emit(str(local))
    spin(qapp, lambda: tray.recent.load() == [str(local)] and c.current_model == str(local), what="switch to a file")
    assert editor.status()["loads"] == 2 and f"Model: {local.name}" in texts(c)
    c.rebuild_models_menu()
    entries = {a.text(): a for a in c.models_menu.actions() if a.text()}
    assert list(entries) == ["smollm2-135m (135M, Q4_1)", local.name, "Other GGUF file…"]
    assert entries[local.name].isChecked() and not entries["smollm2-135m (135M, Q4_1)"].isChecked()
    entries["smollm2-135m (135M, Q4_1)"].trigger()
    spin(qapp, lambda: editor.status()["loads"] == 3 and c.current_model == str(embedded_model), what="switch back")
    assert editor.status()["settings"]["model"] == "smollm2-135m"

    sink = UrlSink()
    QDesktopServices.setUrlHandler("file", sink, "open")
    try:
        c.open_log_action.trigger()
        c.open_config_action.trigger()
    finally:
        QDesktopServices.unsetUrlHandler("file")
    config = Path(os.environ["CODECOMPLETE_CONFIG"])
    assert [u.toLocalFile() for u in sink.urls] == [str(runtime / "daemon.log"), str(config)]
    assert config.read_text() == CONFIG_TEMPLATE and load_settings().model is None  # created, all comments

    c.quit_action.trigger()
    assert wait_gone(endpoint.pid), "quit did not stop the daemon the tray started"
    assert find_daemon(runtime) is None
    editor.close()


@pytest.mark.slow
def test_tray_attaches_leaves_a_daemon_it_did_not_start_and_can_start_one(qapp: QApplication, runtime: Path,
                                                                           tmp_path: Path) -> None:
    first = ensure_daemon(runtime, args=("--lazy",))  # as an editor would have started it
    pid = first.endpoint.pid
    attached = TrayApp(runtime, recent=RecentModels(tmp_path / "tray.json"), poll_ms=100)
    attached.start()
    spin(qapp, lambda: attached.controller.state not in ("starting", "disconnected"), what="attached")
    assert attached.link.started_pid is None
    attached.controller.quit_action.trigger()
    assert find_daemon(runtime) is not None and read_endpoint(runtime).pid == pid  # still serving the editors

    tray = TrayApp(runtime, recent=RecentModels(tmp_path / "tray.json"), poll_ms=100)
    c = tray.controller
    tray.start()
    spin(qapp, lambda: c.state not in ("starting", "disconnected"), what="attached again")
    first.request("POST", "/shutdown")
    spin(qapp, lambda: c.state == "disconnected", what="the tray to notice the daemon is gone")
    assert c.start_action.isVisible() and c.tray.icon().cacheKey() == c.icons["error"].cacheKey()
    assert wait_gone(pid)
    c.start_action.trigger()
    spin(qapp, lambda: c.state == "ready" and tray.link.started_pid is not None, what="a new daemon")
    second = tray.link.started_pid
    assert second != pid and read_endpoint(runtime).pid == second and not c.start_action.isVisible()
    c.quit_action.trigger()
    assert wait_gone(second)
