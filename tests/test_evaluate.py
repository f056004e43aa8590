"""`codecomplete eval`: the harness scores known answers right, and a real run reports consistent numbers."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest
from click.testing import CliRunner

from codecomplete import cli as cli_mod
from codecomplete.core.context import Context, build_context
from codecomplete.core.postprocess import RULES
from codecomplete.errors import UserError
from codecomplete.tools.evaltasks import program_for
from codecomplete.tools.evaluate import (
    Answer,
    Case,
    Record,
    ablation_rows,
    format_ablation_table,
    format_table,
    humaneval_cases,
    raw_not_prefix,
    repo_cases,
    run,
    run_ablation,
    summarize,
)

FLAGS = (True, False)


@pytest.fixture(autouse=True)
def _isolated(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("CODECOMPLETE_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))
    monkeypatch.setenv("CODECOMPLETE_CONFIG", str(tmp_path_factory.getbasetemp() / "no-config.toml"))


def answer(text: str) -> Answer:
    return Answer(completion=text, raw=text, stop_reason="test", latency_ms=1.0)


def oracle(case: Case, fmt: str, flags: Sequence[bool]) -> list[Answer]:
    """The masked text itself, as inserted on the empty line (whose newline is already there)."""
    return [answer(case.task.middle.removesuffix("\n")) for _ in flags]


def oracle_on_only(case: Case, fmt: str, flags: Sequence[bool]) -> list[Answer]:
    """Right with post-processing, and one line short without it."""
    lines = case.task.middle.removesuffix("\n").split("\n")
    return [answer("\n".join(lines if flag else [*lines[:-1], ""])) for flag in flags]


@pytest.fixture(scope="module")
def source_tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("repo")
    (root / "util.py").write_text("import os\n\n\ndef join(a, b):\n    path = os.path.join(a, b)\n"
                                  "    return os.path.normpath(path)\n")
    (root / "web").mkdir()
    (root / "web" / "app.js").write_text("function add(a, b) {\n  const sum = a + b;\n  return sum;\n}\n\n"
                                         "module.exports = { add };\n")
    (root / "main.go").write_text("package main\n\nimport \"fmt\"\n\nfunc main() {\n\tx := 40 + 2\n"
                                  "\tfmt.Println(x)\n}\n")
    (root / "notes.txt").write_text("not code\nat all\n")
    (root / ".git").mkdir()
    (root / ".git" / "hook.py").write_text("print('never masked')\nprint('hidden')\n")
    return root


def test_a_case_is_the_task_with_an_empty_line_at_the_cursor():
    cases, total = humaneval_cases("single-line", 3, seed=0)
    assert total == 1033 and len(cases) == 3
    for case in cases:
        task = case.task
        assert case.text == task.prefix + "\n" + task.suffix and case.text[case.offset] == "\n"
        assert case.language == "python" and case.set == "single-line"
        assert case.program(task.middle.removesuffix("\n")) == program_for(task, task.middle)


@pytest.mark.slow
def test_oracle_answers_pass_every_humaneval_task():
    cases = humaneval_cases("single-line", 12, seed=1)[0] + humaneval_cases("multi-line", 12, seed=1)[0]
    records = run(cases, oracle, ["prefix"], FLAGS, jobs=2)
    assert len(records) == len(cases) * 2
    assert [(r.task_id, r.detail) for r in records if not r.passed] == []
    rows = summarize(records)
    assert [(r.set, r.postprocess) for r in rows] == [
        ("single-line", True), ("single-line", False), ("multi-line", True), ("multi-line", False)]
    for row in rows:
        assert (row.n, row.passed, row.pass_at_1) == (12, 12, 1.0)
        assert row.exact_match == row.edit_similarity == 1.0


@pytest.mark.slow
def test_wrong_answers_fail_and_score_below_one():
    cases = humaneval_cases("multi-line", 10, seed=2)[0]
    records = run(cases, oracle_on_only, ["prefix"], FLAGS, jobs=2)
    on, off = summarize(records)
    assert (on.postprocess, on.passed, on.exact) == (True, 10, 10)
    assert off.postprocess is False and off.exact == 0 and off.passed < 10
    assert 0.0 < off.edit_similarity < 1.0
    assert {r.status for r in records if not r.postprocess} - {"passed"} <= {"failed", "error", "timeout"}


def test_repo_cases_spread_over_languages_and_kinds(source_tree):
    cases = repo_cases([source_tree], 12, seed=0)
    assert cases == repo_cases([source_tree], 12, seed=0)
    by_slot: dict[tuple[str | None, str], int] = {}
    for case in cases:
        kind = case.task.task_id.split("/", 1)[0]
        by_slot[case.language, kind] = by_slot.get((case.language, kind), 0) + 1
        assert ".git" not in case.task.problem_id and case.set == "repo" and case.task.test == ""
        newline = "" if kind == "mid-line" else "\n"  # a mid-line cursor stays inside its line
        assert case.text == case.task.prefix + newline + case.task.suffix
    assert set(by_slot) == {(lang, kind) for lang in ("go", "javascript", "python")
                            for kind in ("single-line", "multi-line", "mid-line")}
    assert sorted(by_slot.values()) == [1] * 6 + [2] * 3  # 12 over 9 slots, as evenly as possible
    assert len(repo_cases([source_tree], 5, seed=0)) == 5
    with pytest.raises(UserError, match="no source files"):
        repo_cases([source_tree / "notes.txt"], 5, seed=0)


def test_repo_rows_per_language_add_up_and_have_no_pass_rate(source_tree):
    records = run(repo_cases([source_tree], 12, seed=0), oracle, ["prefix"], (True,))
    rows = {row.set: row for row in summarize(records)}
    assert set(rows) == {"repo", "repo:go", "repo:javascript", "repo:python"}
    assert rows["repo"].n == 12 == sum(rows[f"repo:{lang}"].n for lang in ("go", "javascript", "python"))
    assert all(row.passed is row.pass_at_1 is None and row.exact_match == 1.0 for row in rows.values())
    assert all(r.status is None for r in records)
    table = format_table(list(rows.values())).splitlines()
    assert table[0].split() == ["set", "mode", "post", "repo-ctx", "n", "pass@1", "exact", "edit-sim",
                                "latency", "budget-cut"]
    assert table[1].split()[:7] == ["repo", "prefix", "on", "off", "12", "-", "1.000"]


def test_raw_not_prefix_counts_diverging_runs():
    def record(task: str, flag: bool, raw: str, next_choices: int = 0) -> Record:
        return Record("repo", task, "go", "prefix", flag, False, raw, raw, "eos", 1.0, False, 0.0, None, "",
                      next_choices=next_choices)

    records = [record("a", True, "x = 1"), record("a", False, "x = 1\ny = 2"),
               record("b", True, "if x"), record("b", False, "return x"),
               record("c", True, "y = 2", next_choices=1), record("c", False, "x = 1")]  # rejected first: not counted
    assert raw_not_prefix(records) == 1


@pytest.mark.slow
def test_eval_command_end_to_end_on_the_embedded_model(embedded_model, source_tree, tmp_path):
    out = tmp_path / "report.json"
    args = ["eval", "--set", "single-line", "--set", "multi-line", "--set", "repo", "--limit", "5",
            "--model", str(embedded_model), "--repo-path", str(source_tree), "--max-tokens", "16",
            "--repo-context", "both", "--json", str(out)]
    result = CliRunner().invoke(cli_mod.cli, args)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["formats"] == ["prefix"]  # SmolLM2 has no FIM tokens
    assert report["postprocess"] == ["on", "off"]
    assert report["sets"] == {"single-line": {"tasks": 1033, "evaluated": 5},
                              "multi-line": {"tasks": 3657, "evaluated": 5},
                              "repo": {"evaluated": 5, "files": report["sets"]["repo"]["files"]}}
    assert report["repo_context"] == {"requested": "both", "measured": ["off", "on"]}
    pairs = [(r["task_id"], r["repo_context"], r["postprocess"], r["next_choices"], r["stop_reason"], r["raw"])
             for r in report["records"]]
    assert report["raw_not_prefix"] == 0, pairs  # both runs start from the same cached prompt
    with_repo = [r for r in report["records"] if r["repo_context"]]
    assert len(with_repo) == 5 * 2 and {r["set"] for r in with_repo} == {"repo"}  # only the repo set changes
    records = [r for r in report["records"] if not r["repo_context"]]
    assert len(records) == 15 * 2
    for r in records:
        assert (r["status"] is None) == (r["set"] == "repo")
        assert 0.0 <= r["edit_similarity"] <= 1.0 and r["latency_ms"] > 0
        assert not r["exact"] or r["edit_similarity"] == 1.0
    summary = {(row["set"], row["postprocess"]): row for row in report["summary"] if not row["repo_context"]}
    for name in ("single-line", "multi-line", "repo"):
        for flag in (True, False):
            row = summary[name, flag]
            mine = [r for r in records if r["set"] == name and r["postprocess"] is flag]
            assert row["n"] == len(mine) == 5 and sum(row["stop_reasons"].values()) == 5
            assert row["exact"] == sum(r["exact"] for r in mine) and 0 <= row["exact_match"] <= 1
            if name == "repo":
                assert row["passed"] is None and row["pass_at_1"] is None
            else:
                assert 0 <= row["passed"] == sum(r["status"] == "passed" for r in mine) <= 5
                assert row["pass_at_1"] == row["passed"] / 5
    table = [line.split() for line in result.stdout.splitlines()]
    assert table[0][:6] == ["set", "mode", "post", "repo-ctx", "n", "pass@1"]
    names = ("single-line", "multi-line", "repo")
    expected = [[name, "prefix", post] for name in names for post in ("on", "off")]
    assert [line[:3] for line in table[1:7]] == expected
    assert all(line[0].startswith("repo") for line in table[7:]) and len(table) > 7
    assert ["repo", "prefix", "on", "on"] in [line[:4] for line in table[7:]]  # the repo set with repo context


@pytest.mark.slow
def test_a_layout_the_model_lacks_is_a_one_line_error(embedded_model, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_mod.main(["eval", "--set", "single-line", "--limit", "1", "--format", "psm",
                      "--model", str(embedded_model)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["codecomplete: error: this model has no fill-in-the-middle tokens: "
                   "use --format prefix (or auto)"]


def test_an_unwritable_json_path_fails_before_any_work(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_mod.main(["eval", "--json", str(tmp_path / "missing" / "report.json")])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"codecomplete: error: cannot write {tmp_path / 'missing' / 'report.json'}: "
        "its directory is missing or not writable"]


def raw_with_junk(case: Case, fmt: str) -> tuple[Answer, Context]:
    """The masked text, then a line at the left margin that breaks the program unless a rule cuts it."""
    ctx = build_context(case.text, case.offset, case.language, len, budget=100_000)
    return answer(case.task.middle.removesuffix("\n") + "\nassert False, \"junk\"\n"), ctx


@pytest.mark.slow
def test_ablation_rows_compare_each_rule_with_all_of_them():
    cases = humaneval_cases("single-line", 4, seed=3)[0]
    records = run_ablation(cases, raw_with_junk, ["prefix"], jobs=2)
    assert len(records) == 4 * (len(RULES) + 2)
    rows = ablation_rows(records)
    assert [row.rule for row in rows] == [*RULES, "all"]
    everything = rows[-1]
    assert (everything.all.passed, everything.all.exact, everything.without.passed) == (4, 4, 0)
    assert everything.without.postprocess is False and everything.delta("pass_at_1") == 1.0
    for row in rows:
        assert row.all == everything.all and row.all.n == row.without.n == 4
        for metric in ("pass_at_1", "exact_match", "edit_similarity"):
            assert row.delta(metric) == getattr(row.all, metric) - getattr(row.without, metric)
    # Only the rule that cuts the junk line is worth anything here.
    assert {row.rule for row in rows[:-1] if row.delta("pass_at_1") != 0} == {"dedent"}
    table = format_ablation_table(rows).splitlines()
    assert table[0].split() == ["set", "mode", "repo-ctx", "rule", "n", "pass@1", "without", "delta", "exact",
                                "without", "delta", "edit-sim", "without", "delta"]
    assert table[2].split() == ["single-line", "prefix", "off", "dedent", "4", "1.000", "0.000", "+1.000", "1.000",
                                "0.000", "+1.000", "1.000", table[2].split()[-2], table[2].split()[-1]]
    assert table[len(RULES) + 1].split()[3:8] == ["all", "4", "1.000", "0.000", "+1.000"]


def test_ablate_with_postprocess_is_a_one_line_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_mod.main(["eval", "--ablate", "--postprocess", "on"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "codecomplete: error: --ablate scores post-processing on and off itself: drop --postprocess"]


@pytest.mark.slow
def test_ablation_on_the_embedded_model_matches_a_post_processed_run(embedded_model, tmp_path):
    common = ["eval", "--set", "single-line", "--set", "multi-line", "--limit", "3", "--model", str(embedded_model),
              "--max-tokens", "24"]
    reports = {}
    for name, extra in (("ablate", ["--ablate"]), ("on", ["--postprocess", "on"])):
        out = tmp_path / f"{name}.json"
        result = CliRunner().invoke(cli_mod.cli, [*common, *extra, "--json", str(out)])
        assert result.exit_code == 0, result.output
        reports[name] = json.loads(out.read_text())
    ablation, on = reports["ablate"], reports["on"]

    # One generation per task stands for every variant: "all rules" is exactly the post-processed run.
    by_task = {(r["set"], r["task_id"], r["format"]): r for r in on["records"]}
    variants = {}
    for r in ablation["records"]:
        variants.setdefault(r["ablation"], []).append(r)
    assert set(variants) == {"all", "off", *RULES} and all(len(v) == 6 for v in variants.values())
    for r in variants["all"]:
        mine = by_task[r["set"], r["task_id"], r["format"]]
        assert (r["completion"], r["exact"], r["status"]) == (mine["completion"], mine["exact"], mine["status"])
    for r in variants["off"]:
        assert r["completion"] == r["raw"] and r["postprocess"] is False

    rows = ablation["ablation"]["rows"]
    assert ablation["ablation"]["rules"] == list(RULES)
    assert [(row["set"], row["rule"]) for row in rows] == [
        (name, rule) for name in ("single-line", "multi-line") for rule in (*RULES, "all")]
    summary = {row["set"]: row for row in on["summary"]}
    for row in rows:
        assert row["n"] == 3 and row["format"] == "prefix"
        assert row["all"] == {m: summary[row["set"]][m] for m in ("pass_at_1", "exact_match", "edit_similarity")}
        for metric, delta in row["delta"].items():
            assert delta == pytest.approx(row["all"][metric] - row["without"][metric])
        mine = [r for r in variants["off" if row["rule"] == "all" else row["rule"]] if r["set"] == row["set"]]
        assert row["without"]["exact_match"] == sum(r["exact"] for r in mine) / 3
        assert row["without"]["pass_at_1"] == sum(r["status"] == "passed" for r in mine) / 3
