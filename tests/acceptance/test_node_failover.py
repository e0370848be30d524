"""Acceptance: an agent given the URLs of two server nodes (``--server`` twice) moves to the
other node when the one it is connected to is SIGKILLed, and its running task carries on:
it ends ``succeeded`` on its first attempt and ran once."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from hetuflow.config import DatabaseConfig

from .processes import Api, api, cluster

pytestmark = [pytest.mark.acceptance, pytest.mark.postgres, pytest.mark.timeout(120)]


async def _agent(http: Api) -> dict[str, Any]:
    response = await http.http.get("/api/agents")
    assert response.status_code == 200, response.text
    (agent,) = response.json()["items"]
    result: dict[str, Any] = agent
    return result


async def test_an_agent_moves_to_the_other_node_when_its_node_dies_and_keeps_its_task(
    pg_database: DatabaseConfig, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    command = f'echo "$HETUFLOW_TASK_ID $HETUFLOW_TASK_ATTEMPT" >> {runs}; sleep 4; echo done'
    async with cluster(pg_database, tmp_path) as c:
        one = await c.server("server-1", node_id="node-1")
        two = await c.server("server-2", node_id="node-2", migrate=False)
        await c.agent("roamer", servers=(one, two), slots=1)
        async with api(two) as http:
            await http.wait_agents_online(1)
            assert (await _agent(http))["node_id"] == "node-1"  # the first URL that answers
            task_id = await http.create(task_type="shell", payload={"command": command})
            await http.wait_status(task_id, "running")
            await one.kill()
            killed = time.monotonic()
            async with asyncio.timeout(10):
                while (await _agent(http))["node_id"] != "node-2":  # noqa: ASYNC110 - polls a process
                    await asyncio.sleep(0.05)
            moved = time.monotonic() - killed
            task = await http.wait_status(task_id, "succeeded", timeout_seconds=30)
            attempts = await http.attempts(task_id)
            agent = await _agent(http)
    print(f"the agent was registered on node 2 {moved:.2f} s after node 1 died")
    # Within the silence window (1.5 s here) the attempt was never released: it carried on.
    assert task["attempts"] == 1, attempts
    assert [a["outcome"] for a in attempts] == ["succeeded"]
    assert runs.read_text().split() == [task_id, "1"]  # it ran once
    assert task["result"]["stdout_tail"].strip() == "done"
    assert agent["status"] == "online"
