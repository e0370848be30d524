"""REST and delivery: outgoing webhooks (docs/webhooks.md). Deliveries go over real HTTP to a
receiver on 127.0.0.1, signed; a receiver that fails first is retried with backoff."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI

from hetuflow.client import verify_webhook
from hetuflow.clock import FrozenClock
from hetuflow.config import Config, DatabaseConfig, SchedulerConfig, ServerConfig, WebhooksConfig
from hetuflow.errors import SignatureInvalid
from hetuflow.models import AttemptOutcome, AttemptRef, AttemptResult, NewTask
from hetuflow.server.app import create_app
from hetuflow.store import create_store

from .helpers import context_of, hold_task
from .webhook_receiver import receiving

SECRET = "s3cret-webhook-key-for-tests"
FAST = WebhooksConfig(
    secret=SECRET,
    backoff_seconds=0.05,
    max_backoff_seconds=0.2,
    jitter=0,
    timeout_seconds=2,
    poll_interval_seconds=0.05,
    max_attempts=3,
)


def _config(database: DatabaseConfig, webhooks: WebhooksConfig = FAST) -> Config:
    return Config(
        database=database,
        server=ServerConfig(),
        scheduler=SchedulerConfig(retry_interval_seconds=7),
        webhooks=webhooks,
    )


@contextlib.asynccontextmanager
async def _running(
    config: Config, clock: FrozenClock | None = None
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    application = create_app(config, clock=clock)
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost:8080") as http:
            yield application, http


@pytest.fixture
async def served(database: DatabaseConfig) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    async with _running(_config(database)) as pair:
        yield pair


def _error(response: httpx.Response, status: int, field: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    if field is not None:
        assert error["field"] == field, error
    return error


async def _task_count(client: httpx.AsyncClient) -> int:
    total: int = (await client.get("/api/tasks")).json()["total"]
    return total


async def _webhook_until(
    client: httpx.AsyncClient, task_id: str, state: str, *, within: float = 10.0
) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while True:
        answer = (await client.get(f"/api/tasks/{task_id}/webhook")).json()
        if answer["items"] and answer["items"][-1]["state"] == state:
            return answer  # type: ignore[no-any-return]
        if time.monotonic() > deadline:
            raise TimeoutError(f"delivery never became {state}: {answer}")
        await asyncio.sleep(0.02)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("ftp://hooks.example.com/x", "http"),
        ("file:///etc/passwd", "http"),
        ("javascript:alert(1)", "http"),
        ("https://", "host"),
        ("hooks.example.com/no-scheme", "http"),
        ("https://user:pw@hooks.example.com/", "credentials"),
        ("https://hooks.example.com/a b", "spaces"),
        ("https://hooks.example.com/" + "a" * 2100, "2048"),
        ("", "at least 1"),
    ],
)
async def test_a_bad_webhook_url_is_a_422_and_creates_nothing(
    served: tuple[FastAPI, httpx.AsyncClient], url: str, why: str
) -> None:
    _, client = served
    error = _error(
        await client.post("/api/tasks", json={"task_type": "t", "webhook_url": url}),
        422,
        "webhook_url",
    )
    assert why in error["message"], error
    batch = {"tasks": [{"task_type": "t"}, {"task_type": "t", "webhook_url": url}]}
    _error(await client.post("/api/tasks/batch", json=batch), 422)
    cron = {"name": "c", "cron_expression": "0 3 * * *", "task_type": "t", "webhook_url": url}
    _error(await client.post("/api/cron-jobs", json=cron), 422, "webhook_url")
    assert await _task_count(client) == 0
    assert (await client.get("/api/cron-jobs")).json()["items"] == []


async def test_without_a_secret_or_outside_allowed_hosts_a_webhook_is_refused(
    database: DatabaseConfig,
) -> None:
    async with _running(_config(database, WebhooksConfig())) as (_, client):
        body = {"task_type": "t", "webhook_url": "https://hooks.example.com/x"}
        error = _error(await client.post("/api/tasks", json=body), 422, "webhook_url")
        assert "[webhooks] secret" in error["message"]
        assert await _task_count(client) == 0
    allowed = WebhooksConfig(secret=SECRET, allowed_hosts=("*.example.com", "10.0.0.0/8"))
    async with _running(_config(database, allowed)) as (_, client):
        for good in ("https://hooks.example.com/x", "http://10.1.2.3:9000/x"):
            answer = await client.post("/api/tasks", json={"task_type": "t", "webhook_url": good})
            assert answer.status_code == 201, answer.text
        for bad in ("https://example.org/x", "http://127.0.0.1:8080/api/tasks"):
            answer = await client.post("/api/tasks", json={"task_type": "t", "webhook_url": bad})
            assert "allowed_hosts" in _error(answer, 422, "webhook_url")["message"]
        assert await _task_count(client) == 2


async def test_a_cancelled_task_posts_a_signed_delivery_the_sdk_verifies(
    served: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    _, client = served
    with receiving([204]) as receiver:
        url = f"{receiver.url}/hooks/done?source=hetuflow"
        created = await client.post(
            "/api/tasks", json={"task_type": "t", "name": "nightly", "webhook_url": url}
        )
        assert created.status_code == 201, created.text
        task = created.json()
        assert task["webhook_url"] == url
        assert (await client.get(f"/api/tasks/{task['id']}")).json()["webhook_url"] == url
        empty = (await client.get(f"/api/tasks/{task['id']}/webhook")).json()
        assert empty == {"webhook_url": url, "items": []}

        cancel = await client.delete(f"/api/tasks/{task['id']}")
        assert cancel.status_code == 200, cancel.text
        [post] = await receiver.wait_for(1)
        shown = await _webhook_until(client, task["id"], "delivered")

    assert post.path == "/hooks/done?source=hetuflow"
    body = orjson.loads(post.body)
    assert body["event"] == "task.finished"
    assert (body["task_id"], body["name"], body["task_type"]) == (task["id"], "nightly", "t")
    assert (body["status"], body["attempts"], body["result"]) == ("cancelled", 0, None)
    assert body["cron_job_id"] is None
    assert body["finished_at"].endswith("Z")
    headers = {key.lower(): value for key, value in post.headers.items()}
    assert headers["content-type"] == "application/json"
    assert headers["x-hetuflow-event"] == "task.finished"
    [delivery] = shown["items"]
    assert headers["x-hetuflow-delivery-id"] == delivery["id"] == body["delivery_id"]
    assert SECRET not in post.headers.values()
    # The SDK's helper verifies it; a wrong secret or a changed body fails.
    now = datetime.now(UTC)
    verify_webhook(SECRET, post.headers, post.body, now=now)
    with pytest.raises(SignatureInvalid):
        verify_webhook("another-secret-of-16+", post.headers, post.body, now=now)
    with pytest.raises(SignatureInvalid):
        verify_webhook(SECRET, post.headers, post.body.replace(b"cancelled", b"succeeded"))
    assert (delivery["state"], delivery["attempts"], delivery["last_status_code"]) == (
        "delivered",
        1,
        204,
    )
    assert delivery["status"] == "cancelled"
    assert delivery["next_attempt_at"] is None
    assert delivery["delivered_at"] is not None


async def test_a_failing_receiver_is_retried_with_backoff_then_delivered(
    served: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = served
    with receiving([500, 503, 200]) as receiver:
        task = (
            await client.post(
                "/api/tasks",
                json={
                    "task_type": "work",
                    "webhook_url": f"{receiver.url}/h",
                    "max_retries": 1,
                    "retry_backoff_seconds": 0,
                },
            )
        ).json()
        store = context_of(app).store
        now = context_of(app).clock.now()
        # The first attempt fails and is retried: nothing is posted for it.
        dispatch = await hold_task(app, "work")
        ref = AttemptRef(uuid.UUID(task["id"]), dispatch.attempt, dispatch.agent_id)
        await store.finish_attempts([AttemptResult(ref, AttemptOutcome.FAILED, error="x")], now=now)
        assert (await client.get(f"/api/tasks/{task['id']}/webhook")).json()["items"] == []
        dispatch = await hold_task(app, "work")
        ref = AttemptRef(uuid.UUID(task["id"]), dispatch.attempt, dispatch.agent_id)
        result = AttemptResult(ref, AttemptOutcome.SUCCEEDED, result={"rows": 7})
        await store.finish_attempts([result], now=context_of(app).clock.now())
        posts = await receiver.wait_for(3)
        shown = await _webhook_until(client, task["id"], "delivered")
    ids = {post.headers["X-Hetuflow-Delivery-Id"] for post in posts}
    assert len(ids) == 1  # the same delivery each time: a receiver de-duplicates on it
    bodies = [orjson.loads(post.body) for post in posts]
    assert all(b["status"] == "succeeded" and b["result"] == {"rows": 7} for b in bodies)
    assert bodies[0]["attempts"] == 2
    # Backoff: 0.05 s, then 0.1 s (jitter 0).
    assert posts[1].at - posts[0].at >= 0.04
    assert posts[2].at - posts[1].at >= 0.09
    [delivery] = shown["items"]
    assert (delivery["attempts"], delivery["last_status_code"], delivery["last_error"]) == (
        3,
        200,
        None,
    )
    metrics = (await client.get("/metrics")).text
    assert 'hetuflow_webhook_deliveries_total{outcome="retried"} 2.0' in metrics
    assert 'hetuflow_webhook_deliveries_total{outcome="delivered"} 1.0' in metrics


async def test_a_receiver_that_keeps_failing_is_given_up(
    served: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    _, client = served
    with receiving([500]) as receiver:
        task = (
            await client.post(
                "/api/tasks", json={"task_type": "t", "webhook_url": f"{receiver.url}/h"}
            )
        ).json()
        await client.delete(f"/api/tasks/{task['id']}")
        shown = await _webhook_until(client, task["id"], "given_up")
        assert len(receiver.received) == 3  # [webhooks] max_attempts
    [delivery] = shown["items"]
    assert (delivery["attempts"], delivery["last_status_code"]) == (3, 500)
    assert delivery["last_error"] == "answered HTTP 500"
    assert delivery["next_attempt_at"] is None
    metrics = (await client.get("/metrics")).text
    assert 'hetuflow_webhook_deliveries_total{outcome="given_up"} 1.0' in metrics


async def test_an_unreachable_receiver_records_the_error(
    served: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    _, client = served
    with receiving() as receiver:
        closed = receiver.url  # nothing listens there once the block ends
    task = (
        await client.post("/api/tasks", json={"task_type": "t", "webhook_url": f"{closed}/h"})
    ).json()
    await client.delete(f"/api/tasks/{task['id']}")
    shown = await _webhook_until(client, task["id"], "given_up")
    [delivery] = shown["items"]
    assert delivery["last_status_code"] is None
    assert "ConnectError" in delivery["last_error"]


async def test_a_cron_job_gives_its_webhook_url_to_its_tasks(
    served: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    _, client = served
    url = "https://hooks.example.com/cron"
    job = {"name": "nightly", "cron_expression": "0 3 * * *", "task_type": "t", "webhook_url": url}
    created = await client.post("/api/cron-jobs", json=job)
    assert created.status_code == 201, created.text
    assert created.json()["webhook_url"] == url
    run = await client.post(f"/api/cron-jobs/{created.json()['id']}/trigger")
    assert run.status_code in (200, 201), run.text
    assert run.json()["webhook_url"] == url
    changed = await client.patch(
        f"/api/cron-jobs/{created.json()['id']}", json={"webhook_url": None}
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["webhook_url"] is None
    bad = await client.patch(f"/api/cron-jobs/{created.json()['id']}", json={"webhook_url": "x:"})
    _error(bad, 422, "webhook_url")
    workflow_job = {
        "name": "flow",
        "cron_expression": "0 3 * * *",
        "workflow": {"name": "w", "steps": [{"name": "a", "task_type": "t"}]},
        "webhook_url": url,
    }
    _error(await client.post("/api/cron-jobs", json=workflow_job), 422, "webhook_url")


async def test_a_webhook_for_an_unknown_task_is_404(
    served: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    _, client = served
    _error(await client.get(f"/api/tasks/{uuid.uuid4()}/webhook"), 404)


@pytest.mark.postgres
async def test_two_nodes_send_each_delivery_once(pg_database: DatabaseConfig) -> None:
    """Two server nodes on one PostgreSQL database, both woken by the outbox's NOTIFY, race
    to claim: every delivery is POSTed once (one attempt each), by one of them."""
    with receiving([200]) as receiver:
        async with (
            _running(_config(pg_database)) as (_, first),
            _running(_config(pg_database)) as (_, second),
        ):
            tasks = {"tasks": [{"task_type": "t", "webhook_url": f"{receiver.url}/h"}] * 30}
            created = (await first.post("/api/tasks/batch", json=tasks)).json()["items"]
            for index, task in enumerate(created):
                node = first if index % 2 else second
                assert (await node.delete(f"/api/tasks/{task['id']}")).status_code == 200
            posts = await receiver.wait_for(30)
            for task in created:
                shown = await _webhook_until(second, task["id"], "delivered")
                assert shown["items"][0]["attempts"] == 1
            assert len(receiver.received) == 30
    assert len({post.headers["X-Hetuflow-Delivery-Id"] for post in posts}) == 30
    assert {orjson.loads(post.body)["task_id"] for post in posts} == {t["id"] for t in created}


async def test_a_delivery_claimed_by_a_node_that_died_is_sent_after_its_lease(
    database: DatabaseConfig,
) -> None:
    """A node claimed a delivery and died before recording anything (its lease is in the
    database, nothing else): no node sends it during the lease; once it ends, one does, with
    the same delivery id (at least once)."""
    start = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    lease_until = start + timedelta(seconds=40)
    dead = create_store(database)
    await dead.open()
    try:
        with receiving([200]) as receiver:
            url = f"{receiver.url}/h"
            [(task, _)] = await dead.create_tasks([NewTask("n", "t", webhook_url=url)], now=start)
            await dead.cancel_task(task.id, now=start)
            [claimed] = await dead.claim_webhook_deliveries(
                now=start, lease_until=lease_until, limit=1
            )
            clock = FrozenClock(start)
            async with _running(_config(database), clock) as (_, client):
                await asyncio.sleep(0.3)  # several looks (poll 0.05 s): none may send it
                assert receiver.received == []
                clock.set(lease_until)
                [post] = await receiver.wait_for(1)
                shown = await _webhook_until(client, str(task.id), "delivered")
    finally:
        await dead.close()
    assert post.headers["X-Hetuflow-Delivery-Id"] == str(claimed.id)
    verify_webhook(SECRET, post.headers, post.body, now=lease_until)
    assert shown["items"][0]["attempts"] == 2  # the dead node's claim counted one
