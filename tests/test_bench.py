"""`codecomplete bench`: the replay script and the figures (unit), one real `--quick` run, and the peer mode on a
tiny replay against the real llama-server."""

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
    MUST_SHOW,
    NEW_RULES,
    breakdown,
    compare,
    compare_peer,
    must_show,
    new_rules,
    percentiles,
    summarize,
)
from codecomplete.tools.replay import (
    BENCH_DATA,
    Cursor,
    Document,
    RequestRecord,
    RunResult,
    build_replay,
    default_files,
    first_suggestion_replay,
    keystrokes,
    large_python_text,
    line_chunks,
)

DATA_FILES = sorted(BENCH_DATA.glob("*.js")) + sorted(BENCH_DATA.glob("*.go")) + sorted(BENCH_DATA.glob("*.c"))
LANGUAGE = {".js": "javascript", ".go": "go", ".c": "c"}
# Every answer of the quick run must finish: a budget no busy machine reaches (the speed runs and the baseline take
# it from --time-budget-ms; the other runs from the pinned config, see conftest).
PINNED_BUDGET_MS = "600000"


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
        assert replay.before + replay.typed + replay.after == text
        lines = text.splitlines()
        assert lines[replay.first_line - 2].strip() == "" and lines[replay.first_line - 1].strip()
        assert replay.n_lines == 12 and sum(k.trigger == "line" for k in replay.keys) == 11
    chosen = build_replay(DATA_FILES[0], 5, 8.0, first_line=3)
    assert chosen.first_line == 3 and chosen.before == "".join(DATA_FILES[0].read_text().splitlines(True)[:2])


def test_replay_is_deterministic() -> None:
    a, b = (build_replay(DATA_FILES[0], 30, 8.0) for _ in range(2))
    assert a.keys == b.keys
    assert any(k.trigger == "word" for k in a.keys)


def test_default_replay_has_python_javascript_go_and_c() -> None:
    languages = [build_replay(p, 10, 8.0).language for p in default_files()]
    assert languages == ["python", "python", "javascript", "go", "c"]


@pytest.mark.parametrize("path", DATA_FILES, ids=lambda p: p.name)
def test_shipped_sources_parse_cleanly(path: Path) -> None:
    tree = get_parser(LANGUAGE[path.suffix]).parse(path.read_bytes())
    assert not tree.root_node.has_error
    assert 150 <= len(path.read_text().splitlines()) <= 300


def test_the_c_file_keeps_its_notice() -> None:
    assert "provided to the public domain" in (BENCH_DATA / "zpipe.c").read_text()[:300]


def test_cursor_counts_units_of_the_negotiated_encoding() -> None:
    for encoding, expected in (("utf-8", 7), ("utf-16", 4), ("utf-32", 3)):
        cursor = Cursor("x = 1\né😀", encoding)
        cursor.advance("a")
        assert (cursor.position.line, cursor.position.character) == (1, expected)
        cursor.advance("\n  b")
        assert (cursor.position.line, cursor.position.character) == (2, 3)


def test_document_knows_the_true_continuation_at_every_key() -> None:
    replay = build_replay(DATA_FILES[0], 3, 8.0)
    doc = Document(replay, "utf-16")
    for key in replay.keys:
        doc.type(key.text)
        spot = doc.spot()
        assert spot.prefix + spot.truth == replay.before + replay.typed + replay.after
        assert spot.suffix == replay.after and doc.text == spot.prefix + spot.suffix
        assert doc.cursor.column == len(spot.prefix) - spot.prefix.rfind("\n") - 1


def test_alternating_typist_cuts_the_keys_after_every_few_enters() -> None:
    replay = build_replay(DATA_FILES[0], 7, 8.0)
    chunks = line_chunks(replay.keys, 3)
    assert sum(chunks, ()) == replay.keys
    assert [sum("\n" in k.text for k in c) for c in chunks] == [3, 3, 0]


def test_large_files_have_3000_lines_and_rotate() -> None:
    assert len(large_python_text().splitlines()) == 3000
    assert large_python_text(rotate=1) != large_python_text()
    replay = first_suggestion_replay(3, 91)
    assert len((replay.before + replay.typed + replay.after).splitlines()) == 3000
    assert replay.n_lines == 5 and replay.typed.startswith("        ") and len(replay.typed.split("\n")[0]) >= 32


