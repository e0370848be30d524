"""The trigger, event and hook commands of ``hetuflow-server`` against a real server (uvicorn
on a free port, SQLite) over HTTP."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator

import httpx
import pytest
import uvicorn
from click.testing import CliRunner, Result

from hetuflow.cli.server import main
from hetuflow.config import Config, DatabaseConfig
from hetuflow.server.app import create_app
from hetuflow.triggers import signature


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


def test_triggers_events_and_hooks_from_the_command_line(cli: Invoke, server: str) -> None:
    created = cli(
        "create-trigger",
        "--name",
        "invoice",
        "--event",
        "order.created",
        "--filter",
        '{"status": "paid"}',
        "--task-type",
        "invoice",
        "--payload",
        '{"copies": 2}',
        "--priority",
        "high",
    )
    assert created.exit_code == 0, created.output
    assert "created trigger invoice" in created.output
    listed = cli("list-triggers", "--json")
    [trigger] = json.loads(listed.output)
    assert trigger["filter"] == {"status": "paid"}
    assert trigger["task"] == {"task_type": "invoice", "payload": {"copies": 2}, "priority": "high"}
    assert "1 trigger" in cli("list-triggers").output

    sent = cli("send-event", "order.created", "--data", '{"status": "paid"}', "--id", "o1")
    assert sent.exit_code == 0, sent.output
    assert "delivered: 1 trigger matched" in sent.output
    again = cli(
        "send-event", "order.created", "--data", '{"status": "paid"}', "--id", "o1", "--json"
    )
    answer = json.loads(again.output)
    assert answer["created"] is False
    assert answer["tasks"][0]["payload"]["event"]["id"] == "o1"
    missing = cli("send-event", "order.creatd")
    assert missing.exit_code != 0
    assert "no trigger is bound" in missing.output

    hook = cli("create-hook", "--name", "shop", "--event", "order.created", "--json")
    assert hook.exit_code == 0, hook.output
    secret = json.loads(hook.output)["secret"]
    assert "shop" in cli("list-hooks").output
    body = b'{"status": "paid"}'
    stamp = str(int(time.time()))
    called = httpx.post(
        f"{server}/api/hooks/shop",
        content=body,
        headers={
            "X-Hetuflow-Timestamp": stamp,
            "X-Hetuflow-Signature": signature(secret, stamp, body),
        },
    )
    assert called.status_code == 201, called.text
    assert cli("delete-hook", "shop").exit_code == 0
    assert json.loads(cli("list-hooks", "--json").output) == []

    deleted = cli("delete-trigger", "invoice")
    assert deleted.exit_code == 0, deleted.output
    assert json.loads(cli("list-triggers", "--json").output) == []
    tasks = json.loads(cli("list-tasks", "--json").output)
    assert len(tasks["items"] if isinstance(tasks, dict) else tasks) == 2  # kept


def test_a_workflow_trigger_from_the_command_line(cli: Invoke) -> None:
    document = {
        "name": "ship",
        "steps": [
            {"name": "pack", "task_type": "pack"},
            {"name": "send", "task_type": "send", "depends_on": ["pack"]},
        ],
    }
    created = cli(
        "create-trigger",
        "--name",
        "ship",
        "--event",
        "order.paid",
        "--workflow",
        json.dumps(document),
    )
    assert created.exit_code == 0, created.output
    assert "workflow ship" in cli("list-triggers").output
    sent = cli("send-event", "order.paid", "--id", "p1")
    assert sent.exit_code == 0, sent.output
    assert "workflow ship" in sent.output
    assert "(2 steps)" in sent.output


def test_create_trigger_usage_errors(cli: Invoke) -> None:
    both = cli("create-trigger", "--name", "t", "--event", "e", "--task", "{}", "--task-type", "x")
    assert both.exit_code != 0
    assert "give one of" in both.output
    neither = cli("create-trigger", "--name", "t", "--event", "e")
    assert neither.exit_code != 0
    assert "--task-type" in neither.output
    bad = cli(
        "create-trigger", "--name", "t", "--event", "e", "--task", '{"task_type": "x", "nope": 1}'
    )
    assert bad.exit_code != 0
    assert "nope" in bad.output
