"""The chaos suite's ledger and its check against the store.

Every task the suite submits carries a unique ``uid`` in its payload. Its handler (Python,
``chaos_handlers.chaos``, or the shell command of ``shell_command``) appends
``start <uid> <task id> <attempt> <agent> <unix time>`` when it begins and the same line with
``end`` when it is done. At the end of a run ``check`` holds the ledger against the store:

- **lost**: a submitted task missing from the store, or not ended as its policy says
  (every chaos task succeeds on its first run that is not interrupted, and an agent lost
  never costs a retry, so ``succeeded``; or ``quarantined`` once its attempts were lost
  with their agents ``crash_limit`` times, ``[scheduler] max_agent_crashes_per_task``);
- **stuck**: a task still ``pending``/``dispatched``/``running``/``cancelling``;
- **attempt run twice**: one ``(task, attempt)`` started more than once (never allowed);
- **wrong agent**: an attempt that ran on another agent than the store gave it to;
- **fenced result**: the stored result is not the one of the task's current attempt, or that
  attempt never ran to its end in the ledger;
- **duplicated runs**: a task run by more than one attempt. At-least-once allows it only when
  every earlier attempt is ``lost`` in the store (its agent was killed or went silent and the
  attempt was released); each is counted and explained by the fault that hit its agent.
"""

from __future__ import annotations

import itertools
import shlex
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

from hetuflow.models import AttemptOutcome, TaskStatus
from hetuflow.store.base import Store

UNFINISHED = {TaskStatus.PENDING, TaskStatus.DISPATCHED, TaskStatus.RUNNING, TaskStatus.CANCELLING}


def shell_command(ledger: Path, uid: str, seconds: float) -> str:
    """The shell form of the chaos task: the same ledger lines, then the result line."""
    line = 'printf "%s {uid} %s %s %s %s\\n" {event} "$HETUFLOW_TASK_ID" "$HETUFLOW_TASK_ATTEMPT"'
    line += ' "$HETUFLOW_ACK_AGENT" "$(date +%s.%N)" >> {ledger}'
    path = shlex.quote(str(ledger))
    start = line.format(uid=uid, event="start", ledger=path)
    end = line.format(uid=uid, event="end", ledger=path)
    result = 'echo "chaos-result $HETUFLOW_TASK_ATTEMPT $HETUFLOW_ACK_AGENT"'
    return f"{start}; sleep {seconds:.3f}; {end}; {result}"


@dataclass(frozen=True, slots=True)
class Entry:
    event: str
    uid: str
    task_id: str
    attempt: int
    agent: str
    at: float


def read(path: Path) -> list[Entry]:
    entries: list[Entry] = []
    if not path.exists():
        return entries
    for raw in path.read_text().splitlines():
        parts = raw.split()
        if len(parts) != 6:
            raise AssertionError(f"ledger line torn: {raw!r}")
        event, uid, task_id, attempt, agent, at = parts
        entries.append(Entry(event, uid, task_id, int(attempt), agent, float(at)))
    return entries


@dataclass(frozen=True, slots=True)
class Fault:
    """One injected fault: ``kill`` (SIGKILL), ``pause`` (SIGSTOP for ``seconds``), or
    ``node kill`` (the server node the agent was connected to was SIGKILLed; ``seconds`` until
    it registered again on another); the network scenario (``network.py``) adds ``cut`` (the
    agent's link down or dropping every packet for ``seconds``) and ``degraded`` (latency and
    loss for ``seconds``)."""

    kind: str
    agent: str
    at: float
    seconds: float = 0.0


