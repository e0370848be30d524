"""Decisions both stores make the same way, as pure functions of a task's state.

The stores read the rows (locked on PostgreSQL, under the single writer on SQLite), ask these
functions what the new state is, and write it back with a conditional update.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from uuid import UUID

from hetuflow.errors import AgentOnline
from hetuflow.models import (
    ACTIVE_TASK_STATUSES,
    AGENT_TRANSITIONS,
    Agent,
    AgentStatus,
    AttemptOutcome,
    AttemptRef,
    AttemptResult,
    FailureKind,
    LogBudget,
    LogLine,
    LogUsage,
    RetryPolicy,
    TaskStatus,
)

ACTIVE = tuple(sorted(ACTIVE_TASK_STATUSES))
"""Statuses that hold an agent slot."""
ACTIVE_SQL = "(" + ", ".join(f"'{status}'" for status in ACTIVE) + ")"
"""``('cancelling', 'dispatched', 'running')``, written exactly as in PostgreSQL's partial
index ``tasks_active_agent`` so its planner can use it."""


@dataclass(frozen=True, slots=True)
class Held:
    """What the fence needs to know about a task row."""

    status: TaskStatus
    attempts: int
    agent_id: object  # UUID (PostgreSQL) or its text (SQLite), compared as stored
    failures: int
    retry: RetryPolicy


def holds(held: Held, ref: AttemptRef, agent_key: object) -> bool:
    """Whether ``ref`` is the task's current attempt, held by that agent, still active."""
    return (
        held.status in ACTIVE_TASK_STATUSES
        and held.attempts == ref.attempt
        and held.agent_id == agent_key
    )


@dataclass(frozen=True, slots=True)
class Finish:
    """The task's new state after an accepted result."""

    status: TaskStatus
    failures: int
    retry_at: datetime | None  # set when the task goes back to pending
    finished: bool
    error: str | None = None  # the task's error: the result's, with why it was not retried


_KIND_OF = {
    AttemptOutcome.FAILED: FailureKind.FAILED,
    AttemptOutcome.TIMED_OUT: FailureKind.TIMED_OUT,
    AttemptOutcome.LOST: FailureKind.AGENT_LOST,
}


def not_retried(error: str | None, kind: FailureKind) -> str:
    """The error of a task that ended because ``kind`` is not in its ``retry_on``."""
    reason = f"not retried: retry_on does not include {kind}"
    return reason if not error else f"{error} ({reason})"


LOST_ERROR = "its agent was lost while holding the attempt"
"""What a lost attempt says as the error of a task it ends (``not_retried``)."""
LOST_NOT_RETRIED = not_retried(LOST_ERROR, FailureKind.AGENT_LOST)
"""The error of a task that ends because its attempt was lost and ``retry_on`` lacks
``agent_lost`` (``Store.release_agent``)."""


def decide_finish(held: Held, result: AttemptResult, now: datetime, draw: float = 0.0) -> Finish:
    """succeeded -> succeeded; cancelled or anything while cancelling -> cancelled;
    failed/timed_out -> pending after ``retry.delay_after(failures, draw)`` while
    ``retry.allows_retry_after(failures)``, else failed/timed_out. ``draw`` is the jitter
    draw in [0, 1) (the stores pass ``random.random()``).

    A failure whose kind is not in ``retry.retry_on`` ends the task at once (failed,
    timed_out; failed for a lost attempt), its error saying so (``not_retried``).
    ``failures`` counts failed and timed-out attempts only: a lost attempt (agent gone) does
    not spend the retry budget.
    """
    outcome = result.outcome
    if held.status is TaskStatus.CANCELLING or outcome is AttemptOutcome.CANCELLED:
        return Finish(TaskStatus.CANCELLED, held.failures, None, True, result.error)
    if outcome is AttemptOutcome.SUCCEEDED:
        return Finish(TaskStatus.SUCCEEDED, held.failures, None, True, result.error)
    kind = _KIND_OF[outcome]
    if outcome is AttemptOutcome.LOST:
        if not held.retry.retries(kind):
            error = not_retried(result.error or LOST_ERROR, kind)
            return Finish(TaskStatus.FAILED, held.failures, None, True, error)
        return Finish(TaskStatus.PENDING, held.failures, now, False, result.error)
    failures = held.failures + 1
    final = TaskStatus.FAILED if outcome is AttemptOutcome.FAILED else TaskStatus.TIMED_OUT
    if not held.retry.retries(kind):
        return Finish(final, failures, None, True, not_retried(result.error, kind))
    if held.retry.allows_retry_after(failures):
        delay = held.retry.delay_after(failures, draw)
        return Finish(TaskStatus.PENDING, failures, now + delay, False, result.error)
    return Finish(final, failures, None, True, result.error)


