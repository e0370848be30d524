"""Attempts over their life: fencing, retries, cancel, reconnect grace, silent agents, logs."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from uuid import UUID

import pytest

from hetuflow.config import DatabaseConfig
from hetuflow.models import AgentStatus, AttemptOutcome, TaskStatus

from .harness import Server, agent, eventually, fast_config, serve


@pytest.fixture
async def server(database: DatabaseConfig) -> AsyncIterator[Server]:
    async with serve(fast_config(database)) as running:
        yield running


async def test_start_progress_logs_and_result_are_recorded(server: Server) -> None:
    async with agent(server, "echo") as client:
        task_id = await server.create_task(task_type="echo")
        [task] = await client.dispatched(1)
        ref = {"task_id": task["task_id"], "attempt": task["attempt"]}
        await client.send({"type": "TaskAccepted", **ref})
        await client.send({"type": "TaskStarted", **ref})
        await server.wait_status(task_id, TaskStatus.RUNNING)
        await client.send({"type": "TaskProgress", **ref, "progress": 0.5})
        await client.send(
            {
                "type": "TaskLogs",
                "lines": [
                    {**ref, "stream": "stdout", "line": "hello"},
                    {**ref, "stream": "stderr", "line": "world"},
                ],
            }
        )
        await server.wait_task(task_id, lambda t: t.progress == 0.5)
        await client.send(
            {"type": "TaskResults", "results": [{**ref, "result": {"x": 1}, "error": None}]}
        )
        done = await server.wait_status(task_id, TaskStatus.SUCCEEDED)
        assert done.result == {"x": 1}
        logs = await server.context.store.list_logs(task_id)
        assert [(line.stream, line.line) for line in logs] == [
            ("stdout", "hello"),
            ("stderr", "world"),
        ]
        [attempt] = await server.context.store.list_attempts(task_id)
        assert attempt.outcome == AttemptOutcome.SUCCEEDED
        assert attempt.started_at is not None


async def test_a_failure_is_retried_then_succeeds(server: Server) -> None:
    async with agent(server, "flaky") as client:
        task_id = await server.create_task(
            task_type="flaky", max_retries=2, retry_backoff_seconds=0.1
        )
        [first] = await client.dispatched(1)
        await client.result(first, error="boom", exit_code=3)
        [second] = await client.dispatched(1, timeout_seconds=3)
        assert second["task_id"] == first["task_id"]
        assert second["attempt"] == 2
        await client.result(second)
        done = await server.wait_status(task_id, TaskStatus.SUCCEEDED)
        assert done.attempts == 2
        attempts = await server.context.store.list_attempts(task_id)
        assert [a.outcome for a in attempts] == [AttemptOutcome.FAILED, AttemptOutcome.SUCCEEDED]


async def test_a_stale_attempt_is_fenced_and_told_to_stop(server: Server) -> None:
    async with agent(server, "echo", name="first", slots=1) as first:
        task_id = await server.create_task(task_type="echo")
        [stale] = await first.dispatched(1)
    # Gone beyond the grace: the attempt goes to another agent.
    async with agent(server, "echo", name="second", slots=1) as second:
        [current] = await second.dispatched(1, timeout_seconds=3)
        assert current["attempt"] == 2
        running = [{"task_id": stale["task_id"], "attempt": 1}]
        async with agent(server, "echo", name="first", running=running, slots=1) as back:
            assert back.frames[0]["superseded"] == running
            await back.result(stale, result={"from": "stale"})
            cancel = await back.expect("TaskCancel")
            assert cancel == {
                "type": "TaskCancel",
                "task_id": stale["task_id"],
                "attempt": 1,
                "reason": "superseded",
            }
            # Counted for operators: a late report refused (hetuflow_reports_fenced_total).
            registry = server.context.metrics.registry
            fenced = {"report": "result"}
            assert registry.get_sample_value("hetuflow_reports_fenced_total", fenced) == 1
            await second.result(current, result={"from": "current"})
            done = await server.wait_status(task_id, TaskStatus.SUCCEEDED)
            assert done.result == {"from": "current"}


async def test_reconnecting_within_the_grace_keeps_the_attempt(server: Server) -> None:
    async with agent(server, "echo", name="other", slots=1) as other:
        async with agent(server, "echo", name="wobbly", slots=1, capabilities=["x"]) as client:
            task_id = await server.create_task(task_type="echo", required_capabilities=["x"])
            [task] = await client.dispatched(1)
        running = [{"task_id": task["task_id"], "attempt": task["attempt"]}]
        async with agent(
            server, "echo", name="wobbly", slots=1, capabilities=["x"], running=running
        ) as back:
            assert back.frames[0]["superseded"] == []
            # Well past the grace: nothing is re-dispatched, the attempt continues.
            assert await back.quiet(0.8) == []
            await back.result(task)
            done = await server.wait_status(task_id, TaskStatus.SUCCEEDED)
            assert done.attempts == 1
        assert await other.quiet(0.0) == []


async def test_an_agent_gone_beyond_the_grace_loses_its_work_promptly(server: Server) -> None:
    async with agent(server, "echo", name="spare", slots=1) as spare:
        async with agent(server, "echo", name="doomed", slots=1) as doomed:
            # Only the doomed agent has a free slot when the task comes.
            await server.create_task(task_type="echo")
            await server.create_task(task_type="echo")
            [held_by_spare] = await spare.dispatched(1)
            [task] = await doomed.dispatched(1)
            doomed_id = UUID(doomed.agent_id)
        gone = time.monotonic()
        await spare.result(held_by_spare)
        [again] = await spare.dispatched(1, timeout_seconds=3)
        elapsed = time.monotonic() - gone
        assert again["task_id"] == task["task_id"]
        assert again["attempt"] == 2
        assert elapsed < 2.0
        stored = await server.context.store.get_agent(doomed_id)
        assert stored is not None
        assert stored.status == AgentStatus.OFFLINE
        attempts = await server.context.store.list_attempts(UUID(task["task_id"]))
        assert attempts[0].outcome == AttemptOutcome.LOST


async def test_a_silent_agent_is_closed_and_its_work_redispatched(server: Server) -> None:
    async with agent(server, "echo", name="mute", slots=1) as mute:
        task_id = await server.create_task(task_type="echo")
        [task] = await mute.dispatched(1)
        # The agent answers nothing (not even Ping): closed after 3 x 0.5 s of silence.
        code, _ = await mute.closed(timeout_seconds=4)
        assert code == 4002
    async with agent(server, "echo", name="fresh", slots=1) as fresh:
        [again] = await fresh.dispatched(1, timeout_seconds=3)
        assert again["task_id"] == task["task_id"]
        assert again["attempt"] == 2
        await fresh.result(again)
        await server.wait_status(task_id, TaskStatus.SUCCEEDED)


async def test_cancel_of_a_running_task_is_routed_to_its_agent(server: Server) -> None:
    async with agent(server, "sleep") as client:
        task_id = await server.create_task(task_type="sleep")
        [task] = await client.dispatched(1)
        await client.send(
            {"type": "TaskStarted", "task_id": task["task_id"], "attempt": task["attempt"]}
        )
        await server.wait_status(task_id, TaskStatus.RUNNING)
        response = await server.http.delete(f"/api/tasks/{task_id}")
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "cancelling"
        cancel = await client.expect("TaskCancel")
        assert cancel["reason"] == "cancelled"
        assert cancel["attempt"] == task["attempt"]
        await client.result(task, outcome="cancelled", error="stopped")
        await server.wait_status(task_id, TaskStatus.CANCELLED)


async def test_log_volume_per_attempt_is_capped(database: DatabaseConfig) -> None:
    # Each line costs its bytes + 64: the cut first line 144, "line N" 70 each.
    config = fast_config(database, max_log_bytes_per_attempt=500, max_log_line_bytes=80)
    async with serve(config) as server, agent(server, "chatty") as client:
        task_id = await server.create_task(task_type="chatty")
        [task] = await client.dispatched(1)
        ref = {"task_id": task["task_id"], "attempt": task["attempt"]}
        lines = [{**ref, "line": "x" * 200}] + [{**ref, "line": f"line {i}"} for i in range(50)]
        await client.send({"type": "TaskLogs", "lines": lines})
        await client.result(task)
        await server.wait_status(task_id, TaskStatus.SUCCEEDED)
        logs = await server.context.store.list_logs(task_id)
        assert len(logs[0].line.encode()) <= 80
        assert logs[0].line.startswith("x" * 40)
        assert logs[1].line == "line 0"
        assert "limit of 500 bytes" in logs[-1].line
        assert sum(len(line.line.encode()) + 64 for line in logs[:-1]) <= 500
        assert [line.line for line in logs[1:-1]] == [f"line {i}" for i in range(5)]


async def test_shutdown_closes_agent_connections_so_they_reconnect(
    database: DatabaseConfig,
) -> None:
    async with serve(fast_config(database)) as server:
        connection = agent(server, "echo")
        client = await connection.__aenter__()
    try:
        code, _ = await client.closed()
        assert code in (1001, 1012)  # the engine's "going away" or uvicorn's "restart"
    finally:
        await connection.__aexit__(None, None, None)


async def test_heartbeat_listing_an_unknown_attempt_gets_it_stopped(server: Server) -> None:
    async with agent(server, "echo") as client:
        unknown = {"task_id": str(UUID(int=5)), "attempt": 1}
        await client.send({"type": "AgentHeartbeat", "running": [unknown]})
        cancel = await client.expect("TaskCancel")
        assert cancel["reason"] == "superseded"
        assert cancel["task_id"] == unknown["task_id"]


async def test_agents_show_offline_after_disconnect(server: Server) -> None:
    async with agent(server, "echo") as client:
        agent_id = UUID(client.agent_id)

    async def offline() -> bool:
        stored = await server.context.store.get_agent(agent_id)
        return stored is not None and stored.status == AgentStatus.OFFLINE

    await eventually(offline)
