"""An operator disables an agent (``POST /api/agents/{id}/disable``): connected or not, it is
given no task (also after it reconnects) until ``enable``; what it runs finishes. The node
holding the connection learns it at once through the notifier."""

from __future__ import annotations

from collections.abc import AsyncIterator
from uuid import UUID

import pytest

from hetuflow.config import DatabaseConfig
from hetuflow.models import TaskStatus

from .harness import Server, agent, fast_config, serve


@pytest.fixture
async def server(database: DatabaseConfig) -> AsyncIterator[Server]:
    async with serve(fast_config(database)) as running:
        yield running


async def test_a_disabled_agent_finishes_its_task_and_gets_no_new_one(server: Server) -> None:
    async with agent(server, "echo", slots=3) as worker:
        running = await server.create_task(task_type="echo")
        [held] = await worker.dispatched(1)
        disabled = await server.http.post(f"/api/agents/{worker.agent_id}/disable")
        assert disabled.status_code == 200, disabled.text
        assert (disabled.json()["enabled"], disabled.json()["status"]) == (False, "online")
        waiting = await server.create_task(task_type="echo")
        assert await worker.quiet(0.6) == []  # free slots, yet nothing is dispatched
        await worker.result(held)
        assert (await server.wait_status(running, TaskStatus.SUCCEEDED)).attempts == 1
        assert (await server.task(waiting)).status is TaskStatus.PENDING

        enabled = await server.http.post(f"/api/agents/{worker.agent_id}/enable")
        assert enabled.status_code == 200, enabled.text
        assert enabled.json()["enabled"] is True
        [next_task] = await worker.dispatched(1)
        assert UUID(next_task["task_id"]) == waiting


async def test_an_offline_agent_disabled_stays_disabled_when_it_connects(server: Server) -> None:
    created = (await server.http.post("/api/agents", json={"name": "w1"})).json()
    disabled = await server.http.post(f"/api/agents/{created['id']}/disable")
    assert (disabled.status_code, disabled.json()["enabled"]) == (200, False)
    task_id = await server.create_task(task_type="echo")
    async with agent(server, "echo", name="w1") as worker:
        assert worker.agent_id == created["id"]
        assert await worker.quiet(0.6) == []
        await server.http.post(f"/api/agents/{created['id']}/enable")
        [dispatched] = await worker.dispatched(1)
        assert UUID(dispatched["task_id"]) == task_id


async def test_disable_and_enable_an_unknown_agent_is_404(server: Server) -> None:
    for action in ("disable", "enable"):
        response = await server.http.post(
            f"/api/agents/00000000-0000-0000-0000-000000000000/{action}"
        )
        assert response.status_code == 404, response.text
        assert response.json()["error"]["code"] == "agent_not_found"