def _run(latencies: list[float | None], servers: list[dict | None] | None = None) -> RunResult:
    records = [RequestRecord("f.py", 0, 0, "line", "cancelled" if ms is None else "answered", ms, "x",
                             language="python") for ms in latencies]
    for record, server in zip(records, servers or []):
        record.server = server
    return RunResult(requests=records)


def _ours_entry(evaluated: int, prompt_eval: float, generate: float = 100.0) -> dict:
    return {"source": "model", "latency_ms": prompt_eval + generate + 5, "stop_reason": "max_tokens",
            "tokens": {"prompt": 1000, "evaluated": evaluated, "reused": 1000 - evaluated, "shifted": 0,
                       "generated": 32},
            "timings_ms": {"context": 1.0, "tokenize": 0.5, "prompt_eval": prompt_eval, "generate": generate,
                           "postprocess": 0.5, "total": prompt_eval + generate + 2, "keystroke": 4.0}}


def _peer_entry(evaluated: int, prompt_eval: float, generate: float = 100.0) -> dict:
    return {"source": "model", "kind": "fim", "latency_ms": prompt_eval + generate + 3, "stop_reason": "max_tokens",
            "tokens": {"prompt": 1000, "evaluated": evaluated, "reused": 1000 - evaluated, "shifted": 0,
                       "generated": 32},
            "timings_ms": {"prompt_eval": prompt_eval, "generate": generate, "total": prompt_eval + generate + 3}}


def test_ratios_use_requests_both_servers_answered() -> None:
    def summary(evaluated: int, reused: int) -> dict:
        return {"tokens": {"evaluated": evaluated, "reuse_ratio": reused / 100}}

    ours, base = _run([10.0, 20.0, 5.0, None]), _run([100.0, None, 50.0, 80.0])
    result = compare(ours, base, summary(10, 90), summary(100, 0), None)
    assert result["paired_requests"] == 2  # only the first and third were answered by both
    assert result["ratios"]["latency_p50"] == pytest.approx(7.5 / 75, abs=1e-3)
    assert result["ratios"]["evaluated_tokens"] == pytest.approx(0.1)
    assert result["targets"]["reuse_ratio"] == {"target": 0.85, "value": 0.9, "met": True}
    assert result["targets"]["latency_p50"]["met"] is True
    assert result["targets"]["large_file_overhead_p99_ms"]["met"] is None
    assert percentiles([]) == {"p50": None, "p90": None, "p99": None}


def test_same_answers_are_counted_apart_for_the_same_prompt() -> None:
    entries = [{**_ours_entry(10, 10.0), "prompt_digest": d} for d in ("a", "b", "c")]
    ours = _run([10.0, 10.0, 10.0], entries)
    base = _run([50.0, 50.0, 50.0], [{**_ours_entry(1000, 40.0), "prompt_digest": d} for d in ("a", "x", "c")])
    base.requests[2].suggestion = "y"  # same prompt, another answer: what reuse must never do
    same = compare(ours, base, summarize(ours), summarize(base), None)["same_answer"]
    assert same == {"model_pairs": 3, "identical": 2, "same_prompt": 2, "same_prompt_identical": 1}


def test_peer_comparison_pairs_pauses_and_explains_where_we_lose() -> None:
    ours = _run([50.0, 400.0, 60.0, None], [_ours_entry(16, 20.0), _ours_entry(3000, 300.0), _ours_entry(16, 20.0),
                                            None])
    peer = _run([200.0, 300.0, None, 100.0], [_peer_entry(256, 90.0), _peer_entry(256, 90.0), None,
                                              _peer_entry(256, 90.0)])
    ours.server_entries = [r.server for r in ours.requests if r.server]
    peer.server_entries = [r.server for r in peer.requests if r.server]
    ours_s, peer_s = summarize(ours), summarize(peer)
    result = compare_peer(ours, peer, ours_s, peer_s)
    assert result["paired_requests"] == 2
    assert result["ratios"]["latency_p50"] == pytest.approx(225 / 250, abs=1e-3)
    assert result["ratios"]["evaluated_per_request_p50"] == pytest.approx(16 / 256, abs=1e-3)
    assert result["targets"]["latency_p50"] == {"target": 0.5, "value": 0.9, "met": False}
    assert set(result["targets"]) == {"latency_p50", "latency_p90", "latency_p99", "evaluated_per_request_p90",
                                      "generate_tok_s"}
    lose = result["where_we_lose"]
    assert lose["requests"] == 1 and lose["pauses"][0]["ours_ms"] == 400.0
    assert lose["ours_ms"]["prompt_eval"]["mean"] == 300.0 and lose["peer_ms"]["prompt_eval"]["mean"] == 90.0


