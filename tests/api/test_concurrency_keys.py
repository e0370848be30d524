"""API: concurrency keys on tasks: validation, ``pending_reason: concurrency_limit`` with the
``[concurrency]`` limits of the config, and the ``cancel_newest`` / ``cancel_in_progress``
strategies. SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from hetuflow.config import DatabaseConfig
from hetuflow.models import AgentRegistration, ClaimGroup, ConcurrencyLimits, SlotOffer
from hetuflow.server.app import create_app

from .helpers import context_of, make_config

LIMITS = {"report": 2}


@pytest.fixture
async def app(database: DatabaseConfig) -> AsyncIterator[FastAPI]:
    config = make_config(database).model_copy(update={"concurrency": LIMITS})
    application = create_app(config)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost:8080") as http:
        yield http


async def create(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    response = await client.post("/api/tasks", json={"task_type": "report", **body})
    assert response.status_code == 201, response.text
    task: dict[str, Any] = response.json()
    return task


async def get(client: httpx.AsyncClient, task_id: str) -> dict[str, Any]:
    response = await client.get(f"/api/tasks/{task_id}")
    assert response.status_code == 200, response.text
    task: dict[str, Any] = response.json()
    return task


async def claim(app: FastAPI, free: int) -> list[str]:
    """An agent of another node claims up to ``free`` report tasks, as the dispatcher would
    (with the app's ``[concurrency]`` limits)."""
    context = context_of(app)
    now = context.clock.now()
    agent = await context.store.connect_agent(
        AgentRegistration(
            capabilities=(), supported_task_types=("report",), max_concurrent_tasks=100, name="far"
        ),
        node_id="node-elsewhere",
        now=now,
    )
    group = ClaimGroup(
        frozenset({"report"}), frozenset(), (SlotOffer(agent.id, free_slots=free, running=0),)
    )
    dispatches = await context.store.claim_tasks(
        [group], now=now, key_limits=ConcurrencyLimits(LIMITS)
    )
    return [str(d.task.id) for d in dispatches]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"concurrency_key": "k" * 201}, "concurrency_key"),
        ({"concurrency_key": ""}, "concurrency_key"),
        ({"concurrency_key": "k", "max_concurrent_per_key": 0}, "max_concurrent_per_key"),
        ({"max_concurrent_per_key": 2}, "need a concurrency_key"),
        ({"concurrency_strategy": "cancel_newest"}, "need a concurrency_key"),
        ({"concurrency_key": "k", "concurrency_strategy": "drop"}, "concurrency_strategy"),
    ],
)
async def test_bad_concurrency_fields_are_a_422_and_create_nothing(
    client: httpx.AsyncClient, body: dict[str, Any], field: str
) -> None:
    response = await client.post("/api/tasks", json={"task_type": "report", **body})
    assert response.status_code == 422, response.text
    assert field in response.text
    # a rule across fields says what is wrong, not that the body is no JSON object
    assert "JSON object" not in response.json()["error"]["message"]
    listed = (await client.get("/api/tasks")).json()
    assert listed["items"] == []


