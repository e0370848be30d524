"""SQLite: tasks (create, read, list, cancel, claim, cleanup, stats).

Plain functions of a connection, each called inside one transaction by ``SqliteDatabase``.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal
from uuid import UUID

import orjson

from hetuflow.errors import (
    AgentNotFound,
    CronJobNotFound,
    HetuflowError,
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
from hetuflow.store import _sqlite_rate_limits as rates_sql
from hetuflow.store._broadcast import offered_agents
from hetuflow.store._claims import Aging, FreshTasks, Pick, claim_order
from hetuflow.store._concurrency import KeyGate
from hetuflow.store._rate_limits import RateGate
from hetuflow.store._rows import (
    CLAIMED_COLUMNS,
    Row,
    claimed_from,
    like_pattern,
    new_task,
    task_from,
    uses_json,
)
from hetuflow.store._rules import ACTIVE_SQL
from hetuflow.store._sqlite_db import CODEC, id_list, json_rows, micros

MINUTE = 60_000_000  # microseconds
TERMINAL_SQL = "(" + ", ".join(f"'{status}'" for status in sorted(TERMINAL_TASK_STATUSES)) + ")"

_INSERT_COLUMNS = (
    "id, name, task_type, priority, payload, required_capabilities, status, scheduled_at,"
    " timeout_seconds, max_retries, backoff_seconds, backoff_factor, max_backoff_seconds,"
    " idempotency_key, cron_job_id, cron_tick_at, created_at, updated_at, agent_id, attempts,"
    " claim_key, concurrency_key, max_concurrent_per_key, backoff_jitter, retry_on, replay_of,"
    " rate_limits, webhook_url"
)
_INSERT_TASKS = f"""
INSERT INTO tasks ({_INSERT_COLUMNS})
SELECT {", ".join(f"value ->> {n}" for n in range(28))}
FROM json_each(?) WHERE true
ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING"""
"""One statement per batch (``json_rows``), in batch order: the first of two tasks with one
idempotency key wins."""

_CANDIDATES = f"""
SELECT {CLAIMED_COLUMNS}, claim_key, concurrency_key, max_concurrent_per_key, rate_limits,
       pinned_agent_id,
       (SELECT s.workflow_id FROM workflow_steps AS s WHERE s.task_id = tasks.id) AS workflow_id,
       (SELECT s.name FROM workflow_steps AS s WHERE s.task_id = tasks.id) AS step
FROM tasks INDEXED BY tasks_claim
WHERE status = 'pending'
  AND scheduled_at <= ?
  AND task_type IN (SELECT value FROM json_each(?))
  AND (required_capabilities = '[]' OR NOT EXISTS (
      SELECT 1 FROM json_each(tasks.required_capabilities) AS need
      WHERE need.value NOT IN (SELECT value FROM json_each(?))))
  AND (pinned_agent_id IS NULL OR pinned_agent_id IN (SELECT value FROM json_each(?)))
ORDER BY claim_key, id
LIMIT ?"""
"""Served by the partial index ``tasks_claim (claim_key, id) WHERE status = 'pending'``, read
in order up to the limit (see ``_claims``). ``INDEXED BY``: without statistics the planner took
``tasks_status_created`` for ``status = 'pending'`` and sorted every pending task to return
the first few (about 100 ms a claim with 100,000 tasks waiting, 4 ms this way). The fourth
parameter: the group's agents with a free slot, the only ones a pinned task (a broadcast
child, ``_broadcast``) may go to."""

_MORE_CANDIDATES = _CANDIDATES.replace(
    "ORDER BY",
    """  AND (concurrency_key IS NULL OR concurrency_key NOT IN (SELECT value FROM json_each(?)))
  AND (rate_limits IS NULL OR NOT EXISTS (
      SELECT 1 FROM task_rate_limits AS l
      WHERE l.task_id = tasks.id AND l.name IN (SELECT value FROM json_each(?))))
  AND (claim_key, id) > (?, ?)
