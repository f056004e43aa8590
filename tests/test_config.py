"""Settings are checked where they enter (config file, editor options, the daemon's /model): types and ranges."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from codecomplete.config import Settings, load_settings
from codecomplete.errors import UserError


@pytest.mark.parametrize(("overrides", "message"), [
    ({"n_threads": 100000}, "n_threads must be between 1 and"),
    ({"nThreads": 0}, "n_threads must be between 1 and"),
    ({"n_ctx": 10**9}, "n_ctx must be between 256 and"),
    ({"maxTokens": 0}, "max_tokens must be between 1 and 4096"),
    ({"timeBudgetMs": -1}, "time_budget_ms must be between"),
    ({"kvSlots": 99}, "kv_slots must be between 0 and 16"),
    ({"n_ctx": 1e9}, "n_ctx must be an integer"),
    ({"model": "x" * 5000}, "model is not a usable value"),
    ({"repoExclude": ["*"] * 2000}, "at most 1000"),
    ({"bogus": 1}, "unknown setting 'bogus'"),
])
def test_absurd_settings_are_refused_in_one_line(overrides: dict, message: str) -> None:
    with pytest.raises(UserError, match=message) as info:
        Settings().with_overrides(overrides)
    assert "\n" not in str(info.value)


def test_threads_are_bounded_by_this_machine() -> None:
    cpus = os.cpu_count() or 1
    assert Settings().with_overrides({"nThreads": cpus}).n_threads == cpus
    with pytest.raises(UserError, match="logical CPUs"):
        Settings().with_overrides({"nThreads": cpus + 1})


def test_a_config_path_that_is_not_a_file_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CODECOMPLETE_CONFIG", str(tmp_path))
    with pytest.raises(UserError, match="is not a file"):
        load_settings()
    config = tmp_path / "config.toml"
    config.write_text("n_threads = 100000\n")
    monkeypatch.setenv("CODECOMPLETE_CONFIG", str(config))
    with pytest.raises(UserError, match=f"config file {config}: setting n_threads must be between"):
        load_settings()