async def test_a_key_at_its_config_limit_says_concurrency_limit(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    key = "customer:" + "4" * 191  # 200 characters: the longest key allowed
    tasks = [await create(client, concurrency_key=key) for _ in range(3)]
    assert tasks[0]["concurrency_key"] == key
    assert tasks[0]["max_concurrent_per_key"] is None
    [first] = await claim(app, 1)
    # one active of the "report" limit of 2: the others are not waiting for the key
    waiting = [await get(client, t["id"]) for t in tasks if t["id"] != first]
    assert all(t["pending_reason"] != "concurrency_limit" for t in waiting), waiting
    [second] = await claim(app, 5)  # room for 5, the key allows one more
    [last] = [t for t in tasks if t["id"] not in (first, second)]
    shown = await get(client, last["id"])
    assert shown["status"] == "pending"
    assert shown["pending_reason"] == "concurrency_limit"
    assert shown["concurrency_key"] == key
    # the tasks list explains it the same way
    listed = (await client.get("/api/tasks", params={"status": "pending"})).json()
    assert [t["pending_reason"] for t in listed["items"]] == ["concurrency_limit"]


async def test_cancel_newest_cancels_the_new_task_over_the_limit(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    kept = await create(client, concurrency_key="k", max_concurrent_per_key=1)
    extra = await create(
        client, concurrency_key="k", max_concurrent_per_key=1, concurrency_strategy="cancel_newest"
    )
    assert extra["status"] == "cancelled"
    assert "concurrency key 'k'" in extra["error"]
    assert (await get(client, extra["id"]))["status"] == "cancelled"
    assert (await get(client, kept["id"]))["status"] == "pending"
    # under the limit it is created as usual
    other = await create(
        client, concurrency_key="j", max_concurrent_per_key=1, concurrency_strategy="cancel_newest"
    )
    assert other["status"] == "pending"


async def test_cancel_in_progress_cancels_the_oldest_running_one(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    old = await create(client, concurrency_key="k", max_concurrent_per_key=1)
    assert await claim(app, 1) == [old["id"]]
    new = await create(
        client,
        concurrency_key="k",
        max_concurrent_per_key=1,
        concurrency_strategy="cancel_in_progress",
    )
    assert (await get(client, old["id"]))["status"] == "cancelling"  # its agent is told to stop
    shown = await get(client, new["id"])
    assert shown["status"] == "pending"
    assert shown["pending_reason"] == "concurrency_limit"  # until the old one has stopped


async def test_a_cron_job_gives_its_key_and_limit_to_its_tasks(client: httpx.AsyncClient) -> None:
    body = {
        "name": "nightly",
        "cron_expression": "0 2 * * *",
        "task_type": "report",
        "concurrency_key": "nightly-report",
        "max_concurrent_per_key": 1,
    }
    response = await client.post("/api/cron-jobs", json=body)
    assert response.status_code == 201, response.text
    job = response.json()
    assert (job["concurrency_key"], job["max_concurrent_per_key"]) == ("nightly-report", 1)
    runs = [(await client.post(f"/api/cron-jobs/{job['id']}/trigger")).json() for _ in range(2)]
    assert [run["concurrency_key"] for run in runs] == ["nightly-report"] * 2
    assert [run["max_concurrent_per_key"] for run in runs] == [1, 1]
    changed = await client.patch(
        f"/api/cron-jobs/{job['id']}",
        json={"concurrency_key": None, "max_concurrent_per_key": None},
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["concurrency_key"] is None
    bad = await client.post(
        "/api/cron-jobs", json={**body, "name": "other", "concurrency_key": "k" * 201}
    )
    assert bad.status_code == 422
    alone = await client.post(
        "/api/cron-jobs", json={**body, "name": "third", "concurrency_key": None}
    )
    assert alone.status_code == 422
    assert "max_concurrent_per_key needs a concurrency_key" in alone.text


async def test_a_cron_job_change_keeps_a_limit_with_its_key(client: httpx.AsyncClient) -> None:
    body = {"name": "nightly", "cron_expression": "0 2 * * *", "task_type": "report"}
    job = (await client.post("/api/cron-jobs", json=body)).json()
    alone = await client.patch(f"/api/cron-jobs/{job['id']}", json={"max_concurrent_per_key": 2})
    assert alone.status_code == 422, alone.text
    assert alone.json()["error"]["field"] == "max_concurrent_per_key"
    keyed = await client.patch(
        f"/api/cron-jobs/{job['id']}", json={"concurrency_key": "k", "max_concurrent_per_key": 2}
    )
    assert keyed.status_code == 200, keyed.text
    dropped = await client.patch(f"/api/cron-jobs/{job['id']}", json={"concurrency_key": None})
    assert dropped.status_code == 422, dropped.text
    both = await client.patch(
        f"/api/cron-jobs/{job['id']}",
        json={"concurrency_key": None, "max_concurrent_per_key": None},
    )
    assert both.status_code == 200, both.text
    assert (both.json()["concurrency_key"], both.json()["max_concurrent_per_key"]) == (None, None)


async def test_a_cron_job_gives_its_concurrency_strategy_to_its_tasks(
    client: httpx.AsyncClient,
) -> None:
    body = {
        "name": "nightly",
        "cron_expression": "0 2 * * *",
        "task_type": "report",
        "concurrency_key": "nightly-report",
        "max_concurrent_per_key": 1,
        "concurrency_strategy": "cancel_newest",
    }
    response = await client.post("/api/cron-jobs", json=body)
    assert response.status_code == 201, response.text
    job = response.json()
    assert job["concurrency_strategy"] == "cancel_newest"
    assert (await client.get(f"/api/cron-jobs/{job['id']}")).json() == job
    url = f"/api/cron-jobs/{job['id']}"
    first, extra = [(await client.post(f"{url}/trigger")).json() for _ in range(2)]
    assert (await get(client, first["id"]))["status"] == "pending"
    assert extra["status"] == "cancelled"  # the key was at its limit: the newest goes
    assert "concurrency key 'nightly-report'" in extra["error"]
    changed = await client.patch(url, json={"concurrency_strategy": "cancel_in_progress"})
    assert changed.status_code == 200, changed.text
    assert changed.json()["concurrency_strategy"] == "cancel_in_progress"
    newest = (await client.post(f"{url}/trigger")).json()
    assert (await get(client, first["id"]))["status"] == "cancelled"  # the oldest goes
    assert (await get(client, newest["id"]))["status"] == "pending"
    # the strategy needs the key, on create and on a change
    alone = await client.post(
        "/api/cron-jobs",
        json={**body, "name": "other", "concurrency_key": None, "max_concurrent_per_key": None},
    )
    assert alone.status_code == 422, alone.text
    assert "concurrency_strategy needs a concurrency_key" in alone.text
    dropped = await client.patch(
        url, json={"concurrency_key": None, "max_concurrent_per_key": None}
    )
    assert dropped.status_code == 422, dropped.text
    assert dropped.json()["error"]["field"] == "concurrency_strategy"
    assert (await client.patch(url, json={"concurrency_strategy": None})).status_code == 422
    both = await client.patch(
        url,
        json={
            "concurrency_key": None,
            "max_concurrent_per_key": None,
            "concurrency_strategy": "queue",
        },
    )
    assert both.status_code == 200, both.text
    assert (both.json()["concurrency_key"], both.json()["concurrency_strategy"]) == (None, "queue")
    bad = await client.post(
        "/api/cron-jobs", json={**body, "name": "x", "concurrency_strategy": "y"}
    )
    assert bad.status_code == 422


async def test_the_keys_in_use_busiest_first_and_the_tasks_waiting_on_one(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    hot = [await create(client, concurrency_key="customer:1", max_concurrent_per_key=1)]
    hot += [await create(client, concurrency_key="customer:1", max_concurrent_per_key=1)]
    await create(client, concurrency_key="customer:2")  # the "report" limit: 2
    await create(client, concurrency_key="tenant:7")
    assert len(await claim(app, 10)) == 3  # customer:1 holds its second back
    keys = (await client.get("/api/concurrency-keys")).json()["items"]
    assert keys == [
        {
            "key": "customer:1",
            "active": 1,
            "limit": 1,
            "pending": 1,
            "waiting": 1,
            "at_limit": True,
        },
        {
            "key": "customer:2",
            "active": 1,
            "limit": 2,
            "pending": 0,
            "waiting": 0,
            "at_limit": False,
        },
        {"key": "tenant:7", "active": 1, "limit": 2, "pending": 0, "waiting": 0, "at_limit": False},
    ]
    prefixed = await client.get("/api/concurrency-keys", params={"prefix": "customer:", "limit": 1})
    assert [k["key"] for k in prefixed.json()["items"]] == ["customer:1"]
    exact = await client.get("/api/concurrency-keys", params={"key": "customer:2"})
    assert [k["key"] for k in exact.json()["items"]] == ["customer:2"]
    # the console's link: the tasks waiting on the key
    params = {"concurrency_key": "customer:1", "status": "pending"}
    waiting = (await client.get("/api/tasks", params=params)).json()["items"]
    assert [t["pending_reason"] for t in waiting] == ["concurrency_limit"]
    assert waiting[0]["id"] in {t["id"] for t in hot}
    for bad in ({"limit": 0}, {"limit": 1001}, {"prefix": ""}, {"key": "k" * 201}):
        response = await client.get("/api/concurrency-keys", params=bad)
        assert response.status_code == 422, bad
        assert response.json()["error"]["field"] == next(iter(bad))
    bad_filter = await client.get("/api/tasks", params={"concurrency_key": "k" * 201})
    assert bad_filter.status_code == 422
