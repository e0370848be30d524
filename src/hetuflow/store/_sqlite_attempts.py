"""SQLite: attempts (start, finish, progress, release) and task logs.

Every change is fenced by the task's current attempt number and holding agent; the single
writer thread serialises them, and the conditional updates repeat the fence in SQL.
"""

from __future__ import annotations

import random
import sqlite3
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import orjson

from hetuflow.config import DEFAULT_PRIORITY_AGING_SECONDS
from hetuflow.models import (
    Attempt,
    AttemptRef,
    AttemptResult,
    AttemptStart,
    FailureKind,
    FinishOutcome,
    LogBudget,
    LogLine,
    LogUsage,
    TaskStatus,
)
from hetuflow.store._claims import Aging
from hetuflow.store._rows import FENCE_COLUMNS, Row, attempt_from, log_from, retry_of, task_status
from hetuflow.store._rules import (
    ACTIVE_SQL,
    LOST_NOT_RETRIED,
    Held,
    charge_logs,
    decide_finish,
    holds,
)
from hetuflow.store._sqlite_broadcast import settle_of as settle_broadcasts
from hetuflow.store._sqlite_db import CODEC, id_list, json_rows, micros
from hetuflow.store._sqlite_workflows import settle
from hetuflow.store._workflow_rows import Committed

_FENCE = f"id = ? AND attempts = ? AND agent_id = ? AND status IN {ACTIVE_SQL}"


def _fence(ref: AttemptRef) -> tuple[str, int, str]:
    return (str(ref.task_id), ref.attempt, str(ref.agent_id))


_FENCED_ROWS = f"""
SELECT json_group_array(json_object({", ".join(f"'{c}', {c}" for c in FENCE_COLUMNS.split(", "))},
    'step', EXISTS (SELECT 1 FROM workflow_steps WHERE task_id = tasks.id)))
FROM tasks WHERE id IN (SELECT value FROM json_each(?))"""
"""The fence columns of many tasks as one JSON value: one step, not one per row (see
``json_rows``); ``step`` says whether the task is a workflow step (its end settles
the workflow, ``_sqlite_workflows.settle``)."""

_START_TASKS = """
UPDATE tasks
SET status = CASE tasks.status WHEN 'dispatched' THEN 'running' ELSE tasks.status END,
    started_at = coalesce(tasks.started_at, c.started_at),
    updated_at = max(tasks.updated_at, c.started_at)
FROM (SELECT value ->> 0 AS id, value ->> 1 AS started_at FROM json_each(?)) AS c
WHERE tasks.id = c.id"""

_START_ATTEMPTS = """
UPDATE attempts
SET started_at = coalesce(attempts.started_at, c.started_at)
FROM (SELECT value ->> 0 AS task_id, value ->> 1 AS number, value ->> 2 AS started_at
      FROM json_each(?)) AS c
WHERE attempts.task_id = c.task_id AND attempts.number = c.number"""

_FINISH_TASKS = """
UPDATE tasks
SET status = c.status, result = c.result, error = c.error, failures = c.failures,
    scheduled_at = coalesce(c.retry_at, tasks.scheduled_at),
    finished_at = c.finished_at,
    progress = CASE WHEN c.finished THEN tasks.progress END,
    started_at = coalesce(tasks.started_at, c.started_at),
    updated_at = ?
FROM (SELECT value ->> 0 AS id, value ->> 1 AS status, value ->> 2 AS result,
             value ->> 3 AS error, value ->> 4 AS failures, value ->> 5 AS retry_at,
             value ->> 6 AS finished_at, value ->> 7 AS finished, value ->> 8 AS started_at
      FROM json_each(?)) AS c
WHERE tasks.id = c.id"""

_FINISH_ATTEMPTS = """
UPDATE attempts
SET finished_at = c.finished_at, outcome = c.outcome, error = c.error,
    started_at = coalesce(attempts.started_at, c.started_at)
FROM (SELECT value ->> 0 AS task_id, value ->> 1 AS number, value ->> 2 AS finished_at,
             value ->> 3 AS outcome, value ->> 4 AS error, value ->> 5 AS started_at
      FROM json_each(?)) AS c
WHERE attempts.task_id = c.task_id AND attempts.number = c.number"""


