"""PostgreSQL: attempts (start, finish, progress, release) and task logs, in batches.

Fences are conditional updates on the task row (current attempt number, holding agent,
active status). Batches lock their task rows in id order first (``lock_tasks``), so
overlapping batches queue rather than deadlock. A batch that may end workflow steps (finish,
release) locks their workflows' rows before any task row: the one order every transaction
that ends a step or cancels a workflow follows (``_pg_workflows``).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import orjson

from hetuflow.clock import utc
from hetuflow.config import DEFAULT_PRIORITY_AGING_SECONDS
from hetuflow.models import (
    Attempt,
    AttemptOutcome,
    AttemptRef,
    AttemptResult,
    AttemptStart,
    FinishOutcome,
    LogBudget,
    LogLine,
    LogUsage,
)
from hetuflow.store import _pg_broadcast as broadcast_sql
from hetuflow.store._claims import Aging
from hetuflow.store._pg_db import CODEC, Conn, sized, uid
from hetuflow.store._pg_workflows import lock_workflows_of, settle
from hetuflow.store._rows import FENCE_COLUMNS, attempt_from, log_from, retry_of, task_status
from hetuflow.store._rules import (
    ACTIVE_SQL,
    LOST_NOT_RETRIED,
    Held,
    charge_logs,
    decide_finish,
    holds,
)
from hetuflow.store._workflow_rows import Committed

_START = f"""
WITH started AS (
    UPDATE tasks AS t
    SET status = CASE WHEN t.status = 'dispatched' THEN 'running' ELSE t.status END,
        started_at = coalesce(t.started_at, s.started_at),
        updated_at = greatest(t.updated_at, s.started_at)
    FROM unnest($1::uuid[], $2::int[], $3::uuid[], $4::timestamptz[])
         AS s(task_id, number, agent_id, started_at)
    WHERE t.id = s.task_id AND t.attempts = s.number AND t.agent_id = s.agent_id
      AND t.status IN {ACTIVE_SQL}
    RETURNING t.id, t.attempts, t.agent_id, s.started_at
), recorded AS (
    UPDATE attempts AS a SET started_at = coalesce(a.started_at, started.started_at)
    FROM started WHERE a.task_id = started.id AND a.number = started.attempts
)
SELECT id, attempts, agent_id FROM started"""

_FINISH = """
WITH c AS (
    SELECT * FROM json_to_recordset($1::json) AS c(
        id uuid, number int, status text, result jsonb, error text, task_error text,
        failures int,
        retry_at timestamptz, finished boolean, started_at timestamptz, ended_at timestamptz,
        outcome text)
    LIMIT {limit}
), finished AS (
    UPDATE tasks AS t
    SET status = c.status, result = c.result, error = c.task_error, failures = c.failures,
        scheduled_at = coalesce(c.retry_at, t.scheduled_at),
        finished_at = CASE WHEN c.finished THEN $2::timestamptz END,
        progress = CASE WHEN c.finished THEN t.progress END,
        started_at = coalesce(t.started_at, c.started_at),
        updated_at = $2
    FROM c WHERE t.id = c.id
)
UPDATE attempts AS a
SET finished_at = c.ended_at, outcome = c.outcome, error = c.error,
    started_at = coalesce(a.started_at, c.started_at)
