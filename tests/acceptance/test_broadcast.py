"""Acceptance: a broadcast on real server and agent processes. Two shell agents (on two
server nodes on PostgreSQL, one on SQLite) and one of another task type: a broadcast made
with the CLI (``dispatch-task --all-agents --wait``) runs once on each shell agent, and the
parent's result names both; a running broadcast cancelled through its parent stops on both
agents."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from hetuflow.config import DatabaseConfig

from .processes import api, cluster

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(120)]

BIN = Path(sys.executable).parent


async def children(http: Any, task_id: str) -> list[dict[str, Any]]:
    response = await http.http.get(f"/api/tasks/{task_id}/children")
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def test_a_broadcast_runs_once_on_each_agent_and_gathers_results(
    database: DatabaseConfig, tmp_path: Path
) -> None:
    async with cluster(database, tmp_path) as c:
        first = await c.server()
        second = await c.server() if database.type == "postgres" else first
        await c.agent("alpha", server=first, task_types="shell")
        await c.agent("beta", server=second, task_types="shell")
        await c.agent("other", server=first, task_types="cron_record", modules=("cron_handlers",))
        async with api(first) as http:
            await http.wait_agents_online(3)
            process = await asyncio.create_subprocess_exec(
                str(BIN / "hetuflow-server"),
                "dispatch-task",
                "--server",
                first.http_url,
                "--task-type",
                "shell",
                "--payload",
                '{"command": "echo hello"}',
                "--all-agents",
                "--wait",
                "--wait-timeout",
                "60",
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                env={**os.environ, "NO_COLOR": "1", "COLUMNS": "200"},
            )
            out, _ = await asyncio.wait_for(process.communicate(), 90)
            text = out.decode()
            assert process.returncode == 0, text
            assert "broadcast to 2 agents: alpha, beta" in text, text
            assert "finished task" in text, text
            parent_id = text.split("finished task ", 1)[1].split(":", 1)[0].strip()
            parent = await http.task(parent_id)
            assert parent["status"] == "succeeded", parent
            assert sorted(parent["result"]) == ["alpha", "beta"]
            agents = {
                a["name"]: a["id"] for a in (await http.http.get("/api/agents")).json()["items"]
            }
            kids = await children(http, parent_id)
            assert [kid["pinned_agent_id"] for kid in kids] == [agents["alpha"], agents["beta"]]
            for kid in kids:
                assert kid["status"] == "succeeded", kid
                [attempt] = await http.attempts(kid["id"])
                assert attempt["agent_id"] == kid["pinned_agent_id"]  # ran once, on its agent
            for name in ("alpha", "beta"):
                assert "hello" in str(parent["result"][name]), parent["result"]

            # A running broadcast, cancelled through its parent, stops on both agents.
            response = await http.http.post(
                "/api/tasks",
                json={"task_type": "shell", "payload": {"command": "sleep 60"}, "broadcast": True},
            )
            assert response.status_code == 201, response.text
            running_id = response.json()["id"]
            for kid in await children(http, running_id):
                await http.wait_status(kid["id"], "running")
            cancelled = await http.http.delete(f"/api/tasks/{running_id}")
            assert cancelled.json()["status"] == "cancelled", cancelled.text
            for kid in await children(http, running_id):
                done = await http.wait_status(kid["id"], "cancelled", "failed", "succeeded")
                assert done["status"] == "cancelled", done
            assert (await http.task(running_id))["status"] == "cancelled"
