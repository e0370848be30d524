"""The seed README's REST examples, with their bodies byte for byte, on both databases."""

from __future__ import annotations

import httpx

# The -d bodies of the seed's curl examples, verbatim (indentation included).
SEED_CREATE_TASK = """{
    "name": "test-task",
    "task_type": "data-processing",
    "priority": "high",
    "payload": {"data": "test"}
  }"""
SEED_CREATE_AGENT = """{
    "name": "agent-1",
    "capabilities": ["chrome", "headless"],
    "status": "active"
  }"""
JSON = {"Content-Type": "application/json"}


async def test_create_list_get_cancel_task_as_in_the_seed(client: httpx.AsyncClient) -> None:
    created = await client.post("/api/tasks", headers=JSON, content=SEED_CREATE_TASK)
    assert created.status_code == 201, created.text
    task = created.json()
    assert task["name"] == "test-task"
    assert task["task_type"] == "data-processing"
    assert task["priority"] == "high"
    assert task["payload"] == {"data": "test"}
    assert task["status"] == "pending"
    assert task["pending_reason"] == "no_agent_for_task_type"

    listed = await client.get("/api/tasks")
    assert listed.status_code == 200
    page = listed.json()
    assert page["total"] == 1
    assert [item["id"] for item in page["items"]] == [task["id"]]
    assert (page["limit"], page["offset"]) == (50, 0)

    fetched = await client.get(f"/api/tasks/{task['id']}")
    assert fetched.status_code == 200
    assert fetched.json()["id"] == task["id"]

    cancelled = await client.delete(f"/api/tasks/{task['id']}")
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    assert (await client.get(f"/api/tasks/{task['id']}")).json()["status"] == "cancelled"


async def test_list_and_create_agents_as_in_the_seed(client: httpx.AsyncClient) -> None:
    empty = await client.get("/api/agents")
    assert empty.status_code == 200
    assert empty.json() == {"items": []}

    created = await client.post("/api/agents", headers=JSON, content=SEED_CREATE_AGENT)
    assert created.status_code == 201, created.text
    agent = created.json()
    assert agent["name"] == "agent-1"
    assert agent["capabilities"] == ["chrome", "headless"]
    assert agent["enabled"] is True
    assert agent["status"] == "offline"  # pre-created: offline until a process connects

    listed = (await client.get("/api/agents")).json()["items"]
    assert [item["id"] for item in listed] == [agent["id"]]