ORDER BY""",
)
"""The candidates after the last one a claim saw (its claim key and id), past the
concurrency keys and rate limits it found full: only a claim that passed a candidate over runs
it (``_concurrency``, ``_rate_limits``). The index scan starts after that candidate, so a claim
reads each pending task at most once."""

_ACTIVE_BY_KEY = f"""
SELECT concurrency_key, count(*) AS count FROM tasks
WHERE concurrency_key IN (SELECT value FROM json_each(?)) AND status IN {ACTIVE_SQL}
GROUP BY concurrency_key"""
"""Served by the partial index ``tasks_concurrency_open``."""


def list_keyed_tasks(
    connection: sqlite3.Connection, key: str, statuses: Sequence[TaskStatus]
) -> list[Task]:
    """The unfinished tasks with ``key`` in ``statuses``, oldest first."""
    rows = connection.execute(
        "SELECT * FROM tasks WHERE concurrency_key = ?"
        " AND status IN (SELECT value FROM json_each(?)) ORDER BY created_at, id",
        (key, id_list([status.value for status in statuses])),
    ).fetchall()
    return [task_from(row, CODEC) for row in rows]


def count_active_by_key(connection: sqlite3.Connection, keys: Sequence[str]) -> dict[str, int]:
    """How many active tasks each of ``keys`` has (keys with none are left out)."""
    rows = connection.execute(_ACTIVE_BY_KEY, (id_list(keys),)).fetchall()
    return {row["concurrency_key"]: row["count"] for row in rows}


def _candidates(
    connection: sqlite3.Connection,
    group: ClaimGroup,
    horizon: int,
    want: int,
    gate: KeyGate,
    rates: RateGate,
    now: datetime,
) -> list[Row]:
    """Up to ``want`` pending candidates of ``group`` in claim order, within their
    concurrency keys' limits and their rate limits' windows: candidates over a limit are
    passed over and the query repeated past them until ``want`` are found or none are left.
    (The single writer holds the database: no other claim counts meanwhile.)"""
    task_types, capabilities = (
        id_list(sorted(group.task_types)),
        id_list(sorted(group.capabilities)),
    )
    pinned = id_list(offered_agents(group.offers))
    taken: list[Row] = []
    after: tuple[int, str] | None = None  # the last candidate seen, in claim order
    while True:
        asked = want - len(taken)
        if after is None:
            cursor = connection.execute(
                _CANDIDATES, (horizon, task_types, capabilities, pinned, asked)
            )
        else:
            full = id_list(sorted(gate.full))
            spent = id_list(sorted(rates.full))
            cursor = connection.execute(
                _MORE_CANDIDATES,
                (horizon, task_types, capabilities, pinned, full, spent, *after, asked),
            )
        rows = cursor.fetchall()
        if keys := gate.unknown(rows):
            gate.counted(keys, count_active_by_key(connection, keys))
        if names := rates.unknown(rows):
            rates.read(names, rates_sql.rate_limit_states(connection, names, now))
        admitted = []
        for row in rows:  # in claim order, each taking its units before the next is seen
            if rates.fits(row) and gate.admit(row):
                rates.spend(row)
                admitted.append(row)
        taken.extend(admitted)
        if len(admitted) == len(rows) or len(rows) < asked:
            return taken  # nothing passed over, or nothing more to find
        after = (rows[-1]["claim_key"], rows[-1]["id"])


_INSERT_ATTEMPTS = """
INSERT INTO attempts (task_id, number, agent_id, dispatched_at)
SELECT value ->> 0, value ->> 1, value ->> 2, ? FROM json_each(?)"""

_DISPATCH = """
UPDATE tasks
SET status = 'dispatched', agent_id = c.agent_id, attempts = c.number, progress = NULL,
    updated_at = ?
FROM (SELECT value ->> 0 AS id, value ->> 1 AS number, value ->> 2 AS agent_id
      FROM json_each(?)) AS c
