"""The log budget of an attempt, through the real report path (agent frames over a real
WebSocket, the ResultWriter, the Store), on both databases: every line costs its bytes plus
a fixed overhead, the line count is capped, and the usage is kept with the attempt in the
database, so it holds after a restart (a new Store on the same database, as a second node)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from hetuflow.config import DatabaseConfig
from hetuflow.models import LOG_LINE_OVERHEAD_BYTES, LogLine, TaskStatus

from .harness import Agent, Server, agent, eventually, fast_config, serve

Frame = dict[str, Any]


async def _send_lines(client: Agent, ref: Frame, lines: list[str], per_frame: int = 2000) -> None:
    for start in range(0, len(lines), per_frame):
        chunk = lines[start : start + per_frame]
        await client.send({"type": "TaskLogs", "lines": [{**ref, "line": text} for text in chunk]})


async def _finish(server: Server, client: Agent, task: Frame) -> list[LogLine]:
    await client.result(task)
    task_id = UUID(task["task_id"])
    await server.wait_status(task_id, TaskStatus.SUCCEEDED)
    return await server.context.store.list_logs(task_id, limit=100_000)


def _cost(logs: list[LogLine]) -> int:
    return sum(len(line.line.encode()) + LOG_LINE_OVERHEAD_BYTES for line in logs)


async def test_a_flood_of_empty_lines_is_capped(database: DatabaseConfig) -> None:
    config = fast_config(database, max_log_bytes_per_attempt=100)
    async with serve(config) as server, agent(server, "yes") as client:
        await server.create_task(task_type="yes")
        [task] = await client.dispatched(1)
        ref = {"task_id": task["task_id"], "attempt": task["attempt"]}
        await _send_lines(client, ref, [""] * 20_000)  # `yes ''`
        logs = await _finish(server, client, task)
    # One empty line fits (0 + 64 bytes); the next would pass 100 bytes: the marker, then
    # nothing (before: all 20,000 empty lines were stored, costing nothing).
    assert [line.line for line in logs[:-1]] == [""]
    marker = logs[-1].line
    assert marker.startswith("[hetuflow] log truncated:")
    assert "log limit of 100 bytes" in marker
    assert f"+ {LOG_LINE_OVERHEAD_BYTES}" in marker


async def test_the_line_count_is_capped(database: DatabaseConfig) -> None:
    config = fast_config(database, max_log_lines_per_attempt=3)
    async with serve(config) as server, agent(server, "chatty") as client:
        await server.create_task(task_type="chatty")
        [task] = await client.dispatched(1)
        ref = {"task_id": task["task_id"], "attempt": task["attempt"]}
        await _send_lines(client, ref, [f"line {n}" for n in range(10)], per_frame=4)
        logs = await _finish(server, client, task)
    assert [line.line for line in logs[:3]] == ["line 0", "line 1", "line 2"]
    assert len(logs) == 4
    assert "max_log_lines_per_attempt (3 lines)" in logs[3].line


async def test_the_budget_holds_after_a_restart_on_another_node(database: DatabaseConfig) -> None:
    budget = 20 * (10 + LOG_LINE_OVERHEAD_BYTES)  # twenty lines of ten bytes
    config = fast_config(database, max_log_bytes_per_attempt=budget, reconnect_grace_seconds=30)
    async with serve(config, node_id="node-1") as first, agent(first, "job", name="w") as client:
        await first.create_task(task_type="job")
        [task] = await client.dispatched(1)
        ref = {"task_id": task["task_id"], "attempt": task["attempt"]}
        task_id = UUID(task["task_id"])
        await _send_lines(client, ref, ["0123456789"] * 15)

        async def written() -> bool:
            return len(await first.context.store.list_logs(task_id)) == 15

        await eventually(written)
        agent_id = client.agent_id
    # Another server process (a new Store on the same database) gets the agent back, still
    # running the attempt: only five more lines fit.
    async with (
        serve(config, node_id="node-2") as second,
        agent(second, "job", name="w", agent_id=agent_id, running=[ref]) as again,
    ):
        registered = next(frame for frame in again.frames if frame["type"] == "AgentRegistered")
        assert registered["superseded"] == []
        await _send_lines(again, ref, ["0123456789"] * 15)
        logs = await _finish(second, again, task)
    assert [line.line for line in logs[:-1]] == ["0123456789"] * 20
    assert logs[-1].line.startswith("[hetuflow] log truncated:")
    assert _cost(logs[:-1]) <= budget