def _fenced_rows(
    connection: sqlite3.Connection, task_ids: Sequence[UUID]
) -> dict[str, dict[str, Any]]:
    """The fence columns of ``task_ids`` (one query), by id text."""
    [found] = connection.execute(_FENCED_ROWS, (id_list(list(dict.fromkeys(task_ids))),)).fetchone()
    rows: list[dict[str, Any]] = orjson.loads(found)
    return {row["id"]: row for row in rows}


def start_attempts(connection: sqlite3.Connection, starts: Sequence[AttemptStart]) -> list[bool]:
    """Fence every start against one read of its task (the single writer holds the database
    between the read and the writes), then write the accepted ones in two statements."""
    rows = _fenced_rows(connection, [start.ref.task_id for start in starts])
    accepted = []
    task_changes = []
    attempt_changes = []
    for start in starts:
        ref = start.ref
        row = rows.get(str(ref.task_id))
        ok = row is not None and holds(_held(row), ref, str(ref.agent_id))
        accepted.append(ok)
        if ok:
            stamp = micros(start.started_at)
            task_changes.append((str(ref.task_id), stamp))
            attempt_changes.append((str(ref.task_id), ref.attempt, stamp))
    if task_changes:
        connection.execute(_START_TASKS, (json_rows(task_changes),))
        connection.execute(_START_ATTEMPTS, (json_rows(attempt_changes),))
    return accepted


def _held(row: Row) -> Held:
    return Held(
        status=task_status(row["status"]),
        attempts=row["attempts"],
        agent_id=row["agent_id"],
        failures=row["failures"],
        retry=retry_of(row, CODEC),
    )


def finish_attempts(
    connection: sqlite3.Connection,
    results: Sequence[AttemptResult],
    now: datetime,
    aging: Aging | None = None,
    committed: Committed | None = None,
) -> list[FinishOutcome]:
    """Fence and decide every result against one read of the tasks (a task reported twice
    in the batch sees its first result's decision), then write them in two statements.
    Workflow steps that ended release, skip or stop what depends on them in the same
    transaction (``settle``; ``aging`` orders the released ones)."""
    stamp = micros(now)
    rows = _fenced_rows(connection, [result.ref.task_id for result in results])
    held = {task_id: _held(row) for task_id, row in rows.items()}
    outcomes = []
    task_changes = []
    attempt_changes = []
    ended_steps: list[str] = []
    ended: list[str] = []
    for result in results:
        ref = result.ref
        task_id = str(ref.task_id)
        state = held.get(task_id)
        if state is None:
            outcomes.append(FinishOutcome(ref, False, None, None))
            continue
        task_type = rows[task_id]["task_type"]
        if not holds(state, ref, str(ref.agent_id)):
            outcomes.append(FinishOutcome(ref, False, task_type, state.status))
            continue
        finish = decide_finish(state, result, now, random.random())
        held[task_id] = Held(
            finish.status, state.attempts, state.agent_id, finish.failures, state.retry
        )
        retry_at = CODEC.put_time(finish.retry_at)
        started = CODEC.put_time(result.started_at)
        task_changes.append(
            (
                task_id,
                finish.status.value,
                None if result.result is None else CODEC.put_json(result.result),
                finish.error,
                finish.failures,
                retry_at,
                stamp if finish.finished else None,
                finish.finished,
                started,
            )
        )
        attempt_changes.append(
            (
                task_id,
                ref.attempt,
                micros(result.finished_at or now),
                result.outcome.value,
                result.error,
                started,
            )
        )
        ended_step = bool(finish.finished and rows[task_id]["step"])
        outcomes.append(FinishOutcome(ref, True, task_type, finish.status, ended_step))
        if ended_step:
            ended_steps.append(task_id)
        if finish.finished:
            ended.append(task_id)
    if task_changes:
        connection.execute(_FINISH_TASKS, (stamp, json_rows(task_changes)))
        connection.execute(_FINISH_ATTEMPTS, (json_rows(attempt_changes),))
    if ended_steps:  # --- workflows: the release is part of this transaction ---
        default = Aging.of(DEFAULT_PRIORITY_AGING_SECONDS)
        settle(connection, ended_steps, now, aging or default, committed)
    settle_broadcasts(connection, ended, now)  # a broadcast parent ends with its last child
    return outcomes


