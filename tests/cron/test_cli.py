"""The cron job commands of ``hetuflow-server`` against a real server (uvicorn on a free port,
SQLite) over HTTP."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import uvicorn
from click.testing import CliRunner, Result

from hetuflow.cli.server import main
from hetuflow.config import Config, DatabaseConfig
from hetuflow.server.app import create_app


@pytest.fixture
def server(sqlite_database: DatabaseConfig) -> Iterator[str]:
    app = create_app(Config(database=sqlite_database))
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    running = uvicorn.Server(config)
    thread = threading.Thread(target=running.run, name="test-server")
    thread.start()
    try:
        for _ in range(500):
            if running.started or not thread.is_alive():
                break
            threading.Event().wait(0.01)
        assert running.started, "the server did not start"
        port = running.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        running.should_exit = True
        thread.join(timeout=10)


Invoke = Callable[..., Result]


@pytest.fixture
def cli(server: str) -> Invoke:
    def invoke(*args: str) -> Result:
        return CliRunner().invoke(main, [*args, "--server", server], catch_exceptions=False)

    return invoke


def test_seed_command_works_verbatim(cli: Invoke) -> None:
    result = cli(
        "create-cron-job",
        "--name",
        "daily-backup",
        "--cron-expression",
        "0 2 * * *",
        "--task-type",
        "backup",
        "--payload",
        '{"type": "full"}',
    )
    assert result.exit_code == 0, result.output
    assert "created cron job daily-backup" in result.output
    assert "0 2 * * * (UTC)" in result.output

    listed = cli("list-cron-jobs", "--json")
    assert listed.exit_code == 0
    [job] = json.loads(listed.output)
    assert (job["name"], job["cron_expression"], job["task_type"]) == (
        "daily-backup",
        "0 2 * * *",
        "backup",
    )
    assert job["payload"] == {"type": "full"}
    assert job["enabled"] is True
    table = cli("list-cron-jobs")
    assert "daily-backup" in table.output
    assert "1 cron job" in table.output


def test_lifecycle_commands(cli: Invoke) -> None:
    created = cli(
        "create-cron-job",
        "--name",
        "berlin",
        "--cron-expression",
        "30 2 * * *",
        "--task-type",
        "t",
        "--payload",
        "{}",
        "--timezone",
        "Europe/Berlin",
        "--priority",
        "high",
        "--capabilities",
        "db",
        "ssd",
        "--disabled",
        "--json",
    )
    assert created.exit_code == 0, created.output
    job = json.loads(created.output)
    assert job["enabled"] is False
    assert job["required_capabilities"] == ["db", "ssd"]
    assert job["priority"] == "high"
    job_id = job["id"]

    enabled = cli("enable-cron-job", job_id, "--json")
    assert json.loads(enabled.output)["enabled"] is True
    disabled = cli("disable-cron-job", job_id)
    assert disabled.exit_code == 0
    assert "disabled cron job berlin" in disabled.output

    fires = cli("next-fires", job_id, "--count", "3", "--json")
    assert len(json.loads(fires.output)["fire_times"]) == 3
    fires_table = cli("next-fires", job_id)
    assert "CEST" in fires_table.output or "CET" in fires_table.output

    triggered = cli("trigger-cron-job", job_id, "--json")
    assert triggered.exit_code == 0, triggered.output
    task = json.loads(triggered.output)
    assert task["cron_job_id"] == job_id

    listed = json.loads(cli("list-cron-jobs", "--json").output)
    assert listed[0]["last_task_id"] == task["id"]

    ticks = cli("cron-job-ticks", job_id, "--json")
    assert json.loads(ticks.output) == {"items": []}

    deleted = cli("delete-cron-job", job_id)
    assert deleted.exit_code == 0
    assert json.loads(cli("list-cron-jobs", "--json").output) == []


def test_preview_an_expression(cli: Invoke) -> None:
    result = cli("next-fires", "--expression", "0 9 * * MON", "--timezone", "Asia/Tokyo", "--json")
    assert result.exit_code == 0, result.output
    answer = json.loads(result.output)
    assert answer["timezone"] == "Asia/Tokyo"
    assert all(fire.endswith("T00:00:00Z") for fire in answer["fire_times"])


def test_failures_are_readable_and_non_zero(cli: Invoke) -> None:
    bad = cli(
        "create-cron-job",
        "--name",
        "x",
        "--cron-expression",
        "61 * * * *",
        "--task-type",
        "t",
    )
    assert bad.exit_code == 1
    assert "error:" in bad.output
    assert "minute field" in bad.output
    payload = cli(
        "create-cron-job",
        "--name",
        "x",
        "--cron-expression",
        "* * * * *",
        "--task-type",
        "t",
        "--payload",
        "{not json",
    )
    assert payload.exit_code == 2
    assert "--payload is not valid JSON" in payload.output
    missing = cli("enable-cron-job", "00000000-0000-4000-8000-000000000000")
    assert missing.exit_code == 1
    assert "no cron job" in missing.output
    both = cli("next-fires", "00000000-0000-4000-8000-000000000000", "--expression", "x")
    assert both.exit_code == 2
    neither = cli("next-fires")
    assert neither.exit_code == 2


def test_a_cron_job_that_starts_a_workflow(cli: Invoke, tmp_path: Path) -> None:
    document = tmp_path / "wf.json"
    document.write_text(
        json.dumps({"name": "report", "steps": [{"name": "a", "task_type": "t"}]}),
        encoding="utf-8",
    )
    both = cli(
        "create-cron-job", "--name", "x", "--cron-expression", "@daily", "--task-type", "t",
        "--workflow-file", str(document),
    )  # fmt: skip
    assert both.exit_code == 2
    assert "exactly one" in both.output
    result = cli(
        "create-cron-job", "--name", "nightly", "--cron-expression", "@daily",
        "--workflow-file", str(document),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "workflow" in result.output
    assert "report" in result.output
    [job] = json.loads(cli("list-cron-jobs", "--json").output)
    assert (job["task_type"], job["workflow"]["steps"][0]["name"]) == (None, "a")
    assert "report" in cli("list-cron-jobs").output


def test_a_cron_job_with_a_concurrency_strategy(cli: Invoke) -> None:
    base = ["create-cron-job", "--cron-expression", "0 2 * * *", "--task-type", "t"]
    created = cli(
        *base,
        "--name",
        "keyed",
        "--concurrency-key",
        "nightly",
        "--concurrency-strategy",
        "cancel_in_progress",
    )
    assert created.exit_code == 0, created.output
    assert "concurrency strategy" in created.output
    assert "cancel_in_progress" in created.output
    [job] = json.loads(cli("list-cron-jobs", "--json").output)
    assert (job["concurrency_key"], job["concurrency_strategy"]) == (
        "nightly",
        "cancel_in_progress",
    )
    alone = cli(*base, "--name", "alone", "--concurrency-strategy", "cancel_newest")
    assert alone.exit_code == 2
    assert "--concurrency-strategy needs --concurrency-key" in alone.output
    unknown = cli(*base, "--name", "u", "--concurrency-key", "k", "--concurrency-strategy", "x")
    assert unknown.exit_code == 2