def agent_sources(target: AgentStatus) -> tuple[str, ...]:
    """Statuses a connection (``set_agent_status``) may move its agent to ``target`` from (a
    real change, not a repeat). Never ``offline``: only ``connect_agent`` brings an agent
    back (``online``, or ``draining`` when an operator drained it)."""
    return tuple(
        sorted(
            source.value
            for source, targets in AGENT_TRANSITIONS.items()
            if target in targets and source is not target and source is not AgentStatus.OFFLINE
        )
    )


def generated_agent_name() -> str:
    return f"agent-{uuid.uuid4().hex[:12]}"


TOMBSTONE_NAME_LENGTH = 300
"""Longer than any name an agent can be given (255 characters over REST, 200 in the
protocol): a deleted agent's row takes such a name, freeing its own, and never collides."""


def tombstone_name(agent_id: uuid.UUID) -> str:
    """The name of a deleted agent's row (its own name is free for a new agent)."""
    return f"deleted agent {agent_id} ".ljust(TOMBSTONE_NAME_LENGTH, "~")


def agent_online(agent: Agent) -> AgentOnline:
    """Why an agent cannot be deleted now: the store records a connection for it."""
    return AgentOnline(
        f"agent {agent.name} is connected ({agent.status}): drain or disconnect it first",
        field="agent_id",
    )


def charge_logs(
    budget: LogBudget,
    lines: Sequence[LogLine],
    usage: Mapping[tuple[UUID, int], LogUsage],
) -> tuple[list[LogLine], dict[tuple[UUID, int], LogUsage]]:
    """The lines to store, and the new usage of each attempt they charged.

    ``usage`` holds the stored usage of every attempt that has a row (read under the task's
    lock); lines of other attempts are dropped. In order, each line costs
    ``budget.cost(line)``; the first one past ``max_bytes`` or ``max_lines`` is replaced by
    the marker and the attempt is truncated: its later lines (in this batch and after) are
    dropped.
    """
    changed: dict[tuple[UUID, int], LogUsage] = {}
    kept: list[LogLine] = []
    for line in lines:
        key = (line.task_id, line.attempt)
        current = changed.get(key)
        if current is None:
            stored = usage.get(key)
            if stored is None:
                continue  # no such attempt (the task is gone)
            current = LogUsage(stored.bytes, stored.lines, stored.truncated)
        if current.truncated:
            continue
        changed[key] = current
        cost = budget.cost(line.line)
        if current.lines + 1 > budget.max_lines:
            reason = f"this attempt reached max_log_lines_per_attempt ({budget.max_lines} lines)"
        elif current.bytes + cost > budget.max_bytes:
            reason = (
                f"this attempt reached the log limit of {budget.max_bytes} bytes"
                f" (max_log_bytes_per_attempt; each line counts its bytes"
                f" + {budget.line_overhead_bytes})"
            )
        else:
            current.bytes += cost
            current.lines += 1
            kept.append(line)
            continue
        current.truncated = True
        kept.append(replace(line, line=budget.marker(reason)))
    return kept, changed