def set_progress(connection: sqlite3.Connection, refs: Sequence[tuple[AttemptRef, float]]) -> None:
    connection.executemany(
        f"UPDATE tasks SET progress = ? WHERE {_FENCE}",
        [(min(max(progress, 0.0), 1.0), *_fence(ref)) for ref, progress in refs],
    )


def release(
    connection: sqlite3.Connection,
    agent_ids: Sequence[UUID | str],
    now: datetime,
    keep: Sequence[AttemptRef] = (),
    aging: Aging | None = None,
    crash_limit: int = 0,
    committed: Committed | None = None,
) -> list[UUID]:
    """End the agents' active attempts as lost (except ``keep``); return tasks made pending.
    A task whose ``retry_on`` lacks ``agent_lost`` ends ``failed`` (``LOST_NOT_RETRIED``);
    one whose attempt is thereby lost for the ``crash_limit``-th time (0: never) ends
    ``quarantined`` instead ("crashed N agents"). Cancelling tasks end cancelled; steps that
    end (cancelled, failed or quarantined) settle their workflows in this transaction (``settle``),
    as any other end of a step does, and the steps that releases are among the tasks
    returned (so the caller wakes the dispatchers)."""
    stamp = micros(now)
    kept = {(str(ref.task_id), ref.attempt) for ref in keep}
    rows = connection.execute(
        f"""
        SELECT id, attempts, status, retry_on,
            EXISTS (SELECT 1 FROM workflow_steps WHERE task_id = tasks.id) AS step,
               (SELECT count(*) FROM attempts AS p
                WHERE p.task_id = tasks.id AND p.outcome = 'lost') AS lost
        FROM tasks
        WHERE agent_id IN (SELECT value FROM json_each(?)) AND status IN {ACTIVE_SQL}
        ORDER BY id""",
        (id_list(agent_ids),),
    ).fetchall()
    pending: list[UUID] = []
    ended_steps: list[str] = []
    ended: list[str] = []
    for row in rows:
        if (row["id"], row["attempts"]) in kept:
            continue
        if row["status"] == TaskStatus.CANCELLING:
            connection.execute(
                "UPDATE tasks SET status = 'cancelled', finished_at = ?, updated_at = ?"
                " WHERE id = ?",
                (stamp, stamp, row["id"]),
            )
            if row["step"]:
                ended_steps.append(row["id"])
            ended.append(row["id"])
        elif FailureKind.AGENT_LOST.value not in CODEC.texts(row["retry_on"]):
            connection.execute(
                "UPDATE tasks SET status = 'failed', error = ?, finished_at = ?,"
                " updated_at = ? WHERE id = ?",
                (LOST_NOT_RETRIED, stamp, stamp, row["id"]),
            )
            if row["step"]:
                ended_steps.append(row["id"])
            ended.append(row["id"])
        elif crash_limit > 0 and row["lost"] + 1 >= crash_limit:
            connection.execute(
                "UPDATE tasks SET status = 'quarantined', error = ?, finished_at = ?,"
                " updated_at = ? WHERE id = ?",
                (f"crashed {crash_limit} agents", stamp, stamp, row["id"]),
            )
            if row["step"]:
                ended_steps.append(row["id"])
            ended.append(row["id"])
        else:
            connection.execute(
                "UPDATE tasks SET status = 'pending', progress = NULL, updated_at = ? WHERE id = ?",
                (stamp, row["id"]),
            )
            pending.append(UUID(row["id"]))
        connection.execute(
            "UPDATE attempts SET finished_at = ?, outcome = 'lost'"
            " WHERE task_id = ? AND number = ? AND finished_at IS NULL",
            (stamp, row["id"], row["attempts"]),
        )
    if ended_steps:  # --- workflows: the release is part of this transaction ---
        released = settle(
            connection,
            ended_steps,
            now,
            aging or Aging.of(DEFAULT_PRIORITY_AGING_SECONDS),
            committed,
        )
        pending.extend(UUID(task_id) for task_id in released)  # the caller wakes dispatchers
    settle_broadcasts(connection, ended, now)  # a broadcast parent ends with its last child
    return pending


