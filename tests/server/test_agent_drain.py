"""An operator drains an agent (``POST /api/agents/{id}/drain``): it gets no new task, the
ones it runs finish and count; ``resume`` gives it tasks again. The node holding the agent's
connection learns it through the notifier, so this works across nodes on PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from uuid import UUID

import httpx
import pytest

from hetuflow.config import DatabaseConfig
from hetuflow.models import TaskStatus

from .harness import Server, agent, fast_config, serve


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


async def test_drain_and_resume_need_a_connected_known_agent(server: Server) -> None:
    created = await server.http.post("/api/agents", json={"name": "never-connected"})
    assert created.status_code == 201, created.text
    offline = created.json()["id"]
    for action in ("drain", "resume"):
        response = await server.http.post(f"/api/agents/{offline}/{action}")
        assert response.status_code == 409, response.text
        assert response.json()["error"]["code"] == "agent_offline"
        missing = await server.http.post(f"/api/agents/{UUID(int=1)}/{action}")
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "agent_not_found"
    assert await _status(server.http, offline) == "offline"


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