WHERE tasks.id = c.id AND +tasks.status = 'pending'"""
"""``+``: keeps the planner from scanning every pending task by status instead of looking
each id up."""


@dataclass(slots=True)
class PreparedTasks:
    """A batch made ready to insert off the writer thread (``prepare_tasks``): the writer
    only claims, marks the placed rows and runs the statements; ``created`` builds the
    answer's tasks afterwards, once, off the writer again."""

    tasks: Sequence[NewTask]
    ids: list[UUID]
    rows: list[list[Any]]
    fresh: FreshTasks | None
    now: datetime
    created_at: datetime
    """``now`` as stored (whole microseconds)."""
    placed: dict[int, tuple[UUID, int]] = field(default_factory=dict)


Taken = dict[int, Task | int]
"""Batch index -> what holds its idempotency key: a stored task, or the index of an earlier
task of the batch."""


def prepare_tasks(
    tasks: Sequence[NewTask], now: datetime, aging: Aging, *, claim: bool
) -> PreparedTasks:
    """Build the rows of a batch (no database needed)."""
    stamp = micros(now)
    created_at = _must(CODEC.time(stamp))
    ids = [uuid.uuid4() for _ in tasks]
    rows: list[list[Any]] = []
    keys: list[int] = []
    for new, task_id in zip(tasks, ids, strict=True):
        retry = new.retry
        due = micros(new.scheduled_at) if new.scheduled_at is not None else stamp
        key = aging.key(due, stamp, new.priority.rank)
        keys.append(key)
        rows.append(
            [
                str(task_id),
                new.name,
                new.task_type,
                new.priority.rank,
                CODEC.put_json(new.payload),
                CODEC.put_texts(new.required_capabilities),
                "pending",
                due,
                new.timeout_seconds,
                retry.max_retries,
                retry.backoff_seconds,
                retry.backoff_factor,
                retry.max_backoff_seconds,
                new.idempotency_key,
                CODEC.put_uuid(new.cron_job_id),
                CODEC.put_time(new.cron_tick_at),
                stamp,
                stamp,
                None,
                0,
                key,
                new.concurrency_key,
                new.max_concurrent_per_key,
                retry.jitter,
                CODEC.put_texts(retry.retry_on),
                CODEC.put_uuid(new.replay_of),
                None if not new.rate_limits else CODEC.put_json(uses_json(new.rate_limits)),
                new.webhook_url,
            ]
        )
    fresh = FreshTasks(tasks, ids, created_at, keys, [row[0] for row in rows]) if claim else None
    return PreparedTasks(tasks, ids, rows, fresh, now, created_at)


def created(prepared: PreparedTasks, taken: Taken) -> list[tuple[Task, bool]]:
    """Each task of the batch as inserted (dispatched where a claim placed it) with True, or
    the task holding its idempotency key with False. Built from what was inserted: nothing
    is read back, and the columns the insert does not name all start empty."""
    built = [
        new_task(new, task_id, prepared.created_at, prepared.placed.get(index))
        for index, (new, task_id) in enumerate(zip(prepared.tasks, prepared.ids, strict=True))
    ]
    results: list[tuple[Task, bool]] = []
    for index, task in enumerate(built):
        holder = taken.get(index)
        if holder is None:
            results.append((task, True))
        else:
            results.append((built[holder] if isinstance(holder, int) else holder, False))
    return results


def create_tasks(
    connection: sqlite3.Connection, tasks: Sequence[NewTask], now: datetime, aging: Aging
) -> list[tuple[Task, bool]]:
    """Insert the tasks with one statement; a task whose idempotency key exists (in
    the table or earlier in the batch) comes back as that task, with False."""
    prepared = prepare_tasks(tasks, now, aging, claim=False)
    taken, _ = insert_prepared(connection, prepared, None)
    return created(prepared, taken)