def list_attempts(connection: sqlite3.Connection, task_id: UUID) -> list[Attempt]:
    rows = connection.execute(
        "SELECT * FROM attempts WHERE task_id = ? ORDER BY number", (str(task_id),)
    )
    return [attempt_from(row, CODEC) for row in rows]


_LOG_USAGE = """
SELECT task_id, number, log_bytes, log_lines, log_truncated FROM attempts
WHERE (task_id, number) IN (SELECT value ->> 0, value ->> 1 FROM json_each(?))"""

_CHARGE_LOGS = """
UPDATE attempts
SET log_bytes = c.log_bytes, log_lines = c.log_lines, log_truncated = c.log_truncated
FROM (SELECT value ->> 0 AS task_id, value ->> 1 AS number, value ->> 2 AS log_bytes,
             value ->> 3 AS log_lines, value ->> 4 AS log_truncated FROM json_each(?)) AS c
WHERE attempts.task_id = c.task_id AND attempts.number = c.number"""


def _charge(
    connection: sqlite3.Connection, lines: Sequence[LogLine], budget: LogBudget
) -> list[LogLine]:
    """Charge the lines to their attempts' budgets (read and written under the single
    writer); return the lines to store."""
    keys = sorted({(str(line.task_id), line.attempt) for line in lines})
    usage = {
        (UUID(row[0]), row[1]): LogUsage(row[2], row[3], bool(row[4]))
        for row in connection.execute(_LOG_USAGE, (json_rows(keys),))
    }
    kept, changed = charge_logs(budget, lines, usage)
    if changed:
        rows = [
            (str(task_id), attempt, used.bytes, used.lines, int(used.truncated))
            for (task_id, attempt), used in changed.items()
        ]
        connection.execute(_CHARGE_LOGS, (json_rows(rows),))
    return kept


def append_logs(
    connection: sqlite3.Connection, lines: Sequence[LogLine], budget: LogBudget | None = None
) -> None:
    """Charge the budget (if any), reserve a block of ``seq`` numbers per task, then insert
    the batch; lines of tasks that no longer exist are dropped."""
    if budget is not None:
        lines = _charge(connection, lines, budget)
    counts: dict[str, int] = defaultdict(int)
    for line in lines:
        counts[str(line.task_id)] += 1
    next_seq: dict[str, int] = {}
    for task_id, count in counts.items():
        row = connection.execute(
            "UPDATE tasks SET log_seq = log_seq + ? WHERE id = ? RETURNING log_seq",
            (count, task_id),
        ).fetchone()
        if row is not None:
            next_seq[task_id] = row[0] - count + 1
    values = []
    for line in lines:
        task_id = str(line.task_id)
        if task_id in next_seq:
            seq = next_seq[task_id]
            next_seq[task_id] = seq + 1
            values.append((task_id, seq, line.attempt, line.stream, line.line, micros(line.at)))
    if values:
        connection.execute(
            "INSERT INTO task_logs (task_id, seq, attempt, stream, line, at)"
            " SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5"
            " FROM json_each(?)",
            (json_rows(values),),
        )


def list_logs(
    connection: sqlite3.Connection, task_id: UUID, after_seq: int, attempt: int | None, limit: int
) -> list[LogLine]:
    rows = connection.execute(
        """
        SELECT * FROM task_logs
        WHERE task_id = ? AND seq > ? AND (? IS NULL OR attempt = ?)
        ORDER BY seq LIMIT ?""",
        (str(task_id), after_seq, attempt, attempt, limit),
    )
    return [log_from(row, CODEC) for row in rows]
