"""PostgreSQL: tasks (create, read, list, cancel, claim, cleanup, stats).

Batches travel as arrays (``unnest``) so one statement serves many tasks.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg
import orjson

from hetuflow.clock import utc
from hetuflow.errors import (
    AgentNotFound,
    CronJobNotFound,
    HetuflowError,
    RateLimitUnknown,
    TaskAlreadyFinished,
    TaskNotFound,
)
from hetuflow.models import (
    TERMINAL_TASK_STATUSES,
    ClaimGroup,
    ClaimRequest,
    ConcurrencyLimits,
    Dispatch,
    DispatchOutlook,
    HeldTask,
    NewTask,
    Page,
    Stats,
    Task,
    TaskCursor,
    TaskFilter,
    TaskStatus,
    assign_least_loaded,
)
from hetuflow.store import _pg_rate_limits as rates_sql
from hetuflow.store._broadcast import offered_agents
from hetuflow.store._claims import Aging, FreshTasks, Pick, claim_order, epoch_micros
from hetuflow.store._concurrency import KeyGate
from hetuflow.store._pg_db import CLAIM_LOCK, CODEC, Conn, uid
from hetuflow.store._rate_limits import RateGate
from hetuflow.store._rows import (
    CLAIMED_COLUMNS,
    claimed_from,
    like_pattern,
    new_task,
    task_from,
    uses_json,
)
from hetuflow.store._rules import ACTIVE_SQL

TERMINAL_SQL = "(" + ", ".join(f"'{status}'" for status in sorted(TERMINAL_TASK_STATUSES)) + ")"

_INSERT_TEMPLATE = """
WITH {gate}inserted AS (
    INSERT INTO tasks (
        id, name, task_type, priority, payload, required_capabilities, status, scheduled_at,
        timeout_seconds, max_retries, backoff_seconds, backoff_factor, max_backoff_seconds,
        idempotency_key, cron_job_id, cron_tick_at, created_at, updated_at, agent_id,
        attempts, claim_key, concurrency_key, max_concurrent_per_key, backoff_jitter,
        retry_on, replay_of, rate_limits, webhook_url)
    SELECT n.id, n.name, n.task_type, n.priority, n.payload, n.required_capabilities,
           CASE WHEN n.agent_id IS NULL THEN 'pending' ELSE 'dispatched' END,
           coalesce(n.scheduled_at, $2), n.timeout_seconds, n.max_retries,
           n.backoff_seconds, n.backoff_factor, n.max_backoff_seconds, n.idempotency_key,
           n.cron_job_id, n.cron_tick_at, $2, $2, n.agent_id,
           CASE WHEN n.agent_id IS NULL THEN 0 ELSE 1 END, n.claim_key, n.concurrency_key,
           n.max_concurrent_per_key, n.backoff_jitter, n.retry_on, n.replay_of, n.rate_limits,
           n.webhook_url
    FROM json_to_recordset($1::json) AS n(
        ord int, id uuid, name text, task_type text, priority smallint, payload jsonb,
        required_capabilities text[], scheduled_at timestamptz, timeout_seconds float8,
        max_retries int, backoff_seconds float8, backoff_factor float8,
        max_backoff_seconds float8, idempotency_key text, cron_job_id uuid,
        cron_tick_at timestamptz, agent_id uuid, claim_key bigint, concurrency_key text,
        max_concurrent_per_key int, backoff_jitter float8, retry_on text[], replay_of uuid,
        rate_limits jsonb, webhook_url text)
    {where}ORDER BY n.ord
    ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING id, agent_id, attempts, rate_limits
), recorded AS (
    INSERT INTO attempts (task_id, number, agent_id, dispatched_at)
    SELECT id, attempts, agent_id, $2 FROM inserted WHERE agent_id IS NOT NULL
), limited AS (
    INSERT INTO task_rate_limits (task_id, name, units)
    SELECT i.id, u.name, u.units
    FROM inserted AS i
    CROSS JOIN LATERAL jsonb_to_recordset(i.rate_limits) AS u(name text, units int)
    WHERE i.rate_limits IS NOT NULL
)
{select}"""

_INSERT_TASKS = _INSERT_TEMPLATE.format(gate="", where="", select="SELECT id FROM inserted")
"""The batch travels as one JSON document (encoded by orjson, parsed by PostgreSQL): binding
seventeen arrays of hundreds of values each cost the server more CPU than the rest of a
create."""

_INSERT_PLACED = _INSERT_TEMPLATE.format(
    gate="gate AS MATERIALIZED (SELECT hetuflow_place_at_create($3, $4, $5, $6, $7) AS open),\n",
    where="WHERE (SELECT open FROM gate)\n    ",
    select="SELECT (SELECT open FROM gate) AS open",
)
"""``place_at_create``'s one statement: the gate (migration 0023: the claim lock under a
global limit, the room under it, no pending task due first), then the insert of the batch,
placed tasks dispatched with their attempts, only if the gate is open. Its own transaction."""

_CANDIDATE_COLUMNS = (
    "id, claim_key, task_type, concurrency_key, max_concurrent_per_key, rate_limits,"
    " pinned_agent_id"
)
_CANDIDATE_FILTERS = """
  AND scheduled_at <= $1
  AND task_type = ANY($2::text[])
  AND (required_capabilities = '{}' OR required_capabilities <@ $3::text[])
  AND NOT (id = ANY($4::uuid[]))
  AND (rate_limits IS NULL OR NOT EXISTS (
      SELECT 1 FROM task_rate_limits AS l WHERE l.task_id = tasks.id AND l.name = ANY($7::text[])))
  AND (pinned_agent_id IS NULL OR pinned_agent_id = ANY($8::uuid[]))"""

_CANDIDATES = f"""
SELECT {_CANDIDATE_COLUMNS}
FROM tasks
WHERE status = 'pending'{_CANDIDATE_FILTERS}
  AND (concurrency_key IS NULL OR NOT (concurrency_key = ANY($6::text[])))