FROM c WHERE a.task_id = c.id AND a.number = c.number"""
"""One statement for a batch of accepted results. The batch travels as one JSON document
(encoded by orjson, parsed by PostgreSQL): binding a dozen arrays of hundreds of values each
cost more of the server's CPU than the rest of the finish. ``LIMIT {limit}`` (``sized``: the
batch's length, rounded up to a power of two) tells the planner how many rows the document
holds (else it assumes 100 for any set-returning function): against 100, reading the tasks
and attempts tables whole for a hash join looked cheaper than 100 lookups by key up to some
ten thousand rows. With the true count it looks rows up by key once the tables hold a few
hundred rows. A plan cached while the tables were nearly empty still reads them whole until
they are analyzed again (``_pg_statistics``)."""

_FINISH_SUCCEEDED = f"""
WITH c AS (
    SELECT * FROM json_to_recordset($1::json) AS c(
        id uuid, number int, agent_id uuid, result jsonb, error text, started_at timestamptz,
        ended_at timestamptz)
    LIMIT {{limit}}
), locked AS MATERIALIZED (
    SELECT t.id FROM tasks AS t WHERE t.id IN (SELECT id FROM c) ORDER BY t.id FOR UPDATE
), finished AS (
    UPDATE tasks AS t
    SET status = CASE WHEN t.status = 'cancelling' THEN 'cancelled' ELSE 'succeeded' END,
        result = c.result, error = c.error, finished_at = $2,
        started_at = coalesce(t.started_at, c.started_at), updated_at = $2
    FROM c
    WHERE t.id = ANY (ARRAY(SELECT id FROM locked)) AND t.id = c.id
      AND t.attempts = c.number AND t.agent_id = c.agent_id AND t.status IN {ACTIVE_SQL}
      AND t.broadcast_of IS NULL
      AND NOT EXISTS (SELECT 1 FROM workflow_steps AS s WHERE s.task_id = t.id)
    RETURNING t.id, t.task_type, t.status
), ended AS (
    UPDATE attempts AS a
    SET finished_at = c.ended_at, outcome = 'succeeded', error = c.error,
        started_at = coalesce(a.started_at, c.started_at)
    FROM finished JOIN c ON c.id = finished.id
    WHERE a.task_id = c.id AND a.number = c.number
)
SELECT id, task_type, status FROM finished"""
"""``finish_succeeded``: a batch of succeeded attempts in one statement, its own transaction.
Its task rows are locked in id order first (``locked``, read whole by the ``ARRAY``
subquery before any row is updated), as ``lock_tasks`` does. The fence is the ``WHERE``, as
in ``_START``, and the decision is ``decide_finish``'s for a success: ``succeeded``, or
``cancelled`` while cancelling. Workflow steps and broadcast children are left alone: their
end settles more than the task (``finish_attempts``)."""

_POISON = """($5::int > 0 AND t.status <> 'cancelling' AND 1 + (
    SELECT count(*) FROM attempts AS p WHERE p.task_id = t.id AND p.outcome = 'lost') >= $5::int)"""
"""The attempt released is the ``$5``-th of the task lost with its agent: quarantine it. Read
in the UPDATE itself, so it sees the row version the UPDATE locked (as every condition here
must: a result committed meanwhile makes the row no longer match)."""

_LOST_ENDS = "(t.status <> 'cancelling' AND NOT ('agent_lost' = ANY(t.retry_on)))"
"""The task's ``retry_on`` lacks ``agent_lost``: the lost attempt ends it ``failed``."""

_RELEASE = f"""
WITH released AS (
    UPDATE tasks AS t
    SET status = CASE WHEN t.status = 'cancelling' THEN 'cancelled'
                      WHEN {_LOST_ENDS} THEN 'failed'
                      WHEN {_POISON} THEN 'quarantined' ELSE 'pending' END,
        finished_at = CASE WHEN t.status = 'cancelling' OR {_LOST_ENDS} OR {_POISON} THEN $2
                           ELSE t.finished_at END,
        progress = CASE WHEN t.status = 'cancelling' OR {_LOST_ENDS} OR {_POISON}
                        THEN t.progress ELSE NULL END,
        error = CASE WHEN {_LOST_ENDS} THEN $6::text
                     WHEN {_POISON} THEN 'crashed ' || $5::int || ' agents' ELSE t.error END,
        updated_at = $2
    WHERE t.agent_id = ANY($1::uuid[]) AND t.status IN {ACTIVE_SQL}
      AND (t.id, t.attempts) NOT IN (
          SELECT k.id, k.number FROM unnest($3::uuid[], $4::int[]) AS k(id, number))
    RETURNING t.id, t.attempts, t.status
), lost AS (
    UPDATE attempts AS a SET finished_at = $2, outcome = 'lost'
    FROM released AS r
    WHERE a.task_id = r.id AND a.number = r.attempts AND a.finished_at IS NULL
)
SELECT r.id, r.status,
    EXISTS (SELECT 1 FROM workflow_steps AS s WHERE s.task_id = r.id) AS step
FROM released AS r ORDER BY r.id"""

