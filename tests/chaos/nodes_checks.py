"""The checks of the chaos suite's server-nodes scenario (``nodes.py``) after a run: the
agents' reconnects after each node kill (from their own JSON logs), the attempts carried over
a kill, and each cron job's ticks (none twice, none missing, each fired one with its task)."""

from __future__ import annotations

import contextlib
import itertools
import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

from hetuflow.models import CronTick, TaskFilter, TickOutcome
from hetuflow.store.base import Store

from .ledger import Entry, Fault, percentiles

RECONNECT_BOUND_SECONDS = 30.0
SECOND = timedelta(seconds=1)


@dataclass(frozen=True)
class NodeKill:
    node: str
    url: str
    at: float
    back_after_seconds: float
    """From the SIGKILL to the restarted node answering ``/readyz``."""


@dataclass
class NodesReport:
    kills: list[NodeKill] = field(default_factory=list)
    reconnects: list[float] = field(default_factory=list)
    not_reconnected: list[str] = field(default_factory=list)
    running_at_kills: int = 0
    carried_over: int = 0
    released: list[str] = field(default_factory=list)
    """Of the attempts running at a kill, those that were not the result: how each ended."""
    cron: dict[str, dict[str, int]] = field(default_factory=dict)
    cron_violations: list[str] = field(default_factory=list)

    @property
    def violations(self) -> list[str]:
        slow = [x for x in self.reconnects if x > RECONNECT_BOUND_SECONDS]
        return [
            *(f"not reconnected: {x}" for x in self.not_reconnected),
            *(f"reconnected after {x:.1f} s" for x in slow),
            *(f"cron: {x}" for x in self.cron_violations),
        ]

    def summary(self) -> dict[str, Any]:
        backs = [kill.back_after_seconds for kill in self.kills]
        return {
            "node_kills": len(self.kills),
            "node_restart_seconds": percentiles(backs),
            "agent_reconnect_seconds": percentiles(self.reconnects),
            "not_reconnected": len(self.not_reconnected),
            "attempts_running_at_kills": self.running_at_kills,
            "attempts_carried_over": self.carried_over,
            "attempts_released_at_kills": self.released,
            "cron": self.cron,
            "cron_violations": len(self.cron_violations),
        }


# --- reconnects --------------------------------------------------------------------------

REGISTERED = re.compile(r"^registered as \S+ \(\S+\) on (\S+),")


def registrations(log: Path) -> list[tuple[float, str]]:
    """(unix time, server URL) of each registration in an agent's JSON log."""
    found: list[tuple[float, str]] = []
    for line in log.read_text(errors="replace").splitlines():
        if not line.startswith("{"):
            continue
        with contextlib.suppress(ValueError, KeyError, TypeError):
            record = json.loads(line)
            match = REGISTERED.match(record["message"])
            if match:
                found.append((_unix(record["time"]), match.group(1)))
    return found


def _unix(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def measure_reconnects(
    report: NodesReport, registrations: dict[str, list[tuple[float, str]]]
) -> list[Fault]:
    """For each kill, the agents registered on that node then, and when each registered
    again; a ``node kill`` fault for each (it explains their released attempts)."""
    faults: list[Fault] = []
    for kill in report.kills:
        for agent, events in registrations.items():
            before = [url for at, url in events if at < kill.at]
            if not before or before[-1] != kill.url:
                continue
            after = [at for at, _ in events if at >= kill.at]
            if after:
                report.reconnects.append(after[0] - kill.at)
                faults.append(Fault("node kill", agent, kill.at, after[0] - kill.at))
            else:
                report.not_reconnected.append(f"{agent} after {kill.node} died at {kill.at:.3f}")
                faults.append(Fault("node kill", agent, kill.at, float("inf")))
    return faults


async def carried_over(
    store: Store, report: NodesReport, faults: list[Fault], entries: list[Entry]
) -> None:
    """Attempts running on an agent when its node died; those that became the result."""
    for fault in faults:
        running = [
            entry
            for entry in entries
            if entry.event == "start" and entry.agent == fault.agent and entry.at < fault.at
        ]
        done = {(e.task_id, e.attempt) for e in entries if e.event == "end" and e.at <= fault.at}
        for entry in running:
            if (entry.task_id, entry.attempt) in done:
                continue
            report.running_at_kills += 1
            task = await store.get_task(UUID(entry.task_id))
            if task is not None and task.attempts == entry.attempt:
                report.carried_over += 1
                continue
            attempts = {a.number: a for a in await store.list_attempts(UUID(entry.task_id))}
            attempt = attempts.get(entry.attempt)
            ended = (
                f"{attempt.outcome} {attempt.finished_at.timestamp() - fault.at:+.2f} s"
                if attempt is not None and attempt.finished_at is not None
                else "not finished"
            )
            report.released.append(
                f"task {entry.task_id} attempt {entry.attempt} on {entry.agent}: {ended} from "
                f"the kill; the agent registered again after {fault.seconds:.2f} s"
            )


# --- cron ----------------------------------------------------------------------------------

COVERS = (
    re.compile(r"the oldest (\d+) skipped"),
    re.compile(r"^missed (\d+)\+? ticks?"),
    re.compile(r"^ran once now for (\d+)\+? ticks?"),
)


def covers(tick: CronTick) -> int:
    """How many ticks of the schedule this recorded tick stands for (a misfire records a run
    of missed ticks as one, at the first of them)."""
    for pattern in COVERS:
        match = pattern.search(tick.reason or "")
        if match:
            return int(match.group(1))
    return 1


async def check_cron(store: Store, jobs: dict[str, UUID], report: NodesReport) -> list[UUID]:
    """Each job's ticks: none twice, none missing, each fired one with its task."""
    tasks: list[UUID] = []
    for name, job_id in jobs.items():
        ticks = sorted(await store.list_cron_ticks(job_id, limit=100_000), key=lambda t: t.tick_at)
        instants = [tick.tick_at for tick in ticks]
        counts = {
            "ticks": len(ticks),
            "fired": sum(t.outcome is TickOutcome.FIRED for t in ticks),
            "skipped": sum(t.outcome is TickOutcome.SKIPPED for t in ticks),
            "late": sum(t.reason is not None and t.outcome is TickOutcome.FIRED for t in ticks),
            "missed_covered": sum(covers(t) - 1 for t in ticks),
        }
        report.cron[name] = counts
        if len(set(instants)) != len(instants):
            report.cron_violations.append(f"{name}: a tick recorded twice")
        for tick, following in itertools.pairwise(ticks):
            if following.tick_at - tick.tick_at != covers(tick) * SECOND:
                report.cron_violations.append(
                    f"{name}: {tick.tick_at.isoformat()} ({tick.outcome}, {tick.reason!r}) "
                    f"then {following.tick_at.isoformat()}: ticks missing"
                )
        for tick in ticks:
            if tick.outcome is not TickOutcome.FIRED:
                continue
            task = await store.get_task(tick.task_id) if tick.task_id else None
            if task is None or task.cron_tick_at != tick.tick_at:
                report.cron_violations.append(
                    f"{name}: tick {tick.tick_at.isoformat()} fired without its task"
                )
                continue
            tasks.append(task.id)
        made = await store.list_tasks(TaskFilter(cron_job_id=job_id), limit=1)
        if made.total != counts["fired"]:
            report.cron_violations.append(
                f"{name}: {made.total} tasks for {counts['fired']} fired ticks"
            )
    return tasks
