"""`codecomplete bench`: the replay script (unit) and one real `--quick` run through two language servers."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from codecomplete.core.languages import get_parser
from codecomplete.tools.bench import (
    BENCH_DATA,
    Cursor,
    RequestRecord,
    RunResult,
    build_replay,
    compare,
    keystrokes,
    large_python_text,
    percentiles,
)

DATA_FILES = sorted(BENCH_DATA.glob("*.js")) + sorted(BENCH_DATA.glob("*.go"))


def test_keystrokes_retype_the_text_with_auto_indent_and_pauses() -> None:
    body = "def f(x):\n    return x + 1\n\n    # done"
    keys = list(keystrokes(body, 8.0, random.Random(1)))
    assert "".join(k.text for k in keys) == body
    assert keys[0].trigger == "start"
    enters = [k for k in keys if "\n" in k.text]
    assert [k.text for k in enters] == ["\n    ", "\n", "\n    "]  # Enter brings the next line's indent
    assert all(k.trigger == "line" and k.pause_s >= 0.8 for k in enters)
    typed = [k for k in keys if k.trigger is None]
    assert typed and all(k.pause_s == pytest.approx(1 / 8) for k in typed)


def test_replay_rebuilds_the_file_and_starts_at_a_paragraph(tmp_path: Path) -> None:
    for path in DATA_FILES:
        replay = build_replay(path, 12, 8.0)
        text = path.read_text(encoding="utf-8")
        typed = "".join(k.text for k in replay.keys)
        assert replay.before + typed + replay.after == text
        lines = text.splitlines()
        assert lines[replay.first_line - 2].strip() == "" and lines[replay.first_line - 1].strip()
        assert replay.n_lines == 12 and sum(k.trigger == "line" for k in replay.keys) == 11
    chosen = build_replay(DATA_FILES[0], 5, 8.0, first_line=3)
    assert chosen.first_line == 3 and chosen.before == "".join(DATA_FILES[0].read_text().splitlines(True)[:2])


def test_replay_is_deterministic() -> None:
    a, b = (build_replay(DATA_FILES[0], 30, 8.0) for _ in range(2))
    assert a.keys == b.keys
    assert any(k.trigger == "word" for k in a.keys)


@pytest.mark.parametrize("path", DATA_FILES, ids=lambda p: p.name)
def test_shipped_sources_parse_cleanly(path: Path) -> None:
    language = {".js": "javascript", ".go": "go"}[path.suffix]
    tree = get_parser(language).parse(path.read_bytes())
    assert not tree.root_node.has_error
    assert 150 <= len(path.read_text().splitlines()) <= 300


def test_cursor_counts_units_of_the_negotiated_encoding() -> None:
    for encoding, expected in (("utf-8", 7), ("utf-16", 4), ("utf-32", 3)):
        cursor = Cursor("x = 1\né😀", encoding)
        cursor.advance("a")
        assert (cursor.position.line, cursor.position.character) == (1, expected)
        cursor.advance("\n  b")
        assert (cursor.position.line, cursor.position.character) == (2, 3)


def test_large_file_has_3000_lines() -> None:
    assert len(large_python_text().splitlines()) == 3000


def test_ratios_use_requests_both_servers_answered() -> None:
    def run(latencies: list[float | None]) -> RunResult:
        return RunResult(requests=[
            RequestRecord("f.py", 0, 0, "line", "cancelled" if ms is None else "answered", ms, "x")
            for ms in latencies
        ])

    def summary(evaluated: int, reused: int) -> dict:
        return {"tokens": {"evaluated": evaluated, "reuse_ratio": reused / 100}}

    ours, base = run([10.0, 20.0, 5.0, None]), run([100.0, None, 50.0, 80.0])
    result = compare(ours, base, summary(10, 90), summary(100, 0), None)
    assert result["paired_requests"] == 2  # only the first and third were answered by both
    assert result["ratios"]["latency_p50"] == pytest.approx(7.5 / 75, abs=1e-3)
    assert result["ratios"]["evaluated_tokens"] == pytest.approx(0.1)
    assert result["targets"]["reuse_ratio"] == {"target": 0.85, "value": 0.9, "met": True}
    assert result["targets"]["latency_p50"]["met"] is True
    assert result["targets"]["large_file_overhead_p99_ms"]["met"] is None
    assert percentiles([]) == {"p50": None, "p90": None, "p99": None}


@pytest.mark.slow
def test_bad_input_is_one_line_error(tmp_path: Path) -> None:
    unknown = tmp_path / "notes.xyz"
    unknown.write_text("a\nb\nc\n")
    env = dict(os.environ, CODECOMPLETE_CONFIG=str(tmp_path / "no-config.toml"))
    cases = {
        "file not found": ["--files", str(tmp_path / "missing.py")],
        "unknown language": ["--files", str(unknown)],
        "unknown model 'nope'": ["--quick", "--model", "nope"],  # found out by the server it starts
    }
    for message, args in cases.items():
        proc = subprocess.run([sys.executable, "-m", "codecomplete.cli", "bench", *args],
                              capture_output=True, text=True, timeout=120, env=env)
        assert proc.returncode == 2
        last = proc.stderr.splitlines()[-1]
        assert last.startswith("codecomplete: error: ") and message in last
        assert "Traceback" not in proc.stderr


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_quick_bench_reports_ours_baseline_and_ratios(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    env = dict(os.environ, CODECOMPLETE_CONFIG=str(tmp_path / "no-config.toml"))
    proc = subprocess.run(
        [sys.executable, "-m", "codecomplete.cli", "bench", "--quick", "--json", str(out)],
        capture_output=True, text=True, timeout=280, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "ours/baseline" in proc.stdout and "target reuse_ratio" in proc.stdout
    report = json.loads(out.read_text())

    assert [f["language"] for f in report["files"]] == ["python", "javascript"]
    assert all(f["requests"] > 0 and f["keystrokes"] > f["requests"] for f in report["files"])
    n_requests = sum(f["requests"] for f in report["files"])
    for side in ("ours", "baseline"):
        s = report[side]
        assert s["requests"] == n_requests == len(report["requests"][side])
        assert sum(s["outcomes"].values()) == n_requests and s["outcomes"]["error"] == 0
        assert s["latency_ms"]["p50"] > 0 and s["latency_ms"]["p50"] <= s["latency_ms"]["p99"]
        assert s["tokens"]["prompt"] > 0 and s["tokens"]["generated"] > 0
        assert s["tokens_per_s"]["prompt_eval"] > 0
        assert s["overhead_ms"]["total"]["p50"] is not None and s["overhead_ms"]["keystroke"]["p50"] > 0
        assert s["peak_rss_mb"] > 50  # the process holding the model, not a thin client
    assert report["ours"]["tokens"]["reused"] > 0 and report["baseline"]["tokens"]["reused"] == 0
    assert 0 < report["ours"]["tokens"]["reuse_ratio"] <= 1
    assert report["baseline"]["served_by"].keys() <= {"model", "skipped"}  # no caches without reuse

    comparison = report["comparison"]
    assert comparison["paired_requests"] > 0
    for name in ("latency_p50", "latency_p90", "latency_p99", "evaluated_tokens"):
        assert comparison["ratios"][name] > 0
    assert comparison["ratios"]["evaluated_tokens"] < 1  # reuse evaluates fewer prompt tokens
    assert set(comparison["targets"]) == {
        "latency_p50", "latency_p99", "reuse_ratio", "large_file_overhead_p99_ms"
    }
    large = report["large_file"]
    assert large["lines"] == 3000 and large["model_requests"] > 0
    assert large["total"]["p99"] >= large["total"]["p50"] > 0
    # The server's own account of each keystroke, and the read-ahead the replay waited for after opening.
    assert large["keystroke"]["p99"] >= large["keystroke"]["p50"] > 0
    opened = {f["name"] for f in report["files"]} | {"large_file.py"}
    assert large["read_ahead_ms"] > 0 and set(report["ours"]["read_ahead_ms"]) == opened
    assert report["machine"]["cores"] >= 1 and report["settings"]["timeBudgetMs"] > 0
