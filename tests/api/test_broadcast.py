"""API: broadcasts (``"dispatch": "all"``): validation, no matching agent, the parent and
its children, ``pending_reason: agent_offline``, cancel and retry. SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from hetuflow.models import Agent, AgentRegistration, AgentStatus

from .helpers import context_of


async def connect(app: FastAPI, name: str, *, capabilities: tuple[str, ...] = ()) -> Agent:
    """An agent connected to another node (this node's dispatcher never claims for it)."""
    context = context_of(app)
    return await context.store.connect_agent(
        AgentRegistration(
            capabilities=capabilities,
            supported_task_types=("probe",),
            max_concurrent_tasks=2,
            name=name,
        ),
        node_id="node-elsewhere",
        now=context.clock.now(),
    )


async def children(client: httpx.AsyncClient, task_id: str) -> list[dict[str, Any]]:
    response = await client.get(f"/api/tasks/{task_id}/children")
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


@pytest.mark.parametrize(
    "body",
    [
        {"dispatch": "some"},
        {"broadcast_policy": "all"},
        {"dispatch": "one", "broadcast": True},
        {"dispatch": "all", "idempotency_key": "k"},
        {"broadcast": True, "concurrency_key": "k"},
        {"dispatch": "all", "broadcast_policy": "most"},
    ],
)
async def test_bad_broadcasts_are_refused(
    app: FastAPI, client: httpx.AsyncClient, body: dict[str, Any]
) -> None:
    await connect(app, "a")
    response = await client.post("/api/tasks", json={"task_type": "probe", **body})
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "invalid_input"
    assert "JSON object" not in response.json()["error"]["message"]
    assert (await client.get("/api/tasks")).json()["items"] == []


async def test_a_batch_creates_broadcasts_with_their_children(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    a = await connect(app, "a")
    b = await connect(app, "b")
    tasks = [
        {"task_type": "probe", "name": "plain"},
        {"task_type": "probe", "name": "all", "dispatch": "all", "start_deadline_seconds": 60},
        {"task_type": "probe", "name": "any", "broadcast": True, "broadcast_policy": "any"},
    ]
    response = await client.post("/api/tasks/batch", json={"tasks": tasks})
    assert response.status_code == 201, response.text
    answer = response.json()
    assert answer["created"] == [True, True, True]
    plain, every, some = answer["items"]
    assert (plain["name"], plain["status"], plain["broadcast_policy"]) == ("plain", "pending", None)
    assert (every["status"], every["broadcast_policy"]) == ("waiting", "all")
    assert (some["status"], some["broadcast_policy"]) == ("waiting", "any")
    assert every["start_deadline_at"] is not None
    assert some["start_deadline_at"] is None
    for parent in (every, some):
        assert (await client.get(f"/api/tasks/{parent['id']}")).json() == parent
        kids = await children(client, parent["id"])
        assert [k["pinned_agent_id"] for k in kids] == [str(a.id), str(b.id)]
        assert {k["start_deadline_at"] for k in kids} == {parent["start_deadline_at"]}
    assert (await client.get("/api/tasks", params={"limit": 100})).json()["total"] == 7


@pytest.mark.parametrize(
    ("item", "status", "code", "field"),
    [
        ({"required_capabilities": ["gpu"]}, 409, "no_agent_for_broadcast", "tasks[1].dispatch"),
        ({"idempotency_key": "k"}, 422, "invalid_input", "tasks[1]"),
        ({"start_deadline_seconds": 0}, 422, "invalid_input", "tasks[1].start_deadline_seconds"),
    ],
)
async def test_a_bad_broadcast_fails_the_whole_batch(
    app: FastAPI,
    client: httpx.AsyncClient,
    item: dict[str, Any],
    status: int,
    code: str,
    field: str,
) -> None:
    await connect(app, "a")
    tasks = [
        {"task_type": "probe"},
        {"task_type": "probe", "dispatch": "all", **item},
        {"task_type": "probe", "dispatch": "all"},
    ]
    response = await client.post("/api/tasks/batch", json={"tasks": tasks})
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert error["field"].startswith(field)
    if status == 409:
        assert error["message"].startswith("tasks[1]: no online, enabled agent")
    assert (await client.get("/api/tasks")).json()["items"] == []


async def test_a_start_deadline_needs_a_broadcast(client: httpx.AsyncClient) -> None:
    body = {"task_type": "probe", "start_deadline_seconds": 30}
    response = await client.post("/api/tasks", json=body)
    assert response.status_code == 422, response.text
    assert "start_deadline_seconds needs" in response.json()["error"]["message"]
    assert (await client.get("/api/tasks")).json()["items"] == []


async def test_a_child_past_its_start_deadline_fails_naming_its_agent(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    await connect(app, "a")
    b = await connect(app, "b")
    body = {"task_type": "probe", "dispatch": "all", "start_deadline_seconds": 30}
    response = await client.post("/api/tasks", json=body)
    assert response.status_code == 201, response.text
    parent = response.json()
    context = context_of(app)
    created = datetime.fromisoformat(parent["created_at"])
    assert datetime.fromisoformat(parent["start_deadline_at"]) == created + timedelta(seconds=30)
    await context.store.set_agent_status(
        b.id, AgentStatus.OFFLINE, session=b.session, now=context.clock.now()
    )
    # Both agents are elsewhere and nobody claims: past the deadline, both children end.
    await context.store.expire_broadcast_children(now=created + timedelta(seconds=31))
    kids = await children(client, parent["id"])
    assert [(k["status"], k["error"]) for k in kids] == [
        (
            "failed",
            "not started by its start deadline: agent a was online (busy, or the task held back)",
        ),
        ("failed", "not started by its start deadline: agent b was offline"),
    ]
    done = (await client.get(f"/api/tasks/{parent['id']}")).json()
    assert (done["status"], done["error"]) == (
        "failed",
        "failed on 2 of 2 agents: a (failed), b (failed)",
    )


async def test_no_matching_agent_is_a_conflict_and_creates_nothing(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    await connect(app, "plain")
    body = {"task_type": "probe", "dispatch": "all", "required_capabilities": ["gpu"]}
    response = await client.post("/api/tasks", json=body)
    assert response.status_code == 409, response.text
    error = response.json()["error"]
    assert error["code"] == "no_agent_for_broadcast"
    assert "'probe' with capabilities ['gpu']" in error["message"]
    assert (await client.get("/api/tasks")).json()["items"] == []


async def test_a_broadcast_makes_a_parent_and_a_child_per_agent(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    a = await connect(app, "a")
    b = await connect(app, "b")
    response = await client.post(
        "/api/tasks",
        json={"task_type": "probe", "broadcast": True, "broadcast_policy": "any"},
    )
    assert response.status_code == 201, response.text
    parent = response.json()
    assert (parent["status"], parent["broadcast_policy"]) == ("waiting", "any")
    assert (await client.get(f"/api/tasks/{parent['id']}")).json() == parent
    kids = await children(client, parent["id"])
    assert [k["pinned_agent_id"] for k in kids] == [str(a.id), str(b.id)]
    assert {(k["status"], k["broadcast_of"], k["pending_reason"]) for k in kids} == {
        ("pending", parent["id"], "queued")
    }
    # b goes offline: its child waits for it, and says so.
    context = context_of(app)
    await context.store.set_agent_status(
        b.id, AgentStatus.OFFLINE, session=b.session, now=context.clock.now()
    )
    reasons = {
        k["pinned_agent_id"]: k["pending_reason"] for k in await children(client, parent["id"])
    }
    assert reasons == {str(a.id): "queued", str(b.id): "agent_offline"}
    # Run again: refused, a broadcast is made anew.
    retry = await client.post(f"/api/tasks/{kids[0]['id']}/retry")
    assert retry.status_code == 409
    assert "create a new broadcast" in retry.json()["error"]["message"]
    # Cancel the parent: the children are cancelled with it.
    cancelled = await client.delete(f"/api/tasks/{parent['id']}")
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    assert {k["status"] for k in await children(client, parent["id"])} == {"cancelled"}


async def test_children_of_a_missing_task_is_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/tasks/00000000-0000-0000-0000-000000000000/children")
    assert response.status_code == 404
