"""``GET /api/workflows/{id}/events``: the workflow first, then each step's transition, read
from the real store as a released step and its parent move (the console's DAG view follows it;
the browser test drives it end to end)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID

import httpx
import orjson
from fastapi import FastAPI

from hetuflow.models import AttemptOutcome, AttemptRef, AttemptResult
from hetuflow.server.api.events import _workflow_stream

from .helpers import context_of, hold_task, now_of

DEADLINE_SECONDS = 10.0


async def next_event(stream: AsyncIterator[bytes]) -> tuple[str, Any]:
    """The next ``event:`` of the stream (comments and ``retry:`` skipped)."""
    while True:
        chunk = (await asyncio.wait_for(anext(stream), DEADLINE_SECONDS)).decode()
        fields = dict(line.split(": ", 1) for line in chunk.strip().splitlines())
        if "event" in fields:
            return fields["event"], orjson.loads(fields["data"])


async def test_an_unknown_workflow_is_a_404(client: httpx.AsyncClient) -> None:
    missing = "00000000-0000-4000-8000-000000000000"
    response = await client.get(f"/api/workflows/{missing}/events")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "workflow_not_found"
    assert (await client.get("/api/workflows/nope/events")).status_code == 404  # no such id


async def test_the_workflow_then_each_step_transition(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    document = {
        "name": "wf",
        "steps": [
            {"name": "fetch", "task_type": "t"},
            {"name": "sum", "task_type": "t", "depends_on": ["fetch"]},
        ],
    }
    created = (await client.post("/api/workflows", json=document)).json()
    context = context_of(app)
    workflow = await context.store.get_workflow(UUID(created["id"]))
    assert workflow is not None
    stream = _workflow_stream(context, workflow)
    try:
        name, first = await next_event(stream)
        assert name == "workflow"
        assert [(s["name"], s["status"]) for s in first["steps"]] == [
            ("fetch", "pending"),
            ("sum", "waiting"),
        ]
        fetch = await hold_task(app, "t")
        name, step = await next_event(stream)
        assert (name, step["name"], step["previous"], step["status"]) == (
            "step",
            "fetch",
            "pending",
            "dispatched",
        )
        ref = AttemptRef(fetch.task.id, fetch.attempt, fetch.agent_id)
        await context.store.finish_attempts(
            [AttemptResult(ref, AttemptOutcome.SUCCEEDED, result={"rows": 7})], now=now_of(app)
        )
        got = [await next_event(stream) for _ in range(2)]
        assert [(n, s["name"], s["previous"], s["status"]) for n, s in got] == [
            ("step", "fetch", "dispatched", "succeeded"),
            ("step", "sum", "waiting", "pending"),
        ]
        assert got[0][1]["task"]["result"] == {"rows": 7}
        assert got[1][1]["workflow_status"] == "running"
    finally:
        await stream.aclose()
