"""Acceptance: a handler knows its context (``TaskContext``): attempt and retries, when the
task was due, the cron job and logical tick that created it, the workflow and step it is,
the broadcast it is a child of.
A real server process and a real agent process, on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from hetuflow.config import DatabaseConfig

from .processes import Api, api, cluster

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(120)]


def instant(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def succeeded(http: Api, task_id: str) -> dict[str, Any]:
    task = await http.wait_status(task_id, "succeeded", "failed")
    assert task["status"] == "succeeded", task
    return task


async def test_the_handler_sees_attempt_retries_schedule_cron_tick_and_workflow_step(
    database: DatabaseConfig, tmp_path: Path
) -> None:
    async with cluster(database, tmp_path) as c:
        server = await c.server()
        await c.agent("worker", task_types="ctx_echo", slots=2, modules=("context_handlers",))
        async with api(server) as http:
            await http.wait_agents_online(1)

            # a plain task, retried once: the second attempt knows it is the second
            plain = await http.create(
                task_type="ctx_echo",
                payload={"fail_first": True},
                max_retries=2,
                retry_backoff_seconds=0,
            )
            task = await succeeded(http, plain)
            seen = task["result"]
            assert seen["attempt"] == 2
            assert seen["max_retries"] == 2
            assert instant(seen["scheduled_at"]) == instant(task["scheduled_at"])
            assert seen["cron_job_id"] is None
            assert seen["cron_tick_at"] is None
            assert seen["workflow_id"] is None
            assert seen["step"] is None

            # a cron run: the job and its logical tick (the fire time, on the second)
            response = await http.http.post(
                "/api/cron-jobs",
                json={
                    "name": "every-second",
                    "cron_expression": "* * * * * *",
                    "task_type": "ctx_echo",
                    "enabled": True,
                },
            )
            assert response.status_code == 201, response.text
            job = response.json()
            async with asyncio.timeout(20):
                while True:
                    runs = await http.http.get("/api/tasks", params={"cron_job_id": job["id"]})
                    if items := runs.json()["items"]:
                        break
                    await asyncio.sleep(0.1)
            await http.http.post(f"/api/cron-jobs/{job['id']}/disable")
            task = await succeeded(http, items[-1]["id"])
            seen = task["result"]
            assert seen["cron_job_id"] == job["id"]
            tick = instant(seen["cron_tick_at"])
            assert tick == instant(task["cron_tick_at"])
            assert tick.microsecond == 0
            assert seen["workflow_id"] is None

            # a workflow step: the workflow and the step's name
            response = await http.http.post(
                "/api/workflows",
                json={
                    "name": "ctx",
                    "steps": [
                        {"name": "first", "task_type": "ctx_echo"},
                        {"name": "second", "task_type": "ctx_echo", "depends_on": ["first"]},
                    ],
                },
            )
            assert response.status_code == 201, response.text
            workflow = response.json()
            for step in workflow["steps"]:
                task = await succeeded(http, step["task"]["id"])
                assert task["result"]["workflow_id"] == workflow["id"]
                assert task["result"]["step"] == step["name"]
                assert task["result"]["attempt"] == 1
                assert task["result"]["broadcast_of"] is None

            # a broadcast child: the parent it is a copy of
            response = await http.http.post(
                "/api/tasks", json={"task_type": "ctx_echo", "dispatch": "all"}
            )
            assert response.status_code == 201, response.text
            parent = response.json()["id"]
            await succeeded(http, parent)  # ends with its last child
            response = await http.http.get(f"/api/tasks/{parent}/children")
            [child] = response.json()["items"]
            task = await succeeded(http, child["id"])
            assert task["result"]["broadcast_of"] == parent
            assert task["result"]["workflow_id"] is None
