"""Acceptance: a shell task dies with its agent. A ``hetuflow-agent`` process SIGKILLed in
the middle of a ``sleep 600`` cannot stop it itself; its watchdog does, within seconds."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path

import pytest

from hetuflow.agent.cgroups import own_cgroup
from hetuflow.config import DatabaseConfig

from .processes import api, cluster, wait_gone

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(120)]


async def test_an_agent_sigkilled_mid_task_takes_its_shell_processes_with_it(
    database: DatabaseConfig, tmp_path: Path
) -> None:
    pids = tmp_path / "pids"
    command = f"sleep 600 & echo $$ $! > {pids}.tmp; mv {pids}.tmp {pids}; wait"
    async with cluster(database, tmp_path) as c:
        server = await c.server()
        doomed = await c.agent("doomed", slots=1)
        async with api(server) as http:
            await http.wait_agents_online(1)
            task_id = await http.create(task_type="shell", payload={"command": command})
            await http.wait_status(task_id, "running")
            async with asyncio.timeout(10):
                while True:  # the file appears once the command has started its sleep
                    if pids.exists():
                        break
                    await asyncio.sleep(0.05)
            shell_pid, sleep_pid = (int(pid) for pid in pids.read_text().split())
            try:
                await doomed.kill()
                await wait_gone(sleep_pid, timeout_seconds=5)  # kill grace is 1 s
                await wait_gone(shell_pid, timeout_seconds=5)
                assert not _live_members(shell_pid)  # nothing of the task's group is left
            finally:
                for pid in (sleep_pid, shell_pid):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)


async def test_an_agent_sigkilled_mid_task_takes_a_daemon_of_its_task_with_it(
    database: DatabaseConfig, tmp_path: Path
) -> None:
    """With a cgroup per shell task, the watchdog stops what left the task's group too."""
    own = own_cgroup()
    if own is None or not os.access(own, os.W_OK):
        pytest.skip("no writable cgroup v2 here: the agent tracks its tasks as a subreaper")
    pid_file = tmp_path / "daemon"
    command = (
        f"setsid sh -c 'sleep 600 & echo $! > {pid_file}.tmp; mv {pid_file}.tmp {pid_file}' &"
        " sleep 600"
    )
    async with cluster(database, tmp_path) as c:
        server = await c.server()
        doomed = await c.agent("doomed", slots=1)
        async with api(server) as http:
            await http.wait_agents_online(1)
            task_id = await http.create(task_type="shell", payload={"command": command})
            await http.wait_status(task_id, "running")
            async with asyncio.timeout(10):
                while True:  # the file appears once the daemon runs
                    if pid_file.exists():
                        break
                    await asyncio.sleep(0.05)
            daemon = int(pid_file.read_text())
            try:
                assert os.getsid(daemon) != os.getsid(0)
                await doomed.kill()
                await wait_gone(daemon, timeout_seconds=5)
            finally:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(daemon, signal.SIGKILL)


def _live_members(pgid: int) -> list[int]:
    """Processes of group ``pgid`` that are not zombies."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError):
            fields = (entry / "stat").read_text().rsplit(") ", 1)[1].split()
            if fields[2] == str(pgid) and fields[0] != "Z":
                members.append(int(entry.name))
    return members