@dataclass
class Report:
    submitted: int = 0
    finished: dict[str, int] = field(default_factory=dict)
    lost: list[str] = field(default_factory=list)
    stuck: list[str] = field(default_factory=list)
    attempts_run_twice: list[str] = field(default_factory=list)
    wrong_agent: list[str] = field(default_factory=list)
    fenced_results: list[str] = field(default_factory=list)
    unexplained_duplicates: list[str] = field(default_factory=list)
    duplicated_runs: int = 0
    """Attempts that ran (started in the ledger) beyond the one whose result counts."""
    duplicates_completed: int = 0
    """Of those, the ones that ran to their end (their side effects happened in full)."""
    duplicate_causes: dict[str, int] = field(default_factory=dict)
    redispatch_after_kill: list[float] = field(default_factory=list)
    redispatch_after_pause: list[float] = field(default_factory=list)
    redispatch_after_other: dict[str, list[float]] = field(default_factory=dict)
    """Fault kinds other than kill and pause (``cut``, ``degraded``): fault → next dispatch."""
    late_results: dict[str, int] = field(default_factory=dict)
    """Duplicated runs that ran to their end (their result fenced), by cause."""
    faults: dict[str, int] = field(default_factory=dict)

    @property
    def violations(self) -> list[str]:
        return [
            *(f"lost: {x}" for x in self.lost),
            *(f"stuck: {x}" for x in self.stuck),
            *(f"attempt run twice: {x}" for x in self.attempts_run_twice),
            *(f"wrong agent: {x}" for x in self.wrong_agent),
            *(f"fenced result: {x}" for x in self.fenced_results),
            *(f"unexplained duplicate: {x}" for x in self.unexplained_duplicates),
        ]

    def summary(self) -> dict[str, Any]:
        return {
            "submitted": self.submitted,
            "finished": self.finished,
            "lost": len(self.lost),
            "stuck": len(self.stuck),
            "attempts_run_twice": len(self.attempts_run_twice),
            "fenced_results": len(self.fenced_results),
            "duplicated_runs": self.duplicated_runs,
            "duplicates_completed": self.duplicates_completed,
            "duplicate_causes": self.duplicate_causes,
            "unexplained_duplicates": len(self.unexplained_duplicates),
            "faults": self.faults,
            "redispatch_after_kill_seconds": percentiles(self.redispatch_after_kill),
            "redispatch_after_pause_seconds": percentiles(self.redispatch_after_pause),
            **{
                f"redispatch_after_{kind}_seconds": percentiles(values)
                for kind, values in sorted(self.redispatch_after_other.items())
            },
            **({"late_results": self.late_results} if self.late_results else {}),
        }


def percentiles(values: list[float]) -> dict[str, float | int]:
    if not values:
        return {"n": 0}
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)

    return {
        "n": len(ordered),
        "min": round(ordered[0], 3),
        "p50": at(0.5),
        "p99": at(0.99),
        "max": round(ordered[-1], 3),
    }


def _result_ran_by(result: Any) -> tuple[int, str] | None:
    """(attempt, agent) named by a chaos task's result, Python or shell form."""
    if not isinstance(result, dict):
        return None
    if "attempt" in result:
        return int(result["attempt"]), str(result["agent"])
    for line in str(result.get("stdout_tail", "")).splitlines():
        if line.startswith("chaos-result "):
            _, attempt, agent = line.split()
            return int(attempt), agent
    return None


def _cause(agent: str, dispatched_at: float, faults: list[Fault]) -> str:
    """The fault that explains why an attempt held by ``agent`` was lost."""
    for fault in faults:
        # A fault that began after the dispatch, or lasted past it (a cut, a degraded link).
        if fault.agent == agent and fault.at + fault.seconds >= dispatched_at - 0.5:
            return f"agent {fault.kind}"
    return "released (no fault on its agent)"