_LOCK_HELD_WORKFLOWS = f"""
SELECT w.id FROM workflows AS w
WHERE w.id IN (
    SELECT s.workflow_id FROM workflow_steps AS s JOIN tasks AS t ON t.id = s.task_id
    WHERE t.agent_id = ANY($1::uuid[]) AND t.status IN {ACTIVE_SQL})
ORDER BY w.id FOR UPDATE OF w"""
"""The workflows of the steps the agents hold, locked before the release touches a task row
(a running step may turn cancelling, and so end, until the release locks it)."""


async def lock_tasks(connection: Conn, task_ids: Collection[UUID]) -> None:
    """Lock the task rows in id order before a batch updates them, as ``finish_attempts``
    does: two batches touching the same tasks then queue instead of deadlocking (an
    ``UPDATE ... FROM unnest`` locks rows in whatever order its plan visits them)."""
    await connection.execute(
        "SELECT 1 FROM tasks WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE", list(task_ids)
    )


async def start_attempts(connection: Conn, starts: Sequence[AttemptStart]) -> list[bool]:
    await lock_tasks(connection, {s.ref.task_id for s in starts})
    rows = await connection.fetch(
        _START,
        [s.ref.task_id for s in starts],
        [s.ref.attempt for s in starts],
        [s.ref.agent_id for s in starts],
        [utc(s.started_at) for s in starts],
    )
    accepted = {(uid(row["id"]), row["attempts"], uid(row["agent_id"])) for row in rows}
    return [(s.ref.task_id, s.ref.attempt, s.ref.agent_id) in accepted for s in starts]


async def finish_succeeded(
    connection: Conn, results: Sequence[AttemptResult], now: datetime
) -> dict[int, FinishOutcome]:
    """Write the succeeded attempts of ``results`` whose task is no workflow step or broadcast
    child and that the agent still holds, in one statement (``_FINISH_SUCCEEDED``): one round
    trip where ``finish_attempts`` takes five in its transaction. Returns the outcome of each
    result written, by its index; the rest are for ``finish_attempts``. Only the first
    result of a task in the batch is tried here, so the ones after it are decided after it,
    as in one transaction."""
    first: dict[UUID, int] = {}
    for index, result in enumerate(results):
        first.setdefault(result.ref.task_id, index)
    chosen = [
        index for index in first.values() if results[index].outcome is AttemptOutcome.SUCCEEDED
    ]
    if not chosen:
        return {}
    stamp = utc(now)
    rows = [
        {
            "id": results[index].ref.task_id,
            "number": results[index].ref.attempt,
            "agent_id": results[index].ref.agent_id,
            "result": results[index].result,
            "error": results[index].error,
            "started_at": results[index].started_at,
            "ended_at": results[index].finished_at or stamp,
        }
        for index in chosen
    ]
    written = {
        uid(row["id"]): row
        for row in await connection.fetch(
            sized(_FINISH_SUCCEEDED, len(rows)), orjson.dumps(rows).decode(), stamp
        )
    }
    outcomes: dict[int, FinishOutcome] = {}
    for index in chosen:
        ref = results[index].ref
        row = written.get(ref.task_id)
        if row is not None:
            outcomes[index] = FinishOutcome(ref, True, row["task_type"], task_status(row["status"]))
    return outcomes