def insert_prepared(
    connection: sqlite3.Connection, prepared: PreparedTasks, claim: ClaimRequest | None
) -> tuple[Taken, list[Dispatch]]:
    """Insert a prepared batch, after a claim round (``claim_tasks``) in the same
    transaction when ``claim`` is given: a new task a slot takes is inserted dispatched (see
    ``_claims``). Returns which idempotency keys were taken, and the dispatches."""
    now = prepared.now
    stamp = micros(now)
    dispatches: list[Dispatch] = []
    fresh = prepared.fresh
    if claim is not None and claim.groups and fresh is not None:
        dispatches = claim_tasks(
            connection,
            claim.groups,
            now,
            claim.until,
            claim.global_limit,
            fresh,
            claim.key_limits,
        )
        prepared.placed = fresh.placed
    rows = prepared.rows
    for index, (agent_id, number) in prepared.placed.items():
        row = rows[index]
        row[6], row[18], row[19] = "dispatched", str(agent_id), number
    try:
        connection.execute(_INSERT_TASKS, (json_rows(rows),))
        if prepared.placed:
            attempts = [
                (rows[index][0], number, rows[index][18])
                for index, (_, number) in prepared.placed.items()
            ]
            connection.execute(_INSERT_ATTEMPTS, (stamp, json_rows(attempts)))
    except sqlite3.IntegrityError as error:
        problem = missing_reference(
            connection,
            error,
            cron_job_ids=[str(new.cron_job_id) for new in prepared.tasks if new.cron_job_id],
            agent_ids=[str(agent_id) for agent_id, _ in prepared.placed.values()],
        )
        if problem is None:
            raise
        raise problem from error
    uses = [
        (rows[index][0], use.name, use.units)
        for index, new in enumerate(prepared.tasks)
        for use in new.rate_limits
    ]
    if uses:  # --- rate limits: what each task spends, checked against the limits ---
        rates_sql.insert_uses(connection, uses)
    return _taken_keys(connection, prepared), dispatches


def _taken_keys(connection: sqlite3.Connection, prepared: PreparedTasks) -> Taken:
    """The batch's tasks whose idempotency key was taken (in the table, or earlier in the
    batch: ``ON CONFLICT DO NOTHING`` skipped them), with what holds it."""
    keyed = {
        index: new.idempotency_key
        for index, new in enumerate(prepared.tasks)
        if new.idempotency_key is not None
    }
    if not keyed:
        return {}
    holders = {
        row["idempotency_key"]: row
        for row in connection.execute(
            "SELECT * FROM tasks WHERE idempotency_key IN (SELECT value FROM json_each(?))",
            (orjson.dumps(list(keyed.values())).decode(),),
        )
    }
    ours = {prepared.rows[index][0]: index for index in keyed}
    taken: Taken = {}
    for index, key in keyed.items():
        holder = holders[key]
        if holder["id"] != prepared.rows[index][0]:
            earlier = ours.get(holder["id"])
            taken[index] = earlier if earlier is not None else task_from(holder, CODEC)
    return taken


def missing_reference(
    connection: sqlite3.Connection,
    error: sqlite3.IntegrityError,
    *,
    cron_job_ids: Iterable[str] = (),
    agent_ids: Iterable[str] = (),
) -> HetuflowError | None:
    """The domain error for the reference a task write found missing (None: not a foreign
    key, or none of these). SQLite's error names no constraint, so the rows are looked up
    (the failed statement was undone; the transaction can still read)."""
    if "FOREIGN KEY" not in str(error):
        return None
    jobs = _missing(connection, "cron_jobs", cron_job_ids)
    if jobs:
        return CronJobNotFound(f"cron job {jobs[0]} does not exist", field="cron_job_id")
    agents = _missing(connection, "agents", agent_ids)
    if agents:
        return AgentNotFound(
            f"agent {agents[0]}, which a task was dispatched to, does not exist", field="agent_id"
        )
    return None


def _missing(
    connection: sqlite3.Connection, table: Literal["agents", "cron_jobs"], ids: Iterable[str]
) -> list[str]:
    wanted = sorted(set(ids))
    if not wanted:
        return []
    found = {
        row[0]
        for row in connection.execute(
            f"SELECT id FROM {table} WHERE id IN (SELECT value FROM json_each(?))",
            (id_list(wanted),),
        )
    }
    return [key for key in wanted if key not in found]


