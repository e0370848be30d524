"""The workflow routes: submit (and every way a document is refused, with nothing created),
read, list, cancel; a step released by its parent's result over the API."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from hetuflow.models import AttemptOutcome, AttemptRef, AttemptResult
from hetuflow.workflows import MAX_WORKFLOW_STEPS

from .helpers import context_of, hold_task, now_of


def doc(*steps: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"name": "wf", "steps": list(steps), **extra}


def s(name: str, *depends_on: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "task_type": "t", "depends_on": list(depends_on), **extra}


async def nothing_created(client: httpx.AsyncClient) -> None:
    assert (await client.get("/api/workflows")).json()["total"] == 0
    assert (await client.get("/api/tasks")).json()["total"] == 0


@pytest.mark.parametrize(
    ("document", "field", "message"),
    [
        (doc(), "steps", "at least one step"),
        (doc(s("a"), s("a")), "steps.a.name", "two steps are named 'a'"),
        (doc(s("a", "a")), "steps.a.depends_on", "step 'a' depends on itself"),
        (doc(s("a", "ghost")), "steps.a.depends_on", "'ghost', which is no step"),
        (
            doc(s("a", "c"), s("b", "a"), s("c", "b"), s("d")),
            "steps.a.depends_on",
            "cycle: a -> c -> b -> a",
        ),
        (
            doc(*[s(f"s{i}") for i in range(MAX_WORKFLOW_STEPS + 1)]),
            "steps",
            f"at most {MAX_WORKFLOW_STEPS} steps",
        ),
        (doc(s("a", idempotency_key="k")), "steps.a.idempotency_key", "no idempotency key"),
        (
            doc(s("a"), s("b", map_over="a")),
            "steps.b.map_over",
            "step 'b' maps over 'a', which is not in its depends_on",
        ),
        (
            doc(s("a"), s("b", "a", map_over="ghost")),
            "steps.b.map_over",
            "step 'b' maps over 'ghost', which is not in its depends_on",
        ),
    ],
)
async def test_a_document_that_cannot_run_is_a_422_naming_the_step(
    client: httpx.AsyncClient, document: dict[str, Any], field: str, message: str
) -> None:
    response = await client.post("/api/workflows", json=document)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "workflow_invalid"
    assert error["field"] == field
    assert message in error["message"]
    await nothing_created(client)


async def test_a_step_spec_is_checked_like_a_task(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/workflows", json=doc({"name": "a"}))
    assert response.status_code == 422
    assert "task_type" in response.json()["error"]["field"]
    too_big = doc(s("a", payload={"x": "y" * 300_000}))
    response = await client.post("/api/workflows", json=too_big)
    assert response.status_code == 413
    await nothing_created(client)


async def test_submit_read_run_and_list(app: FastAPI, client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/workflows",
        json=doc(s("fetch", payload={"url": "u"}), s("sum", "fetch", max_retries=2)),
    )
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["status"] == "running"
    assert [(st["name"], st["status"]) for st in created["steps"]] == [
        ("fetch", "pending"),
        ("sum", "waiting"),
    ]
    assert created["steps"][1]["depends_on"] == ["fetch"]
    assert created["steps"][1]["task"]["max_retries"] == 2
    assert created["step_counts"] == {"pending": 1, "waiting": 1}

    fetch = await hold_task(app, "t")
    assert fetch.task.name == "fetch"
    context = context_of(app)
    ref = AttemptRef(fetch.task.id, fetch.attempt, fetch.agent_id)
    await context.store.finish_attempts(
        [AttemptResult(ref, AttemptOutcome.SUCCEEDED, result={"rows": 7})], now=now_of(app)
    )
    shown = (await client.get(f"/api/workflows/{created['id']}")).json()
    assert [st["status"] for st in shown["steps"]] == ["succeeded", "pending"]
    assert shown["steps"][0]["task"]["result"] == {"rows": 7}
    summed = await hold_task(app, "t", name="agent-2")
    assert summed.task.parents == {"fetch": {"rows": 7}}

    listed = (await client.get("/api/workflows")).json()
    assert listed["total"] == 1
    assert listed["items"][0]["id"] == created["id"]
    assert listed["items"][0]["step_counts"] == {"succeeded": 1, "dispatched": 1}
    assert "steps" not in listed["items"][0]
    # a waiting step cannot be told apart by the tasks filter as anything but waiting
    waiting = await client.get("/api/tasks", params={"status": "waiting"})
    assert waiting.status_code == 200


async def test_cancel(app: FastAPI, client: httpx.AsyncClient) -> None:
    created = (
        await client.post("/api/workflows", json=doc(s("a"), s("b", "a"), s("c", "b")))
    ).json()
    await hold_task(app, "t")
    response = await client.delete(f"/api/workflows/{created['id']}")
    assert response.status_code == 200, response.text
    cancelled = response.json()
    assert cancelled["status"] == "cancelled"
    assert [st["status"] for st in cancelled["steps"]] == ["cancelling", "cancelled", "cancelled"]
    assert cancelled["steps"][1]["task"]["error"] == "cancelled with its workflow"
    missing = await client.delete("/api/workflows/00000000-0000-0000-0000-000000000001")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "workflow_not_found"


async def test_cancelling_a_finished_workflow_is_a_409(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    created = (await client.post("/api/workflows", json=doc(s("only")))).json()
    held = await hold_task(app, "t")
    ref = AttemptRef(held.task.id, held.attempt, held.agent_id)
    await context_of(app).store.finish_attempts(
        [AttemptResult(ref, AttemptOutcome.SUCCEEDED)], now=now_of(app)
    )
    shown = (await client.get(f"/api/workflows/{created['id']}")).json()
    assert shown["status"] == "succeeded"
    assert shown["finished_at"] is not None
    response = await client.delete(f"/api/workflows/{created['id']}")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "workflow_already_finished"


async def test_retry_a_failed_workflow_and_retry_task_on_a_step_is_a_409(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    created = (await client.post("/api/workflows", json=doc(s("a"), s("b", "a")))).json()
    wf = created["id"]
    early = await client.post(f"/api/workflows/{wf}/retry")
    assert early.status_code == 409
    assert early.json()["error"]["code"] == "workflow_not_retryable"
    held = await hold_task(app, "t")
    ref = AttemptRef(held.task.id, held.attempt, held.agent_id)
    await context_of(app).store.finish_attempts(
        [AttemptResult(ref, AttemptOutcome.FAILED, error="boom")], now=now_of(app)
    )
    failed = (await client.get(f"/api/workflows/{wf}")).json()
    assert [st["status"] for st in failed["steps"]] == ["failed", "skipped"]
    # a step is not retried alone: the 409 names the workflow to retry instead
    alone = await client.post(f"/api/tasks/{held.task.id}/retry")
    assert alone.status_code == 409
    assert f"retry the workflow (POST /api/workflows/{wf}/retry" in alone.json()["error"]["message"]
    assert (await client.get("/api/tasks")).json()["total"] == 2  # nothing created
    response = await client.post(f"/api/workflows/{wf}/retry")
    assert response.status_code == 200, response.text
    retried = response.json()
    assert retried["status"] == "running"
    assert [st["status"] for st in retried["steps"]] == ["pending", "waiting"]
    again = await hold_task(app, "t", name="agent-2")
    assert again.task.id == held.task.id
    assert again.attempt == held.attempt + 1
    missing = await client.post("/api/workflows/00000000-0000-0000-0000-000000000001/retry")
    assert missing.status_code == 404


async def test_map_over_fans_out_and_shows_the_children(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    document = doc(
        s("fetch", task_type="f"), s("each", "fetch", map_over="fetch", payload={"k": 1})
    )
    created = (await client.post("/api/workflows", json=document)).json()
    assert created["steps"][1]["map_over"] == "fetch"
    fetch = await hold_task(app, "f")
    ref = AttemptRef(fetch.task.id, fetch.attempt, fetch.agent_id)
    await context_of(app).store.finish_attempts(
        [AttemptResult(ref, AttemptOutcome.SUCCEEDED, result=["x", "y"])], now=now_of(app)
    )
    shown = (await client.get(f"/api/workflows/{created['id']}")).json()
    assert [(st["name"], st["status"], st["map_of"], st["map_index"]) for st in shown["steps"]] == [
        ("fetch", "succeeded", None, None),
        ("each", "waiting", None, None),
        ("each[0]", "pending", "each", 0),
        ("each[1]", "pending", "each", 1),
    ]
    assert shown["steps"][3]["task"]["payload"] == {"k": 1, "item": "y", "map_index": 1}


def sample(text: str, name: str, labels: dict[str, str] | None = None) -> float:
    """The value of one sample in a Prometheus exposition (0 when it is absent)."""
    for family in text_string_to_metric_families(text):
        for item in family.samples:
            if item.name == name and all(
                item.labels.get(k) == v for k, v in (labels or {}).items()
            ):
                return float(item.value)
    return 0.0


async def test_workflows_are_counted_when_created_and_once_when_they_end(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    finished = "hetuflow_workflows_finished_total"
    text = (await client.get("/metrics")).text
    assert sample(text, finished, {"status": "succeeded"}) == 0  # every status is exported
    assert 'hetuflow_workflows_finished_total{status="cancelled"}' in text
    ok = (await client.post("/api/workflows", json=doc(s("a")))).json()
    gone = (await client.post("/api/workflows", json=doc(s("x", task_type="x")))).json()
    broken = (await client.post("/api/workflows", json=doc(s("y", task_type="y")))).json()
    held = await hold_task(app, "t")
    ref = AttemptRef(held.task.id, held.attempt, held.agent_id)
    await context_of(app).store.finish_attempts(
        [AttemptResult(ref, AttemptOutcome.SUCCEEDED, result=1)], now=now_of(app)
    )
    assert (await client.delete(f"/api/workflows/{gone['id']}")).status_code == 200
    assert (await client.delete(f"/api/workflows/{gone['id']}")).status_code == 200
    step_task = broken["steps"][0]["task"]["id"]
    assert (await client.delete(f"/api/tasks/{step_task}")).status_code == 200
    text = (await client.get("/metrics")).text
    assert ok["id"] != gone["id"]
    assert sample(text, "hetuflow_workflows_created_total") == 3
    assert sample(text, finished, {"status": "succeeded"}) == 1
    assert sample(text, finished, {"status": "cancelled"}) == 1
    assert sample(text, finished, {"status": "failed"}) == 1


async def test_the_children_of_a_fan_out_count_as_submitted_tasks(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    submitted = "hetuflow_tasks_submitted_total"
    document = doc(s("fetch", task_type="f"), s("each", "fetch", map_over="fetch", task_type="m"))
    await client.post("/api/workflows", json=document)
    text = (await client.get("/metrics")).text
    assert sample(text, submitted, {"task_type": "f"}) == 1
    assert sample(text, submitted, {"task_type": "m"}) == 1  # the mapped step itself
    fetch = await hold_task(app, "f")
    ref = AttemptRef(fetch.task.id, fetch.attempt, fetch.agent_id)
    await context_of(app).store.finish_attempts(
        [AttemptResult(ref, AttemptOutcome.SUCCEEDED, result=["x", "y", "z"])], now=now_of(app)
    )
    text = (await client.get("/metrics")).text
    assert sample(text, submitted, {"task_type": "m"}) == 4  # and its three children
    assert sample(text, submitted, {"task_type": "f"}) == 1
