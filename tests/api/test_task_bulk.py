"""Replay, bulk cancel / retry, and the task type statistics behind the console."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from fastapi import FastAPI

from hetuflow.models import AgentRegistration, AttemptOutcome, TaskStatus

from .helpers import context_of, now_of
from .test_tasks import create, finish


async def test_replay_any_finished_task_links_the_copy(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    task = await create(client, payload={"k": 1}, priority="high", idempotency_key="k1")
    await finish(app, "t", AttemptOutcome.SUCCEEDED, result={"ok": True})
    response = await client.post(f"/api/tasks/{task['id']}/replay")
    assert response.status_code == 201, response.text
    replay = response.json()
    assert replay["replay_of"] == task["id"]
    assert replay["status"] == "pending"
    assert replay["idempotency_key"] is None
    for key in ("name", "task_type", "payload", "priority", "required_capabilities"):
        assert replay[key] == task[key]
    assert (await client.get(f"/api/tasks/{replay['id']}")).json()["replay_of"] == task["id"]
    assert (await client.get(f"/api/tasks/{task['id']}")).json()["replay_of"] is None

    pending = await client.post(f"/api/tasks/{replay['id']}/replay")
    assert pending.status_code == 409
    assert pending.json()["error"]["code"] == "task_not_finished"
    assert (await client.post(f"/api/tasks/{uuid.uuid4()}/replay")).status_code == 404


async def test_bulk_cancel_by_ids_answers_per_task(client: httpx.AsyncClient) -> None:
    first = await create(client)
    second = await create(client)
    done = await create(client)
    assert (await client.delete(f"/api/tasks/{done['id']}")).status_code == 200
    missing = str(uuid.uuid4())
    ids = [first["id"], second["id"], done["id"], missing, first["id"]]
    response = await client.post("/api/tasks/bulk-cancel", json={"ids": ids})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["succeeded"], body["failed"], body["matched"], body["truncated"]) == (
        2,
        2,
        4,
        False,
    )
    outcome = {item["id"]: item for item in body["items"]}
    assert [item["id"] for item in body["items"]] == ids[:4]  # request order, once each
    assert outcome[first["id"]]["task"]["status"] == "cancelled"
    assert outcome[done["id"]]["error"] == {
        "code": "task_already_finished",
        "message": outcome[done["id"]]["error"]["message"],
        "status": 409,
    }
    assert outcome[missing]["error"]["code"] == "task_not_found"
    assert outcome[missing]["error"]["status"] == 404


async def test_bulk_cancel_by_filter_selects_only_unfinished_matches(
    client: httpx.AsyncClient,
) -> None:
    keep = await create(client, task_type="other")
    targets = [await create(client, task_type="nightly") for _ in range(3)]
    finished = await create(client, task_type="nightly")
    await client.delete(f"/api/tasks/{finished['id']}")
    response = await client.post(
        "/api/tasks/bulk-cancel", json={"filter": {"task_type": "nightly"}}
    )
    body = response.json()
    assert (body["matched"], body["succeeded"]) == (3, 3), body
    assert {item["id"] for item in body["items"]} == {task["id"] for task in targets}
    assert (await client.get(f"/api/tasks/{keep['id']}")).json()["status"] == "pending"
    # a filter on finished statuses only selects nothing to cancel
    again = await client.post("/api/tasks/bulk-cancel", json={"filter": {"status": ["cancelled"]}})
    assert again.json() == {
        "items": [],
        "succeeded": 0,
        "failed": 0,
        "matched": 0,
        "truncated": False,
    }


async def test_bulk_cancel_of_the_tasks_waiting_on_a_key_or_a_rate_limit(
    client: httpx.AsyncClient,
) -> None:
    """The console's Limits view links to these lists; "select all matching" acts on them
    only, never on every pending task."""
    keyed = [await create(client, task_type="k", concurrency_key="customer:42") for _ in "ab"]
    other = await create(client, task_type="k", concurrency_key="customer:43")
    made = await client.post(
        "/api/rate-limits", json={"name": "crm-api", "limit": 1, "per_seconds": 60}
    )
    assert made.status_code == 201
    limited = await create(client, task_type="r", rate_limits=[{"name": "crm-api"}])
    plain = await create(client, task_type="k")
    by_key = {"status": ["pending"], "concurrency_key": "customer:42"}
    response = await client.post("/api/tasks/bulk-cancel", json={"filter": by_key})
    body = response.json()
    assert (body["matched"], body["succeeded"]) == (2, 2), body
    assert {item["id"] for item in body["items"]} == {task["id"] for task in keyed}
    by_limit = {"rate_limit": "crm-api"}
    response = await client.post("/api/tasks/bulk-cancel", json={"filter": by_limit})
    assert [item["id"] for item in response.json()["items"]] == [limited["id"]]
    for task in (other, plain):
        assert (await client.get(f"/api/tasks/{task['id']}")).json()["status"] == "pending"
    too_long = {"filter": {"concurrency_key": "k" * 201}}
    bad = await client.post("/api/tasks/bulk-cancel", json=too_long)
    assert bad.status_code == 422
    assert "concurrency_key" in bad.json()["error"]["field"]


async def test_bulk_is_bounded_by_max_batch_tasks(client: httpx.AsyncClient) -> None:
    """The test app allows 50 tasks per request."""
    ids = [str(uuid.uuid4()) for _ in range(51)]
    response = await client.post("/api/tasks/bulk-retry", json={"ids": ids})
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "ids"
    batch = {"tasks": [{"task_type": "many"} for _ in range(50)]}
    assert (await client.post("/api/tasks/batch", json=batch)).status_code == 201
    assert (await client.post("/api/tasks/batch", json=batch)).status_code == 201
    first = await client.post("/api/tasks/bulk-cancel", json={"filter": {"task_type": "many"}})
    body = first.json()
    assert (body["matched"], body["succeeded"], body["truncated"]) == (100, 50, True)
    rest = await client.post("/api/tasks/bulk-cancel", json={"filter": {"task_type": "many"}})
    body = rest.json()
    assert (body["matched"], body["succeeded"], body["truncated"]) == (50, 50, False)


async def test_bulk_request_names_ids_or_a_filter(client: httpx.AsyncClient) -> None:
    bodies: list[dict[str, Any]] = [
        {},
        {"ids": [], "filter": {}},
        {"filter": {"bogus": 1}},
        {"ids": []},
    ]
    for request in bodies:
        response = await client.post("/api/tasks/bulk-cancel", json=request)
        assert response.status_code == 422, (request, response.text)


async def test_bulk_retry_creates_new_tasks_for_failed_ones(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    failed = await create(client, task_type="r")
    await finish(app, "r", AttemptOutcome.FAILED, error="boom")
    pending = await create(client, task_type="r")
    response = await client.post(
        "/api/tasks/bulk-retry", json={"ids": [failed["id"], pending["id"]]}
    )
    body = response.json()
    assert (body["succeeded"], body["failed"]) == (1, 1)
    ok, refused = body["items"]
    assert ok["task"]["id"] != failed["id"]
    assert ok["task"]["status"] == "pending"
    assert refused["error"]["code"] == "task_not_retryable"
    by_filter = await client.post("/api/tasks/bulk-retry", json={"filter": {"task_type": "r"}})
    assert [item["id"] for item in by_filter.json()["items"]] == [failed["id"]]


async def test_task_type_stats(client: httpx.AsyncClient, app: FastAPI) -> None:
    await create(client, task_type="a")
    await finish(app, "a", AttemptOutcome.SUCCEEDED, started_at=now_of(app))
    await create(client, task_type="b")
    response = await client.get("/api/stats/task-types", params={"window_seconds": 600})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["window_seconds"] == 600
    assert body["sampled"] == 2
    assert not body["truncated"]
    a, b = body["items"]
    assert (a["task_type"], a["total"], a["by_status"]["succeeded"]) == ("a", 1, 1)
    assert a["by_status"]["pending"] == 0
    assert set(a["by_status"]) == {status.value for status in TaskStatus}
    assert a["run_seconds"]["p50"] is not None
    assert a["queue_wait_seconds"]["p95"] is not None
    assert (b["task_type"], b["by_status"]["pending"]) == ("b", 1)
    assert b["run_seconds"] == {"p50": None, "p95": None}
    too_long = await client.get("/api/stats/task-types", params={"window_seconds": 8 * 86400})
    assert too_long.status_code == 422


async def test_unserved_lists_tasks_no_agent_can_run(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    context = context_of(app)
    await context.store.connect_agent(
        AgentRegistration(
            capabilities=("linux",),
            supported_task_types=("served",),
            max_concurrent_tasks=0,
            name="w",
        ),
        node_id="node-elsewhere",
        now=now_of(app),
    )
    batch: dict[str, Any] = {
        "tasks": [{"task_type": "nobody-type"} for _ in range(3)]
        + [{"task_type": "served", "required_capabilities": ["gpu"]}]
        + [{"task_type": "served"}]  # waits for a busy agent: not unserved
        + [{"task_type": "nobody-type", "delay_seconds": 3600}]  # not due yet
    }
    assert (await client.post("/api/tasks/batch", json=batch)).status_code == 201
    body = (await client.get("/api/stats/unserved")).json()
    assert body == {
        "items": [
            {
                "task_type": "nobody-type",
                "required_capabilities": [],
                "pending": 3,
                "reason": "no_agent_for_task_type",
            },
            {
                "task_type": "served",
                "required_capabilities": ["gpu"],
                "pending": 1,
                "reason": "no_agent_with_capabilities",
            },
        ],
        "total": 4,
    }