def insert_task(
    connection: sqlite3.Connection, new: NewTask, now: datetime, aging: Aging
) -> tuple[Task, bool]:
    """Insert one task, or return the one holding its idempotency key."""
    [result] = create_tasks(connection, [new], now, aging)
    return result


def get_task(connection: sqlite3.Connection, task_id: UUID) -> Task | None:
    row = connection.execute("SELECT * FROM tasks WHERE id = ?", (str(task_id),)).fetchone()
    return None if row is None else task_from(row, CODEC)


UNHANDLED = "NOT EXISTS (SELECT 1 FROM tasks AS r WHERE r.replay_of = tasks.id)"
"""No task retries or replays it (``TaskFilter.final``; index ``tasks_replay_of``)."""


def flow_clauses(query: TaskFilter) -> list[tuple[str, Any]]:
    """The clauses (one ``?`` each) of ``query``'s concurrency key and rate limit: the tasks
    of a key or naming a limit (a primary key probe of ``task_rate_limits`` per task)."""
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


def _filter(query: TaskFilter, *, scan_text: bool = False) -> tuple[str, list[Any]]:
    """The WHERE clause of ``query``; its text through the search index unless ``scan_text``
    (``LIKE`` on every row the query reads)."""
    clauses: list[str] = []
    params: list[Any] = []
    statuses = query.matched_statuses()
    if statuses is not None:
        clauses.append(f"status IN ({', '.join('?' for _ in statuses)})" if statuses else "0")
        params.extend(status.value for status in statuses)
    if query.final:
        clauses.append(UNHANDLED)
    if query.task_type is not None:
        clauses.append("task_type = ?")
        params.append(query.task_type)
    if query.agent_id is not None:
        clauses.append("agent_id = ?")
        params.append(str(query.agent_id))
    if query.cron_job_id is not None:
        clauses.append("cron_job_id = ?")
        params.append(str(query.cron_job_id))
    if query.concurrency_key is not None:
        clauses.append("concurrency_key = ?")
        params.append(query.concurrency_key)
    if query.rate_limit is not None:
        clauses.append(
            "EXISTS (SELECT 1 FROM task_rate_limits AS l WHERE l.task_id = tasks.id AND l.name = ?)"
        )
        params.append(query.rate_limit)
    if query.created_after is not None:
        clauses.append("created_at >= ?")
        params.append(micros(query.created_after))
    if query.created_before is not None:
        clauses.append("created_at < ?")
        params.append(micros(query.created_before))
    if query.id_range is not None:
        clauses.append("id BETWEEN ? AND ?")  # ids are canonical lowercase text
        params.extend(str(bound) for bound in query.id_range)
    if query.text:
        clause, values = _text_clause(query.text, scan=scan_text)
        clauses.append(clause)
        params.extend(values)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


SEARCHED_COLUMNS = ("name", "task_type", "payload", "result", "error")
"""The columns ``TaskFilter.text`` looks in (``tasks_search`` indexes them, migration 0016)."""
BROAD_MATCHES = 2000
"""A text found in more tasks than this is broad: its page is read by ``LIKE`` along the list
order instead of through the index (see ``list_tasks``)."""


def _phrase(text: str) -> str:
    """``text`` as one FTS5 phrase: with the trigram tokenizer, consecutive trigrams, i.e. a
    substring (any case)."""
    return '"' + text.replace('"', '""') + '"'


