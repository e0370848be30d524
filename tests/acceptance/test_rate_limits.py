"""Acceptance: a rate limit on real server and agent processes. Agents with room for every
task; the tasks name a limit of 3 units per 2 s. The attempt history shows no 2 s window
with more than 3 dispatches, the windows filled as fast as the limit allows, and the tasks
held back saying ``rate_limited`` and when they can run. On PostgreSQL with two server
nodes (an agent on each), on SQLite with one."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from hetuflow.config import DatabaseConfig

from .cron_support import read_ledger
from .processes import api, cluster

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(120)]

LIMIT = 3
PER_SECONDS = 2.0
TASKS = 9


def instant(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


async def test_no_window_ever_dispatches_more_than_the_limit_across_nodes(
    database: DatabaseConfig, tmp_path: Path
) -> None:
    async with cluster(database, tmp_path) as c:
        first = await c.server()
        servers = [first, await c.server()] if database.type == "postgres" else [first]
        for index, server in enumerate(servers):
            await c.agent(
                f"worker-{index}",
                server=server,
                task_types="cron_record",
                slots=TASKS,
                modules=("cron_handlers",),
            )
        async with api(first) as http:
            await http.wait_agents_online(len(servers))
            made = await http.http.post(
                "/api/rate-limits",
                json={"name": "crm-api", "limit": LIMIT, "per_seconds": PER_SECONDS},
            )
            assert made.status_code == 201, made.text
            uses = [{"name": "crm-api", "units": 1}]
            tasks = [
                await http.create(task_type="cron_record", payload={"seconds": 0}, rate_limits=uses)
                for _ in range(TASKS)
            ]
            # the last one waits for a unit (two windows away), and says so
            held = await http.task(tasks[-1])
            assert (held["status"], held["pending_reason"]) == ("pending", "rate_limited"), held
            assert instant(held["rate_limited_until"]) > instant(held["created_at"]), held
            for task_id in tasks:
                task = await http.wait_status(task_id, "succeeded", "failed", timeout_seconds=30)
                assert task["status"] == "succeeded", task
            dispatched: list[float] = []
            for task_id in tasks:
                dispatched += [instant(a["dispatched_at"]) for a in await http.attempts(task_id)]
            dispatched.sort()
        assert len(dispatched) == TASKS  # one attempt each
        for start in dispatched:
            window = [at for at in dispatched if start <= at < start + PER_SECONDS - 0.001]
            assert len(window) <= LIMIT, (start, dispatched)
        # three windows' worth: the last unit is spent two windows after the first, and not
        # much later (a freed unit is used when it frees, not at a later poll)
        span = dispatched[-1] - dispatched[0]
        assert 2 * PER_SECONDS - 0.01 <= span < 2 * PER_SECONDS + 2.0, dispatched
        assert {run.task_id for run in read_ledger(c.ledger)} == set(tasks)
