"""Bulk actions and replay from the command line, against a real ``hetuflow-server start``
process: cancel-tasks by filter, retry-tasks by filter, by ids and --final (the dead letters),
replay-task; and show-task naming a task's key, rate limits and why it waits."""

from __future__ import annotations

import json
import uuid
from typing import Any

from .conftest import Running


def _json(server: Running, line: str) -> Any:
    ran = server.run(line)
    assert ran.returncode == 0, ran.stderr
    return json.loads(ran.stdout)


def test_cancel_then_retry_many_by_filter_and_ids_then_replay(server: Running) -> None:
    kind = f"bulk-{uuid.uuid4().hex[:6]}"  # no agent runs it: the tasks stay pending
    made = [
        _json(server, f"./hetuflow-server create-task --task-type {kind} --json")["id"]
        for _ in range(3)
    ]
    cancelled = _json(server, f"./hetuflow-server cancel-tasks --task-type {kind} --json")
    assert (cancelled["succeeded"], cancelled["failed"], cancelled["matched"]) == (3, 0, 3)
    assert sorted(item["id"] for item in cancelled["items"]) == sorted(made)

    human = server.run(f"./hetuflow-server retry-tasks {made[0][:8]}")
    assert human.returncode == 0, human.stderr
    assert "1 retried, 0 skipped, of 1 matching" in human.stdout
    retried = _json(
        server, f"./hetuflow-server retry-tasks --task-type {kind} --status cancelled --json"
    )
    assert (retried["matched"], retried["succeeded"]) == (3, 3)  # the cancelled ones
    new = [item["task"] for item in retried["items"]]
    assert sorted(task["replay_of"] for task in new) == sorted(made)
    assert {task["status"] for task in new} == {"pending"}
    # a retry's filter selects only finished tasks: the 4 new ones are pending
    again = _json(
        server, f"./hetuflow-server retry-tasks --task-type {kind} --status pending --json"
    )
    assert (again["matched"], again["items"]) == (0, [])

    replayed = _json(server, f"./hetuflow-server replay-task {made[1]} --json")
    assert (replayed["replay_of"], replayed["status"]) == (made[1], "pending")

    none = _json(server, "./hetuflow-server retry-tasks --final --json")
    assert (none["matched"], none["items"]) == (0, [])


def test_bulk_commands_need_ids_or_a_filter_not_both(server: Running) -> None:
    bare = server.run("./hetuflow-server retry-tasks")
    assert bare.returncode == 2
    assert bare.stderr == "error: give TASK_IDS or at least one filter (e.g. --final)\n"
    both = server.run("./hetuflow-server cancel-tasks 00000000-0000-4000-8000-000000000000 --final")
    assert both.returncode == 2
    assert both.stderr == "error: give TASK_IDS or filters, not both\n"
    status = server.run("./hetuflow-server cancel-tasks --status done")
    assert status.returncode == 2
    assert "--status 'done' is not one of" in status.stderr


def test_show_task_names_its_key_rate_limits_and_why_it_waits(server: Running) -> None:
    name = f"crm-{uuid.uuid4().hex[:6]}"
    made = server.run(
        f"./hetuflow-server create-rate-limit --name {name} --limit 5 --per-seconds 60"
    )
    assert made.returncode == 0, made.stderr
    kind = f"keyed-{uuid.uuid4().hex[:6]}"
    task = _json(
        server,
        f"./hetuflow-server create-task --task-type {kind} --concurrency-key tenant:7"
        f" --max-concurrent-per-key 2 --rate-limit {name}:3 --json",
    )
    shown = server.run(f"./hetuflow-server show-task {task['id']}")
    assert shown.returncode == 0, shown.stderr
    assert "tenant:7 (limit 2)" in shown.stdout
    assert f"{name} (3 units)" in shown.stdout
    assert "no_agent_for_task_type" in shown.stdout