ORDER BY claim_key, id
LIMIT $5
FOR UPDATE SKIP LOCKED"""
"""Served by the partial index ``tasks_claim (claim_key, id) WHERE status = 'pending'``, read
in order (see ``_claims``); ``$6``: the concurrency keys this claim found full
(``_concurrency``); ``$7``: the rate limits it found without units left (``_rate_limits``);
``$8``: the group's agents with a free slot, the only ones a pinned task (a broadcast child,
``_broadcast``) may go to.
``= '{}'`` says nothing ``<@`` does not, but the planner estimates
it from the column's statistics (most tasks need no capability), where it guesses that ``<@``
keeps one row in 200: with that guess it sorted every pending task instead of reading the
index in order up to the limit."""

_CANDIDATES_COUNTED = f"""
SELECT a.active, c.*
FROM (SELECT count(*) AS active FROM tasks WHERE status IN {ACTIVE_SQL}) AS a
LEFT JOIN LATERAL ({_CANDIDATES}) AS c ON true"""
"""``_CANDIDATES`` with the number of active tasks beside them (one row of it alone when there
is no candidate): a claim under the global limit whose transaction holds the claim lock reads
the count in its first candidates' statement, one round trip instead of two. The statement
starts after the lock was granted, so its snapshot sees every claim committed before (as the
count's own statement did)."""

_CANDIDATES_AFTER = _CANDIDATES.replace(
    "ORDER BY", "  AND (claim_key, id) > ($9::bigint, $10::uuid)\nORDER BY"
)
"""The candidates after the last one a claim saw (``$9``, ``$10``: its claim key and id), for
the claim's next query when it passed candidates over: the index scan starts there, so a
claim reads each pending task at most once."""

_PENDING_KEYS = """
WITH RECURSIVE keys AS (
    (SELECT concurrency_key AS key, 1 AS n FROM tasks
     WHERE status = 'pending' AND concurrency_key IS NOT NULL
     ORDER BY concurrency_key LIMIT 1)
    UNION ALL
    SELECT (SELECT t.concurrency_key FROM tasks AS t
            WHERE t.status = 'pending' AND t.concurrency_key IS NOT NULL
              AND t.concurrency_key > keys.key
            ORDER BY t.concurrency_key LIMIT 1), keys.n + 1
    FROM keys WHERE keys.key IS NOT NULL AND keys.n < {cap}
)"""
"""The distinct keys of pending tasks, a skip scan: one index probe (the planner picks
``tasks_concurrency_open`` or ``tasks_claim_keyed``) per key, up to ``{cap}`` keys."""

_COUNT_PENDING_KEYS = _PENDING_KEYS.format(cap="$1") + "\nSELECT count(key) FROM keys"

_CANDIDATES_BY_KEY = (
    _PENDING_KEYS.format(cap="2147483647")
    + f""", streams AS (
    SELECT * FROM (
        SELECT {_CANDIDATE_COLUMNS} FROM tasks
        WHERE status = 'pending' AND concurrency_key IS NULL{_CANDIDATE_FILTERS}
          AND (claim_key, id) > ($9::bigint, $10::uuid)
        ORDER BY claim_key, id
        LIMIT $5
        FOR UPDATE SKIP LOCKED) AS unkeyed
    UNION ALL
    SELECT heads.* FROM keys CROSS JOIN LATERAL (
        SELECT {_CANDIDATE_COLUMNS} FROM tasks
        WHERE status = 'pending' AND concurrency_key = keys.key{_CANDIDATE_FILTERS}
          AND (claim_key, id) > ($9::bigint, $10::uuid)
        ORDER BY claim_key, id
        LIMIT $11
        FOR UPDATE SKIP LOCKED) AS heads
    WHERE keys.key IS NOT NULL AND NOT (keys.key = ANY($6::text[]))
)
SELECT * FROM streams ORDER BY claim_key, id LIMIT $5"""
)
"""The candidates after ``$9``, ``$10`` once the claim has found keys full (``$6``), without
reading the tasks of those keys: the unkeyed stream (index ``tasks_claim_unkeyed``) merged in
claim order with the first ``$11`` tasks of each key not full (a skip scan over the distinct
keys of ``tasks_claim_keyed``, then a probe of that index per key), each stream locking what
it reads, skipping tasks locked by other claims as ``_CANDIDATES_AFTER`` does (so a few more
tasks than the merge keeps stay locked until the claim ends, as the ones it passes over do).
The same rows, in the same order, as ``_CANDIDATES_AFTER`` up to the ``$11``-th task of any
key; ``_candidates`` stops reading there unless that key is full by then. A round costs about
a probe per pending key instead of a pass over every pending task of the full keys (migration
0022), so a claim takes this read only while the pending keys are few (``_few_keys``)."""

NO_CANDIDATE_YET = (-(2**63), UUID(int=0))
"""Before every task in claim order: the start of ``_CANDIDATES_BY_KEY``."""

_DISPATCH = f"""
WITH dispatched AS (
    UPDATE tasks AS t
    SET status = 'dispatched', agent_id = c.agent_id, attempts = t.attempts + 1,
        progress = NULL, updated_at = $3
    FROM unnest($1::uuid[], $2::uuid[]) AS c(id, agent_id)
    WHERE t.id = c.id AND t.status = 'pending'
    RETURNING t.*
), recorded AS (
    INSERT INTO attempts (task_id, number, agent_id, dispatched_at)
    SELECT id, attempts, agent_id, $3 FROM dispatched
)
SELECT d.*, s.workflow_id, s.name AS step
FROM (SELECT {CLAIMED_COLUMNS} FROM dispatched) AS d
LEFT JOIN workflow_steps AS s ON s.task_id = d.id"""
"""The left join names a workflow step's workflow and step (one primary-key probe a row)."""


_MISSING_BY_CONSTRAINT: dict[str, tuple[type[HetuflowError], str, str]] = {
    "tasks_cron_job_id_fkey": (
        CronJobNotFound,
        "a task names a cron job that does not exist",
        "cron_job_id",
    ),
    "tasks_agent_id_fkey": (
        AgentNotFound,
        "a task was dispatched to an agent that does not exist",
        "agent_id",
    ),
    "attempts_agent_id_fkey": (
        AgentNotFound,
        "a task was dispatched to an agent that does not exist",
        "agent_id",
    ),
    "attempts_task_id_fkey": (
        TaskNotFound,
        "an attempt names a task that does not exist",
        "task_id",
    ),
    "task_rate_limits_name_fkey": (
        RateLimitUnknown,
        "a task names a rate limit that does not exist (POST /api/rate-limits creates one)",
        "rate_limits",
    ),
}
"""A failed foreign key of a task write, by constraint name, as the domain error it means."""


def missing_reference(error: asyncpg.ForeignKeyViolationError) -> HetuflowError | None:
    """The domain error for the constraint that failed (None: not one of a task write)."""
    found = _MISSING_BY_CONSTRAINT.get(getattr(error, "constraint_name", None) or "")
    if found is None:
        return None
    kind, message, field = found
    return kind(message, field=field)


async def insert_tasks(
    connection: Conn, tasks: Sequence[NewTask], now: datetime, aging: Aging
) -> list[tuple[Task, bool]]:
    """Insert tasks in order; those whose idempotency key exists come back with False."""
    created, _ = await create_and_claim_tasks(connection, tasks, None, now, aging)
    return created


async def create_and_claim_tasks(
    connection: Conn,
    tasks: Sequence[NewTask],
    claim: ClaimRequest | None,
    now: datetime,
    aging: Aging,
    *,
    locked: bool = False,
) -> tuple[list[tuple[Task, bool]], list[Dispatch]]:
    """``insert_tasks`` after a claim round (``claim_tasks``) in the same transaction: a new
    task a slot takes is inserted dispatched, with its attempt row (see ``_claims``).
    ``locked``: the transaction already holds the claim lock."""
    stamp = utc(now)
    ids = [uuid.uuid4() for _ in tasks]
    claim_keys = _claim_keys(tasks, stamp, aging)
    dispatches: list[Dispatch] = []
    placed: dict[int, tuple[UUID, int]] = {}
    if claim is not None and claim.groups:
        fresh = FreshTasks(tasks, ids, stamp, claim_keys)
        dispatches = await claim_tasks(
            connection,
            claim.groups,
            now,
            claim.until,
            claim.global_limit,
            fresh,
            claim.key_limits,
            locked=locked,
        )
        placed = fresh.placed
    rows_json = _rows_json(tasks, ids, claim_keys, placed)
    try:
        rows = await connection.fetch(_INSERT_TASKS, rows_json, stamp)
    except asyncpg.ForeignKeyViolationError as error:
        if (problem := missing_reference(error)) is None:
            raise
        raise problem from error
    if any(new.rate_limits for new in tasks):  # --- rate limits: units it can ever have ---
        await rates_sql.check_units(
            connection, [i for new, i in zip(tasks, ids, strict=True) if new.rate_limits]
        )
    # Built from what was inserted, not read back (RETURNING only says which were).
    built = [
        new_task(new, i, stamp, placed.get(index))
        for index, (new, i) in enumerate(zip(tasks, ids, strict=True))
    ]
    if len(rows) == len(tasks):
        return [(task, True) for task in built], dispatches
    returned = {row["id"] for row in rows}
    inserted = {task.id: task for task in built if task.id in returned}
    keys = [t.idempotency_key for t, i in zip(tasks, ids, strict=True) if i not in inserted]
    existing: dict[str, Task] = {}
    if keys:
        found = await connection.fetch(
            "SELECT * FROM tasks WHERE idempotency_key = ANY($1::text[])", keys
        )
        existing = {row["idempotency_key"]: task_from(row, CODEC) for row in found}
    results: list[tuple[Task, bool]] = []
    for new, task_id in zip(tasks, ids, strict=True):
        if task_id in inserted:
            results.append((inserted[task_id], True))
        else:
            results.append((existing[new.idempotency_key or ""], False))
    return results, dispatches


async def place_at_create(
    connection: Conn, tasks: Sequence[NewTask], claim: ClaimRequest, now: datetime, aging: Aging
) -> tuple[list[tuple[Task, bool]], list[Dispatch]] | None:
    """``create_and_claim_tasks`` in one statement, its own transaction, when it can be: the
    new tasks go to the free slots of ``claim`` in claim order, as a claim round would place
    them when no stored task is due before them. None (nothing written) when the gate is
    closed: a pending task of the offered types is due, or the global limit leaves less room
    than the placed tasks need; the caller then makes the whole claim.

    Only for batches that are all ``placeable_at_create`` (no idempotency key: every task is
    inserted). One round trip where the claim takes four."""
    stamp = utc(now)
    ids = [uuid.uuid4() for _ in tasks]
    claim_keys = _claim_keys(tasks, stamp, aging)
    fresh = FreshTasks(tasks, ids, stamp, claim_keys)
    horizon = utc(claim.until if claim.until is not None else now)
    dispatches = _place_fresh(claim, fresh, horizon)
    types = sorted({task_type for group in claim.groups for task_type in group.task_types})
    arguments = (CLAIM_LOCK, claim.global_limit, len(dispatches), types, horizon)
    rows_json = _rows_json(tasks, ids, claim_keys, fresh.placed)
    try:
        row = await connection.fetchrow(_INSERT_PLACED, rows_json, stamp, *arguments)
    except asyncpg.ForeignKeyViolationError as error:
        if (problem := missing_reference(error)) is None:
            raise
        raise problem from error
    assert row is not None
    if not row["open"]:
        return None
    built = [
        new_task(new, i, stamp, fresh.placed.get(index))
        for index, (new, i) in enumerate(zip(tasks, ids, strict=True))
    ]
    return [(task, True) for task in built], dispatches


def _place_fresh(claim: ClaimRequest, fresh: FreshTasks, horizon: datetime) -> list[Dispatch]:
    """Place the new tasks as ``claim_tasks`` would with no stored candidate: each group's
    free slots (capped by the global limit) take them in claim order, least loaded first."""
    dispatches: list[Dispatch] = []
    room = claim.global_limit
    for group in claim.groups:
        want = group.free_slots if room is None else min(group.free_slots, room)
        if want <= 0 or not group.task_types:
            continue
        picks: list[Pick[asyncpg.Record]] = claim_order(fresh, group, horizon, [], want)
        assigned = assign_least_loaded(picks, group.offers, _pinned)
        for pick, agent_id in assigned:
            if pick.fresh is not None:
                fresh.place(pick.fresh, agent_id)
                dispatches.append(Dispatch(pick.fresh.task, 1, agent_id))
        if room is not None:
            room -= len(assigned)
    return dispatches


def _claim_keys(tasks: Sequence[NewTask], stamp: datetime, aging: Aging) -> list[int]:
    """Each new task's claim key, created at ``stamp``."""
    created_micros = epoch_micros(stamp)
    return [
        aging.key(
            created_micros if new.scheduled_at is None else epoch_micros(new.scheduled_at),
            created_micros,
            new.priority.rank,
        )
        for new in tasks
    ]


def _rows_json(
    tasks: Sequence[NewTask],
    ids: Sequence[UUID],
    claim_keys: Sequence[int],
    placed: dict[int, tuple[UUID, int]],
) -> str:
    """The batch as ``_INSERT_TASKS`` reads it; a placed task names its agent."""
    return orjson.dumps(
        [
            {
                "ord": index,
                "id": task_id,
                "name": new.name,
                "task_type": new.task_type,
                "priority": new.priority.rank,
                "payload": new.payload,
                "required_capabilities": new.required_capabilities,
                "scheduled_at": CODEC.put_time(new.scheduled_at),
                "timeout_seconds": new.timeout_seconds,
                "max_retries": new.retry.max_retries,
                "backoff_seconds": new.retry.backoff_seconds,
                "backoff_factor": new.retry.backoff_factor,
                "max_backoff_seconds": new.retry.max_backoff_seconds,
                "idempotency_key": new.idempotency_key,
                "cron_job_id": new.cron_job_id,
                "cron_tick_at": CODEC.put_time(new.cron_tick_at),
                "agent_id": placed[index][0] if index in placed else None,
                "claim_key": claim_keys[index],
                "concurrency_key": new.concurrency_key,
                "max_concurrent_per_key": new.max_concurrent_per_key,
                "backoff_jitter": new.retry.jitter,
                "retry_on": new.retry.retry_on,
                "replay_of": new.replay_of,
                "rate_limits": uses_json(new.rate_limits),
                "webhook_url": new.webhook_url,
            }
            for index, (new, task_id) in enumerate(zip(tasks, ids, strict=True))
        ]
    ).decode()


async def get_task(connection: Conn, task_id: UUID) -> Task | None:
    row = await connection.fetchrow("SELECT * FROM tasks WHERE id = $1", task_id)
    return None if row is None else task_from(row, CODEC)


UNHANDLED = "NOT EXISTS (SELECT 1 FROM tasks AS r WHERE r.replay_of = tasks.id)"
"""No task retries or replays it (``TaskFilter.final``; index ``tasks_replay_of``)."""
SEARCH_TEXT = (
    "(name || ' ' || task_type || ' ' || payload::text || ' '"
    " || coalesce(result::text, '') || ' ' || coalesce(error, ''))"
)
"""What ``TaskFilter.text`` looks in: the name, task type, payload, result and error as one
text, the expression of the trigram index ``tasks_search`` (migration 0016; keep them equal).
From 3 characters on an ``ILIKE`` of it reads that index."""


def flow_clauses(query: TaskFilter) -> list[tuple[str, Any]]:
    """The clauses (``?`` for the value) of ``query``'s concurrency key and rate limit: the
    tasks of a key (the partial index ``tasks_concurrency_open`` for unfinished ones) or
    naming a limit (a primary key probe of ``task_rate_limits`` per task)."""
    clauses: list[tuple[str, Any]] = []
    if query.concurrency_key is not None:
        clauses.append(("concurrency_key = ?", query.concurrency_key))
    if query.rate_limit is not None:
        clauses.append(
            (
                "EXISTS (SELECT 1 FROM task_rate_limits AS l WHERE l.task_id = tasks.id"
                " AND l.name = ?)",
                query.rate_limit,
            )
        )
    return clauses


def _filter(query: TaskFilter) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []

    def add(sql: str, value: Any) -> None:
        params.append(value)
        clauses.append(sql.replace("?", f"${len(params)}"))

    statuses = query.matched_statuses()
    if statuses is not None:
        add("status = ANY(?::text[])", [status.value for status in statuses])
    if query.final:
        clauses.append(UNHANDLED)
    if query.task_type is not None:
        add("task_type = ?", query.task_type)
    if query.agent_id is not None:
        add("agent_id = ?", query.agent_id)
    if query.cron_job_id is not None:
        add("cron_job_id = ?", query.cron_job_id)
    for clause, value in flow_clauses(query):
        add(clause, value)
    if query.created_after is not None:
        add("created_at >= ?", utc(query.created_after))
    if query.created_before is not None:
        add("created_at < ?", utc(query.created_before))
    if query.id_range is not None:
        add("id >= ?", query.id_range[0])
        add("id <= ?", query.id_range[1])
    if query.text:
        add(f"{SEARCH_TEXT} ILIKE ?", like_pattern(query.text))
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


async def list_tasks(
    connection: Conn,
    query: TaskFilter,
    limit: int,
    offset: int,
    after: TaskCursor | None,
    with_total: bool,
) -> Page[Task]:
    """One page, read from ``tasks_created`` (created_at DESC, id DESC) with a row
    comparison after ``after``; one row more than the page says whether there is a next."""
    where, params = _filter(query)
    total = None
    if with_total:
        total = await connection.fetchval(f"SELECT count(*) FROM tasks{where}", *params)
    if after is not None:
        n = len(params)
        where += (" AND " if where else " WHERE ") + f"(created_at, id) < (${n + 1}, ${n + 2})"
        params = [*params, after.created_at, after.task_id]
    n = len(params)
    rows = await connection.fetch(
        f"SELECT * FROM tasks{where} ORDER BY created_at DESC, id DESC"
        f" LIMIT ${n + 1} OFFSET ${n + 2}",
        *params,
        limit + 1,
        offset,
    )
    items = [task_from(row, CODEC) for row in rows[:limit]]
    more = len(rows) > limit and bool(items)
    return Page(items, total, limit, offset, TaskCursor.of(items[-1]) if more else None)


async def list_held(connection: Conn, agent_ids: Sequence[UUID]) -> list[HeldTask]:
    """Through the partial index ``tasks_active_agent`` (agent_id WHERE active)."""
    rows = await connection.fetch(
        f"""
        SELECT id, agent_id, attempts, status, task_type FROM tasks
        WHERE agent_id = ANY($1::uuid[]) AND status IN {ACTIVE_SQL}""",
        list(agent_ids),
    )
    return [
        HeldTask(
            uid(row["id"]),
            uid(row["agent_id"]),
            row["attempts"],
            TaskStatus(row["status"]),
            row["task_type"],
        )
        for row in rows
    ]


async def cancel_task(
    connection: Conn, task_id: UUID, now: datetime, reason: str | None = None
) -> Task:
    """pending or waiting (a workflow step) -> cancelled (with ``reason`` as its error, if
    given), dispatched/running -> cancelling. (``_pg_workflows.cancel_task`` wraps this for
    steps.)"""
    row = await connection.fetchrow(
        """
        UPDATE tasks
        SET status = CASE WHEN status IN ('pending', 'waiting') THEN 'cancelled'
                          ELSE 'cancelling' END,
            finished_at = CASE WHEN status IN ('pending', 'waiting') THEN $2
                               ELSE finished_at END,
            error = CASE WHEN status IN ('pending', 'waiting') THEN coalesce($3, error)
                         ELSE error END,
            updated_at = $2
        WHERE id = $1 AND status IN ('waiting', 'pending', 'dispatched', 'running')
        RETURNING *""",
        task_id,
        utc(now),
        reason,
    )
    if row is not None:
        return task_from(row, CODEC)
    task = await get_task(connection, task_id)
    if task is None:
        raise TaskNotFound(f"task {task_id} does not exist", field="task_id")
    if task.status.is_terminal:
        raise TaskAlreadyFinished(f"task {task_id} already {task.status}", field="task_id")
    return task  # already cancelling


async def claim_tasks(
    connection: Conn,
    groups: Sequence[ClaimGroup],
    now: datetime,
    until: datetime | None,
    global_limit: int | None,
    fresh: FreshTasks | None = None,
    key_limits: ConcurrencyLimits | None = None,
    *,
    locked: bool = False,
) -> list[Dispatch]:
    """Claim stored pending tasks and, given ``fresh``, tasks of the batch being created
    (placed there; the caller inserts them dispatched, with their attempt rows).
    ``locked``: the transaction already holds the claim lock (``locked_transaction``)."""
    horizon = utc(until if until is not None else now)
    gate = KeyGate(key_limits)
    gate.locked = locked
    rates = RateGate(CODEC)
    # The room under the global limit: counted with the first candidates when the claim
    # lock is held already, else here (taking the lock).
    room = _Room(global_limit, with_candidates=locked)
    if global_limit is not None and not locked:
        room.remaining = await _room_under_limit(connection, global_limit, gate)
    chosen: list[UUID] = []
    agents: list[UUID] = []
    ordered: list[Dispatch | tuple[UUID, UUID]] = []  # claim order: fresh, or (task, agent)
    for group in groups:
        want = room.cap(group.free_slots)
        if want <= 0 or not group.task_types:
            continue
        rows = await _candidates(connection, group, horizon, chosen, want, gate, rates, now, room)
        stored = [((row["claim_key"], str(row["id"])), row) for row in rows]
        picks = claim_order(fresh, group, horizon, stored, room.cap(want))
        assigned = assign_least_loaded(picks, group.offers, _pinned)  # pinned: to its agent
        for pick, agent_id in assigned:
            if pick.row is not None:
                chosen.append(pick.row["id"])
                agents.append(agent_id)
                ordered.append((pick.row["id"], agent_id))
            elif pick.fresh is not None and fresh is not None:
                fresh.place(pick.fresh, agent_id)
                ordered.append(Dispatch(pick.fresh.task, 1, agent_id))
        room.took(len(assigned))
    if rates.met:  # --- rate limits: the spends, in the claim's transaction ---
        spent = rates.spent_by(set(chosen))
        await rates_sql.record_spends(connection, spent, sorted(rates.met), now)
    rows = await _dispatch(connection, chosen, agents, now) if chosen else []
    by_id = {row["id"]: row for row in rows}
    dispatches = []
    for entry in ordered:
        if isinstance(entry, Dispatch):
            dispatches.append(entry)
        elif (row := by_id.get(entry[0])) is not None:
            dispatches.append(Dispatch(claimed_from(row, CODEC), row["attempts"], entry[1]))
    return dispatches


async def _room_under_limit(connection: Conn, global_limit: int, gate: KeyGate) -> int:
    """How many more tasks the global limit lets be held, under the claim lock (taken here
    unless the transaction holds it already)."""
    if not gate.locked:
        await connection.execute("SELECT pg_advisory_xact_lock($1)", CLAIM_LOCK)
        gate.locked = True
    active = await connection.fetchval(f"SELECT count(*) FROM tasks WHERE status IN {ACTIVE_SQL}")
    return max(global_limit - int(active), 0)


class _Room:
    """How many more tasks a claim may hold under the global limit (``remaining``; None: no
    limit, or not counted yet). ``unread``: the count is to come with the claim's first
    candidates' statement (``_CANDIDATES_COUNTED``)."""

    def __init__(self, global_limit: int | None, *, with_candidates: bool) -> None:
        self.global_limit = global_limit
        self.unread = global_limit is not None and with_candidates
        self.remaining: int | None = None

    def cap(self, wanted: int) -> int:
        return wanted if self.remaining is None else min(wanted, self.remaining)

    def took(self, count: int) -> None:
        if self.remaining is not None:
            self.remaining -= count

    def read(self, rows: list[asyncpg.Record]) -> list[asyncpg.Record]:
        """Take the count off ``rows`` (``_CANDIDATES_COUNTED``'s); the candidates among
        them, at most the room."""
        assert self.global_limit is not None
        room = max(self.global_limit - int(rows[0]["active"]), 0)
        self.remaining, self.unread = room, False
        return [row for row in rows if row["id"] is not None][:room]


async def _candidates(
    connection: Conn,
    group: ClaimGroup,
    horizon: datetime,
    chosen: list[UUID],
    want: int,
    gate: KeyGate,
    rates: RateGate,
    now: datetime,
    room: _Room,
) -> list[asyncpg.Record]:
    """Up to ``want`` pending candidates of ``group``, locked, in claim order, within their
    concurrency keys' limits and their rate limits' windows: candidates over a limit are
    passed over and the query repeated past them until ``want`` are found or none are
    left. When ``room`` is unread, the first query also counts the active tasks, and ``want``
    shrinks to the room under the global limit."""
    task_types, capabilities = sorted(group.task_types), sorted(group.capabilities)
    taken: list[asyncpg.Record] = []
    after: tuple[int, UUID] | None = None  # the last candidate seen, in claim order
    while True:
        asked = want - len(taken)
        arguments = (
            horizon,
            task_types,
            capabilities,
            chosen,
            asked,
            sorted(gate.full),
            sorted(rates.full),
            offered_agents(group.offers),
        )
        # keys found full: read only the keys with room, if they are few
        by_key = bool(gate.full) and await _few_keys(connection, gate, want)
        per_key = min(asked, gate.most)
        if by_key:
            start = NO_CANDIDATE_YET if after is None else after
            rows = await connection.fetch(_CANDIDATES_BY_KEY, *arguments, *start, per_key)
        elif room.unread:  # the claim's first statement after its lock
            rows = room.read(await connection.fetch(_CANDIDATES_COUNTED, *arguments))
            want = room.cap(want)
            asked = min(asked, want)
            if want == 0:
                return taken
        elif after is None:
            rows = await connection.fetch(_CANDIDATES, *arguments)
        else:
            rows = await connection.fetch(_CANDIDATES_AFTER, *arguments, *after)
        await _meet(connection, rows, gate, rates, now)
        admitted, cut = _admit(rows, gate, rates, per_key if by_key else None)
        taken.extend(admitted)
        if cut is not None:  # read on from there
            if len(taken) == want:
                return taken
            after = cut
            continue
        if len(admitted) == len(rows) or len(rows) < asked:
            return taken  # nothing passed over, or nothing more to find
        after = (rows[-1]["claim_key"], rows[-1]["id"])


async def _few_keys(connection: Conn, gate: KeyGate, want: int) -> bool:
    """Whether pending tasks have fewer distinct keys than the claim's size (its wanted tasks
    plus twice the keys it found full), counted once per claim: then a probe per key
    (``_CANDIDATES_BY_KEY``) costs less than reading on past full keys, and a claim that
    counts too many has spent no more probes than that size."""
    if gate.few is None:
        cap = want + 2 * len(gate.full)
        gate.few = int(await connection.fetchval(_COUNT_PENDING_KEYS, cap)) < cap
    return gate.few


async def _meet(
    connection: Conn, rows: list[asyncpg.Record], gate: KeyGate, rates: RateGate, now: datetime
) -> None:
    """Count the keys and read the rate limits of ``rows`` the claim has not met yet, under
    the claim lock."""
    # --- concurrency keys: only a claim that meets a keyed task locks and counts ---
    if keys := gate.unknown(rows):
        if not gate.locked:
            await connection.execute("SELECT pg_advisory_xact_lock($1)", CLAIM_LOCK)
            gate.locked = True
        counts = await connection.fetch(_ACTIVE_BY_KEY, keys)
        gate.counted(keys, {row["concurrency_key"]: row["count"] for row in counts})
    # --- rate limits: only a claim that meets a rate-limited task locks and reads ---
    if names := rates.unknown(rows):
        if not gate.locked:
            await connection.execute("SELECT pg_advisory_xact_lock($1)", CLAIM_LOCK)
            gate.locked = True
        rates.read(names, await rates_sql.rate_limit_states(connection, names, now))


def _admit(
    rows: list[asyncpg.Record], gate: KeyGate, rates: RateGate, per_key: int | None
) -> tuple[list[asyncpg.Record], tuple[int, UUID] | None]:
    """The candidates of ``rows`` within their limits, in claim order, each taking its units
    before the next is seen. ``per_key``: the rows are ``_CANDIDATES_BY_KEY``'s, at most that
    many of a key; at a key's last one, if the key still has room, its next task may come
    before the rest of the rows: the rows stop there and its place comes back (else None)."""
    admitted = []
    read: dict[str, int] = {}  # by key: its rows met
    for row in rows:
        if rates.fits(row) and gate.admit(row):
            rates.spend(row)
            admitted.append(row)
        if per_key is not None and (key := row["concurrency_key"]) is not None:
            read[key] = read.get(key, 0) + 1
            if read[key] == per_key and key not in gate.full:
                return admitted, (row["claim_key"], row["id"])
    return admitted, None


def _pinned(pick: Pick[asyncpg.Record]) -> UUID | None:
    """The agent a picked task is pinned to (a broadcast child), if any."""
    return None if pick.row is None else pick.row["pinned_agent_id"]


_ACTIVE_BY_KEY = f"""
SELECT concurrency_key, count(*) AS count FROM tasks
WHERE concurrency_key = ANY($1::text[]) AND status IN {ACTIVE_SQL}
GROUP BY concurrency_key"""
"""Served by the partial index ``tasks_concurrency_open``."""


async def list_keyed_tasks(
    connection: Conn, key: str, statuses: Sequence[TaskStatus]
) -> list[Task]:
    """The unfinished tasks with ``key`` in ``statuses``, oldest first."""
    rows = await connection.fetch(
        "SELECT * FROM tasks WHERE concurrency_key = $1 AND status = ANY($2::text[])"
        " ORDER BY created_at, id",
        key,
        [status.value for status in statuses],
    )
    return [task_from(row, CODEC) for row in rows]


async def count_active_by_key(connection: Conn, keys: Sequence[str]) -> dict[str, int]:
    """How many active tasks each of ``keys`` has (keys with none are left out)."""
    rows = await connection.fetch(_ACTIVE_BY_KEY, list(keys))
    return {row["concurrency_key"]: row["count"] for row in rows}


async def _dispatch(
    connection: Conn, chosen: list[UUID], agents: list[UUID], now: datetime
) -> list[asyncpg.Record]:
    """Mark the chosen stored tasks dispatched to their agents, with their attempt rows."""
    try:
        return await connection.fetch(_DISPATCH, chosen, agents, utc(now))
    except asyncpg.ForeignKeyViolationError as error:
        if (problem := missing_reference(error)) is None:
            raise
        raise problem from error


_OUTLOOK = f"""
SELECT EXISTS (SELECT 1 FROM tasks WHERE status = 'pending' AND scheduled_at <= $1
               AND task_type = ANY($2::text[])) AS due,
       (SELECT min(scheduled_at) FROM tasks WHERE status = 'pending' AND scheduled_at > $1)
           AS next_scheduled_at,
       ({rates_sql.NEXT_FREE_SQL.format(now="$3")}) AS next_rate_limit_free_at"""


async def dispatch_outlook(
    connection: Conn, task_types: Sequence[str], now: datetime, until: datetime
) -> DispatchOutlook:
    """``Store.dispatch_outlook`` in one statement."""
    row = await connection.fetchrow(_OUTLOOK, utc(until), list(task_types), utc(now))
    assert row is not None
    return DispatchOutlook(
        bool(row["due"]),
        CODEC.time(row["next_scheduled_at"]),
        CODEC.time(row["next_rate_limit_free_at"]),
    )


async def delete_finished_tasks(connection: Conn, finished_before: datetime, limit: int) -> int:
    """Terminal tasks that are no workflow step (a workflow's steps go with the workflow:
    ``_pg_workflows.delete_finished``)."""
    status = await connection.execute(
        f"""
        DELETE FROM tasks WHERE id IN (
            SELECT id FROM tasks
            WHERE finished_at < $1 AND status IN {TERMINAL_SQL}
              AND NOT EXISTS (SELECT 1 FROM workflow_steps AS s WHERE s.task_id = tasks.id)
            ORDER BY finished_at LIMIT $2
            FOR UPDATE SKIP LOCKED)""",
        utc(finished_before),
        limit,
    )
    return int(status.rsplit(" ", 1)[-1])


async def stats(connection: Conn) -> Stats:
    by_status = dict.fromkeys(TaskStatus, 0)
    for row in await connection.fetch("SELECT status, count(*) FROM tasks GROUP BY status"):
        by_status[TaskStatus(row[0])] = row[1]
    agents = await connection.fetchrow(
        "SELECT count(*) FILTER (WHERE status <> 'offline') AS online, count(*) AS total"
        " FROM agents WHERE deleted_at IS NULL"
    )
    enabled = await connection.fetchval("SELECT count(*) FROM cron_jobs WHERE enabled")
    if agents is None:
        raise ValueError("an aggregate returned no row")
    return Stats(
        by_status,
        agents_online=agents["online"],
        agents_total=agents["total"],
        cron_jobs_enabled=enabled,
    )


async def count_tasks_by_type(connection: Conn, statuses: Sequence[TaskStatus]) -> dict[str, int]:
    rows = await connection.fetch(
        "SELECT task_type, count(*) FROM tasks WHERE status = ANY($1::text[]) GROUP BY task_type",
        [status.value for status in statuses],
    )
    return {row[0]: row[1] for row in rows}


async def count_finished_tasks(
    connection: Conn, since: datetime, until: datetime
) -> list[tuple[datetime, TaskStatus, int]]:
    rows = await connection.fetch(
        f"""
        SELECT date_trunc('minute', finished_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS minute,
               status, count(*)
        FROM tasks
        WHERE finished_at >= $1 AND finished_at < $2 AND status IN {TERMINAL_SQL}
        GROUP BY 1, 2
        ORDER BY 1, 2""",
        utc(since),
        utc(until),
    )
    return [(utc(row[0]), TaskStatus(row[1]), row[2]) for row in rows]
