"""Acceptance: concurrency keys on real server and agent processes. Two agents with room for
every task; the tasks' keys allow one (the ``[concurrency]`` limit of the task type, set
through the environment) or two (``max_concurrent_per_key``) at once. The agents' ledger
shows no key ever over its limit, and each freed slot going to the key's next task at once.
On PostgreSQL with two server nodes (an agent on each), on SQLite with one."""

from __future__ import annotations

from pathlib import Path

import pytest

from hetuflow.config import DatabaseConfig

from .cron_support import Run, read_ledger
from .processes import api, cluster

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(120)]

HOLD_SECONDS = 0.4


def most_at_once(runs: list[Run]) -> int:
    """The most runs of ``runs`` that overlapped at one instant."""
    events = sorted(
        [(run.start, 1) for run in runs] + [(run.end or float("inf"), -1) for run in runs],
        key=lambda event: (event[0], event[1]),  # an end before a start at the same instant
    )
    now = peak = 0
    for _, step in events:
        now += step
        peak = max(peak, now)
    return peak


async def test_no_key_ever_runs_more_than_its_limit_across_nodes(
    database: DatabaseConfig, tmp_path: Path
) -> None:
    env = {"HETUFLOW_CONCURRENCY__CRON_RECORD": "1"}
    async with cluster(database, tmp_path, env) as c:
        first = await c.server()
        servers = [first, await c.server()] if database.type == "postgres" else [first]
        for index, server in enumerate(servers):
            await c.agent(
                f"worker-{index}",
                server=server,
                task_types="cron_record",
                slots=6,
                modules=("cron_handlers",),
            )
        async with api(first) as http:
            await http.wait_agents_online(len(servers))
            payload = {"seconds": HOLD_SECONDS}
            one = [
                await http.create(task_type="cron_record", payload=payload, concurrency_key="one")
                for _ in range(4)
            ]
            two = [
                await http.create(
                    task_type="cron_record",
                    payload=payload,
                    concurrency_key="two",
                    max_concurrent_per_key=2,
                )
                for _ in range(6)
            ]
            free = [await http.create(task_type="cron_record", payload={"seconds": 0})]
            for task_id in [*one, *two, *free]:
                task = await http.wait_status(task_id, "succeeded", "failed", timeout_seconds=30)
                assert task["status"] == "succeeded", task
            runs = {run.task_id: run for run in read_ledger(c.ledger)}
            assert most_at_once([runs[t] for t in one]) == 1
            assert most_at_once([runs[t] for t in two]) == 2
            # a slot freed by a finish goes to the key's next task at once, not at a later
            # round: four runs of key "one" one after another take about four holds
            span = max(runs[t].end or 0 for t in one) - min(runs[t].start for t in one)
            assert span < 4 * HOLD_SECONDS + 2.0, span
