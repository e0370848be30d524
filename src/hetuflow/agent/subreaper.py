"""The agent as a child subreaper, where it cannot create cgroups (Linux only).

With ``prctl(PR_SET_CHILD_SUBREAPER)`` an orphaned descendant of the agent (the middle process
of a double fork has exited, or the shell that ran ``setsid daemon &``) is re-parented to the
agent instead of to init. So whatever a shell task started stays below the agent while the
agent lives, and the agent finds it by walking ``/proc`` down from itself.

**Which task a process belongs to.** Below the agent, a process belongs to the shell task whose
command is process ``L`` if it descends from ``L``, is in ``L``'s process group or session, or
started with the task's ``HETUFLOW_TASK_ID`` and ``HETUFLOW_TASK_ATTEMPT`` in its environment;
and so does every process below such a process. A daemon that was adopted (its parent gone),
left the session and dropped those variables (``setsid env -i …``) before the agent looked is
not found: the cgroup method (``agent/cgroups.py``) has no such gap.

**Reaping.** Adopted processes become the agent's children, so the agent must reap them when
they exit, but never a child that asyncio or ``subprocess`` started: on Python 3.11 asyncio's
``ThreadedChildWatcher`` waits for each process it started with ``os.waitpid(pid)`` in a
thread (``PidfdChildWatcher`` likewise waits by pid), and ``Popen.wait`` too; a pid taken from
them would report a wrong exit status. So the agent never calls ``waitpid(-1)``; it reaps, by
pid, only zombies it knows it adopted: a child whose session is neither its own nor the
agent's (a process the agent forks stays in the agent's session or starts its own), or one it
earlier saw as a task's process other than the command itself (``pid`` and start time, so a
reused pid is not mistaken). A process adopted and exited without the agent ever seeing it,
in its own session, stays a zombie until the agent exits (it holds a pid, nothing else).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
from collections import defaultdict

from hetuflow.agent.processes import ProcessInfo, environment_has, snapshot

PR_SET_CHILD_SUBREAPER = 36


def become_subreaper(on: bool = True) -> bool:
    """Make this process its descendants' subreaper (or no longer, ``on=False``); False where
    that is not possible."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


class Subreaper:
    """Finds a task's processes below this (subreaper) process and reaps adopted zombies."""

    def __init__(self) -> None:
        self._pid = os.getpid()
        self._sid = os.getsid(0)
        self._adopted: set[tuple[int, int]] = set()

    def members(self, leader: int, marker: frozenset[bytes]) -> set[int]:
        """Live processes of the task whose command is process ``leader`` (see the module
        docstring), ``leader`` included while it lives."""
        processes = snapshot()
        children: defaultdict[int, list[ProcessInfo]] = defaultdict(list)
        for info in processes:
            children[info.ppid].append(info)
        below: list[ProcessInfo] = []
        stack = list(children[self._pid])
        while stack:
            info = stack.pop()
            below.append(info)
            stack.extend(children[info.pid])
        seeds = [
            info
            for info in below
            if info.pid == leader
            or leader in (info.pgid, info.sid)
            or (not info.zombie and environment_has(info.pid, marker))
        ]
        found: dict[int, ProcessInfo] = {}
        while seeds:
            info = seeds.pop()
            if info.pid not in found:
                found[info.pid] = info
                seeds.extend(children[info.pid])
        self._adopted.update(
            (info.pid, info.start_ticks) for info in found.values() if info.pid != leader
        )
        return {pid for pid, info in found.items() if not info.zombie}

    def signal(self, pids: set[int], signum: int) -> None:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signum)

    def reap(self) -> int:
        """Reap the zombies this process adopted (see the module docstring); how many."""
        reaped = 0
        seen: set[tuple[int, int]] = set()
        for info in snapshot():
            key = (info.pid, info.start_ticks)
            seen.add(key)
            if info.ppid != self._pid or not info.zombie:
                continue
            if key in self._adopted or info.sid not in (info.pid, self._sid):
                with contextlib.suppress(ChildProcessError):
                    if os.waitpid(info.pid, os.WNOHANG)[0] == info.pid:
                        reaped += 1
        self._adopted &= seen  # forget the processes that are gone
        return reaped
