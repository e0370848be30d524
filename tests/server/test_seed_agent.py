"""The seed README's agent story, end to end over a real socket, on both databases.

The seed pre-creates ``agent-1`` with ``POST /api/agents`` and then shows a WebSocket agent
that sends the three-field ``AgentCapabilities`` and an ``AgentHeartbeat`` naming
``"agent-1"``: that connection is agent-1 (one agent, online, running the task), not a
second agent under a generated name. The frames below are the seed's, as it shows them.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from websockets.asyncio.client import connect

from hetuflow.config import AuthConfig, DatabaseConfig
from hetuflow.models import TaskStatus
from hetuflow.server.auth import issue_token
from hetuflow.tokens import Role

from .harness import Agent, Frame, Server, fast_config, serve

SEED_CREATE_AGENT = """{
    "name": "agent-1",
    "capabilities": ["chrome", "headless"],
    "status": "active"
  }"""
SEED_CAPABILITIES: Frame = {
    "type": "AgentCapabilities",
    "capabilities": {
        "capabilities": ["chrome", "headless"],
        "max_concurrent_tasks": 3,
        "supported_task_types": ["web-scraping", "data-processing"],
    },
}


def seed_heartbeat(agent_id: str = "agent-1") -> Frame:
    return {
        "type": "AgentHeartbeat",
        "agent_id": agent_id,
        "timestamp": datetime.now(UTC).isoformat(),
    }


def seed_result(task_id: str) -> Frame:
    return {
        "type": "TaskResult",
        "task_id": task_id,
        "result": {"status": "success", "data": "scraped-data"},
        "error": None,
    }


@contextlib.asynccontextmanager
async def seed_agent(server: Server, token: str | None = None) -> AsyncIterator[Agent]:
    """A raw ``websockets`` agent that has sent the seed's first two frames, back to back."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with connect(
        server.ws_url, additional_headers=headers, open_timeout=5, close_timeout=1
    ) as ws:
        agent = Agent(ws)
        await ws.send(json.dumps(SEED_CAPABILITIES))
        await ws.send(json.dumps(seed_heartbeat()))
        yield agent


async def create_seed_agent(server: Server) -> dict[str, Any]:
    created = await server.http.post(
        "/api/agents", content=SEED_CREATE_AGENT, headers={"Content-Type": "application/json"}
    )
    assert created.status_code == 201, created.text
    body: dict[str, Any] = created.json()
    return body


async def test_the_seed_agent_story_runs_a_task_as_agent_1(database: DatabaseConfig) -> None:
    async with serve(fast_config(database)) as server:
        agent_1 = await create_seed_agent(server)
        task_id = await server.create_task(
            name="scrape", task_type="web-scraping", payload={"url": "https://example.com"}
        )
        async with seed_agent(server) as agent:
            registered = await agent.expect("AgentRegistered")
            assert (registered["agent_id"], registered["name"]) == (agent_1["id"], "agent-1")
            [dispatched] = await agent.dispatched(1)
            assert dispatched["task_id"] == str(task_id)
            await agent.send(seed_result(dispatched["task_id"]))
            task = await server.wait_status(task_id, TaskStatus.SUCCEEDED)
            assert str(task.agent_id) == agent_1["id"]
            assert task.result == {"status": "success", "data": "scraped-data"}

            listed = (await server.http.get("/api/agents")).json()["items"]
            assert [(a["id"], a["name"], a["status"]) for a in listed] == [
                (agent_1["id"], "agent-1", "online")
            ]
            # Later heartbeats name it too and are just heartbeats.
            await agent.send(seed_heartbeat())
            assert await agent.quiet(0.3) == []


async def test_a_disabled_seed_agent_connects_but_is_given_no_work(
    database: DatabaseConfig,
) -> None:
    async with serve(fast_config(database)) as server:
        created = await server.http.post(
            "/api/agents", json={"name": "agent-1", "status": "disabled"}
        )
        assert created.status_code == 201, created.text
        task_id = await server.create_task(task_type="web-scraping")
        async with seed_agent(server) as agent:
            registered = await agent.expect("AgentRegistered")
            assert registered["agent_id"] == created.json()["id"]
            assert await agent.quiet(0.6) == []
        task = await server.task(task_id)
        assert (task.status, task.attempts) == (TaskStatus.PENDING, 0)


