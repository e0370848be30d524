"""PostgreSQL: how flow control is used right now (rate limits' windows, concurrency keys'
active and waiting tasks), for the console and ``/metrics``. Snapshot reads, no lock.

A concurrency key's rows are its unfinished tasks, read through the partial index
``tasks_concurrency_open``; a task's limit is ``coalesce(max_concurrent_per_key, [concurrency]
of its task type, 1)`` (``ConcurrencyLimits.of``), the type limits passed as two arrays. A due
pending task waits on its key when the key's active tasks reach its limit: the claim's test
(``_concurrency``) and ``pending_reason: concurrency_limit``'s.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from hetuflow.clock import utc
from hetuflow.models import (
    ConcurrencyKeyUsage,
    ConcurrencyLimits,
    ConcurrencySummary,
    RateLimit,
    RateLimitState,
    RateLimitUsage,
)
from hetuflow.store._pg_db import Conn
from hetuflow.store._rules import ACTIVE_SQL

_WINDOW = "s.name = r.name AND s.at > $1::timestamptz - make_interval(secs => r.per_seconds)"

_RATE_USAGE = f"""
WITH used AS (
    SELECT r.name, r.max_units, r.per_seconds, r.created_at,
           (SELECT coalesce(sum(s.units), 0) FROM rate_limit_spends AS s WHERE {_WINDOW})
               AS used,
           (SELECT min(s.at) FROM rate_limit_spends AS s WHERE {_WINDOW}) AS oldest
    FROM rate_limits AS r
),
waiting AS (
    SELECT l.name, count(*) AS waiting
    FROM tasks AS t JOIN task_rate_limits AS l ON l.task_id = t.id JOIN used AS u
        ON u.name = l.name AND u.used > 0
    WHERE t.status = 'pending' AND t.scheduled_at <= $1 AND t.rate_limits IS NOT NULL
      AND u.used + l.units > u.max_units
    GROUP BY l.name
)
SELECT u.*, coalesce(w.waiting, 0) AS waiting
FROM used AS u LEFT JOIN waiting AS w ON w.name = u.name
ORDER BY u.name"""
"""Every limit's window ending at ``$1`` (one range read of ``rate_limit_spends_window`` per
limit), and the due pending tasks it holds back (from the pending tasks' index). A limit with
nothing spent in its window holds nothing back (no task asks more units than it allows), so
the pending tasks are read only while some limit has spends."""

_LIMIT = (
    "coalesce(t.max_concurrent_per_key,"
    " (SELECT l.max_per_key FROM type_limits AS l WHERE l.task_type = t.task_type), 1)"
)
"""A task's limit (``ConcurrencyLimits.of``)."""

_BUSY = f"""
WITH type_limits (task_type, max_per_key) AS (
    SELECT * FROM unnest($1::text[], $2::int[])
),
active AS (
    SELECT concurrency_key AS key, count(*) AS active FROM tasks
    WHERE concurrency_key IS NOT NULL AND status IN {ACTIVE_SQL}
      {{where}}
    GROUP BY concurrency_key
),
keyed AS (
    SELECT a.key, a.active, t.task_type, t.status, t.scheduled_at, {_LIMIT} AS lim
    FROM active AS a JOIN tasks AS t ON t.concurrency_key = a.key
    WHERE t.status IN ('cancelling', 'dispatched', 'pending', 'running')
),
held AS (
    SELECT *, status = 'pending' AND scheduled_at <= $3 AND active >= lim AS held FROM keyed
)"""
"""The unfinished tasks of the keys with active tasks (read from the active tasks, then an
index probe per such key: the keys with only pending tasks, however many, are not read),
each with its limit, its key's active count and whether its key holds it back now."""

_KEYS = (
    _BUSY
    + f""",
busy AS (
    SELECT key, max(active) AS active, min(lim) AS lim,
           count(*) FILTER (WHERE status = 'pending') AS pending,
           count(*) FILTER (WHERE held) AS waiting
    FROM held GROUP BY key
    ORDER BY max(active) DESC, count(*) FILTER (WHERE held) DESC, key
    LIMIT $4
),
idle AS (
    SELECT t.concurrency_key AS key, 0 AS active, min({_LIMIT}) AS lim, count(*) AS pending,
           0 AS waiting
    FROM tasks AS t
    WHERE t.concurrency_key IS NOT NULL AND t.status = 'pending' {{where_t}}
      AND NOT EXISTS (SELECT 1 FROM active AS a WHERE a.key = t.concurrency_key)
    GROUP BY t.concurrency_key ORDER BY t.concurrency_key
    LIMIT $4
)
SELECT *, 0 AS part FROM busy UNION ALL SELECT *, 1 AS part FROM idle
ORDER BY part, active DESC, waiting DESC, key
LIMIT $4"""
)
"""The busiest keys (with active tasks), then the keys with only pending tasks, by key (read
along ``tasks_concurrency_open``, stopping at the limit)."""

_SUMMARY = (
    _BUSY
    + """,
keys AS (SELECT key, max(active) AS active, min(lim) AS lim FROM held GROUP BY key)
SELECT NULL AS task_type,
       (SELECT count(*) FROM keys) AS keys_active,
       (SELECT count(*) FROM keys WHERE active >= lim) AS keys_at_limit
UNION ALL
SELECT task_type, count(*), 0 FROM held WHERE held GROUP BY task_type"""
)
"""One row of key counts (``task_type`` NULL), then one per task type with tasks held. A
key with no active task holds nothing back (every limit is at least 1)."""


def _type_limits(limits: ConcurrencyLimits) -> tuple[list[str], list[int]]:
    types = sorted(limits.by_task_type)
    return types, [limits.by_task_type[name] for name in types]


async def rate_limit_usage(connection: Conn, now: datetime) -> list[RateLimitUsage]:
    usages = []
    for row in await connection.fetch(_RATE_USAGE, utc(now)):
        limit = RateLimit(row["name"], row["max_units"], row["per_seconds"], utc(row["created_at"]))
        oldest = row["oldest"]
        free = None if oldest is None else utc(oldest) + timedelta(seconds=limit.per_seconds)
        usages.append(RateLimitUsage(RateLimitState(limit, row["used"], free), row["waiting"]))
    return usages


async def concurrency_key_usage(
    connection: Conn,
    limits: ConcurrencyLimits,
    now: datetime,
    *,
    prefix: str | None,
    key: str | None,
    limit: int,
) -> list[ConcurrencyKeyUsage]:
    types, values = _type_limits(limits)
    args: list[object] = [types, values, utc(now), limit]
    where = ""
    if key is not None:
        args.append(key)
        where = "AND concurrency_key = $5"
    elif prefix:
        args.append(prefix)
        where = "AND starts_with(concurrency_key, $5)"
    sql = _KEYS.format(where=where, where_t=where.replace("concurrency_key", "t.concurrency_key"))
    rows = await connection.fetch(sql, *args)
    return [
        ConcurrencyKeyUsage(row["key"], row["active"], row["lim"], row["pending"], row["waiting"])
        for row in rows
    ]


async def concurrency_summary(
    connection: Conn, limits: ConcurrencyLimits, now: datetime
) -> ConcurrencySummary:
    types, values = _type_limits(limits)
    rows = await connection.fetch(_SUMMARY.format(where=""), types, values, utc(now))
    head = next(row for row in rows if row["task_type"] is None)
    return ConcurrencySummary(
        keys_active=head["keys_active"],
        keys_at_limit=head["keys_at_limit"],
        waiting_by_task_type={
            row["task_type"]: row["keys_active"] for row in rows if row["task_type"] is not None
        },
    )
