"""Search inside tasks over the API: `q` finds text in payloads and results (and still in
names), on the list and on a bulk filter."""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from hetuflow.models import AttemptOutcome, AttemptRef, AttemptResult

from .helpers import context_of, hold_task, now_of


async def _found(client: httpx.AsyncClient, q: str) -> list[str]:
    response = await client.get("/api/tasks", params={"q": q})
    assert response.status_code == 200, response.text
    page = response.json()
    assert page["total"] == len(page["items"])
    return sorted(item["name"] for item in page["items"])


async def test_q_finds_a_word_in_a_payload_or_a_result(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    tasks = [
        {"name": "invoice", "task_type": "mail", "payload": {"to": "ops@Quokka-Labs.example"}},
        {"name": "report", "task_type": "mail", "payload": {"to": "someone@else.example"}},
        {"name": "render", "task_type": "render", "payload": {"scene": 4}},
    ]
    created = await client.post("/api/tasks/batch", json={"tasks": tasks})
    assert created.status_code == 201, created.text
    dispatch = await hold_task(app, "render")
    ref = AttemptRef(dispatch.task.id, dispatch.attempt, dispatch.agent_id)
    result = AttemptResult(ref, AttemptOutcome.SUCCEEDED, result={"frames": "Wombat-take-2"})
    await context_of(app).store.finish_attempts([result], now=now_of(app))

    assert await _found(client, "quokka-labs") == ["invoice"]  # in a payload, any case
    assert await _found(client, "wombat-take") == ["render"]  # in a result
    assert await _found(client, "else.example") == ["report"]
    assert await _found(client, "invoi") == ["invoice"]  # in a name, as before
    assert await _found(client, "not in any task") == []

    # The bulk filter takes the same q: only the matching task is cancelled.
    cancelled = await client.post("/api/tasks/bulk-cancel", json={"filter": {"q": "quokka"}})
    assert cancelled.status_code == 200, cancelled.text
    statuses = {
        item["name"]: item["status"] for item in (await client.get("/api/tasks")).json()["items"]
    }
    assert statuses == {"invoice": "cancelled", "report": "pending", "render": "succeeded"}
