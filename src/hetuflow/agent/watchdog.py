"""Shell tasks die with their agent, even when the agent is SIGKILLed.

A shell task runs in its own session (its own process group), so nothing the kernel does when
the agent dies reaches it. The agent therefore starts one small **watchdog** process (this
file, run by path with only the standard library) in a session of its own and tells it, over
a pipe on the watchdog's stdin, each process group it starts (``+PGID``, or ``+PGID<TAB>DIR``
when the task has a cgroup, ``agent/cgroups.py``) and each that ended (``-PGID``). The agent is
the only holder of that pipe's write end (it is close-on-exec, so no task inherits it): when
the agent exits in any way, the kernel closes it, the watchdog reads end-of-file, sends SIGTERM
to every group still listed and to every process of their cgroups, SIGKILL after the grace
period (``cgroup.kill`` for a cgroup: a daemon that left the group dies too), removes the
cgroups, and exits. Without a cgroup (the agent tracks its tasks as a subreaper,
``agent/tracking.py``), a process that left its task's group is re-parented to init when the
agent dies and the watchdog does not reach it.

Why not ``PR_SET_PDEATHSIG``: it is set per child, in the child, so it needs a ``preexec_fn``,
which is unsafe in the agent (sync handlers run in threads while it forks) or a wrapper
process per task; and it only reaches the direct child (``/bin/sh``), not the processes that
child started. The watchdog reaches the whole group, costs one process per agent, and needs
nothing in the child.

Known gap: a group started in the instant between the fork and its ``+PGID`` line, when the
agent is killed exactly then, is not listed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

log = logging.getLogger("hetuflow.agent")

_POLL_SECONDS = 0.05
CLOSE_WAIT_SECONDS = 5.0


class ShellWatchdog:
    """The agent's side: starts the watchdog process on first use, lists groups to it."""

    def __init__(self, kill_grace_seconds: float, env: Mapping[str, str] | None = None) -> None:
        """``env``: the watchdog process's environment (the agent gives it the minimal task
        environment, so its ``/proc/<pid>/environ`` holds no secret of the agent)."""
        self.kill_grace_seconds = kill_grace_seconds
        self._env = dict(env) if env is not None else None
        self._process: asyncio.subprocess.Process | None = None

    async def watch(self, pgid: int, cgroup: Path | None = None) -> None:
        """Have the watchdog stop process group ``pgid`` (and the processes of ``cgroup``, the
        task's cgroup directory) if the agent dies before it ends."""
        process = self._process
        if process is not None and process.returncode is not None:
            log.warning("the shell watchdog exited (%s): starting another", process.returncode)
            process = None
        if process is None:
            process = self._process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-I",
                str(Path(__file__)),
                f"{self.kill_grace_seconds:g}",
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                start_new_session=True,
                env=self._env,
            )
        self._send(f"+{pgid}\t{cgroup}\n" if cgroup is not None else f"+{pgid}\n")

    def release(self, pgid: int) -> None:
        """Group ``pgid`` has ended: forget it (its id may be reused)."""
        self._send(f"-{pgid}\n")

    async def close(self) -> None:
        """End the watchdog (it stops whatever group is still listed) and wait for it."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.stdin is not None:
            process.stdin.close()
        try:
            async with asyncio.timeout(self.kill_grace_seconds + CLOSE_WAIT_SECONDS):
                await process.wait()
        except TimeoutError:
            process.kill()
            await process.wait()

    def _send(self, line: str) -> None:
        """Queue one line for the watchdog (a few bytes: no need to wait for the pipe)."""
        process = self._process
        if process is None or process.stdin is None or process.stdin.is_closing():
            return
        with contextlib.suppress(ConnectionError, RuntimeError):
            process.stdin.write(line.encode())


# --- the watchdog process ---------------------------------------------------------------------


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _cgroup_members(directory: str) -> list[int]:
    pids: list[int] = []
    for path, _, _ in os.walk(directory):
        with contextlib.suppress(OSError, ValueError):
            pids.extend(int(pid) for pid in Path(path, "cgroup.procs").read_text().split())
    return pids


def _signal(pids: list[int], signum: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signum)


def _kill_cgroup(directory: str) -> None:
    """SIGKILL every process of the cgroup, then remove it (and the agent's, if empty)."""
    try:
        Path(directory, "cgroup.kill").write_text("1")
    except OSError:
        _signal(_cgroup_members(directory), signal.SIGKILL)
    deadline = time.monotonic() + CLOSE_WAIT_SECONDS
    while time.monotonic() < deadline:
        try:
            for path, _, _ in sorted(os.walk(directory), reverse=True):
                Path(path).rmdir()
        except FileNotFoundError:
            break
        except OSError:
            time.sleep(_POLL_SECONDS)
        else:
            break
    with contextlib.suppress(OSError):
        Path(directory).parent.rmdir()  # the agent's cgroup, once its tasks' are gone


def _stop_groups(groups: dict[int, str | None], grace_seconds: float) -> None:
    cgroups = [directory for directory in groups.values() if directory is not None]
    for pgid in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGTERM)
    for directory in cgroups:
        _signal(_cgroup_members(directory), signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    while (
        (left := {pgid for pgid in groups if _group_alive(pgid)})
        or any(_cgroup_members(directory) for directory in cgroups)
    ) and time.monotonic() < deadline:
        time.sleep(_POLL_SECONDS)
    for pgid in left:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
    for directory in cgroups:
        _kill_cgroup(directory)


def main(argv: list[str]) -> int:
    """Read ``+PGID[<TAB>CGROUP]``/``-PGID`` lines until end-of-file, then stop the groups
    (and cgroups) still listed."""
    grace_seconds = float(argv[1]) if len(argv) > 1 else 5.0
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)  # only the end of the pipe ends the watchdog
    groups: dict[int, str | None] = {}
    for raw in sys.stdin.buffer:
        line, _, cgroup = raw.rstrip(b"\n").partition(b"\t")
        if len(line) < 2 or line[:1] not in (b"+", b"-") or not line[1:].isdigit():
            continue
        pgid = int(line[1:])
        if pgid <= 1:
            continue
        if line[:1] == b"+":
            groups[pgid] = os.fsdecode(cgroup) if cgroup else None
        else:
            groups.pop(pgid, None)
    _stop_groups(groups, grace_seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
