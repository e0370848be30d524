"""Acceptance: a broadcast on real server and agent processes. Two shell agents (on two
server nodes on PostgreSQL, one on SQLite) and one of another task type: a broadcast made
with the CLI (``dispatch-task --all-agents --wait``) runs once on each shell agent, and the
parent's result names both; a running broadcast cancelled through its parent stops on both
agents. A batch holding a broadcast with a start deadline: the child of an agent that
went away ends failed when the deadline passes, naming the agent, and the parent settles.
"""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import datetime, timedelta
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


async def test_a_batch_broadcast_child_of_an_agent_gone_fails_at_its_start_deadline(
    database: DatabaseConfig, tmp_path: Path
) -> None:
    async with cluster(database, tmp_path) as c:
        server = await c.server()
        await c.agent("alpha", task_types="shell")
        beta = await c.agent("beta", task_types="shell")
        async with api(server) as http:
            await http.wait_agents_online(2)
            broadcast = {
                "task_type": "shell",
                "payload": {"command": "echo everywhere"},
                "dispatch": "all",
                "delay_seconds": 2,
                "start_deadline_seconds": 4,
            }
            plain = {"task_type": "shell", "payload": {"command": "echo plain"}}
            response = await http.http.post("/api/tasks/batch", json={"tasks": [plain, broadcast]})
            assert response.status_code == 201, response.text
            plain_task, parent = response.json()["items"]
            assert parent["status"] == "waiting", parent
            assert len(await children(http, parent["id"])) == 2
            await beta.stop()  # away before its child is due: it never starts it
            done = await http.wait_status(parent["id"], "succeeded", "failed", timeout_seconds=30)
            assert done["status"] == "failed", done
            assert done["error"] == "failed on 1 of 2 agents: beta (failed)", done
            assert "everywhere" in str(done["result"]["alpha"]), done
            assert done["result"]["beta"] is None
            kids = {kid["pinned_agent_id"]: kid for kid in await children(http, parent["id"])}
            agents = {
                a["name"]: a["id"] for a in (await http.http.get("/api/agents")).json()["items"]
            }
            gone = kids[agents["beta"]]
            assert gone["status"] == "failed", gone
            assert gone["error"].startswith("not started by its start deadline: agent beta was")
            assert gone["attempts"] == 0
            # Ended at its deadline, within a reaper pass (0.5 s here) and a poll.
            ended = datetime.fromisoformat(gone["finished_at"])
            deadline = datetime.fromisoformat(gone["start_deadline_at"])
            assert timedelta(0) <= ended - deadline < timedelta(seconds=3)
            assert kids[agents["alpha"]]["status"] == "succeeded"
            assert (await http.wait_status(plain_task["id"], "succeeded"))["status"] == "succeeded"
