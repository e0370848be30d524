"""The /ws gateway over a real socket: registration, errors, floods, duplicate connections."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from uuid import UUID

import pytest

from hetuflow.config import DatabaseConfig
from hetuflow.models import AgentStatus, NewAgent, TaskStatus
from hetuflow.protocol import PROTOCOL_VERSION

from .harness import Server, agent, capabilities, eventually, fast_config, serve


@pytest.fixture
async def server(database: DatabaseConfig) -> AsyncIterator[Server]:
    async with serve(fast_config(database)) as running:
        yield running


async def test_registration_is_acknowledged_with_the_agent_id(server: Server) -> None:
    async with agent(server, "web-scraping", register=False) as client:
        # The seed's registration frame exactly as written there.
        await client.send(
            '{"type":"AgentCapabilities","capabilities":{"capabilities":["chrome","headless"],'
            '"max_concurrent_tasks":3,"supported_task_types":["web-scraping","data-processing"]}}'
        )
        registered = await client.expect("AgentRegistered")
        assert registered["protocol_version"] == PROTOCOL_VERSION
        assert registered["heartbeat_interval_seconds"] == 0.5
        assert registered["superseded"] == []
        datetime.fromisoformat(registered["server_time"])
        stored = await server.context.store.get_agent(UUID(registered["agent_id"]))
        assert stored is not None
        assert stored.status == AgentStatus.ONLINE
        assert stored.name == registered["name"]
        assert set(stored.capabilities) == {"chrome", "headless"}
        assert stored.max_concurrent_tasks == 3
        # A heartbeat naming the agent by its name is accepted as is (one naming another
        # agent is an error, and a first one names the agent: tests/server/test_seed_agent.py).
        await client.send(
            {
                "type": "AgentHeartbeat",
                "agent_id": registered["name"],
                "timestamp": "2024-01-01T00:00:00Z",
            }
        )
        assert await client.quiet(0.3) == []


async def test_malformed_frames_get_an_error_and_the_connection_carries_on(server: Server) -> None:
    async with agent(server, "echo", slots=2) as client:
        first = await server.create_task(task_type="echo")
        [task] = await client.dispatched(1)
        await client.send("{not json")
        error = await client.expect("Error")
        assert error["code"] == "protocol_violation"
        assert "not valid JSON" in error["message"]
        await client.send({"type": "NoSuchMessage"})
        error = await client.expect("Error")
        assert "unknown message type 'NoSuchMessage'" in error["message"]
        await client.send({"type": "TaskStarted", "task_id": task["task_id"], "attempt": 0})
        error = await client.expect("Error")
        assert error["message"].startswith("attempt:")
        await client.send({"type": "TaskResult", "task_id": "task-123", "result": {}})
        error = await client.expect("Error")
        assert error["code"] == "invalid_task_id"
        assert error["task_id"] == "task-123"
        # The connection and its task carry on: the seed's result shape (no attempt) completes it.
        await client.send({"type": "TaskResult", "task_id": task["task_id"], "result": {"n": 1}})
        done = await server.wait_status(first, TaskStatus.SUCCEEDED)
        assert done.result == {"n": 1}


async def test_messages_before_registration_are_refused_by_name(server: Server) -> None:
    async with agent(server, register=False) as client:
        await client.send({"type": "TaskResult", "task_id": str(UUID(int=1)), "result": None})
        error = await client.expect("Error")
        assert error["code"] == "not_registered"
        assert error["message_type"] == "TaskResult"
        await client.send(capabilities(["echo"]))
        await client.expect("AgentRegistered")


async def test_a_flood_of_bad_frames_closes_with_policy_violation(server: Server) -> None:
    limit = server.engine.gateway.bad_frame_limit
    async with agent(server, "echo") as client:
        for _ in range(limit + 1):
            await client.send("garbage")
        code, reason = await client.closed()
        assert code == 1008
        assert "bad frames" in reason
        errors = [frame for frame in client.frames if frame["type"] == "Error"]
        assert len(errors) == limit + 1


async def test_protocol_version_mismatch_is_refused(server: Server) -> None:
    async with agent(server, register=False) as client:
        await client.send(capabilities(["echo"], protocol_version=PROTOCOL_VERSION + 1))
        error = await client.expect("Error")
        assert error["code"] == "protocol_version_unsupported"
        code, _ = await client.closed()
        assert code == 4003


async def test_unknown_agent_id_is_refused(server: Server) -> None:
    async with agent(server, register=False) as client:
        await client.send(capabilities(["echo"], agent_id=str(UUID(int=7))))
        error = await client.expect("Error")
        assert error["code"] == "agent_not_found"
        code, _ = await client.closed()
        assert code == 4004


async def test_a_pre_created_agent_connects_by_name(server: Server) -> None:
    response = await server.http.post(
        "/api/agents", json={"name": "agent-1", "capabilities": ["chrome"], "status": "active"}
    )
    assert response.status_code == 201, response.text
    async with agent(server, "echo", name="agent-1") as client:
        assert client.agent_id == response.json()["id"]
    # An id where a name was expected (the seed's heartbeat style) also finds it.
    async with agent(server, "echo", agent_id="agent-1") as client:
        assert client.agent_id == response.json()["id"]


async def test_the_newer_of_two_connections_wins_and_keeps_the_work(server: Server) -> None:
    async with agent(server, "echo", name="twin", slots=1) as old:
        task_id = await server.create_task(task_type="echo")
        [task] = await old.dispatched(1)
        running = [{"task_id": task["task_id"], "attempt": task["attempt"]}]
        async with agent(server, "echo", name="twin", slots=1, running=running) as new:
            assert new.agent_id == old.agent_id
            code, reason = await old.closed()
            assert code == 4000
            assert "newer connection" in reason
            assert new.frames[0]["type"] == "AgentRegistered"
            assert new.frames[0]["superseded"] == []
            # The attempt was not lost: the new connection finishes it, and it is accepted.
            await new.result(task)
            done = await server.wait_status(task_id, TaskStatus.SUCCEEDED)
            assert done.attempts == 1
            stored = await server.context.store.get_agent(UUID(new.agent_id))
            assert stored is not None
            assert stored.status == AgentStatus.ONLINE


async def test_reported_attempts_that_are_not_current_are_superseded(server: Server) -> None:
    stale = {"task_id": str(UUID(int=99)), "attempt": 3}
    async with agent(server, "echo", running=[stale]) as client:
        assert client.frames[0]["superseded"] == [stale]


async def test_a_heartbeat_is_recorded(server: Server) -> None:
    await server.context.store.create_agent(
        NewAgent(name="beating"), now=server.context.clock.now()
    )
    async with agent(server, "echo", name="beating") as client:
        before = await server.context.store.get_agent(UUID(client.agent_id))
        assert before is not None

        async def moved() -> bool:
            after = await server.context.store.get_agent(UUID(client.agent_id))
            assert after is not None
            return after.last_heartbeat_at is not None and (
                before.last_heartbeat_at is None
                or after.last_heartbeat_at > before.last_heartbeat_at
            )

        await client.send({"type": "AgentHeartbeat", "agent_id": "beating"})
        await eventually(moved)
