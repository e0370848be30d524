"""Acceptance: retries as users expect, on a real server and a real agent process. A task
failing three times is retried with exponential backoff up to its cap (the waits read from
its attempts); a failure kind not in ``retry_on`` ends the task at once as a dead letter
(``final=true``), and a bulk retry of the dead letters runs them again, once."""

from __future__ import annotations

import itertools
from datetime import datetime
from pathlib import Path

import pytest

from hetuflow.config import DatabaseConfig

from .processes import api, cluster

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(120)]

BACKOFF = 0.4
CAP = 0.5


def instant(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


async def test_backoff_is_capped_and_dead_letters_are_retried_in_bulk(
    database: DatabaseConfig, tmp_path: Path
) -> None:
    async with cluster(database, tmp_path) as c:
        server = await c.server()
        await c.agent("worker", task_types="flaky", slots=4, modules=("retry_handlers",))
        async with api(server) as http:
            await http.wait_agents_online(1)

            capped = await http.create(
                task_type="flaky",
                payload={"fail_times": 3},
                max_retries=3,
                retry_backoff_seconds=BACKOFF,
                retry_backoff_max_seconds=CAP,
                retry_jitter=0,
            )
            task = await http.wait_status(capped, "succeeded", "failed", timeout_seconds=30)
            assert (task["status"], task["result"]) == ("succeeded", {"attempt": 4}), task
            attempts = await http.attempts(capped)
            assert [a["outcome"] for a in attempts] == ["failed", "failed", "failed", "succeeded"]
            waits = [
                instant(later["started_at"]) - instant(earlier["finished_at"])
                for earlier, later in itertools.pairwise(attempts)
            ]
            # 0.4 s, then 0.8 s and 1.6 s capped at 0.5 s (each run starts when due)
            assert all(wait >= BACKOFF - 0.05 for wait in waits), waits
            assert waits[2] < 1.2, waits  # uncapped it would be 1.6 s

            gate = tmp_path / "gate"
            dead = [
                await http.create(
                    task_type="flaky",
                    payload={"fail_until": str(gate)},
                    max_retries=5,
                    retry_on=["timed_out", "agent_lost"],
                )
                for _ in range(2)
            ]
            for task_id in dead:
                ended = await http.wait_status(task_id, "failed", "succeeded")
                assert ended["status"] == "failed", ended
                assert ended["attempts"] == 1  # failed is not in retry_on: no retry
                assert "not retried: retry_on does not include failed" in ended["error"]
            letters = (await http.http.get("/api/tasks", params={"final": "true"})).json()
            assert sorted(t["id"] for t in letters["items"]) == sorted(dead)

            gate.touch()  # the cause is fixed: retry every dead letter at once
            bulk = await http.http.post("/api/tasks/bulk-retry", json={"filter": {"final": True}})
            assert bulk.status_code == 200, bulk.text
            result = bulk.json()
            assert (result["succeeded"], result["matched"]) == (2, 2), result
            for item in result["items"]:
                again = await http.wait_status(item["task"]["id"], "succeeded", "failed")
                assert (again["status"], again["replay_of"]) == ("succeeded", item["id"])
            letters = (await http.http.get("/api/tasks", params={"final": "true"})).json()
            assert letters["items"] == []
            repeat = await http.http.post("/api/tasks/bulk-retry", json={"filter": {"final": True}})
            assert repeat.json()["matched"] == 0  # nothing runs twice
