"""Acceptance: two server processes on one PostgreSQL share the work, never twice."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import pytest

from hetuflow.config import DatabaseConfig

from .processes import Api, api, cluster

pytestmark = [pytest.mark.acceptance, pytest.mark.postgres, pytest.mark.timeout(300)]

TASKS = 1000


async def test_two_servers_dispatch_a_thousand_tasks_with_no_attempt_run_twice(
    pg_database: DatabaseConfig, tmp_path: Path
) -> None:
    async with cluster(pg_database, tmp_path) as c:
        one = await c.server("server-1", node_id="node-1")
        two = await c.server("server-2", node_id="node-2", migrate=False)
        # Agents only on node 2 at first: a task created on node 1 reaches them through
        # LISTEN/NOTIFY (no polling anywhere), so it runs promptly.
        for index in range(2):
            await c.agent(
                f"b{index}", server=two, task_types="record", slots=8, modules=("ack_handlers",)
            )
        async with api(one) as http_one, api(two) as http_two:
            await http_two.wait_agents_online(2)
            created = time.monotonic()
            first = await http_one.create(task_type="record", payload={"n": -1})
            await http_one.wait_status(first, "succeeded", timeout_seconds=5)
            assert time.monotonic() - created < 2.0
            await c.agent("a0", server=one, task_types="record", slots=8, modules=("ack_handlers",))
            await http_one.wait_agents_online(3)

            async def submit(http_client: Api, start: int) -> list[str]:
                ids: list[str] = []
                for offset in range(0, TASKS // 2, 100):
                    body = {
                        "tasks": [
                            {"task_type": "record", "name": f"n{n}", "payload": {"n": n}}
                            for n in range(start + offset, start + offset + 100)
                        ]
                    }
                    response = await http_client.http.post("/api/tasks/batch", json=body)
                    assert response.status_code == 201, response.text
                    ids.extend(item["id"] for item in response.json()["items"])
                return ids

            batches = await asyncio.gather(submit(http_one, 0), submit(http_two, TASKS // 2))
            ids = [task_id for batch in batches for task_id in batch]
            assert len(set(ids)) == TASKS

            async def all_done() -> dict[str, int]:
                response = await http_one.http.get("/api/stats")
                counts: dict[str, int] = response.json()["tasks_by_status"]
                return counts

            async with asyncio.timeout(120):
                while True:
                    counts = await all_done()
                    if counts.get("succeeded", 0) == TASKS + 1:
                        break
                    assert counts.get("failed", 0) == 0, counts
                    await asyncio.sleep(0.2)

        runs = c.ledger.read_text().split()
        attempts = Counter(run.rsplit(":", 1)[0] for run in runs)
        tasks = Counter(run.split(":")[0] for run in runs)
        assert len(runs) == TASKS + 1
        assert max(attempts.values()) == 1  # no attempt ran twice
        assert max(tasks.values()) == 1  # nor any task (no agent was lost on the way)
        by_agent = Counter(run.rsplit(":", 1)[1] for run in runs)
        assert set(by_agent) == {"a0", "b0", "b1"}, by_agent  # both nodes dispatched
