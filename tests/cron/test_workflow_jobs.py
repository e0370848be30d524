"""Cron jobs that start workflows: created with a workflow document instead of a task type
(checked as ``POST /api/workflows`` checks it), each fired tick starting one workflow in the
transaction that records the tick, on real stores with a frozen clock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from hetuflow.clock import FrozenClock
from hetuflow.config import Config
from hetuflow.server.app import create_app
from hetuflow.server.cron_service import CronService
from hetuflow.store.base import Store
from hetuflow.store.notify_local import LocalNotifier

from .test_api import NOW, SEED, context_of

WORKFLOW = {
    "name": "nightly-report",
    "steps": [
        {"name": "fetch", "task_type": "fetch", "payload": {"day": "today"}},
        {"name": "each", "task_type": "work", "depends_on": ["fetch"], "map_over": "fetch"},
        {"name": "report", "task_type": "report", "depends_on": ["each"], "max_retries": 2},
    ],
}
JOB = {"name": "nightly", "cron_expression": "* * * * *", "workflow": WORKFLOW}


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(NOW)


@pytest.fixture
def app(store: Store, clock: FrozenClock) -> FastAPI:
    return create_app(Config(), store=store, notifier=LocalNotifier(), clock=clock)


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
        yield http


async def nothing_created(client: httpx.AsyncClient) -> None:
    assert (await client.get("/api/cron-jobs")).json()["total"] == 0


def counted(text: str, name: str) -> float:
    for family in text_string_to_metric_families(text):
        for item in family.samples:
            if item.name == name:
                return float(item.value)
    return 0.0


async def test_each_tick_starts_one_workflow_linked_to_the_tick(
    app: FastAPI, client: httpx.AsyncClient, clock: FrozenClock
) -> None:
    response = await client.post("/api/cron-jobs", json=JOB)
    assert response.status_code == 201, response.text
    job = response.json()
    assert job["task_type"] is None
    assert job["workflow"]["steps"][1]["map_over"] == "fetch"
    service = CronService(context_of(app))
    for minute in (1, 2):
        clock.set(datetime(2024, 5, 1, 10, minute, tzinfo=UTC))
        await service.fire_due()
    ticks = (await client.get(f"/api/cron-jobs/{job['id']}/ticks")).json()["items"]
    assert [(t["tick_at"], t["outcome"], t["task_id"]) for t in ticks] == [
        ("2024-05-01T10:02:00Z", "fired", None),
        ("2024-05-01T10:01:00Z", "fired", None),
    ]
    workflows = (await client.get("/api/workflows")).json()
    assert workflows["total"] == 2
    assert {w["id"] for w in workflows["items"]} == {t["workflow_id"] for t in ticks}
    started = (await client.get(f"/api/workflows/{ticks[1]['workflow_id']}")).json()
    assert started["name"] == "nightly-report"
    assert [(s["name"], s["status"], s["map_over"]) for s in started["steps"]] == [
        ("fetch", "pending", None),
        ("each", "waiting", "fetch"),
        ("report", "waiting", None),
    ]
    assert started["steps"][0]["task"]["payload"] == {"day": "today"}
    assert started["steps"][0]["task"]["scheduled_at"] == "2024-05-01T10:01:00Z"
    assert started["steps"][2]["task"]["max_retries"] == 2
    assert (await client.get("/api/tasks")).json()["total"] == 6  # no task of the job itself
    text = (await client.get("/metrics")).text
    assert counted(text, "hetuflow_workflows_created_total") == 2
    assert counted(text, "hetuflow_cron_fires_total") == 2


def _with(**changes: Any) -> dict[str, Any]:
    return {**JOB, **changes}


@pytest.mark.parametrize(
    ("body", "code", "field", "message"),
    [
        (_with(task_type="backup"), "invalid_input", "task_type", "give exactly one"),
        (
            {"name": "n", "cron_expression": "* * * * *"},
            "invalid_input",
            "task_type",
            "give exactly one",
        ),
        (
            _with(overlap_policy="skip"),
            "invalid_input",
            "overlap_policy",
            "takes only overlap_policy allow",
        ),
        (
            _with(
                workflow={
                    "name": "w",
                    "steps": [{"name": "a", "task_type": "t", "depends_on": ["a"]}],
                }
            ),
            "workflow_invalid",
            "workflow.steps.a.depends_on",
            "step 'a' depends on itself",
        ),
        (
            _with(
                workflow={"name": "w", "steps": [{"name": "a", "task_type": "t", "map_over": "b"}]}
            ),
            "workflow_invalid",
            "workflow.steps.a.map_over",
            "which is not in its depends_on",
        ),
        (
            _with(workflow={"name": "w", "steps": []}),
            "workflow_invalid",
            "workflow.steps",
            "at least one step",
        ),
    ],
)
async def test_a_job_that_is_not_one_thing_or_whose_workflow_cannot_run_is_refused(
    client: httpx.AsyncClient, body: dict[str, Any], code: str, field: str, message: str
) -> None:
    response = await client.post("/api/cron-jobs", json=body)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert (error["code"], error["field"]) == (code, field)
    assert message in error["message"]
    await nothing_created(client)


async def test_update_switches_between_task_and_workflow_and_run_now_is_refused(
    client: httpx.AsyncClient,
) -> None:
    job = (await client.post("/api/cron-jobs", json=SEED)).json()
    url = f"/api/cron-jobs/{job['id']}"
    bad = await client.patch(url, json={"workflow": {"name": "w", "steps": []}})
    assert bad.status_code == 422
    assert bad.json()["error"]["field"] == "workflow.steps"
    changed = await client.patch(url, json={"workflow": WORKFLOW})
    assert changed.status_code == 200, changed.text
    assert (changed.json()["task_type"], changed.json()["workflow"]["name"]) == (
        None,
        "nightly-report",
    )
    run_now = await client.post(f"{url}/trigger")
    assert run_now.status_code == 422
    assert "starts workflows" in run_now.json()["error"]["message"]
    overlap = await client.patch(url, json={"overlap_policy": "queue"})
    assert overlap.status_code == 422
    back = await client.patch(url, json={"task_type": "backup"})
    assert back.status_code == 200, back.text
    assert (back.json()["task_type"], back.json()["workflow"]) == ("backup", None)
