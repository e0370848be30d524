"""``GET /api/tasks/{id}``, ``POST /api/tasks`` and ``POST /api/tasks/batch`` are answered
before FastAPI (``hot_routes``) for the usual requests (a canonical id; a JSON body that is a
valid task or batch) and by the FastAPI routes for the rest: both give the same answers."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import fastapi.dependencies.utils
import fastapi.routing
import httpx
import orjson
import pytest
from fastapi import FastAPI

from hetuflow.models import AgentRegistration, TaskStatus

from .helpers import context_of


async def test_every_form_of_an_id_gets_the_same_task(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    created = (await client.post("/api/tasks", json={"task_type": "t", "name": "n"})).json()
    task_id = uuid.UUID(created["id"])
    canonical = await client.get(f"/api/tasks/{task_id}")  # answered by HotRoutes
    upper = await client.get(f"/api/tasks/{str(task_id).upper()}")  # HotRoutes too
    bare_hex = await client.get(f"/api/tasks/{task_id.hex}")  # the FastAPI route
    for answer in (canonical, upper, bare_hex):
        assert answer.status_code == 200
        assert answer.headers["content-type"] == "application/json"
    assert canonical.json() == upper.json() == bare_hex.json()
    assert canonical.json()["pending_reason"] == "no_agent_for_task_type"
    assert canonical.content == bare_hex.content


async def test_a_pending_reason_follows_the_agents(app: FastAPI, client: httpx.AsyncClient) -> None:
    store = context_of(app).store
    now = context_of(app).clock.now()
    later = (now + timedelta(hours=1)).isoformat()
    due = (await client.post("/api/tasks", json={"task_type": "gpu-job"})).json()
    scheduled = (
        await client.post("/api/tasks", json={"task_type": "gpu-job", "scheduled_at": later})
    ).json()
    # an agent row online in the store (not connected here): only the store knows it
    await store.connect_agent(
        AgentRegistration(("x",), ("gpu-job",), 1, name="elsewhere"), node_id="other", now=now
    )
    ids = (due["id"], scheduled["id"])
    for path in (f"/api/tasks/{ids[0]}", f"/api/tasks/{uuid.UUID(ids[0]).hex}"):
        assert (await client.get(path)).json()["pending_reason"] in ("queued", "agents_busy")
    for path in (f"/api/tasks/{ids[1]}", f"/api/tasks/{uuid.UUID(ids[1]).hex}"):
        assert (await client.get(path)).json()["pending_reason"] == "scheduled"


async def test_a_missing_task_is_the_same_404_on_both_paths(client: httpx.AsyncClient) -> None:
    missing = uuid.uuid4()
    canonical = await client.get(f"/api/tasks/{missing}")
    bare_hex = await client.get(f"/api/tasks/{missing.hex}")
    assert canonical.status_code == bare_hex.status_code == 404
    assert canonical.json() == bare_hex.json()
    assert canonical.json()["error"] == {
        "code": "task_not_found",
        "message": f"no task with id {missing}",
        "field": "task_id",
    }


async def test_ids_that_are_not_ids_are_left_to_fastapi(client: httpx.AsyncClient) -> None:
    for bad in (
        "0" * 36,
        "zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz",
        "0000_000-0000-0000-0000-000000000000",
    ):
        answer = await client.get(f"/api/tasks/{bad}")
        assert answer.status_code == 404
        assert answer.json()["error"]["code"] == "task_not_found"
        assert "not a valid UUID" in answer.json()["error"]["message"]
    head = await client.head(f"/api/tasks/{uuid.uuid4()}")
    assert head.status_code == 405  # only GET takes the short path; HEAD is as before


async def test_a_create_answers_alike_on_both_paths(client: httpx.AsyncClient) -> None:
    task = {"task_type": "t", "name": "n", "idempotency_key": "k-1"}
    first = await client.post("/api/tasks", json=task)  # HotRoutes
    text = await client.post(  # JSON of another Content-Type: the FastAPI route
        "/api/tasks",
        content=orjson.dumps(task),
        headers={"Content-Type": "application/vnd.test+json"},
    )
    again = await client.post("/api/tasks", json=task)
    assert first.status_code == 201
    assert text.status_code == again.status_code == 200  # the idempotency key: the same task
    assert first.json() == text.json() == again.json()
    other = await client.post(
        "/api/tasks",
        content=orjson.dumps({"task_type": "t"}),
        headers={"Content-Type": "application/vnd.test+json"},
    )
    fast = await client.post("/api/tasks", json={"task_type": "t"})
    assert other.status_code == fast.status_code == 201
    assert set(other.json()) == set(fast.json())


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{not json", 400, "malformed_json"),
        (b"", 422, "invalid_input"),
        (b"[1, 2]", 422, "invalid_input"),
        (b'{"task_type": "t", "colour": "red"}', 422, "invalid_input"),
        (b'{"task_type": ""}', 422, "invalid_input"),
        (b'{"task_type": "t", "name": "\\ud800"}', 422, "invalid_input"),
        (b"\xff\xfe{}", 400, "malformed_json"),
        (b"[" * 100_000 + b"]" * 100_000, 413, "payload_too_large"),
    ],
)
async def test_a_bad_create_is_refused_as_before(
    app: FastAPI, client: httpx.AsyncClient, body: bytes, status: int, code: str
) -> None:
    """A body that is not a valid task goes on to FastAPI as received: its answers stand."""
    answer = await client.post(
        "/api/tasks", content=body, headers={"Content-Type": "application/json"}
    )
    assert answer.status_code == status, answer.text
    assert answer.json()["error"]["code"] == code
    assert (await context_of(app).store.stats()).tasks_by_status.get(TaskStatus.PENDING, 0) == 0


async def test_a_batch_answers_alike_on_both_paths(client: httpx.AsyncClient) -> None:
    batch = {
        "tasks": [
            {"task_type": "t", "name": "a", "idempotency_key": "b-1"},
            {"task_type": "t", "name": "b", "idempotency_key": "b-2"},
        ]
    }
    first = await client.post("/api/tasks/batch", json=batch)  # HotRoutes
    text = await client.post(  # JSON of another Content-Type: the FastAPI route
        "/api/tasks/batch",
        content=orjson.dumps(batch),
        headers={"Content-Type": "application/vnd.test+json"},
    )
    assert first.status_code == text.status_code == 201, first.text
    assert first.json()["created"] == [True, True]
    assert text.json()["created"] == [False, False]  # the idempotency keys: the same tasks
    assert first.json()["items"] == text.json()["items"]


@pytest.mark.parametrize(
    ("body", "status", "code", "field"),
    [
        (b"{not json", 400, "malformed_json", None),
        (b'{"tasks": []}', 422, "invalid_input", "tasks"),
        (b'{"tasks": [{"task_type": "t"}, {"task_type": ""}]}', 422, "invalid_input", None),
        (b'{"tasks": [{"task_type": "t", "payload": {"x": 1}}], "extra": 1}', 422, None, None),
    ],
)
async def test_a_bad_batch_is_refused_as_before(
    app: FastAPI,
    client: httpx.AsyncClient,
    body: bytes,
    status: int,
    code: str | None,
    field: str | None,
) -> None:
    """A body that is not a valid batch goes on to FastAPI as received: its answers stand,
    and nothing of it is created."""
    answers = [
        await client.post("/api/tasks/batch", content=body, headers={"Content-Type": kind})
        for kind in ("application/json", "application/vnd.test+json")
    ]
    assert answers[0].status_code == answers[1].status_code == status, answers[0].text
    assert answers[0].json() == answers[1].json()
    if code is not None:
        assert answers[0].json()["error"]["code"] == code
    if field is not None:
        assert answers[0].json()["error"]["field"] == field
    assert (await context_of(app).store.stats()).tasks_by_status.get(TaskStatus.PENDING, 0) == 0


async def test_the_usual_requests_skip_fastapi(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A valid create, batch or read never reaches FastAPI's routes (which solve their
    dependencies for every request they answer)."""
    solved = 0
    solve = fastapi.dependencies.utils.solve_dependencies  # what fastapi.routing calls

    async def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal solved
        solved += 1
        return await solve(*args, **kwargs)

    monkeypatch.setattr(fastapi.routing, "solve_dependencies", counted)
    one = await client.post("/api/tasks", json={"task_type": "t"})
    many = await client.post("/api/tasks/batch", json={"tasks": [{"task_type": "t"}] * 2})
    read = await client.get(f"/api/tasks/{one.json()['id']}")
    assert (one.status_code, many.status_code, read.status_code) == (201, 201, 200)
    assert solved == 0
    listed = await client.get("/api/tasks")  # any other route: FastAPI's
    assert listed.status_code == 200
    assert solved == 1