def _text_clause(text: str, *, scan: bool = False) -> tuple[str, list[Any]]:
    """``text`` anywhere in a searched column (any case). From 3 characters on, through the
    trigram index ``tasks_search``, unless ``scan``; a task that waits for the indexer
    (``tasks_search_pending``, its index rows stale or missing) is matched by ``LIKE`` on its
    own text instead, so the answer is exact before the indexer has run (``CROSS JOIN``: read
    from the few pending rows, never from every task). A shorter text has no trigram: ``LIKE``
    (ASCII case folding) over every row."""
    if len(text) >= 3 and not scan:
        likes, values = _likes(text, "t.")
        return (
            "rowid IN (SELECT rowid FROM tasks_search WHERE tasks_search MATCH ?"
            " AND rowid NOT IN (SELECT task_rowid FROM tasks_search_pending)"
            " UNION ALL SELECT t.rowid FROM tasks_search_pending AS p"
            f" CROSS JOIN tasks AS t ON t.rowid = p.task_rowid WHERE {likes})",
            [_phrase(text), *values],
        )
    return _likes(text, "")


def _likes(text: str, prefix: str) -> tuple[str, list[Any]]:
    likes = " OR ".join(f"{prefix}{column} LIKE ? ESCAPE '\\'" for column in SEARCHED_COLUMNS)
    return f"({likes})", [like_pattern(text)] * len(SEARCHED_COLUMNS)


def _is_broad(connection: sqlite3.Connection, text: str) -> bool:
    """Whether more than ``BROAD_MATCHES`` tasks hold ``text`` (an index read that stops
    there: a few milliseconds)."""
    if len(text) < 3:
        return False
    found = connection.execute(
        "SELECT count(*) FROM (SELECT 1 FROM tasks_search WHERE tasks_search MATCH ? LIMIT ?)",
        (_phrase(text), BROAD_MATCHES + 1),
    ).fetchone()[0]
    return bool(found > BROAD_MATCHES)


def list_tasks(
    connection: sqlite3.Connection,
    query: TaskFilter,
    limit: int,
    offset: int,
    after: TaskCursor | None,
    with_total: bool,
) -> Page[Task]:
    """One page, read from the ``(created_at, id)`` order (keyset after ``after``); one row
    more than the page says whether there is a next one.

    A search text is looked up in the trigram index, which hands back every match at once: a
    few milliseconds for a rare text, seconds for one in most of a million tasks. So a broad
    text (``_is_broad``) reads its page along the list order with ``LIKE`` instead, stopping
    at a full page (its matches are dense there). ``total`` counts through the index."""
    where, params = _filter(query)
    total = None
    if with_total:
        total = connection.execute(f"SELECT count(*) FROM tasks{where}", params).fetchone()[0]
    if query.text and _is_broad(connection, query.text):
        where, params = _filter(query, scan_text=True)
    if after is not None:
        where += (" AND " if where else " WHERE ") + "(created_at, id) < (?, ?)"
        params = [*params, after.created_at_micros, str(after.task_id)]
    rows = connection.execute(
        f"SELECT * FROM tasks{where} ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?",
        [*params, limit + 1, offset],
    ).fetchall()
    items = [task_from(row, CODEC) for row in rows[:limit]]
    more = len(rows) > limit and bool(items)
    return Page(items, total, limit, offset, TaskCursor.of(items[-1]) if more else None)


def list_held(connection: sqlite3.Connection, agent_ids: Sequence[UUID]) -> list[HeldTask]:
    """Through ``tasks_agent_status`` (agent_id, status): one index probe per agent and
    active status (``CROSS JOIN`` keeps the agents the outer loop: with few agents the
    planner would otherwise scan the table)."""
    rows = connection.execute(
        f"""
        SELECT t.id, t.agent_id, t.attempts, t.status, t.task_type
        FROM json_each(?) AS a CROSS JOIN tasks AS t
        WHERE t.agent_id = a.value AND t.status IN {ACTIVE_SQL}""",
        (id_list(agent_ids),),
    )
    return [
        HeldTask(UUID(row[0]), UUID(row[1]), row[2], TaskStatus(row[3]), row[4]) for row in rows
    ]