async def finish_attempts(
    connection: Conn,
    results: Sequence[AttemptResult],
    now: datetime,
    aging: Aging | None = None,
    committed: Committed | None = None,
) -> list[FinishOutcome]:
    """Fence, decide and write a batch of results. Workflow steps that ended release, skip
    or stop what depends on them in the same transaction (``settle``; ``aging`` orders the
    released ones)."""
    stamp = utc(now)
    task_ids = list({r.ref.task_id for r in results})
    await lock_workflows_of(connection, task_ids)  # the workflow rows first, then the tasks
    rows = await connection.fetch(
        f"SELECT {FENCE_COLUMNS}, broadcast_of, EXISTS (SELECT 1 FROM workflow_steps AS s"
        " WHERE s.task_id = tasks.id) AS step"
        " FROM tasks WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE",
        task_ids,
    )
    steps = {row["id"] for row in rows if row["step"]}
    ended_steps: list[UUID] = []
    parents = {row["id"]: row["broadcast_of"] for row in rows if row["broadcast_of"]}
    ended_children: list[UUID] = []
    # Keyed by asyncpg's UUID, which hashes and compares equal to the standard one.
    task_types: dict[UUID, str] = {row["id"]: row["task_type"] for row in rows}
    held = {
        row["id"]: Held(
            task_status(row["status"]),
            row["attempts"],
            row["agent_id"],
            row["failures"],
            retry_of(row, CODEC),
        )
        for row in rows
    }
    outcomes: list[FinishOutcome] = []
    changes: list[dict[str, Any]] = []
    for result in results:
        ref = result.ref
        state = held.get(ref.task_id)
        if state is None:
            outcomes.append(FinishOutcome(ref, False, None, None))
            continue
        if not holds(state, ref, ref.agent_id):
            outcomes.append(FinishOutcome(ref, False, task_types[ref.task_id], state.status))
            continue
        finish = decide_finish(state, result, stamp, random.random())
        held[ref.task_id] = Held(
            finish.status, state.attempts, state.agent_id, finish.failures, state.retry
        )
        ended_step = finish.finished and ref.task_id in steps
        outcomes.append(
            FinishOutcome(ref, True, task_types[ref.task_id], finish.status, ended_step)
        )
        if ended_step:
            ended_steps.append(ref.task_id)
        if finish.finished and ref.task_id in parents:
            ended_children.append(uid(parents[ref.task_id]))
        changes.append(
            {
                "id": ref.task_id,
                "number": ref.attempt,
                "status": finish.status.value,
                "result": result.result,
                "error": result.error,
                "task_error": finish.error,
                "failures": finish.failures,
                "retry_at": finish.retry_at,
                "finished": finish.finished,
                "started_at": result.started_at,
                "ended_at": result.finished_at or stamp,
                "outcome": result.outcome.value,
            }
        )
    if changes:
        await connection.execute(
            sized(_FINISH, len(changes)), orjson.dumps(changes).decode(), stamp
        )
    if ended_steps:  # --- workflows: the release is part of this transaction ---
        aging = aging or Aging.of(DEFAULT_PRIORITY_AGING_SECONDS)
        await settle(connection, ended_steps, stamp, aging, committed)
    if ended_children:  # --- broadcasts: the parent ends with its last child ---
        await broadcast_sql.settle(connection, ended_children, stamp)
    return outcomes


async def set_progress(connection: Conn, refs: Sequence[tuple[AttemptRef, float]]) -> None:
    await lock_tasks(connection, {ref.task_id for ref, _ in refs})
    await connection.execute(
        f"""
        UPDATE tasks AS t SET progress = p.progress
        FROM unnest($1::uuid[], $2::int[], $3::uuid[], $4::float8[])
             AS p(task_id, number, agent_id, progress)
        WHERE t.id = p.task_id AND t.attempts = p.number AND t.agent_id = p.agent_id
          AND t.status IN {ACTIVE_SQL}""",
        [ref.task_id for ref, _ in refs],
        [ref.attempt for ref, _ in refs],
        [ref.agent_id for ref, _ in refs],
        [min(max(progress, 0.0), 1.0) for _, progress in refs],
    )


