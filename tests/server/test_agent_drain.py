"""An operator drains an agent (``POST /api/agents/{id}/drain``): it gets no new task, the
ones it runs finish and count; ``resume`` gives it tasks again. The node holding the agent's
connection learns it through the notifier, so this works across nodes on PostgreSQL; the drain
is kept in the store, so it outlives the agent's connection."""

from __future__ import annotations

from collections.abc import AsyncIterator
from uuid import UUID

import httpx
import pytest

from hetuflow.config import DatabaseConfig
from hetuflow.models import TaskStatus

from .harness import Server, agent, eventually, fast_config, serve


@pytest.fixture
async def server(database: DatabaseConfig) -> AsyncIterator[Server]:
    async with serve(fast_config(database)) as running:
        yield running


async def _status(http: httpx.AsyncClient, agent_id: str) -> str:
    response = await http.get(f"/api/agents/{agent_id}")
    assert response.status_code == 200, response.text
    status: str = response.json()["status"]
    return status


async def test_a_drained_agent_finishes_its_task_and_gets_no_new_one(server: Server) -> None:
    async with agent(server, "echo", slots=3) as worker:
        running = await server.create_task(task_type="echo")
        [held] = await worker.dispatched(1)
        drained = await server.http.post(f"/api/agents/{worker.agent_id}/drain")
        assert drained.status_code == 200, drained.text
        assert drained.json()["status"] == "draining"
        waiting = await server.create_task(task_type="echo")
        assert await worker.quiet(0.6) == []  # a free slot, yet nothing is dispatched
        await worker.result(held)
        assert (await server.wait_status(running, TaskStatus.SUCCEEDED)).attempts == 1
        assert (await server.task(waiting)).status is TaskStatus.PENDING
        assert await _status(server.http, worker.agent_id) == "draining"
        listed = await server.http.get("/api/agents", params={"status": "draining"})
        assert [a["id"] for a in listed.json()["items"]] == [worker.agent_id]

        resumed = await server.http.post(f"/api/agents/{worker.agent_id}/resume")
        assert resumed.status_code == 200, resumed.text
        assert resumed.json()["status"] == "online"
        [next_task] = await worker.dispatched(1)
        assert UUID(next_task["task_id"]) == waiting


async def test_drain_needs_a_connected_known_agent_and_resume_a_known_one(
    server: Server,
) -> None:
    created = await server.http.post("/api/agents", json={"name": "never-connected"})
    assert created.status_code == 201, created.text
    offline = created.json()["id"]
    response = await server.http.post(f"/api/agents/{offline}/drain")
    assert response.status_code == 409, response.text
    assert response.json()["error"]["code"] == "agent_offline"
    resumed = await server.http.post(f"/api/agents/{offline}/resume")  # nothing to undo
    assert resumed.status_code == 200, resumed.text
    assert (resumed.json()["status"], resumed.json()["drained"]) == ("offline", False)
    for action in ("drain", "resume"):
        missing = await server.http.post(f"/api/agents/{UUID(int=1)}/{action}")
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "agent_not_found"
    assert await _status(server.http, offline) == "offline"


async def test_a_drained_agent_that_reconnects_stays_drained_until_resumed(
    server: Server,
) -> None:
    async with agent(server, "echo", name="w1") as worker:
        drained = await server.http.post(f"/api/agents/{worker.agent_id}/drain")
        assert (drained.status_code, drained.json()["drained"]) == (200, True)
        agent_id = worker.agent_id
    waiting = await server.create_task(task_type="echo")
    async with agent(server, "echo", name="w1") as again:  # a new connection, same agent
        assert again.agent_id == agent_id
        assert await again.quiet(0.6) == []
        assert await _status(server.http, agent_id) == "draining"
        assert (await server.task(waiting)).status is TaskStatus.PENDING
    # offline now: resume clears the drain, and the next connection gets tasks
    await eventually(lambda: _is(server.http, agent_id, "offline"))
    resumed = await server.http.post(f"/api/agents/{agent_id}/resume")
    assert resumed.status_code == 200, resumed.text
    assert (resumed.json()["status"], resumed.json()["drained"]) == ("offline", False)
    async with agent(server, "echo", agent_id=agent_id) as back:
        [task] = await back.dispatched(1)
        assert UUID(task["task_id"]) == waiting
        assert await _status(server.http, agent_id) == "online"


async def _is(http: httpx.AsyncClient, agent_id: str, status: str) -> bool:
    return await _status(http, agent_id) == status


@pytest.mark.postgres
async def test_a_drain_asked_on_one_node_stops_dispatch_on_the_node_of_the_agent(
    pg_database: DatabaseConfig,
) -> None:
    config = fast_config(pg_database)
    async with (
        serve(config, node_id="node-a") as first,
        serve(config, node_id="node-b") as other,
        agent(other, "echo", slots=2) as worker,
    ):
        drained = await first.http.post(f"/api/agents/{worker.agent_id}/drain")
        assert drained.status_code == 200, drained.text
        waiting = await first.create_task(task_type="echo")
        assert await worker.quiet(0.6) == []
        assert (await first.task(waiting)).status is TaskStatus.PENDING
        resumed = await first.http.post(f"/api/agents/{worker.agent_id}/resume")
        assert resumed.json()["status"] == "online"
        [task] = await worker.dispatched(1)
        assert UUID(task["task_id"]) == waiting


@pytest.mark.postgres
async def test_a_drained_agent_reconnecting_to_another_node_stays_drained(
    pg_database: DatabaseConfig,
) -> None:
    config = fast_config(pg_database)
    async with serve(config, node_id="node-a") as first, serve(config, node_id="node-b") as other:
        async with agent(first, "echo", name="mover") as worker:
            drained = await first.http.post(f"/api/agents/{worker.agent_id}/drain")
            assert drained.status_code == 200, drained.text
            agent_id = worker.agent_id
        waiting = await other.create_task(task_type="echo")
        async with agent(other, "echo", name="mover") as moved:
            assert moved.agent_id == agent_id
            assert await moved.quiet(0.6) == []
            assert await _status(other.http, agent_id) == "draining"
            resumed = await first.http.post(f"/api/agents/{agent_id}/resume")
            assert resumed.json()["status"] == "online"
            [task] = await moved.dispatched(1)
            assert UUID(task["task_id"]) == waiting