def cancel_task(
    connection: sqlite3.Connection, task_id: UUID, now: datetime, reason: str | None = None
) -> Task:
    """pending or waiting (a workflow step) -> cancelled (with ``reason`` as its error, if
    given), dispatched/running -> cancelling. (``_sqlite_workflows.cancel_task`` wraps this
    for steps.)"""
    stamp = micros(now)
    row = connection.execute(
        """
        UPDATE tasks
        SET status = CASE WHEN status IN ('pending', 'waiting') THEN 'cancelled'
                          ELSE 'cancelling' END,
            finished_at = CASE WHEN status IN ('pending', 'waiting') THEN ? ELSE finished_at END,
            error = CASE WHEN status IN ('pending', 'waiting') THEN coalesce(?, error)
                         ELSE error END,
            updated_at = ?
        WHERE id = ? AND status IN ('waiting', 'pending', 'dispatched', 'running')
        RETURNING *""",
        (stamp, reason, stamp, str(task_id)),
    ).fetchone()
    if row is not None:
        return task_from(row, CODEC)
    task = get_task(connection, task_id)
    if task is None:
        raise TaskNotFound(f"task {task_id} does not exist", field="task_id")
    if task.status.is_terminal:
        raise TaskAlreadyFinished(f"task {task_id} already {task.status}", field="task_id")
    return task  # already cancelling


def claim_tasks(
    connection: sqlite3.Connection,
    groups: Sequence[ClaimGroup],
    now: datetime,
    until: datetime | None,
    global_limit: int | None,
    fresh: FreshTasks | None = None,
    key_limits: ConcurrencyLimits | None = None,
) -> list[Dispatch]:
    """Claim stored pending tasks and, given ``fresh``, tasks of the batch being created
    (placed there; the caller inserts them dispatched, with their attempt rows)."""
    gate = KeyGate(key_limits)
    rates = RateGate(CODEC)
    horizon_at = until if until is not None else now
    horizon = micros(horizon_at)
    stamp = micros(now)
    remaining: int | None = None
    if global_limit is not None:
        active = connection.execute(
            f"SELECT count(*) FROM tasks WHERE status IN {ACTIVE_SQL}"
        ).fetchone()[0]
        remaining = max(global_limit - active, 0)
    dispatches: list[Dispatch] = []
    for group in groups:
        want = group.free_slots if remaining is None else min(group.free_slots, remaining)
        if want <= 0 or not group.task_types:
            continue
        rows = _candidates(connection, group, horizon, want, gate, rates, now)
        stored = [((row["claim_key"], row["id"]), row) for row in rows]
        picks = claim_order(fresh, group, horizon_at, stored, want)
        assigned = assign_least_loaded(picks, group.offers, _pinned)  # pinned: to its agent
        agents = [agent_id for _, agent_id in assigned]
        agent_keys = {agent_id: str(agent_id) for agent_id in set(agents)}
        updates = []
        for pick, agent_id in assigned:
            row = pick.row
            if row is not None:
                # The single writer holds the database: the rows read above are still pending.
                task_id, number = row["id"], row["attempts"] + 1
                agent_key = agent_keys[agent_id]
                updates.append((task_id, number, agent_key))
                dispatches.append(Dispatch(claimed_from(row, CODEC), number, agent_id))
            elif pick.fresh is not None and fresh is not None:
                fresh.place(pick.fresh, agent_id)
                dispatches.append(Dispatch(pick.fresh.task, 1, agent_id))
        if updates:
            document = json_rows(updates)
            try:
                connection.execute(_DISPATCH, (stamp, document))
                connection.execute(_INSERT_ATTEMPTS, (stamp, document))
            except sqlite3.IntegrityError as error:
                problem = missing_reference(connection, error, agent_ids=agent_keys.values())
                if problem is None:
                    raise
                raise problem from error
        if remaining is not None:
            remaining -= len(agents)
    if rates.met:  # --- rate limits: the spends, in the claim's transaction ---
        claimed = {str(d.task.id) for d in dispatches}
        rates_sql.record_spends(connection, rates.spent_by(claimed), sorted(rates.met), now)
    return dispatches


