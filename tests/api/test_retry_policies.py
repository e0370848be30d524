"""Retry policies over REST (docs/api.md, docs/guarantees.md#retries): the backoff cap, jitter
and ``retry_on`` of tasks and cron jobs, their validation, and the dead-letter view
(``GET /api/tasks?final=true``) with its bulk retry."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from hetuflow.models import AttemptOutcome

from .test_tasks import create, finish

RETRY_OPTIONS = {
    "max_retries": 3,
    "retry_backoff_seconds": 2,
    "retry_backoff_max_seconds": 30,
    "retry_jitter": 0.5,
    "retry_on": ["agent_lost", "timed_out", "agent_lost"],
}


async def test_a_task_keeps_its_retry_options(client: httpx.AsyncClient) -> None:
    task = await create(client, **RETRY_OPTIONS)
    for body in (task, (await client.get(f"/api/tasks/{task['id']}")).json()):
        assert body["max_retries"] == 3
        assert body["retry_backoff_seconds"] == 2
        assert body["retry_backoff_max_seconds"] == 30
        assert body["retry_jitter"] == 0.5
        assert body["retry_on"] == ["timed_out", "agent_lost"]  # deduplicated, in kind order


async def test_the_defaults_retry_every_kind_without_jitter(client: httpx.AsyncClient) -> None:
    task = await create(client)
    assert task["retry_backoff_max_seconds"] == 3600
    assert task["retry_jitter"] == 0
    assert task["retry_on"] == ["failed", "timed_out", "agent_lost"]
    nothing = await create(client, retry_on=[])
    assert nothing["retry_on"] == []


BAD_RETRY_OPTIONS: list[tuple[dict[str, Any], str]] = [
    ({"retry_on": ["cancelled"]}, "retry_on"),
    ({"retry_on": ["failed", "lost"]}, "retry_on"),
    ({"retry_on": "failed"}, "retry_on"),
    ({"retry_jitter": -0.1}, "retry_jitter"),
    ({"retry_jitter": 1.5}, "retry_jitter"),
    ({"retry_backoff_max_seconds": -1}, "retry_backoff_max_seconds"),
    ({"retry_backoff_max_seconds": 10**12}, "retry_backoff_max_seconds"),
    ({"retry_backoff_seconds": -5}, "retry_backoff_seconds"),
]
NON_FINITE = [
    ('{"task_type": "t", "retry_jitter": NaN}', "retry_jitter"),
    ('{"task_type": "t", "retry_backoff_max_seconds": Infinity}', "retry_backoff_max_seconds"),
    ('{"task_type": "t", "retry_backoff_seconds": NaN}', "retry_backoff_seconds"),
]


def _field(response: httpx.Response) -> str:
    assert response.status_code == 422, response.text
    field: str = response.json()["error"]["field"]
    return field


@pytest.mark.parametrize(("options", "field"), BAD_RETRY_OPTIONS)
async def test_bad_retry_options_are_422_and_create_nothing(
    client: httpx.AsyncClient, options: dict[str, Any], field: str
) -> None:
    response = await client.post("/api/tasks", json={"task_type": "t", **options})
    assert _field(response).startswith(field)
    batch = await client.post(
        "/api/tasks/batch", json={"tasks": [{"task_type": "t"}, {"task_type": "t", **options}]}
    )
    assert _field(batch).startswith(f"tasks[1].{field}")
    job = await client.post(
        "/api/cron-jobs",
        json={"name": "j", "cron_expression": "0 3 * * *", "task_type": "t", **options},
    )
    assert _field(job).startswith(field)
    assert (await client.get("/api/tasks")).json()["total"] == 0
    assert (await client.get("/api/cron-jobs")).json()["total"] == 0


@pytest.mark.parametrize(("body", "field"), NON_FINITE)
async def test_nan_and_infinity_are_422(client: httpx.AsyncClient, body: str, field: str) -> None:
    response = await client.post(
        "/api/tasks", content=body, headers={"Content-Type": "application/json"}
    )
    assert _field(response).startswith(field)
    assert (await client.get("/api/tasks")).json()["total"] == 0


async def test_a_cron_job_keeps_and_changes_its_retry_options(client: httpx.AsyncClient) -> None:
    created = await client.post(
        "/api/cron-jobs",
        json={"name": "j", "cron_expression": "0 3 * * *", "task_type": "t", **RETRY_OPTIONS},
    )
    assert created.status_code == 201, created.text
    job = created.json()
    assert (job["retry_backoff_max_seconds"], job["retry_jitter"], job["retry_on"]) == (
        30,
        0.5,
        ["timed_out", "agent_lost"],
    )
    changed = await client.patch(
        f"/api/cron-jobs/{job['id']}", json={"retry_on": ["failed"], "retry_jitter": 1}
    )
    assert changed.status_code == 200, changed.text
    after = changed.json()
    assert (after["retry_on"], after["retry_jitter"], after["retry_backoff_max_seconds"]) == (
        ["failed"],
        1,
        30,  # left out: kept
    )
    bad = await client.patch(f"/api/cron-jobs/{job['id']}", json={"retry_on": ["nope"]})
    assert _field(bad).startswith("retry_on")
    bad = await client.patch(f"/api/cron-jobs/{job['id']}", json={"retry_jitter": None})
    assert _field(bad) == "retry_jitter"
    assert (await client.get(f"/api/cron-jobs/{job['id']}")).json()["retry_on"] == ["failed"]
    run = await client.post(f"/api/cron-jobs/{job['id']}/trigger")
    assert run.status_code in (200, 201), run.text
    task = (await client.get("/api/tasks")).json()["items"][0]
    assert (task["retry_on"], task["retry_jitter"]) == (["failed"], 1)


async def test_a_failure_not_in_retry_on_ends_the_task_saying_why(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    task = await create(client, max_retries=5, retry_on=["timed_out"])
    await finish(app, "t", AttemptOutcome.FAILED, error="boom")
    failed = (await client.get(f"/api/tasks/{task['id']}")).json()
    assert failed["status"] == "failed"
    assert failed["error"] == "boom (not retried: retry_on does not include failed)"


# --- the dead-letter view ---------------------------------------------------------------------


async def _listed(client: httpx.AsyncClient, params: dict[str, Any]) -> list[str]:
    response = await client.get("/api/tasks", params=params)
    assert response.status_code == 200, response.text
    return [task["id"] for task in response.json()["items"]]


async def test_final_lists_dead_letters_until_they_are_retried(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    failed = await create(client, task_type="f")
    await finish(app, "f", AttemptOutcome.FAILED, error="boom")
    slow = await create(client, task_type="x")
    await finish(app, "x", AttemptOutcome.TIMED_OUT)
    await create(client, task_type="s")
    await finish(app, "s", AttemptOutcome.SUCCEEDED)
    await create(client, task_type="p")  # pending

    assert set(await _listed(client, {"final": "true"})) == {failed["id"], slow["id"]}
    assert await _listed(client, {"status": "failed", "final": "true"}) == [failed["id"]]
    assert await _listed(client, {"status": "succeeded", "final": "true"}) == []

    retried = await client.post(f"/api/tasks/{failed['id']}/retry")
    assert retried.status_code == 201
    assert retried.json()["replay_of"] == failed["id"]
    assert await _listed(client, {"final": "true"}) == [slow["id"]]
    assert await _listed(client, {"status": "failed"}) == [failed["id"]]  # still failed
    bad = await client.get("/api/tasks", params={"final": "maybe"})
    assert bad.status_code == 422


async def test_bulk_retry_of_the_dead_letters_is_safe_to_repeat(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    dead = []
    for _ in range(3):
        dead.append((await create(client, task_type="d"))["id"])
        await finish(app, "d", AttemptOutcome.FAILED, error="boom")
    first = await client.post("/api/tasks/bulk-retry", json={"filter": {"final": True}})
    assert first.status_code == 200, first.text
    body = first.json()
    assert sorted(item["id"] for item in body["items"]) == sorted(dead)
    assert {item["task"]["replay_of"] for item in body["items"]} == set(dead)
    again = await client.post("/api/tasks/bulk-retry", json={"filter": {"final": True}})
    assert again.json()["items"] == []  # each was retried once, not twice
    assert await _listed(client, {"final": "true"}) == []
