"""Acceptance: PostgreSQL goes away for a few seconds under a real server and a real agent.

The test's own database refuses connections (``ALLOW_CONNECTIONS false``) and every session
on it is terminated, as in a database restart or failover, then it is allowed again; the
shared PostgreSQL server itself keeps running. Nothing accepted may be lost or run twice,
the server must answer clearly meanwhile and carry on by itself afterwards.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from hetuflow.config import DatabaseConfig

from .processes import Api, api, cluster

pytestmark = [pytest.mark.acceptance, pytest.mark.postgres, pytest.mark.timeout(180)]

OUTAGE_SECONDS = 5.0


def shell(command: str) -> dict[str, object]:
    return {"command": command}


async def _admin(url: str, *statements: str) -> list[Any]:
    connection = await asyncpg.connect(url)
    try:
        return [await connection.fetch(statement) for statement in statements]
    finally:
        await connection.close()


async def _take_away(admin_url: str, name: str) -> None:
    await _admin(
        admin_url,
        f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false',
        f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'",
    )


async def _give_back(admin_url: str, name: str) -> None:
    await _admin(admin_url, f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')


async def _eventually_status(
    http: httpx.AsyncClient, path: str, status: int, timeout_seconds: float = 10.0
) -> httpx.Response:
    async with asyncio.timeout(timeout_seconds):
        while True:
            response = await http.get(path)
            if response.status_code == status:
                return response
            await asyncio.sleep(0.05)


async def _finished_once(http: Api, task_id: str) -> None:
    task = await http.wait_status(task_id, "succeeded", "failed", "timed_out", timeout_seconds=30)
    assert task["status"] == "succeeded", task
    attempts = await http.attempts(task_id)
    assert [attempt["outcome"] for attempt in attempts] == ["succeeded"], (task, attempts)


async def test_postgres_outage_loses_nothing(
    pg_database: DatabaseConfig, pg_admin_url: str, tmp_path: Path
) -> None:
    name = pg_database.dsn.rsplit("/", 1)[1]
    async with cluster(pg_database, tmp_path) as c:
        server = await c.server()
        await c.agent("worker", slots=3)
        async with api(server) as http:
            await http.wait_agents_online(1)
            before = [
                await http.create(task_type="shell", payload=shell(f"echo before-{i}"))
                for i in range(3)
            ]
            for task_id in before:
                await _finished_once(http, task_id)
            # Running across the outage: their results reach the server while it is down.
            spanning = [
                await http.create(task_type="shell", payload=shell(f"sleep 1.5; echo span-{i}"))
                for i in range(2)
            ]
            for task_id in spanning:
                await http.wait_status(task_id, "running")
            # Due during the outage: the dispatcher's timer fires while claims fail.
            delayed = await http.create(
                task_type="shell", payload=shell("echo delayed"), delay_seconds=2.0
            )
            log_before = len(server.output())

            await _take_away(pg_admin_url, name)
            cut = time.monotonic()
            try:
                ready = await _eventually_status(http.http, "/readyz", 503)
                assert ready.json()["status"] == "unavailable"
                assert (await http.http.get("/healthz")).status_code == 200
                refused = await http.http.post(
                    "/api/tasks", json={"name": "t", "task_type": "shell", "payload": shell("true")}
                )
                assert refused.status_code == 503, refused.text
                assert refused.json()["error"]["code"] == "store_unavailable"
                for _ in range(3):  # repeated failures do not flood the log
                    again = await http.http.post(
                        "/api/tasks", json={"name": "t", "task_type": "shell", "payload": {}}
                    )
                    assert again.status_code == 503
                    assert (await http.http.get("/api/tasks")).status_code == 503
                # The outage lasts a while: every loop of the server meets it.
                await asyncio.sleep(max(OUTAGE_SECONDS - (time.monotonic() - cut), 0.0))
                assert server.process.returncode is None
            finally:
                await _give_back(pg_admin_url, name)

            await _eventually_status(http.http, "/readyz", 200, timeout_seconds=15)
            for task_id in [*spanning, delayed]:
                await _finished_once(http, task_id)
            for i, task_id in enumerate(spanning):
                assert f"span-{i}" in await http.logs(task_id)
            after = [
                await http.create(task_type="shell", payload=shell(f"echo after-{i}"))
                for i in range(3)
            ]
            for task_id in after:
                await _finished_once(http, task_id)
            for task_id in before:
                await _finished_once(http, task_id)
            agents = (await http.http.get("/api/agents")).json()["items"]
            assert [a["status"] for a in agents if a["name"] == "worker"] == ["online"]

            # The notifier LISTENs again on the database (its reconnect backs off up to 10 s).
            async with asyncio.timeout(20):
                while True:
                    [listeners] = await _admin(
                        pg_admin_url,
                        "SELECT pid FROM pg_stat_activity"
                        f" WHERE application_name = 'hetuflow-notify' AND datname = '{name}'",
                    )
                    if listeners:
                        break
                    await asyncio.sleep(0.1)
            assert len(listeners) == 1

        assert server.process.returncode is None
        outage_log = server.output()[log_before:]
        assert "Traceback" not in outage_log, outage_log
        problem_lines = [
            line
            for line in outage_log.splitlines()
            if ("WARNING" in line or "ERROR" in line) and "uvicorn.access" not in line
        ]
        assert len(problem_lines) <= 25, "\n".join(problem_lines)
