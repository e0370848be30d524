"""A cgroup v2 per shell task, where the agent may create one.

A cgroup holds every process started inside it, whatever it does: ``setsid``, a double fork
and re-parenting to init do not take a process out of its cgroup. So a shell task whose command
runs in a cgroup of its own can be stopped completely: SIGTERM to every process listed in the
cgroup, then ``cgroup.kill`` (Linux 5.14+; else SIGKILL to each listed process until none is
left).

The agent creates ``hetuflow-agent-<pid>`` in its own cgroup (read from ``/proc/self/cgroup``
and the cgroup2 mount in ``/proc/self/mountinfo``) and one ``task-<n>`` directory in it per
shell task. The command enters its cgroup before it runs: the agent starts
``/bin/sh -c 'echo $$ > <dir>/cgroup.procs && exec "$@"' <dir>/cgroup.procs <argv…>`` (the
process writes its own pid, then becomes the command; same pid, so the same process group and
session). The agent can do this when it runs as root, or under systemd with ``Delegate=yes``, or
in a container with a writable cgroup2 mount; ``probe`` tries it once and says whether it works.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
from pathlib import Path

from hetuflow.agent.processes import live

_ENTER = 'echo $$ > "$0" && exec "$@"'


def own_cgroup() -> Path | None:
    """The directory of this process's cgroup v2, or None (no cgroup2, or cgroup v1 only)."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
        mountinfo = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return None
    relative = next((line[3:] for line in lines if line.startswith("0::")), None)
    if relative is None:
        return None
    for line in mountinfo:
        before, _, after = line.partition(" - ")
        if after.split(" ", 1)[0] == "cgroup2":
            mount = Path(before.split(" ")[4])
            directory = mount / relative.lstrip("/")
            if (directory / "cgroup.procs").is_file():
                return directory
    return None


class TaskCgroup:
    """One shell task's cgroup."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def enter_argv(self, argv: list[str]) -> list[str]:
        """``argv`` run so that its process enters this cgroup first."""
        return ["/bin/sh", "-c", _ENTER, str(self.directory / "cgroup.procs"), *argv]

    def members(self) -> set[int]:
        """Live (not zombie) processes of the cgroup and of any cgroup below it."""
        pids: set[int] = set()
        for directory, _, _ in os.walk(self.directory):
            with contextlib.suppress(OSError):
                text = (Path(directory) / "cgroup.procs").read_text()
                pids.update(int(pid) for pid in text.split())
        return {pid for pid in pids if live(pid)}

    def signal(self, signum: int) -> None:
        for pid in self.members():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signum)

    def kill(self) -> None:
        """SIGKILL every process of the cgroup (``cgroup.kill``: no process can escape)."""
        try:
            (self.directory / "cgroup.kill").write_text("1")
        except OSError:
            self.signal(signal.SIGKILL)

    def remove(self) -> bool:
        """Remove the cgroup (and any below it) if no live process is left in it; whether it
        is gone. Does not wait: the caller retries while the last processes are reaped."""
        try:
            for directory, _, _ in sorted(os.walk(self.directory), reverse=True):
                Path(directory).rmdir()
        except FileNotFoundError:
            return True
        except OSError:
            return False
        return True


class CgroupFactory:
    """Makes the agent's per-task cgroups under ``hetuflow-agent-<pid>`` in its own cgroup."""

    def __init__(self, parent: Path) -> None:
        self.parent = parent
        self._numbers = itertools.count(1)

    @classmethod
    def create(cls) -> CgroupFactory | None:
        """The factory, if this process can create a cgroup next to its own; else None."""
        own = own_cgroup()
        if own is None:
            return None
        parent = own / f"hetuflow-agent-{os.getpid()}"
        try:
            parent.mkdir(exist_ok=True)
        except OSError:
            return None
        return cls(parent)

    def new(self) -> TaskCgroup:
        """A new, empty cgroup for one task (``OSError`` if it cannot be made)."""
        directory = self.parent / f"task-{next(self._numbers)}"
        directory.mkdir()
        return TaskCgroup(directory)

    def remove(self) -> None:
        """Remove the agent's cgroup directory (once its tasks' cgroups are gone)."""
        TaskCgroup(self.parent).remove()
