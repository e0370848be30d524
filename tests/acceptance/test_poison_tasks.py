"""Acceptance: a poison task, whose handler crashes its agent process (``os._exit``, a
segfault), is dispatched to ``[scheduler] max_agent_crashes_per_task`` agents (3) and then
quarantined, instead of crashing every agent the fleet replaces, forever."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from hetuflow.config import DatabaseConfig

from .processes import Cluster, Process, api, cluster

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(120)]

AGENTS = 2


class Fleet:
    """``AGENTS`` agents of one slot each (one crash, one task), each replaced as soon as its
    process has died."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.alive: list[Process] = []
        self.died: list[Process] = []

    async def start(self) -> None:
        name = f"worker-{len(self.alive) + len(self.died) + 1}"
        task_types = "exit,segfault,fine"
        self.alive.append(
            await self.cluster.agent(
                name, task_types=task_types, slots=1, modules=("poison_handlers",)
            )
        )

    async def keep_up(self) -> None:
        while True:
            for agent in [a for a in self.alive if a.process.returncode is not None]:
                self.alive.remove(agent)
                self.died.append(agent)
            while len(self.alive) < AGENTS:
                await self.start()
            await asyncio.sleep(0.05)


async def test_a_task_that_crashes_its_agents_is_quarantined_after_three(
    database: DatabaseConfig, tmp_path: Path
) -> None:
    async with cluster(database, tmp_path) as c:
        server = await c.server()
        fleet = Fleet(c)
        keeper = asyncio.create_task(fleet.keep_up())
        try:
            async with api(server) as http:
                await http.wait_agents_online(AGENTS)
                poison = {
                    kind: await http.create(task_type=kind, payload={})
                    for kind in ("exit", "segfault")
                }
                for kind, task_id in poison.items():
                    task = await http.wait_status(task_id, "quarantined", timeout_seconds=60)
                    assert task["error"] == "crashed 3 agents", task
                    attempts = await http.attempts(task_id)
                    assert [a["outcome"] for a in attempts] == ["lost"] * 3, (kind, attempts)
                    assert len({a["agent_id"] for a in attempts}) == 3  # three agents crashed
                assert len(fleet.died) == 6
                assert {agent.process.returncode for agent in fleet.died} <= {3, -11}
                # Quarantined for good: never dispatched again; the fleet works on.
                healthy = await http.create(task_type="fine", payload={})
                done = await http.wait_status(healthy, "succeeded", "failed")
                assert done["status"] == "succeeded"
                for task_id in poison.values():
                    assert len(await http.attempts(task_id)) == 3
                assert len(fleet.died) == 6
                metrics = (await http.http.get("/metrics")).text
                assert 'hetuflow_tasks_quarantined{task_type="exit"} 1.0' in metrics
                assert 'hetuflow_tasks_quarantined{task_type="segfault"} 1.0' in metrics
                # An operator who fixed the handler runs it again on purpose.
                retried = await http.http.post(f"/api/tasks/{poison['exit']}/retry")
                assert retried.status_code == 201, retried.text
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
