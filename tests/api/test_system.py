"""Stats, health, readiness and the OpenAPI document."""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from hetuflow.models import TaskStatus

from .helpers import context_of


async def test_stats_counts_every_status(client: httpx.AsyncClient) -> None:
    for _ in range(2):
        await client.post("/api/tasks", json={"task_type": "t"})
    task = (await client.post("/api/tasks", json={"task_type": "t"})).json()
    await client.delete(f"/api/tasks/{task['id']}")
    await client.post("/api/agents", json={"name": "a"})
    stats = (await client.get("/api/stats")).json()
    assert stats["tasks_by_status"]["pending"] == 2
    assert stats["tasks_by_status"]["cancelled"] == 1
    assert stats["tasks_by_status"]["running"] == 0
    assert set(stats["tasks_by_status"]) == {status.value for status in TaskStatus}
    assert (stats["tasks_total"], stats["agents_online"], stats["agents_total"]) == (3, 0, 1)
    assert stats["cron_jobs_enabled"] == 0


async def test_health_and_readiness(client: httpx.AsyncClient, app: FastAPI) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok", "detail": None}
    assert (await client.get("/readyz")).status_code == 200
    store = context_of(app).store
    await store.close()
    try:
        down = await client.get("/readyz")
        assert down.status_code == 503
        assert down.json()["status"] == "unavailable"
        assert (await client.get("/healthz")).status_code == 200
    finally:
        await store.open()
    assert (await client.get("/readyz")).status_code == 200


async def test_openapi_describes_every_route(client: httpx.AsyncClient) -> None:
    document = (await client.get("/openapi.json")).json()
    for path in (
        "/api/tasks",
        "/api/tasks/batch",
        "/api/tasks/{task_id}",
        "/api/tasks/{task_id}/retry",
        "/api/tasks/{task_id}/attempts",
        "/api/tasks/{task_id}/logs",
        "/api/tasks/{task_id}/logs/stream",
        "/api/agents",
        "/api/agents/{agent_id}",
        "/api/stats",
        "/healthz",
        "/readyz",
    ):
        assert path in document["paths"], path
    for path, operations in document["paths"].items():
        if not path.startswith("/api/") and path not in ("/healthz", "/readyz"):
            continue
        for method, operation in operations.items():
            assert operation.get("summary"), f"{method} {path} has no summary"
    schemas = document["components"]["schemas"]
    for name in ("TaskCreate", "AgentCreate"):
        for field, spec in schemas[name]["properties"].items():
            assert spec.get("description"), f"{name}.{field} has no description"
    assert "ErrorResponse" in schemas
    docs = await client.get("/docs")
    assert docs.status_code == 200
    assert "swagger" in docs.text.lower()
