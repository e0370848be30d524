"""SQLite: attempts (start, finish, progress, release) and task logs.

Every change is fenced by the task's current attempt number and holding agent; the single
writer thread serialises them, and the conditional updates repeat the fence in SQL.
"""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

from hetuflow.models import (
    Attempt,
    AttemptRef,
    AttemptResult,
    AttemptStart,
    FinishOutcome,
    LogLine,
    TaskStatus,
)
from hetuflow.store._rows import FENCE_COLUMNS, Row, attempt_from, log_from, retry_of, task_status
from hetuflow.store._rules import ACTIVE_SQL, Held, decide_finish, holds
from hetuflow.store._sqlite_db import CODEC, id_list, micros

_FENCE = f"id = ? AND attempts = ? AND agent_id = ? AND status IN {ACTIVE_SQL}"


def _fence(ref: AttemptRef) -> tuple[str, int, str]:
    return (str(ref.task_id), ref.attempt, str(ref.agent_id))


def _fenced_rows(connection: sqlite3.Connection, task_ids: Sequence[UUID]) -> dict[str, Row]:
    """The task rows of ``task_ids`` (one query), by id text."""
    rows = connection.execute(
        f"SELECT {FENCE_COLUMNS} FROM tasks WHERE id IN (SELECT value FROM json_each(?))",
        (id_list(list(dict.fromkeys(task_ids))),),
    )
    return {row["id"]: row for row in rows}


def start_attempts(connection: sqlite3.Connection, starts: Sequence[AttemptStart]) -> list[bool]:
    """Fence every start against one read of its task (the single writer holds the database
    between the read and the writes), then write the accepted ones in two ``executemany``."""
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
            task_changes.append((stamp, stamp, str(ref.task_id)))
            attempt_changes.append((stamp, str(ref.task_id), ref.attempt))
    connection.executemany(
        """
        UPDATE tasks
        SET status = CASE status WHEN 'dispatched' THEN 'running' ELSE status END,
            started_at = coalesce(started_at, ?),
            updated_at = max(updated_at, ?)
        WHERE id = ?""",
        task_changes,
    )
    connection.executemany(
        "UPDATE attempts SET started_at = coalesce(started_at, ?) WHERE task_id = ? AND number = ?",
        attempt_changes,
    )
    return accepted


def _held(row: Row) -> Held:
    return Held(
        status=task_status(row["status"]),
        attempts=row["attempts"],
        agent_id=row["agent_id"],
        failures=row["failures"],
        retry=retry_of(row),
    )


def finish_attempts(
    connection: sqlite3.Connection, results: Sequence[AttemptResult], now: datetime
) -> list[FinishOutcome]:
    """Fence and decide every result against one read of the tasks (a task reported twice
    in the batch sees its first result's decision), then write them in two ``executemany``."""
    stamp = micros(now)
    rows = _fenced_rows(connection, [result.ref.task_id for result in results])
    held = {task_id: _held(row) for task_id, row in rows.items()}
    outcomes = []
    task_changes = []
    attempt_changes = []
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
        finish = decide_finish(state, result, now)
        held[task_id] = Held(
            finish.status, state.attempts, state.agent_id, finish.failures, state.retry
        )
        retry_at = CODEC.put_time(finish.retry_at)
        started = CODEC.put_time(result.started_at)
        task_changes.append(
            (
                finish.status.value,
                None if result.result is None else CODEC.put_json(result.result),
                result.error,
                finish.failures,
                retry_at,
                stamp if finish.finished else None,
                finish.finished,
                started,
                stamp,
                task_id,
            )
        )
        attempt_changes.append(
            (
                micros(result.finished_at or now),
                result.outcome.value,
                result.error,
                started,
                task_id,
                ref.attempt,
            )
        )
        outcomes.append(FinishOutcome(ref, True, task_type, finish.status))
    connection.executemany(
        """
        UPDATE tasks
        SET status = ?, result = ?, error = ?, failures = ?,
            scheduled_at = coalesce(?, scheduled_at),
            finished_at = ?,
            progress = CASE WHEN ? THEN progress ELSE NULL END,
            started_at = coalesce(started_at, ?),
            updated_at = ?
        WHERE id = ?""",
        task_changes,
    )
    connection.executemany(
        "UPDATE attempts SET finished_at = ?, outcome = ?, error = ?,"
        " started_at = coalesce(started_at, ?) WHERE task_id = ? AND number = ?",
        attempt_changes,
    )
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
) -> list[UUID]:
    """End the agents' active attempts as lost (except ``keep``); return tasks made pending."""
    stamp = micros(now)
    kept = {(str(ref.task_id), ref.attempt) for ref in keep}
    rows = connection.execute(
        f"""
        SELECT id, attempts, status FROM tasks
        WHERE agent_id IN (SELECT value FROM json_each(?)) AND status IN {ACTIVE_SQL}
        ORDER BY id""",
        (id_list(agent_ids),),
    ).fetchall()
    pending: list[UUID] = []
    for row in rows:
        if (row["id"], row["attempts"]) in kept:
            continue
        if row["status"] == TaskStatus.CANCELLING:
            connection.execute(
                "UPDATE tasks SET status = 'cancelled', finished_at = ?, updated_at = ?"
                " WHERE id = ?",
                (stamp, stamp, row["id"]),
            )
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
    return pending


def list_attempts(connection: sqlite3.Connection, task_id: UUID) -> list[Attempt]:
    rows = connection.execute(
        "SELECT * FROM attempts WHERE task_id = ? ORDER BY number", (str(task_id),)
    )
    return [attempt_from(row, CODEC) for row in rows]


def append_logs(connection: sqlite3.Connection, lines: Sequence[LogLine]) -> None:
    """Reserve a block of ``seq`` numbers per task, then insert the batch; lines of tasks that
    no longer exist are dropped."""
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
    connection.executemany(
        "INSERT INTO task_logs (task_id, seq, attempt, stream, line, at) VALUES (?, ?, ?, ?, ?, ?)",
        values,
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
