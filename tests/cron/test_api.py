"""The cron job REST routes through ASGI, on real stores, with a frozen clock.

The app's lifespan is not run: no engine loop fires ticks behind the test's back; the tests
run ``CronService.fire_due`` themselves where a tick must fire.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from hetuflow.clock import FrozenClock
from hetuflow.config import Config, SchedulerConfig
from hetuflow.server.app import create_app
from hetuflow.server.context import ServerContext
from hetuflow.server.cron_service import CronService
from hetuflow.store.base import CRON_CHANGED, Store
from hetuflow.store.notify_local import LocalNotifier

NOW = datetime(2024, 5, 1, 10, 0, 30, tzinfo=UTC)
SEED = {
    "name": "daily-backup",
    "cron_expression": "0 2 * * *",
    "task_type": "backup",
    "payload": {"type": "full"},
    "enabled": True,
}


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(NOW)


@pytest.fixture
def app(store: Store, clock: FrozenClock) -> FastAPI:
    config = Config(scheduler=SchedulerConfig(retry_interval_seconds=7))
    application = create_app(config, store=store, notifier=LocalNotifier(), clock=clock)
    return application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
        yield http


def context_of(app: FastAPI) -> ServerContext:
    context: ServerContext = app.state.context
    return context


async def create(client: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    response = await client.post("/api/cron-jobs", json={**SEED, **fields})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


# --- create ---------------------------------------------------------------------------------


async def test_create_with_the_seed_body(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/cron-jobs", json=SEED)
    assert response.status_code == 201, response.text
    job = response.json()
    assert isinstance(job["id"], str)
    assert {key: job[key] for key in SEED} == SEED
    assert job["timezone"] == "UTC"
    assert job["next_fire_at"] == "2024-05-02T02:00:00Z"
    assert job["last_fire_at"] is None
    assert job["last_task_id"] is None
    assert job["last_outcome"] is None
    assert job["misfire_policy"] == "run_once"
    assert job["overlap_policy"] == "allow"
    assert job["catch_up_limit"] == 1
    assert job["start_deadline_seconds"] is None
    assert job["priority"] == "normal"
    assert job["max_retries"] == 0
    assert job["retry_backoff_seconds"] == 7
    assert job["created_at"] == "2024-05-01T10:00:30Z"


async def test_create_with_every_option(client: httpx.AsyncClient) -> None:
    job = await create(
        client,
        cron_expression="30 2 * * *",
        timezone="Europe/Berlin",
        priority="high",
        required_capabilities=["db", "db", "ssd"],
        timeout_seconds=60,
        max_retries=2,
        retry_backoff_seconds=5,
        misfire_policy="catch_up",
        catch_up_limit=3,
        overlap_policy="skip",
        start_deadline_seconds=30,
    )
    assert job["next_fire_at"] == "2024-05-02T00:30:00Z"  # 02:30 CEST
    assert job["required_capabilities"] == ["db", "ssd"]
    assert (job["priority"], job["timeout_seconds"], job["max_retries"]) == ("high", 60, 2)
    assert (job["misfire_policy"], job["catch_up_limit"]) == ("catch_up", 3)
    assert (job["overlap_policy"], job["start_deadline_seconds"]) == ("skip", 30)


async def test_create_publishes_cron_changed(app: FastAPI, client: httpx.AsyncClient) -> None:
    seen: list[str] = []
    context_of(app).notifier.subscribe(CRON_CHANGED, lambda payload: seen.append(payload))
    await create(client)
    assert seen == [""]


@pytest.mark.parametrize(
    ("fields", "code", "field", "words"),
    [
        ({"cron_expression": "61 2 * * *"}, "cron_expression_invalid", "cron_expression", "minute"),
        ({"cron_expression": "0 2 * *"}, "cron_expression_invalid", "cron_expression", "5"),
        ({"cron_expression": "@often"}, "cron_expression_invalid", "cron_expression", "macro"),
        ({"timezone": "Mars/Olympus"}, "time_zone_invalid", "timezone", "IANA"),
    ],
)
async def test_invalid_schedule_is_rejected_saying_where_and_why(
    client: httpx.AsyncClient, fields: dict[str, Any], code: str, field: str, words: str
) -> None:
    response = await client.post("/api/cron-jobs", json={**SEED, **fields})
    assert response.status_code == 422
    error = response.json()["error"]
    assert (error["code"], error["field"]) == (code, field)
    assert words in error["message"]
    listed = await client.get("/api/cron-jobs")
    assert listed.json()["total"] == 0


async def test_invalid_body_fields(client: httpx.AsyncClient) -> None:
    for body in (
        {**SEED, "misfire_policy": "sometimes"},
        {**SEED, "catch_up_limit": -1},
        {**SEED, "unknown": 1},
        {key: value for key, value in SEED.items() if key != "task_type"},
    ):
        response = await client.post("/api/cron-jobs", json=body)
        assert response.status_code == 422, body


async def test_name_taken_is_a_conflict(client: httpx.AsyncClient) -> None:
    await create(client)
    response = await client.post("/api/cron-jobs", json=SEED)
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "cron_job_name_taken"


# --- read -----------------------------------------------------------------------------------


async def test_list_and_get(client: httpx.AsyncClient) -> None:
    first = await create(client, name="b-job")
    second = await create(client, name="a-job")
    listed = (await client.get("/api/cron-jobs")).json()
    assert listed["total"] == 2
    assert [item["name"] for item in listed["items"]] == ["a-job", "b-job"]
    got = (await client.get(f"/api/cron-jobs/{first['id']}")).json()
    assert got == first
    assert second["id"] != first["id"]


async def test_unknown_and_malformed_ids(client: httpx.AsyncClient) -> None:
    missing = "00000000-0000-4000-8000-000000000000"
    for method, suffix in (
        ("GET", ""),
        ("PATCH", ""),
        ("DELETE", ""),
        ("POST", "/trigger"),
        ("POST", "/enable"),
        ("GET", "/next-fires"),
        ("GET", "/ticks"),
    ):
        body: dict[str, Any] | None = {} if method == "PATCH" else None
        response = await client.request(method, f"/api/cron-jobs/{missing}{suffix}", json=body)
        assert response.status_code == 404, (method, suffix)
        assert response.json()["error"]["code"] == "cron_job_not_found"
    malformed = await client.get("/api/cron-jobs/not-a-uuid")  # the API's shared rule
    assert malformed.status_code == 404
    assert malformed.json()["error"]["code"] == "cron_job_not_found"


# --- change ---------------------------------------------------------------------------------


async def test_patch_changes_only_what_is_sent(
    client: httpx.AsyncClient, clock: FrozenClock
) -> None:
    job = await create(client)
    clock.advance(timedelta(minutes=1))
    response = await client.patch(f"/api/cron-jobs/{job['id']}", json={"payload": {"type": "incr"}})
    assert response.status_code == 200, response.text
    changed = response.json()
    assert changed["payload"] == {"type": "incr"}
    assert changed["next_fire_at"] == job["next_fire_at"]
    assert changed["updated_at"] == "2024-05-01T10:01:30Z"

    response = await client.patch(
        f"/api/cron-jobs/{job['id']}",
        json={"cron_expression": "*/15 * * * *", "max_retries": 3, "timeout_seconds": None},
    )
    changed = response.json()
    assert changed["next_fire_at"] == "2024-05-01T10:15:00Z"  # the schedule restarts from now
    assert changed["max_retries"] == 3
    assert changed["retry_backoff_seconds"] == 7
    assert changed["timeout_seconds"] is None


async def test_patch_rejects_bad_values(client: httpx.AsyncClient) -> None:
    job = await create(client)
    url = f"/api/cron-jobs/{job['id']}"
    response = await client.patch(url, json={"name": None})
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "name"
    response = await client.patch(url, json={"cron_expression": "* * 32 * *"})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "cron_expression_invalid"
    response = await client.patch(url, json={"timezone": "Nowhere/Land"})
    assert response.json()["error"]["code"] == "time_zone_invalid"
    other = await create(client, name="other")
    response = await client.patch(f"/api/cron-jobs/{other['id']}", json={"name": job["name"]})
    assert response.status_code == 409
    assert (await client.get(url)).json() == job


async def test_disable_and_enable(client: httpx.AsyncClient) -> None:
    job = await create(client)
    disabled = (await client.post(f"/api/cron-jobs/{job['id']}/disable")).json()
    assert disabled["enabled"] is False
    assert disabled["next_fire_at"] == job["next_fire_at"]  # missed ticks stay visible
    enabled = (await client.post(f"/api/cron-jobs/{job['id']}/enable")).json()
    assert enabled["enabled"] is True
    assert enabled["next_fire_at"] == job["next_fire_at"]


async def test_a_job_created_disabled_starts_fresh_when_enabled(
    client: httpx.AsyncClient, clock: FrozenClock
) -> None:
    job = await create(client, enabled=False)
    assert job["next_fire_at"] is None
    clock.advance(timedelta(days=3))
    enabled = (await client.post(f"/api/cron-jobs/{job['id']}/enable")).json()
    assert enabled["next_fire_at"] == "2024-05-05T02:00:00Z"


async def test_delete(client: httpx.AsyncClient) -> None:
    job = await create(client)
    response = await client.delete(f"/api/cron-jobs/{job['id']}")
    assert response.status_code == 204
    assert (await client.get(f"/api/cron-jobs/{job['id']}")).status_code == 404


# --- run now, fire times, ticks -------------------------------------------------------------


async def test_trigger_runs_now_and_becomes_the_last_task(client: httpx.AsyncClient) -> None:
    job = await create(client, priority="high", required_capabilities=["db"])
    response = await client.post(f"/api/cron-jobs/{job['id']}/trigger")
    assert response.status_code == 201, response.text
    task = response.json()
    assert task["cron_job_id"] == job["id"]
    assert (task["task_type"], task["payload"], task["priority"]) == (
        "backup",
        {"type": "full"},
        "high",
    )
    assert task["required_capabilities"] == ["db"]
    assert task["status"] == "pending"
    assert task["scheduled_at"] == "2024-05-01T10:00:30Z"
    after = (await client.get(f"/api/cron-jobs/{job['id']}")).json()
    assert after["last_task_id"] == task["id"]
    assert after["last_outcome"] == "pending"
    assert after["next_fire_at"] == job["next_fire_at"]


async def test_next_fires_of_a_job(client: httpx.AsyncClient) -> None:
    job = await create(client, cron_expression="30 2 * * *", timezone="America/New_York")
    response = await client.get(f"/api/cron-jobs/{job['id']}/next-fires", params={"count": 3})
    assert response.status_code == 200
    assert response.json() == {
        "cron_expression": "30 2 * * *",
        "timezone": "America/New_York",
        "fire_times": ["2024-05-02T06:30:00Z", "2024-05-03T06:30:00Z", "2024-05-04T06:30:00Z"],
    }
    default = (await client.get(f"/api/cron-jobs/{job['id']}/next-fires")).json()
    assert len(default["fire_times"]) == 5
    too_many = await client.get(f"/api/cron-jobs/{job['id']}/next-fires", params={"count": 1000})
    assert too_many.status_code == 422


async def test_preview_before_saving(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/cron-jobs/preview",
        json={"cron_expression": "0 9 * * MON-FRI", "timezone": "Europe/Berlin", "count": 2},
    )
    assert response.status_code == 200, response.text
    assert response.json()["fire_times"] == ["2024-05-02T07:00:00Z", "2024-05-03T07:00:00Z"]
    bad = await client.post("/api/cron-jobs/preview", json={"cron_expression": "0 9 * * FUNDAY"})
    assert bad.status_code == 422
    assert bad.json()["error"]["field"] == "cron_expression"
    assert (await client.get("/api/cron-jobs")).json()["total"] == 0


async def test_ticks_show_fired_and_skipped(
    app: FastAPI, client: httpx.AsyncClient, clock: FrozenClock
) -> None:
    job = await create(client, cron_expression="* * * * *", overlap_policy="skip")
    service = CronService(context_of(app))
    clock.set(datetime(2024, 5, 1, 10, 1, tzinfo=UTC))
    await service.fire_due()
    clock.set(datetime(2024, 5, 1, 10, 2, tzinfo=UTC))
    await service.fire_due()  # the 10:01 task has not run: skipped
    response = await client.get(f"/api/cron-jobs/{job['id']}/ticks", params={"limit": 10})
    assert response.status_code == 200
    ticks = response.json()["items"]
    assert [(tick["tick_at"], tick["outcome"]) for tick in ticks] == [
        ("2024-05-01T10:02:00Z", "skipped"),
        ("2024-05-01T10:01:00Z", "fired"),
    ]
    assert ticks[0]["reason"].startswith("overlap_policy=skip: task ")
    assert ticks[1]["task_id"] is not None
    after = (await client.get(f"/api/cron-jobs/{job['id']}")).json()
    assert after["last_fire_at"] == "2024-05-01T10:01:00Z"
    assert after["last_task_id"] == ticks[1]["task_id"]
    assert after["last_outcome"] == "pending"
    assert after["next_fire_at"] == "2024-05-01T10:03:00Z"


async def test_fired_ticks_apply_the_jobs_concurrency_strategy(
    app: FastAPI, client: httpx.AsyncClient, clock: FrozenClock
) -> None:
    job = await create(
        client,
        cron_expression="* * * * *",
        concurrency_key="k",
        max_concurrent_per_key=1,
        concurrency_strategy="cancel_newest",
    )
    service = CronService(context_of(app))

    async def fire(minute: int) -> dict[str, Any]:
        clock.set(datetime(2024, 5, 1, 10, minute, tzinfo=UTC))
        await service.fire_due()
        last = (await client.get(f"/api/cron-jobs/{job['id']}")).json()["last_task_id"]
        task: dict[str, Any] = (await client.get(f"/api/tasks/{last}")).json()
        assert task["cron_tick_at"] == f"2024-05-01T10:{minute:02}:00Z"
        return task

    first = await fire(1)
    assert first["status"] == "pending"
    second = await fire(2)  # the key is at its limit: the new task is cancelled
    assert second["status"] == "cancelled"
    assert "concurrency key 'k'" in second["error"]
    response = await client.patch(
        f"/api/cron-jobs/{job['id']}", json={"concurrency_strategy": "cancel_in_progress"}
    )
    assert response.status_code == 200, response.text
    third = await fire(3)  # the oldest unfinished task makes room
    assert third["status"] == "pending"
    assert (await client.get(f"/api/tasks/{first['id']}")).json()["status"] == "cancelled"


async def test_openapi_documents_the_routes(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    paths = schema["paths"]
    for path in (
        "/api/cron-jobs",
        "/api/cron-jobs/preview",
        "/api/cron-jobs/{cron_job_id}",
        "/api/cron-jobs/{cron_job_id}/trigger",
        "/api/cron-jobs/{cron_job_id}/enable",
        "/api/cron-jobs/{cron_job_id}/disable",
        "/api/cron-jobs/{cron_job_id}/next-fires",
        "/api/cron-jobs/{cron_job_id}/ticks",
    ):
        assert path in paths
    create_schema = schema["components"]["schemas"]["CronJobCreate"]["properties"]
    assert "ticks missed" in create_schema["misfire_policy"]["description"].lower()