async def check(  # noqa: C901 - one pass per task, each rule a few lines
    store: Store,
    submitted: dict[str, UUID],
    ledger: list[Entry],
    faults: list[Fault],
    agent_names: dict[UUID, str],
    crash_limit: int = 3,
) -> Report:
    """Hold ``ledger`` against ``store`` for the tasks of ``submitted`` (uid → task id)."""
    report = Report(submitted=len(submitted))
    for fault in faults:
        report.faults[fault.kind] = report.faults.get(fault.kind, 0) + 1
    by_uid: dict[str, list[Entry]] = defaultdict(list)
    for entry in ledger:
        by_uid[entry.uid].append(entry)
    faults_by_agent: dict[str, list[Fault]] = defaultdict(list)
    for fault in sorted(faults, key=lambda f: f.at):
        faults_by_agent[fault.agent].append(fault)
    for uid, task_id in submitted.items():
        task = await store.get_task(task_id)
        if task is None:
            report.lost.append(f"{uid} ({task_id}) is not in the store")
            continue
        report.finished[task.status] = report.finished.get(task.status, 0) + 1
        if task.status in UNFINISHED:
            report.stuck.append(f"{uid} ({task_id}) is {task.status}")
            continue
        attempts = {a.number: a for a in await store.list_attempts(task_id)}
        lost_attempts = sum(a.outcome == AttemptOutcome.LOST for a in attempts.values())
        quarantined = task.status == TaskStatus.QUARANTINED and lost_attempts >= crash_limit
        if task.status != TaskStatus.SUCCEEDED and not quarantined:
            report.lost.append(f"{uid} ({task_id}) ended {task.status}: {task.error}")
        entries = by_uid.get(uid, [])
        starts: dict[int, list[Entry]] = defaultdict(list)
        ends: dict[int, Entry] = {}
        for entry in entries:
            if entry.task_id != str(task_id):
                report.wrong_agent.append(f"{uid}: ledger names task {entry.task_id}")
            if entry.event == "start":
                starts[entry.attempt].append(entry)
            else:
                ends[entry.attempt] = entry
        for number, runs in starts.items():
            if len(runs) > 1:
                report.attempts_run_twice.append(f"{uid} attempt {number} started {len(runs)}x")
            attempt = attempts.get(number)
            held_by = agent_names.get(attempt.agent_id) if attempt and attempt.agent_id else None
            if held_by != runs[0].agent:
                report.wrong_agent.append(
                    f"{uid} attempt {number} ran on {runs[0].agent}, store says {held_by}"
                )
        ran_by = _result_ran_by(task.result)
        current = attempts.get(task.attempts)
        if task.status == TaskStatus.SUCCEEDED:
            expected = (task.attempts, agent_names.get(task.agent_id) if task.agent_id else None)
            if ran_by != expected or task.attempts not in ends:
                report.fenced_results.append(
                    f"{uid}: result from {ran_by}, current attempt {expected}, "
                    f"ran to its end: {task.attempts in ends}"
                )
            if current is None or current.outcome != AttemptOutcome.SUCCEEDED:
                report.fenced_results.append(f"{uid}: current attempt is {current}")
        for number in starts:
            if number == task.attempts:
                continue
            report.duplicated_runs += 1
            report.duplicates_completed += number in ends
            attempt = attempts.get(number)
            if attempt is None or attempt.outcome != AttemptOutcome.LOST:
                history = [
                    (a.number, agent_names.get(a.agent_id) if a.agent_id else None, a.outcome)
                    for a in sorted(attempts.values(), key=lambda a: a.number)
                ]
                report.unexplained_duplicates.append(
                    f"{uid} ({task_id}) attempt {number} ran and ended "
                    f"{attempt and attempt.outcome}; attempts {history}; ledger {entries}"
                )
                continue
            cause = _cause(
                starts[number][0].agent,
                attempt.dispatched_at.timestamp(),
                faults_by_agent[starts[number][0].agent],
            )
            report.duplicate_causes[cause] = report.duplicate_causes.get(cause, 0) + 1
            if number in ends:
                report.late_results[cause] = report.late_results.get(cause, 0) + 1
    await _redispatch(store, submitted, faults_by_agent, agent_names, report)
    return report


async def _redispatch(
    store: Store,
    submitted: dict[str, UUID],
    faults_by_agent: dict[str, list[Fault]],
    agent_names: dict[UUID, str],
    report: Report,
) -> None:
    """For each attempt lost with a fault on its agent: fault → next attempt dispatched."""
    for task_id in submitted.values():
        attempts = sorted(await store.list_attempts(task_id), key=lambda a: a.number)
        for attempt, following in itertools.pairwise(attempts):
            if attempt.outcome != AttemptOutcome.LOST or attempt.agent_id is None:
                continue
            name = agent_names.get(attempt.agent_id, "")
            dispatched = attempt.dispatched_at.timestamp()
            again = following.dispatched_at.timestamp()
            hits = [
                f
                for f in faults_by_agent.get(name, [])
                if dispatched - 0.5 <= f.at + f.seconds and f.at <= again
            ]
            if not hits:
                continue
            fault = hits[-1]
            # From the fault; from the dispatch for one that came during a lasting fault.
            delay = again - (fault.at if fault.at >= dispatched - 0.5 else dispatched)
            if fault.kind == "kill":
                report.redispatch_after_kill.append(delay)
            elif fault.kind == "pause":
                report.redispatch_after_pause.append(delay)
            else:
                report.redispatch_after_other.setdefault(fault.kind, []).append(delay)
