"""Retry options and the dead-letter view from the command line, against a real
``hetuflow-server start`` process and an agent speaking the protocol over a real WebSocket:
create-task --retry-on/--retry-jitter/--retry-backoff-max, list-tasks --final, retry-task."""

from __future__ import annotations

import json
import uuid
from typing import Any

from websockets.sync.client import connect

from .conftest import Running


def _json(server: Running, line: str) -> Any:
    ran = server.run(line)
    assert ran.returncode == 0, ran.stderr
    return json.loads(ran.stdout)


def test_create_task_takes_the_retry_options(server: Running) -> None:
    task = _json(
        server,
        "./hetuflow-server create-task --task-type retry-options --max-retries 2"
        " --retry-backoff 5 --retry-backoff-max 30 --retry-jitter 0.5"
        " --retry-on timed_out agent_lost --json",
    )
    assert (task["retry_backoff_seconds"], task["retry_backoff_max_seconds"]) == (5, 30)
    assert (task["retry_jitter"], task["retry_on"]) == (0.5, ["timed_out", "agent_lost"])
    shown = server.run(f"./hetuflow-server show-task {task['id']}")
    assert "timed_out agent_lost" in shown.stdout

    bad = server.run("./hetuflow-server create-task --task-type retry-options --retry-on lost")
    assert bad.returncode == 2
    assert bad.stderr == ("error: --retry-on 'lost' is not one of failed, timed_out, agent_lost\n")
    jitter = server.run("./hetuflow-server create-task --task-type retry-options --retry-jitter 2")
    assert jitter.returncode == 2
    job = _json(
        server,
        "./hetuflow-server create-cron-job --name retry-job --cron-expression '0 3 * * *'"
        " --task-type retry-options --retry-on failed --retry-jitter 1 --json",
    )
    assert (job["retry_on"], job["retry_jitter"]) == (["failed"], 1)


def test_list_tasks_final_shows_the_dead_letters_until_retried(server: Running) -> None:
    task_type = f"dead-{uuid.uuid4().hex[:6]}"
    task = _json(
        server,
        f"./hetuflow-server create-task --task-type {task_type} --max-retries 3"
        " --retry-on timed_out --json",
    )
    ws_url = server.url.replace("http://", "ws://") + "/ws"
    with connect(ws_url, open_timeout=5) as ws:
        hello = {
            "type": "AgentCapabilities",
            "name": f"agent-{task_type}",
            "capabilities": {
                "capabilities": [],
                "max_concurrent_tasks": 1,
                "supported_task_types": [task_type],
            },
        }
        ws.send(json.dumps(hello))
        assert json.loads(ws.recv(timeout=5))["type"] == "AgentRegistered"
        frame = json.loads(ws.recv(timeout=10))
        while frame["type"] != "TaskDispatch":
            frame = json.loads(ws.recv(timeout=10))
        [dispatched] = frame["tasks"]
        assert dispatched["task_id"] == task["id"]
        failed = {
            "type": "TaskResult",
            "task_id": task["id"],
            "attempt": dispatched["attempt"],
            "outcome": "failed",
            "error": "boom",
        }
        ws.send(json.dumps(failed))
        for _ in range(50):  # the result is written by the next group commit
            shown = _json(server, f"./hetuflow-server show-task {task['id']} --json")
            if shown["status"] != "dispatched" and shown["status"] != "running":
                break
    assert shown["status"] == "failed"  # failed is not in retry_on: no retry, at once
    assert shown["error"] == "boom (not retried: retry_on does not include failed)"

    final = f"./hetuflow-server list-tasks --task-type {task_type} --final --json"
    assert [item["id"] for item in _json(server, final)["items"]] == [task["id"]]
    table = server.run(f"./hetuflow-server list-tasks --task-type {task_type} --final")
    assert task["id"][:8] in table.stdout
    again = _json(server, f"./hetuflow-server retry-task {task['id']} --json")
    assert again["replay_of"] == task["id"]
    assert _json(server, final)["items"] == []
