"""How the agent finds every process a shell task started, also those that left its group.

A shell command runs in its own session, so its process group holds what it starts, until a
process starts a session of its own (``setsid``, a daemon's double fork). To stop those too,
the agent tracks each shell task's processes by the first method that works where it runs:

``cgroup``
    a cgroup v2 per task (``agent/cgroups.py``): exact, also for a daemon that changed its
    session and environment, and the watchdog can kill it if the agent dies.
``subreaper``
    the agent is its descendants' child subreaper and walks ``/proc`` (``agent/subreaper.py``):
    needs no privilege; a daemon that left the session and dropped the task's variables before
    the agent looked is missed, and if the agent is SIGKILLed the watchdog reaches only the
    task's process group.
``group``
    the process group only (not Linux).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Literal

from hetuflow.agent.cgroups import CgroupFactory, TaskCgroup
from hetuflow.agent.subreaper import Subreaper, become_subreaper

log = logging.getLogger("hetuflow.agent")

TrackingMethod = Literal["cgroup", "subreaper", "group"]
_REMOVE_SECONDS = 2.0


class TaskProcesses:
    """One shell task's processes beyond its process group: none known (method ``group``)."""

    cgroup: Path | None = None
    """The task's cgroup directory (method ``cgroup``), for the watchdog."""

    def argv(self, argv: list[str]) -> list[str]:
        """The command line that starts the task's command inside the tracking."""
        return argv

    def started(self, leader: int) -> None:
        """The command runs as process ``leader``."""

    def members(self) -> set[int]:
        """The task's live processes."""
        return set()

    def signal(self, signum: int) -> None:
        for pid in self.members():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signum)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)

    async def release(self) -> None:
        """After the task's processes are stopped: free what the tracking holds."""


class _CgroupProcesses(TaskProcesses):
    def __init__(self, cgroup: TaskCgroup) -> None:
        self._cgroup = cgroup
        self.cgroup = cgroup.directory

    def argv(self, argv: list[str]) -> list[str]:
        return self._cgroup.enter_argv(argv)

    def members(self) -> set[int]:
        return self._cgroup.members()

    def kill(self) -> None:
        self._cgroup.kill()

    async def release(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _REMOVE_SECONDS
        while not self._cgroup.remove():
            if loop.time() >= deadline:
                log.warning("cannot remove the shell task cgroup %s", self.cgroup)
                return
            await asyncio.sleep(0.02)


class _AdoptedProcesses(TaskProcesses):
    def __init__(self, subreaper: Subreaper, marker: frozenset[bytes]) -> None:
        self._subreaper = subreaper
        self._marker = marker
        self._leader: int | None = None

    def started(self, leader: int) -> None:
        self._leader = leader

    def members(self) -> set[int]:
        if self._leader is None:
            return set()
        return self._subreaper.members(self._leader, self._marker)

    async def release(self) -> None:
        self.members()  # record what is left (zombies) as adopted, then reap it
        self._subreaper.reap()


def missing_program(argv: list[str], env: dict[str, str], cwd: str | None) -> bool:
    """Whether ``argv[0]`` names no executable (as ``exec`` would look for it)."""
    program = argv[0]
    if "/" in program:
        return not os.access(Path(cwd or ".") / program, os.X_OK)
    return shutil.which(program, path=env.get("PATH", os.defpath)) is None


class ProcessTracker:
    """The agent's tracking of its shell tasks' processes (see the module docstring).

    ``method``: ``None`` picks the first that works here, at the first task; tests force one."""

    def __init__(self, method: TrackingMethod | None = None) -> None:
        self._wanted = method
        self.method: TrackingMethod | None = None
        """The method in use, once the first task asked."""
        self._cgroups: CgroupFactory | None = None
        self._subreaper: Subreaper | None = None
        self._lock = asyncio.Lock()

    async def _choose(self) -> TrackingMethod:
        async with self._lock:
            if self.method is not None:
                return self.method
            wanted = self._wanted
            if wanted in (None, "cgroup"):
                self._cgroups = await _working_cgroups()
                if self._cgroups is not None:
                    self.method = "cgroup"
            if self.method is None and wanted in (None, "subreaper") and become_subreaper():
                self._subreaper = Subreaper()
                self.method = "subreaper"
            if self.method is None:
                self.method = "group"
            if wanted is not None and self.method != wanted:
                raise RuntimeError(f"shell process tracking {wanted!r} is not possible here")
            log.info("shell tasks' processes are tracked by %s", self.method)
            return self.method

    async def track(self, task_id: str, attempt: int) -> TaskProcesses:
        """Tracking for one shell task (an attempt of ``task_id``)."""
        method = await self._choose()
        if method == "cgroup":
            assert self._cgroups is not None
            try:
                return _CgroupProcesses(self._cgroups.new())
            except OSError as error:
                log.warning("cannot create a cgroup for a shell task: %s", error)
                return TaskProcesses()
        if method == "subreaper":
            assert self._subreaper is not None
            marker = frozenset(
                {
                    f"HETUFLOW_TASK_ID={task_id}".encode(),
                    f"HETUFLOW_TASK_ATTEMPT={attempt}".encode(),
                }
            )
            return _AdoptedProcesses(self._subreaper, marker)
        return TaskProcesses()

    def close(self) -> None:
        """The agent stops (its tasks are stopped): remove its cgroup, or reap what is left
        and stop being a subreaper (the process may outlive its agent)."""
        if self._cgroups is not None:
            self._cgroups.remove()
        if self._subreaper is not None:
            self._subreaper.reap()
            become_subreaper(on=False)
        self.method, self._cgroups, self._subreaper = None, None, None


async def _working_cgroups() -> CgroupFactory | None:
    """Cgroups, if a process can be started in one here (tried once with ``/bin/true``)."""
    factory = CgroupFactory.create()
    if factory is None:
        return None
    try:
        probe = factory.new()
        process = await asyncio.create_subprocess_exec(
            *probe.enter_argv(["/bin/true"]),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        works = await process.wait() == 0
        probe.remove()
    except OSError:
        works = False
    if not works:
        factory.remove()
        return None
    return factory