def _pinned(pick: Pick[Row]) -> UUID | None:
    """The agent a picked task is pinned to (a broadcast child), if any."""
    return None if pick.row is None else CODEC.uuid(pick.row["pinned_agent_id"])


def any_due(connection: sqlite3.Connection, task_types: Sequence[str], until: datetime) -> bool:
    """Whether a pending task of one of ``task_types`` is due by ``until`` (a claim could take
    it, capabilities allowing)."""
    row = connection.execute(
        "SELECT EXISTS (SELECT 1 FROM tasks WHERE status = 'pending' AND scheduled_at <= ?"
        " AND task_type IN (SELECT value FROM json_each(?)))",
        (micros(until), id_list(task_types)),
    ).fetchone()
    return bool(row[0])


def dispatch_outlook(
    connection: sqlite3.Connection, task_types: Sequence[str], now: datetime, until: datetime
) -> DispatchOutlook:
    """``Store.dispatch_outlook``: three statements in one read transaction (one hop)."""
    scheduled = connection.execute(
        "SELECT min(scheduled_at) FROM tasks WHERE status = 'pending' AND scheduled_at > ?",
        (micros(until),),
    ).fetchone()[0]
    return DispatchOutlook(
        any_due(connection, task_types, until),
        CODEC.time(scheduled),
        rates_sql.next_free_at(connection, now),
    )


def delete_finished_tasks(
    connection: sqlite3.Connection, finished_before: datetime, limit: int
) -> int:
    """Terminal tasks that are no workflow step (a workflow's steps go with the workflow:
    ``_sqlite_workflows.delete_finished``)."""
    cursor = connection.execute(
        f"""
        DELETE FROM tasks WHERE id IN (
            SELECT id FROM tasks
            WHERE finished_at < ? AND status IN {TERMINAL_SQL}
              AND NOT EXISTS (SELECT 1 FROM workflow_steps AS s WHERE s.task_id = tasks.id)
            ORDER BY finished_at LIMIT ?)""",
        (micros(finished_before), limit),
    )
    return cursor.rowcount


def stats(connection: sqlite3.Connection) -> Stats:
    by_status = dict.fromkeys(TaskStatus, 0)
    for row in connection.execute("SELECT status, count(*) FROM tasks GROUP BY status"):
        by_status[TaskStatus(row[0])] = row[1]
    online, total = connection.execute(
        "SELECT coalesce(sum(status <> 'offline'), 0), count(*) FROM agents"
        " WHERE deleted_at IS NULL"
    ).fetchone()
    enabled = connection.execute("SELECT count(*) FROM cron_jobs WHERE enabled = 1").fetchone()[0]
    return Stats(by_status, agents_online=online, agents_total=total, cron_jobs_enabled=enabled)


def count_tasks_by_type(
    connection: sqlite3.Connection, statuses: Sequence[TaskStatus]
) -> dict[str, int]:
    if not statuses:
        return {}
    marks = ", ".join("?" for _ in statuses)
    rows = connection.execute(
        f"SELECT task_type, count(*) FROM tasks WHERE status IN ({marks}) GROUP BY task_type",
        [status.value for status in statuses],
    )
    return {row[0]: row[1] for row in rows}


def count_finished_tasks(
    connection: sqlite3.Connection, since: datetime, until: datetime
) -> list[tuple[datetime, TaskStatus, int]]:
    rows = connection.execute(
        f"""
        SELECT finished_at / {MINUTE} * {MINUTE} AS minute, status, count(*)
        FROM tasks
        WHERE finished_at >= ? AND finished_at < ? AND status IN {TERMINAL_SQL}
        GROUP BY minute, status
        ORDER BY minute, status""",
        (micros(since), micros(until)),
    )
    return [(_must(CODEC.time(row[0])), TaskStatus(row[1]), row[2]) for row in rows]


def _must(value: datetime | None) -> datetime:
    if value is None:
        raise ValueError("a required time is NULL")
    return value
