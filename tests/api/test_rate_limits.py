"""Rate limits over REST (docs/api.md#rate-limits): create, list, get, delete; tasks naming
them (an unknown name or impossible units: 422, nothing created); a task a limit holds back
says ``rate_limited`` and when a unit frees."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from .helpers import hold_task, now_of
from .test_tasks import create


async def _limit(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    response = await client.post("/api/rate-limits", json=body)
    assert response.status_code == 201, response.text
    made: dict[str, Any] = response.json()
    return made


async def test_create_list_get_and_delete(client: httpx.AsyncClient) -> None:
    made = await _limit(client, name="crm-api", limit=100, per_seconds=60)
    assert (made["name"], made["limit"], made["per_seconds"], made["used"]) == (
        "crm-api",
        100,
        60,
        0,
    )
    await _limit(client, name="billing", limit=5, per_seconds=1.5)
    listed = (await client.get("/api/rate-limits")).json()["items"]
    assert [item["name"] for item in listed] == ["billing", "crm-api"]
    assert (await client.get("/api/rate-limits/crm-api")).json()["limit"] == 100
    taken = await client.post(
        "/api/rate-limits", json={"name": "crm-api", "limit": 1, "per_seconds": 1}
    )
    assert taken.status_code == 409
    assert taken.json()["error"]["code"] == "rate_limit_name_taken"
    assert (await client.delete("/api/rate-limits/billing")).status_code == 204
    gone = await client.delete("/api/rate-limits/billing")
    assert gone.status_code == 404
    assert gone.json()["error"]["code"] == "rate_limit_not_found"
    assert (await client.get("/api/rate-limits/billing")).status_code == 404
    assert (await client.get("/api/rate-limits/a%00b")).status_code in (404, 422)  # no 500


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "x", "limit": 0, "per_seconds": 1}, "limit"),
        ({"name": "x", "limit": -3, "per_seconds": 1}, "limit"),
        ({"name": "x", "limit": 1, "per_seconds": 0}, "per_seconds"),
        ({"name": "x", "limit": 1, "per_seconds": -1}, "per_seconds"),
        ({"name": "", "limit": 1, "per_seconds": 1}, "name"),
        ({"name": "x" * 201, "limit": 1, "per_seconds": 1}, "name"),
        ({"name": "x", "limit": 1}, "per_seconds"),
        ({"name": "x", "limit": 1, "per_seconds": 1, "burst": 2}, "burst"),
    ],
)
async def test_bad_rate_limits_are_422(
    client: httpx.AsyncClient, body: dict[str, Any], field: str
) -> None:
    response = await client.post("/api/rate-limits", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"].startswith(field)
    nan = await client.post(
        "/api/rate-limits",
        content='{"name": "x", "limit": 1, "per_seconds": NaN}',
        headers={"Content-Type": "application/json"},
    )
    assert nan.status_code == 422
    assert (await client.get("/api/rate-limits")).json()["items"] == []


async def test_tasks_naming_unknown_limits_or_impossible_units_are_422(
    client: httpx.AsyncClient,
) -> None:
    await _limit(client, name="crm-api", limit=3, per_seconds=60)
    bad_uses = [
        [{"name": "nope"}],
        [{"name": "crm-api", "units": 4}],
        [{"name": "crm-api", "units": 0}],
        [{"name": "crm-api"}, {"name": "crm-api"}],
    ]
    for uses in bad_uses:
        one = await client.post("/api/tasks", json={"task_type": "t", "rate_limits": uses})
        assert one.status_code == 422, (uses, one.text)
        assert one.json()["error"]["field"].startswith("rate_limits"), one.text
        batch = await client.post(
            "/api/tasks/batch",
            json={"tasks": [{"task_type": "t"}, {"task_type": "t", "rate_limits": uses}]},
        )
        assert batch.status_code == 422, batch.text
    assert (await client.get("/api/tasks")).json()["total"] == 0


async def test_a_task_held_back_says_rate_limited_and_until_when(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    await _limit(client, name="crm-api", limit=1, per_seconds=3600)
    first = await create(client, task_type="r", rate_limits=[{"name": "crm-api"}])
    assert first["rate_limits"] == [{"name": "crm-api", "units": 1}]
    second = await create(client, task_type="r", rate_limits=[{"name": "crm-api", "units": 1}])
    before = now_of(app)
    dispatch = await hold_task(app, "r")
    after = now_of(app)
    waiting = second if str(dispatch.task.id) == first["id"] else first
    got = (await client.get(f"/api/tasks/{waiting['id']}")).json()
    assert got["pending_reason"] == "rate_limited"
    until = datetime.fromisoformat(got["rate_limited_until"])
    hour = timedelta(seconds=3600)
    assert before + hour <= until <= after + hour  # the dispatch's instant, plus the window
    listed = (await client.get("/api/tasks", params={"task_type": "r"})).json()["items"]
    assert {item["pending_reason"] for item in listed} == {"rate_limited", None}
    state = (await client.get("/api/rate-limits/crm-api")).json()
    assert state["used"] == 1
    assert datetime.fromisoformat(state["next_free_at"]) == until

    assert (await client.delete("/api/rate-limits/crm-api")).status_code == 204
    freed = (await client.get(f"/api/tasks/{waiting['id']}")).json()
    assert freed["pending_reason"] != "rate_limited"
    assert freed["rate_limited_until"] is None


async def test_a_cron_job_gives_its_rate_limits_to_its_tasks(client: httpx.AsyncClient) -> None:
    await _limit(client, name="crm-api", limit=100, per_seconds=60)
    await _limit(client, name="mail", limit=1, per_seconds=1)
    body = {
        "name": "crm-sync",
        "cron_expression": "*/5 * * * *",
        "task_type": "sync",
        "rate_limits": [{"name": "crm-api", "units": 2}, {"name": "mail"}],
    }
    response = await client.post("/api/cron-jobs", json=body)
    assert response.status_code == 201, response.text
    job = response.json()
    uses = [{"name": "crm-api", "units": 2}, {"name": "mail", "units": 1}]
    assert job["rate_limits"] == uses
    assert (await client.get(f"/api/cron-jobs/{job['id']}")).json()["rate_limits"] == uses
    run = await client.post(f"/api/cron-jobs/{job['id']}/trigger")
    assert run.status_code == 201, run.text
    assert run.json()["rate_limits"] == uses
    # A change replaces the list; [] removes them; null is refused.
    changed = await client.patch(f"/api/cron-jobs/{job['id']}", json={"rate_limits": [uses[1]]})
    assert changed.status_code == 200, changed.text
    assert changed.json()["rate_limits"] == [uses[1]]
    null = await client.patch(f"/api/cron-jobs/{job['id']}", json={"rate_limits": None})
    assert null.status_code == 422
    assert null.json()["error"]["field"] == "rate_limits"
    # Deleting a limit takes it out of the job.
    assert (await client.delete("/api/rate-limits/mail")).status_code == 204
    assert (await client.get(f"/api/cron-jobs/{job['id']}")).json()["rate_limits"] == []
    cleared = await client.patch(f"/api/cron-jobs/{job['id']}", json={"rate_limits": []})
    assert cleared.json()["rate_limits"] == []


@pytest.mark.parametrize(
    ("uses", "code", "message"),
    [
        ([{"name": "nope"}], "rate_limit_unknown", "names rate limit 'nope', which does not exist"),
        ([{"name": "crm-api", "units": 4}], "rate_limit_unknown", "asks 4 units"),
        ([{"name": "crm-api"}, {"name": "crm-api"}], "invalid_input", "name each rate limit once"),
        ([{"name": "crm-api", "units": 0}], "invalid_input", "greater than or equal to 1"),
    ],
)
async def test_a_cron_job_naming_a_bad_limit_is_refused_and_nothing_changes(
    client: httpx.AsyncClient, uses: list[dict[str, Any]], code: str, message: str
) -> None:
    await _limit(client, name="crm-api", limit=3, per_seconds=60)
    body = {"name": "j", "cron_expression": "@daily", "task_type": "sync", "rate_limits": uses}
    response = await client.post("/api/cron-jobs", json=body)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert message in error["message"]
    assert error["field"].startswith("rate_limits")
    assert (await client.get("/api/cron-jobs")).json()["items"] == []
    made = await client.post("/api/cron-jobs", json={**body, "rate_limits": []})
    assert made.status_code == 201, made.text
    job = made.json()
    patch = await client.patch(
        f"/api/cron-jobs/{job['id']}", json={"payload": {"x": 1}, "rate_limits": uses}
    )
    assert patch.status_code == 422, patch.text
    assert patch.json()["error"]["code"] == code
    unchanged = (await client.get(f"/api/cron-jobs/{job['id']}")).json()
    assert (unchanged["payload"], unchanged["rate_limits"]) == ({}, [])
