"""Agents over REST: create, duplicate names, status filters, get, delete."""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from hetuflow.models import AgentRegistration

from .helpers import context_of, now_of


async def test_create_with_every_field_and_get(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/agents",
        json={
            "name": "a",
            "capabilities": ["gpu"],
            "status": "disabled",
            "supported_task_types": ["shell", "train"],
            "max_concurrent_tasks": 8,
        },
    )
    assert response.status_code == 201, response.text
    agent = response.json()
    assert (agent["enabled"], agent["max_concurrent_tasks"], agent["running"]) == (False, 8, 0)
    assert agent["supported_task_types"] == ["shell", "train"]
    assert agent.pop("token").startswith("hf_")  # the agent token, in this answer only
    fetched = await client.get(f"/api/agents/{agent['id']}")
    assert fetched.json() == agent


async def test_duplicate_name_is_409(client: httpx.AsyncClient) -> None:
    assert (await client.post("/api/agents", json={"name": "dup"})).status_code == 201
    again = await client.post("/api/agents", json={"name": "dup"})
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "agent_name_taken"


async def test_online_filter(client: httpx.AsyncClient, app: FastAPI) -> None:
    await client.post("/api/agents", json={"name": "idle"})
    await context_of(app).store.connect_agent(
        AgentRegistration(
            capabilities=("chrome", "headless"),
            supported_task_types=("web-scraping",),
            max_concurrent_tasks=3,
            name="live",
        ),
        node_id="node-elsewhere",
        now=now_of(app),
    )

    async def names(**params: str) -> list[str]:
        response = await client.get("/api/agents", params=params)
        assert response.status_code == 200, response.text
        return [agent["name"] for agent in response.json()["items"]]

    assert await names() == ["idle", "live"]
    assert await names(online="true") == ["live"]
    assert await names(online="false") == ["idle"]
    assert await names(status="offline") == ["idle"]
    assert await names(status="online", online="false") == []
    live = (await client.get("/api/agents", params={"online": "true"})).json()["items"][0]
    assert live["status"] == "online"
    assert live["last_heartbeat_at"] is not None or live["connected_at"] is not None


async def test_delete(client: httpx.AsyncClient) -> None:
    agent = (await client.post("/api/agents", json={"name": "gone"})).json()
    deleted = await client.delete(f"/api/agents/{agent['id']}")
    assert deleted.status_code == 204
    assert deleted.content == b""
    assert (await client.get(f"/api/agents/{agent['id']}")).status_code == 404
    again = await client.delete(f"/api/agents/{agent['id']}")
    assert again.status_code == 404
    assert again.json()["error"]["code"] == "agent_not_found"