async def release(
    connection: Conn,
    agent_ids: Sequence[UUID],
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
    their workflow rows locked before the task rows; the steps that releases are among the
    tasks returned (so the caller wakes the dispatchers)."""
    stamp = utc(now)
    await connection.execute(_LOCK_HELD_WORKFLOWS, list(agent_ids))
    rows = await connection.fetch(
        _RELEASE,
        list(agent_ids),
        stamp,
        [ref.task_id for ref in keep],
        [ref.attempt for ref in keep],
        crash_limit,
        LOST_NOT_RETRIED,
    )
    pending = [uid(row["id"]) for row in rows if row["status"] == "pending"]
    ended_steps = [
        uid(row["id"])
        for row in rows
        if row["step"] and row["status"] in ("cancelled", "failed", "quarantined")
    ]
    if ended_steps:  # --- workflows: the release is part of this transaction ---
        released = await settle(
            connection,
            ended_steps,
            stamp,
            aging or Aging.of(DEFAULT_PRIORITY_AGING_SECONDS),
            committed,
        )
        pending.extend(uid(task_id) for task_id in released)  # the caller wakes dispatchers
    ended = [
        uid(row["id"]) for row in rows if row["status"] in ("cancelled", "failed", "quarantined")
    ]
    if ended:  # --- broadcasts: the parent ends with its last child ---
        await broadcast_sql.settle(
            connection, await broadcast_sql.parents_of(connection, ended), stamp
        )
    return pending


async def list_attempts(connection: Conn, task_id: UUID) -> list[Attempt]:
    rows = await connection.fetch(
        "SELECT * FROM attempts WHERE task_id = $1 ORDER BY number", task_id
    )
    return [attempt_from(row, CODEC) for row in rows]


_LOG_USAGE = """
SELECT a.task_id, a.number, a.log_bytes, a.log_lines, a.log_truncated
FROM attempts AS a JOIN unnest($1::uuid[], $2::int[]) AS c(task_id, number)
  ON a.task_id = c.task_id AND a.number = c.number"""

_CHARGE_LOGS = """
UPDATE attempts AS a
SET log_bytes = c.log_bytes, log_lines = c.log_lines, log_truncated = c.log_truncated
FROM unnest($1::uuid[], $2::int[], $3::bigint[], $4::int[], $5::bool[])
     AS c(task_id, number, log_bytes, log_lines, log_truncated)
WHERE a.task_id = c.task_id AND a.number = c.number"""


async def _charge(connection: Conn, lines: Sequence[LogLine], budget: LogBudget) -> list[LogLine]:
    """Charge the lines to their attempts' budgets; the caller holds the task rows' locks,
    so a concurrent batch for the same attempt (another node) waits and reads this one's
    usage. Returns the lines to store."""
    keys = sorted({(line.task_id, line.attempt) for line in lines})
    rows = await connection.fetch(
        _LOG_USAGE, [task_id for task_id, _ in keys], [attempt for _, attempt in keys]
    )
    usage = {
        (uid(row["task_id"]), row["number"]): LogUsage(
            row["log_bytes"], row["log_lines"], row["log_truncated"]
        )
        for row in rows
    }
    kept, changed = charge_logs(budget, lines, usage)
    if changed:
        ordered = sorted(changed.items())
        await connection.execute(
            _CHARGE_LOGS,
            [key[0] for key, _ in ordered],
            [key[1] for key, _ in ordered],
            [used.bytes for _, used in ordered],
            [used.lines for _, used in ordered],
            [used.truncated for _, used in ordered],
        )
    return kept


async def append_logs(
    connection: Conn, lines: Sequence[LogLine], budget: LogBudget | None = None
) -> None:
    """Lock the tasks (id order), charge the budget (if any), reserve a block of ``seq``
    numbers per task, then insert the batch; lines of tasks that no longer exist are
    dropped."""
    await lock_tasks(connection, sorted({line.task_id for line in lines}))
    if budget is not None:
        lines = await _charge(connection, lines, budget)
        if not lines:
            return
    counts = Counter(line.task_id for line in lines)
    ordered = sorted(counts)
    rows = await connection.fetch(
        """
        UPDATE tasks AS t SET log_seq = t.log_seq + c.n
        FROM unnest($1::uuid[], $2::int[]) AS c(id, n)
        WHERE t.id = c.id
        RETURNING t.id, t.log_seq""",
        ordered,
        [counts[task_id] for task_id in ordered],
    )
    next_seq = {uid(row["id"]): row["log_seq"] - counts[uid(row["id"])] + 1 for row in rows}
    columns: list[list[Any]] = [[] for _ in range(6)]
    for line in lines:
        seq = next_seq.get(line.task_id)
        if seq is None:
            continue
        next_seq[line.task_id] = seq + 1
        values = (line.task_id, seq, line.attempt, line.stream, line.line, utc(line.at))
        for column, value in zip(columns, values, strict=True):
            column.append(value)
    if columns[0]:
        await connection.execute(
            """
            INSERT INTO task_logs (task_id, seq, attempt, stream, line, at)
            SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::int[], $4::text[], $5::text[],
                                 $6::timestamptz[])""",
            *columns,
        )


async def list_logs(
    connection: Conn, task_id: UUID, after_seq: int, attempt: int | None, limit: int
) -> list[LogLine]:
    rows = await connection.fetch(
        """
        SELECT * FROM task_logs
        WHERE task_id = $1 AND seq > $2 AND ($3::int IS NULL OR attempt = $3)
        ORDER BY seq LIMIT $4""",
        task_id,
        after_seq,
        attempt,
        limit,
    )
    return [log_from(row, CODEC) for row in rows]