def test_breakdown_adds_up_to_the_latency() -> None:
    record = _run([520.0], [_ours_entry(100, 300.0, 200.0)]).requests[0]
    parts = breakdown(record)
    assert parts is not None and parts["total"] == 520.0
    assert sum(v for k, v in parts.items() if k != "total") == pytest.approx(520.0)
    assert parts["outside"] == pytest.approx(520.0 - 505.0) and parts["service_other"] == pytest.approx(3.0)
    peer = breakdown(_run([400.0], [_peer_entry(256, 200.0, 100.0)]).requests[0])
    assert peer == {"waiting": 97.0, "prompt_eval": 200.0, "generate": 100.0, "server_other": 3.0, "total": 400.0}
    assert breakdown(_run([None], [_ours_entry(1, 1.0)]).requests[0]) is None


def test_must_show_reads_the_three_figures() -> None:
    report = {"load": 2, "runs": {"ours": {"quality": {"total": {"shown_rate": 0.95, "harm_rate": 0.02}}}},
              "scenarios": {"first_suggestion": {"warm_daemon_new_file": {"from_open_ms": 2500.0}}}}
    shown = must_show(report)
    assert shown["shown_rate"] == {"target": MUST_SHOW["shown_rate"], "value": 0.95, "met": True}
    assert shown["harm_rate"]["met"] is False and shown["first_suggestion_new_file_ms"]["met"] is True
    assert shown["load"] == 2


def test_compare_rules_default_to_the_new_rules_that_exist() -> None:
    from codecomplete.core.postprocess import RULES

    assert new_rules(None) == [r for r in NEW_RULES if r in RULES]
    assert new_rules("") == []
    with pytest.raises(Exception, match="unknown rule"):
        new_rules("no_such_rule")


@pytest.mark.slow
def test_bad_input_is_one_line_error(tmp_path: Path) -> None:
    unknown = tmp_path / "notes.xyz"
    unknown.write_text("a\nb\nc\n")
    env = dict(os.environ, CODECOMPLETE_CONFIG=str(tmp_path / "no-config.toml"))
    cases = {
        "file not found": ["--files", str(tmp_path / "missing.py")],
        "unknown language": ["--files", str(unknown)],
        "unknown model 'nope'": ["--quick", "--model", "nope"],  # found out by the server it starts
        "unknown rule": ["--quick", "--compare-rules", "nope"],
    }
    for message, args in cases.items():
        proc = subprocess.run([sys.executable, "-m", "codecomplete.cli", "bench", *args],
                              capture_output=True, text=True, timeout=120, env=env)
        assert proc.returncode == 2
        last = proc.stderr.splitlines()[-1]
        assert last.startswith("codecomplete: error: ") and message in last
        assert "Traceback" not in proc.stderr


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_quick_bench_reports_every_part(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "codecomplete.cli", "bench", "--quick", "--time-budget-ms", PINNED_BUDGET_MS,
         "--json", str(out)],
        capture_output=True, text=True, timeout=400,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "What the user receives" in proc.stdout and "Must show" in proc.stdout
    assert "Ignoring notification" not in proc.stderr
    report = json.loads(out.read_text())
    assert report["mode"] == "compressed" and report["load"] == 0

    assert [f["language"] for f in report["files"]] == ["python", "javascript"]
    assert all(f["requests"] > 0 and f["keystrokes"] > f["requests"] for f in report["files"])
    n_requests = sum(f["requests"] for f in report["files"])
    runs = report["runs"]
    assert {"ours_speed", "ours", "baseline", "alternating", "editor_1", "editor_2"} <= set(runs)
    for side in ("ours_speed", "ours", "baseline"):
        s = runs[side]
        assert s["requests"] == n_requests == len(report["requests"][side])
        assert sum(s["outcomes"].values()) == n_requests and s["outcomes"]["error"] == 0
        assert s["latency_ms"]["p50"] > 0 and s["latency_ms"]["p50"] <= s["latency_ms"]["p99"]
        assert s["tokens"]["prompt"] > 0 and s["tokens"]["generated"] > 0
        assert s["tokens_per_s"]["prompt_eval"] > 0 and s["cpu_s"] > 0
        assert s["peak_rss_mb"] > 50  # the process holding the model, not a thin client
        assert s["quality"]["total"]["pauses"] == n_requests
    speed = runs["ours_speed"]
    assert speed["overhead_ms"]["total"]["p50"] is not None and speed["overhead_ms"]["keystroke"]["p50"] > 0
    assert speed["tokens"]["reused"] > 0 and runs["baseline"]["tokens"]["reused"] == 0
    assert runs["baseline"]["served_by"].keys() <= {"model", "skipped"}  # no caches without reuse
    assert speed["settings"]["postprocess"] is False and speed["settings"]["maxTokens"] == report["speed_tokens"]
    assert set(speed["stop_reasons"]) <= {"max_tokens", "eos", "eot"}
    assert speed["breakdown_ms"]["requests"] > 0 and speed["breakdown_ms"]["prompt_eval"]["p50"] is not None
    # the floor: the machine's rates, and each request's wall time against them
    assert report["rates"]["prompt_tok_s"] > 0 and report["rates"]["generate_tok_s"] > 0
    assert speed["floor"]["requests"] > 0 and speed["floor"]["wall_over_floor"]["p50"] > 0

    quality = runs["ours"]["quality"]
    assert set(quality["by_language"]) == {"python", "javascript"}
    total = quality["total"]
    assert total["shown"] + sum(total["not_shown"].values()) == total["pauses"] == n_requests
    if report["harm_checked"]:
        assert total["harm_checked"] == total["shown"]
    if report["rules"]["new"]:
        assert runs["ours_without_new_rules"]["settings"]["postprocessSkip"] == report["rules"]["new"]

    check = report["reuse_check"]
    assert check["paired_requests"] > 0 and check["ratios"]["evaluated_tokens"] < 1
    same = check["same_answer"]
    assert same["same_prompt_identical"] == same["same_prompt"] > 0  # reuse never changes an answer
    large = report["large_file"]
    assert large["lines"] == 3000 and large["model_requests"] > 0
    assert large["keystroke"]["p99"] >= large["keystroke"]["p50"] > 0

    scenarios = report["scenarios"]
    assert scenarios["alternating"]["evaluated_per_request_p90"] is not None
    assert scenarios["two_editors"]["editors"] == 2
    assert all(sum(e["outcomes"].values()) > 0 for e in scenarios["two_editors"]["per_editor"])
    first = scenarios["first_suggestion"]
    assert first["warm_daemon_new_file"]["lines"] == 3000 and first["warm_daemon_new_file"]["from_open_ms"] > 0
    assert first["cold_daemon"]["from_start_ms"] > first["cold_daemon"]["editor_start_to_ready_ms"] > 0
    assert set(report["must_show"]) == {*MUST_SHOW, "load"}
    assert report["speed"] is None  # no peer in --quick