async def test_an_unknown_status_in_the_create_body_is_a_422_listing_the_allowed_ones(
    database: DatabaseConfig,
) -> None:
    async with serve(fast_config(database)) as server:
        refused = await server.http.post("/api/agents", json={"name": "a", "status": "paused"})
        assert refused.status_code == 422
        error = refused.json()["error"]
        assert error["field"] == "status"
        assert "'active' or 'disabled'" in error["message"]


async def test_an_anonymous_registration_still_gets_a_generated_name(
    database: DatabaseConfig,
) -> None:
    """With no name anywhere (nothing follows the capabilities), the agent is a new one."""
    async with serve(fast_config(database)) as server:
        await create_seed_agent(server)
        async with connect(server.ws_url, open_timeout=5, close_timeout=1) as ws:
            agent = Agent(ws)
            await agent.send(SEED_CAPABILITIES)
            registered = await agent.expect("AgentRegistered")
            assert registered["name"] != "agent-1"
        names = [a["name"] for a in (await server.http.get("/api/agents")).json()["items"]]
        assert len(names) == 2
        assert "agent-1" in names


async def test_a_heartbeat_naming_another_agent_is_an_error(database: DatabaseConfig) -> None:
    async with serve(fast_config(database)) as server:
        await create_seed_agent(server)
        async with seed_agent(server) as agent:
            await agent.expect("AgentRegistered")
            await agent.send(seed_heartbeat("agent-2"))
            error = await agent.expect("Error")
            assert (error["code"], error["message_type"]) == ("agent_mismatch", "AgentHeartbeat")
            assert "agent-1" in error["message"]
            assert "agent-2" in error["message"]


@pytest.fixture
async def auth_server(database: DatabaseConfig) -> AsyncIterator[Server]:
    config = fast_config(database).model_copy(update={"auth": AuthConfig(enabled=True)})
    async with serve(config) as server:
        context = server.context
        admin, _ = await issue_token(
            context.store, name="admin", role=Role.ADMIN, now=context.clock.now()
        )
        server.http.headers["Authorization"] = f"Bearer {admin}"
        yield server


async def test_with_auth_naming_agent_1_needs_agent_1s_token(auth_server: Server) -> None:
    server = auth_server
    agent_1 = await create_seed_agent(server)
    other = (await server.http.post("/api/agents", json={"name": "agent-2"})).json()

    async with seed_agent(server, other["token"]) as impostor:
        error = await impostor.expect("Error")
        assert error["code"] == "agent_token_mismatch"
        assert (await impostor.closed())[0] == 4001
    assert (await server.http.get(f"/api/agents/{agent_1['id']}")).json()["status"] == "offline"

    task_id = await server.create_task(task_type="web-scraping")
    async with seed_agent(server, agent_1["token"]) as agent:
        registered = await agent.expect("AgentRegistered")
        assert registered["agent_id"] == agent_1["id"]
        [dispatched] = await agent.dispatched(1)
        await agent.send(seed_result(dispatched["task_id"]))
        task = await server.wait_status(task_id, TaskStatus.SUCCEEDED)
        assert str(task.agent_id) == agent_1["id"]
    names = [a["name"] for a in (await server.http.get("/api/agents")).json()["items"]]
    assert names == ["agent-1", "agent-2"]


async def test_any_other_next_frame_ends_the_wait_first(database: DatabaseConfig) -> None:
    """A bad frame after a held registration: AgentRegistered still comes first."""
    async with (
        serve(fast_config(database)) as server,
        connect(server.ws_url, open_timeout=5, close_timeout=1) as ws,
    ):
        agent = Agent(ws)
        server.engine.gateway.naming_window_seconds = 30.0  # only the frame ends it
        await agent.send(SEED_CAPABILITIES)
        await agent.send("not json")
        first = await agent.recv()
        assert first["type"] == "AgentRegistered"
        error = await agent.recv()
        assert error["code"] == "protocol_violation"
