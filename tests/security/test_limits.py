"""Limits on what a request may carry: the payload of each task (``[server]
max_payload_bytes``, 1024 in these tests), with a clear 413 naming the payload."""

from __future__ import annotations

import httpx

from hetuflow.tokens import Role

from .conftest import bearer


async def test_a_payload_over_the_limit_is_refused_and_nothing_is_created(
    client: httpx.AsyncClient, tokens: dict[Role, str]
) -> None:
    headers = bearer(tokens[Role.OPERATOR])
    fits = {"data": "x" * 1000}  # 1013 bytes as JSON
    too_big = {"data": "x" * 1020}
    assert (
        await client.post("/api/tasks", json={"task_type": "t", "payload": fits}, headers=headers)
    ).status_code == 201
    one = await client.post(
        "/api/tasks", json={"task_type": "t", "payload": too_big}, headers=headers
    )
    assert one.status_code == 413
    error = one.json()["error"]
    assert (error["code"], error["field"]) == ("payload_too_large", "payload")
    assert "limit is 1024 bytes" in error["message"]
    batch = await client.post(
        "/api/tasks/batch",
        json={"tasks": [{"task_type": "t"}, {"task_type": "t", "payload": too_big}]},
        headers=headers,
    )
    assert batch.status_code == 413
    assert batch.json()["error"]["field"] == "tasks[1].payload"
    listed = await client.get("/api/tasks", headers=headers)
    assert listed.json()["total"] == 1