@pytest.mark.slow
@pytest.mark.timeout(1800)  # the first run on a machine builds llama-server (minutes); later runs take ~1 minute
def test_peer_mode_on_a_tiny_replay(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    source = default_files()[0]
    proc = subprocess.run(
        [sys.executable, "-m", "codecomplete.cli", "bench", "--peer", "llama-server", "--quick",
         "--files", str(source), "--lines", "3", "--tokens", "8", "--time-budget-ms", PINNED_BUDGET_MS,
         *(f"--skip={s}" for s in ("rules", "baseline", "alternating", "two-editors", "first-suggestion",
                                   "large-file")), "--json", str(out)],
        capture_output=True, text=True, timeout=1700,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "ours/peer" in proc.stdout and "peer (llama.vim)" in proc.stdout
    report = json.loads(out.read_text())
    assert report["model"] == "codecomplete-codellama-sized-random"
    runs = report["runs"]
    n_requests = report["files"][0]["requests"]
    for side in ("peer_speed", "peer"):
        s = runs[side]
        assert s["requests"] == n_requests and s["outcomes"]["error"] == 0
        assert s["cpu_s"] > 0 and s["tokens"]["model_requests"] > 0
        assert s["settings"]["server"] == "llama-server" and "--cache-reuse" in s["settings"]["args"]
    # both sides generated exactly the asked tokens: the comparison is of cost only
    assert runs["peer_speed"]["tokens"]["generated_per_request"]["p50"] == 8
    assert runs["ours_speed"]["tokens"]["generated_per_request"]["p50"] == 8
    speed = report["speed"]
    assert speed["paired_requests"] > 0
    for name in ("latency_p50", "latency_p90", "latency_p99", "evaluated_per_request_p50", "generate_tok_s", "cpu_s"):
        assert speed["ratios"][name] > 0
    assert speed["targets"]["latency_p50"]["met"] in (True, False)
    assert runs["peer"]["quality"]["total"]["pauses"] == n_requests
