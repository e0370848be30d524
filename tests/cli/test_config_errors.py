"""``load_config`` errors read like the configuration, not like pydantic: the key, where it
came from, what was expected and what was given, and a near key when there is one."""

from __future__ import annotations

from pathlib import Path

import pytest

from hetuflow.config import load_config
from hetuflow.errors import ConfigInvalid


@pytest.fixture(autouse=True)
def _no_config_file_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # ./config.toml is read when present


def _problems(tmp_path: Path, toml: str | None = None, **env: str) -> list[str]:
    if toml is not None:
        (tmp_path / "config.toml").write_text(toml)
    with pytest.raises(ConfigInvalid) as raised:
        load_config(env=env)
    return raised.value.message.splitlines()


def test_unknown_key_suggests_the_near_one(tmp_path: Path) -> None:
    [line] = _problems(tmp_path, '[server]\nbind_adress = "0.0.0.0:8080"\n')
    assert line.endswith(": unknown key server.bind_adress (did you mean bind_address?)")
    assert "Extra inputs" not in line


def test_unknown_key_far_from_any_lists_none_or_few(tmp_path: Path) -> None:
    [line] = _problems(tmp_path, "[auth]\nzzz = 1\n")
    assert line.endswith("unknown key auth.zzz (known: enabled, metrics_open)")


def test_wrong_types_say_what_was_expected_and_given(tmp_path: Path) -> None:
    lines = _problems(
        tmp_path, '[database]\nport = "abc"\n[server]\nlog_format = "xml"\nworkers = 0\n'
    )
    assert sorted(line.split(": ", 1)[1] for line in lines) == sorted(
        [
            'database.port: expected an integer, got "abc"',
            "server.log_format: expected 'text' or 'json', got \"xml\"",
            "server.workers: should be greater than or equal to 1, got 0",
        ]
    )


def test_a_section_that_is_not_a_table(tmp_path: Path) -> None:
    [line] = _problems(tmp_path, "server = 3\n")
    assert line.endswith("config.toml: server: expected a table, got 3")


def test_environment_variables_are_named(tmp_path: Path) -> None:
    assert _problems(tmp_path, HETUFLOW_DATABASE__PORT="abc") == [
        "environment variable HETUFLOW_DATABASE__PORT:"
        ' database.port: expected an integer, got "abc"'
    ]
    assert _problems(tmp_path, HETUFLOW_SCHEDULER__RETRY_INTERVAL="5") == [
        "environment variable HETUFLOW_SCHEDULER__RETRY_INTERVAL: unknown key"
        " scheduler.retry_interval"
        " (did you mean HETUFLOW_SCHEDULER__RETRY_INTERVAL_SECONDS?)"
    ]
