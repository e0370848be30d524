"""Acceptance: a real server process, real ``hetuflow-agent`` processes, real WebSockets.

Each test runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from pathlib import Path

import pytest

from hetuflow.config import DatabaseConfig

from .processes import api, cluster, wait_gone

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(180)]


def shell(command: str) -> dict[str, object]:
    return {"command": command}


async def test_success_and_failure_results(database: DatabaseConfig, tmp_path: Path) -> None:
    async with cluster(database, tmp_path) as c:
        server = await c.server()
        await c.agent("worker")
        async with api(server) as http:
            ok = await http.create(task_type="shell", payload=shell("echo hello; echo oops >&2"))
            bad = await http.create(task_type="shell", payload=shell("echo nope >&2; exit 3"))
            done = await http.wait_status(ok, "succeeded")
            failed = await http.wait_status(bad, "failed")
            assert done["attempts"] == 1
            assert "3" in (failed["error"] or "")
            assert "nope" in (failed["error"] or "")
            lines = await http.logs(ok)
            assert "hello" in lines
            assert "oops" in lines


async def test_retry_then_success(database: DatabaseConfig, tmp_path: Path) -> None:
    marker = tmp_path / "first-run-happened"
    command = f"if [ -f {marker} ]; then echo second; else touch {marker}; exit 1; fi"
    async with cluster(database, tmp_path) as c:
        server = await c.server()
        await c.agent("worker")
        async with api(server) as http:
            task_id = await http.create(
                task_type="shell",
                payload=shell(command),
                max_retries=2,
                retry_backoff_seconds=0.2,
            )
            done = await http.wait_status(task_id, "succeeded")
            assert done["attempts"] == 2
            outcomes = [a["outcome"] for a in await http.attempts(task_id)]
            assert outcomes == ["failed", "succeeded"]


async def test_a_timeout_ends_the_attempt_timed_out(
    database: DatabaseConfig, tmp_path: Path
) -> None:
    async with cluster(database, tmp_path) as c:
        server = await c.server()
        await c.agent("worker")
        async with api(server) as http:
            task_id = await http.create(
                task_type="shell", payload=shell("sleep 30"), timeout_seconds=0.5
            )
            started = time.monotonic()
            done = await http.wait_status(task_id, "timed_out", "failed")
            assert done["status"] == "timed_out"
            assert time.monotonic() - started < 10


async def test_cancel_of_a_running_shell_task_leaves_no_process(
    database: DatabaseConfig, tmp_path: Path
) -> None:
    pids = tmp_path / "pids"
    daemon = tmp_path / "daemon"
    # A shell with a child, and a daemon that left the group (setsid): all must go.
    command = (
        f"setsid sh -c 'sleep 600 & echo $! > {daemon}.tmp; mv {daemon}.tmp {daemon}' & "
        f"sleep 600 & echo $$ $! > {pids}; wait"
    )
    async with cluster(database, tmp_path) as c:
        server = await c.server()
        await c.agent("worker")
        async with api(server) as http:
            task_id = await http.create(task_type="shell", payload=shell(command))
            await http.wait_status(task_id, "running")
            async with asyncio.timeout(10):
                while True:
                    if daemon.exists() and pids.exists() and len(pids.read_text().split()) >= 2:
                        break
                    await asyncio.sleep(0.05)
            response = await http.http.delete(f"/api/tasks/{task_id}")
            assert response.status_code == 200, response.text
            done = await http.wait_status(task_id, "cancelled")
            assert done["status"] == "cancelled"
            for pid in [*pids.read_text().split(), daemon.read_text()]:
                await wait_gone(int(pid))
            [attempt] = await http.attempts(task_id)
            assert attempt["outcome"] == "cancelled"


async def test_an_agent_killed_mid_task_hands_it_to_another_once(
    database: DatabaseConfig, tmp_path: Path
) -> None:
    started = tmp_path / "started"
    async with cluster(database, tmp_path) as c:
        server = await c.server()
        doomed = await c.agent("doomed", slots=1)
        async with api(server) as http:
            # The first run would take long; the second (on the rescuer) finishes at once.
            command = (
                f"if [ -f {started} ]; then echo finished; "
                f"else echo $$ > {started}; exec sleep 60; fi"
            )
            task_id = await http.create(task_type="shell", payload=shell(command))
            first = await http.wait_status(task_id, "running")
            await c.agent("rescuer", slots=1)
            await http.wait_agents_online(2)
            await doomed.kill()
            killed = time.monotonic()
            again = await http.wait(task_id, lambda t: t["attempts"] == 2, timeout_seconds=10)
            redispatch_seconds = time.monotonic() - killed
            assert again["agent_id"] != first["agent_id"]
            assert redispatch_seconds < 2.0, redispatch_seconds
            done = await http.wait_status(task_id, "succeeded")
            assert done["attempts"] == 2
            outcomes = [a["outcome"] for a in await http.attempts(task_id)]
            assert outcomes == ["lost", "succeeded"]
            finished = [line for line in await http.logs(task_id) if line == "finished"]
            assert len(finished) == 1  # counted once
        # The killed agent could not stop its child; this test does.
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(started.read_text()), signal.SIGKILL)


async def test_a_task_needing_missing_capabilities_waits_with_its_reason(
    database: DatabaseConfig, tmp_path: Path
) -> None:
    async with cluster(database, tmp_path) as c:
        server = await c.server()
        await c.agent("plain")
        async with api(server) as http:
            await http.wait_agents_online(1)
            task_id = await http.create(
                task_type="shell", payload=shell("echo gpu"), required_capabilities=["gpu"]
            )
            waiting = await http.wait(task_id, lambda t: t["pending_reason"] is not None)
            assert waiting["status"] == "pending"
            assert waiting["pending_reason"] == "no_agent_with_capabilities"
            await asyncio.sleep(0.5)  # a plain agent never takes it, however long it waits
            assert (await http.task(task_id))["status"] == "pending"
            await c.agent("gpu", capabilities="gpu")
            done = await http.wait_status(task_id, "succeeded")
            assert "gpu" in await http.logs(task_id)
            assert done["attempts"] == 1


async def test_priorities_are_honoured_under_contention(
    database: DatabaseConfig, tmp_path: Path
) -> None:
    order = tmp_path / "order"
    async with cluster(database, tmp_path) as c:
        server = await c.server()
        async with api(server) as http:
            ids = {}
            for priority in ("low", "normal", "high", "critical"):
                ids[priority] = await http.create(
                    task_type="shell",
                    priority=priority,
                    payload=shell(f"echo {priority} >> {order}"),
                )
            # One slot for all of them: they run one by one, in priority order.
            await c.agent("single", slots=1)
            for task_id in ids.values():
                await http.wait_status(task_id, "succeeded")
            assert order.read_text().split() == ["critical", "high", "normal", "low"]
