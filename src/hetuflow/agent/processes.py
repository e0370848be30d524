"""Reading processes from ``/proc`` (Linux): their parent, group, session and state."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

_PROC = Path("/proc")


@dataclass(frozen=True, slots=True)
class ProcessInfo:
    pid: int
    state: str
    """``Z`` for a zombie (exited, waiting for its parent to reap it)."""
    ppid: int
    pgid: int
    sid: int
    start_ticks: int
    """When it started (clock ticks since boot): with ``pid``, names one process for good."""

    @property
    def zombie(self) -> bool:
        return self.state in ("Z", "X")


def read(pid: int) -> ProcessInfo | None:
    """Process ``pid`` as ``/proc/<pid>/stat`` shows it, or None if there is none."""
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()
    return ProcessInfo(
        pid, fields[0], int(fields[1]), int(fields[2]), int(fields[3]), int(fields[19])
    )


def snapshot() -> list[ProcessInfo]:
    """Every process visible in ``/proc`` (empty where there is no ``/proc``)."""
    found = []
    try:
        entries = list(_PROC.iterdir())
    except OSError:
        return []
    for entry in entries:
        if entry.name.isdigit() and (info := read(int(entry.name))) is not None:
            found.append(info)
    return found


def live(pid: int) -> bool:
    """Whether ``pid`` is a process that has not exited (a zombie has)."""
    info = read(pid)
    return info is not None and not info.zombie


def environment_has(pid: int, entries: frozenset[bytes]) -> bool:
    """Whether every ``NAME=value`` of ``entries`` is in the environment ``pid`` started with
    (False when it cannot be read: another user's process, or gone)."""
    try:
        environ = (_PROC / str(pid) / "environ").read_bytes()
    except OSError:
        return False
    return entries <= set(environ.split(b"\0"))
