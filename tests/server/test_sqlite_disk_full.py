"""SQLite out of space (``SQLITE_FULL``, provoked for real with ``PRAGMA max_page_count`` on
the store's writer connection): writes answer 503 ``store_unavailable``, reads and the
server go on, an agent's reports wait in memory, and everything is written once there is
room again."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator

import pytest

from hetuflow.config import DatabaseConfig
from hetuflow.models import TaskStatus
from hetuflow.store.sqlite import SqliteStore

from .harness import Server, agent, fast_config, serve


@pytest.fixture
async def server(sqlite_database: DatabaseConfig) -> AsyncIterator[Server]:
    async with serve(fast_config(sqlite_database)) as running:
        yield running


async def _limit_pages(store: SqliteStore, extra_pages: int | None) -> None:
    """Let the file grow by ``extra_pages`` at most (None: lift the limit)."""

    def limit(connection: sqlite3.Connection) -> None:
        pages = connection.execute("PRAGMA page_count").fetchone()[0]
        cap = 2**31 - 2 if extra_pages is None else pages + extra_pages
        connection.execute(f"PRAGMA max_page_count = {cap}")

    await store._db.write(limit)


async def test_a_full_disk_is_503_and_loses_no_report(server: Server) -> None:
    store = server.context.store
    assert isinstance(store, SqliteStore)
    async with agent(server, "echo", slots=1) as client:
        task_id = await server.create_task(task_type="echo")
        [task] = await client.dispatched(1)
        await _limit_pages(store, 0)
        try:
            big = {"name": "t", "task_type": "echo", "payload": {"blob": "x" * 200_000}}
            refused = await server.http.post("/api/tasks", json=big)
            assert refused.status_code == 503, refused.text
            error = refused.json()["error"]
            assert error["code"] == "store_unavailable"
            assert "full" in error["message"]
            ref = {"task_id": task["task_id"], "attempt": task["attempt"]}
            lines = [{**ref, "line": f"line {i} " + "y" * 2000} for i in range(100)]
            await client.send({"type": "TaskLogs", "lines": lines})
            await client.result(task, result={"ok": True})
            assert (await server.http.get(f"/api/tasks/{task_id}")).status_code == 200
            assert (await server.http.get("/healthz")).status_code == 200
        finally:
            await _limit_pages(store, None)
        done = await server.wait_status(task_id, TaskStatus.SUCCEEDED)
        assert done.result == {"ok": True}
        assert len(await store.list_logs(task_id)) == 100
        assert (await server.http.post("/api/tasks", json=big)).status_code == 201
