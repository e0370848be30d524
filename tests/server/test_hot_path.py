"""The task hot path: what a create answers without reading the store, and how fast a created
task reaches an idle agent."""

from __future__ import annotations

from collections.abc import AsyncIterator
from uuid import UUID

import pytest

from hetuflow.config import DatabaseConfig

from .harness import Server, agent, fast_config, serve


@pytest.fixture
async def server(database: DatabaseConfig) -> AsyncIterator[Server]:
    async with serve(fast_config(database)) as running:
        yield running


async def test_create_answers_queued_when_an_agent_here_can_start_it(server: Server) -> None:
    async with agent(server, "scrape", capabilities=["chrome"], slots=1) as chrome:
        created = await server.http.post(
            "/api/tasks", json={"task_type": "scrape", "required_capabilities": ["chrome"]}
        )
        assert created.status_code == 201
        assert created.json()["pending_reason"] == "queued"
        [task] = await chrome.dispatched(1)
        assert task["task_id"] == created.json()["id"]
        # Its one slot is taken: the next create asks the store, which knows why it waits.
        busy = await server.http.post(
            "/api/tasks", json={"task_type": "scrape", "required_capabilities": ["chrome"]}
        )
        assert busy.json()["pending_reason"] == "agents_busy"
        # No agent here has the capability: the store's answer too.
        other = await server.http.post(
            "/api/tasks", json={"task_type": "scrape", "required_capabilities": ["gpu"]}
        )
        assert other.json()["pending_reason"] == "no_agent_with_capabilities"
        later = await server.http.post(
            "/api/tasks", json={"task_type": "scrape", "delay_seconds": 3600}
        )
        assert later.json()["pending_reason"] == "scheduled"


async def test_batch_create_answers_each_task(server: Server) -> None:
    async with agent(server, "a", slots=5) as worker:
        response = await server.http.post(
            "/api/tasks/batch",
            json={"tasks": [{"task_type": "a"}, {"task_type": "b"}, {"task_type": "a"}]},
        )
        assert response.status_code == 201
        reasons = [item["pending_reason"] for item in response.json()["items"]]
        assert reasons == ["queued", "no_agent_for_task_type", "queued"]
        ids = {UUID(item["id"]) for item in response.json()["items"] if item["task_type"] == "a"}
        assert {UUID(task["task_id"]) for task in await worker.dispatched(2)} == ids
