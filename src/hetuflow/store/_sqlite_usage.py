"""SQLite: how flow control is used right now (rate limits' windows, concurrency keys'
active and waiting tasks), for the console and ``/metrics``. One read each, no lock.

The same reads as ``_pg_usage`` (which says what they count); times are INTEGER
microseconds, the type limits a JSON object. Each read of keyed tasks repeats the condition of
the partial index ``tasks_concurrency_open`` word for word: SQLite uses a partial index only
for a query whose WHERE has its terms.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta

import orjson

from hetuflow.models import (
    ConcurrencyKeyUsage,
    ConcurrencyLimits,
    ConcurrencySummary,
    RateLimit,
    RateLimitState,
    RateLimitUsage,
)
from hetuflow.store._sqlite_db import CODEC, micros

_WINDOW = "s.name = r.name AND s.at > :now - CAST(r.per_seconds * 1000000 AS INTEGER)"

_RATE_STATES = f"""
SELECT r.name, r.max_units, r.per_seconds, r.created_at,
       (SELECT coalesce(sum(s.units), 0) FROM rate_limit_spends AS s WHERE {_WINDOW}) AS used,
       (SELECT min(s.at) FROM rate_limit_spends AS s WHERE {_WINDOW}) AS oldest
FROM rate_limits AS r ORDER BY r.name"""

_RATE_WAITING = """
SELECT l.name, count(*) AS waiting
FROM tasks AS t JOIN task_rate_limits AS l ON l.task_id = t.id
    JOIN json_each(:left) AS u ON u.key = l.name
WHERE t.status = 'pending' AND t.scheduled_at <= :now AND t.rate_limits IS NOT NULL
  AND l.units > u.value
GROUP BY l.name"""
"""The due pending tasks each limit of ``:left`` (name: units left) holds back: read only when
some limit has spends in its window (with none, no task asks more than it has left)."""


_LIMIT = (
    "coalesce(t.max_concurrent_per_key,"
    " (SELECT l.max_per_key FROM type_limits AS l WHERE l.task_type = t.task_type), 1)"
)

_BUSY = f"""
WITH type_limits (task_type, max_per_key) AS (
    SELECT key, value FROM json_each(:limits)
),
active AS (
    SELECT concurrency_key AS key, count(*) AS active FROM tasks
    WHERE concurrency_key IS NOT NULL
      AND status IN ('cancelling', 'dispatched', 'pending', 'running') AND status <> 'pending'
      {{where}}
    GROUP BY concurrency_key
),
keyed AS (
    SELECT a.key, a.active, t.task_type, t.status, t.scheduled_at, {_LIMIT} AS lim
    FROM active AS a JOIN tasks AS t ON t.concurrency_key = a.key
    WHERE t.status IN ('cancelling', 'dispatched', 'pending', 'running')
),
held AS (
    SELECT *, status = 'pending' AND scheduled_at <= :now AND active >= lim AS held
    FROM keyed
)"""

_KEYS = (
    _BUSY
    + f""",
busy AS (
    SELECT key, max(active) AS active, min(lim) AS lim, sum(status = 'pending') AS pending,
           sum(held) AS waiting
    FROM held GROUP BY key
    ORDER BY max(active) DESC, sum(held) DESC, key
    LIMIT :limit
),
idle AS (
    SELECT t.concurrency_key AS key, 0 AS active, min({_LIMIT}) AS lim, count(*) AS pending,
           0 AS waiting
    FROM tasks AS t
    WHERE t.concurrency_key IS NOT NULL
      AND t.status IN ('cancelling', 'dispatched', 'pending', 'running') AND t.status = 'pending'
      {{where_t}}
      AND NOT EXISTS (SELECT 1 FROM active AS a WHERE a.key = t.concurrency_key)
    GROUP BY t.concurrency_key ORDER BY t.concurrency_key
    LIMIT :limit
)
SELECT * FROM (
    SELECT *, 0 AS part FROM busy UNION ALL SELECT *, 1 AS part FROM idle
)
ORDER BY part, active DESC, waiting DESC, key
LIMIT :limit"""
)

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


def rate_limit_usage(connection: sqlite3.Connection, now: datetime) -> list[RateLimitUsage]:
    stamp = micros(now)
    states = []
    for row in connection.execute(_RATE_STATES, {"now": stamp}):
        created = CODEC.time(row["created_at"])
        assert created is not None
        limit = RateLimit(row["name"], row["max_units"], row["per_seconds"], created)
        oldest = CODEC.time(row["oldest"])
        free = None if oldest is None else oldest + timedelta(seconds=limit.per_seconds)
        states.append(RateLimitState(limit, row["used"], free))
    left = {state.limit.name: state.limit.limit - state.used for state in states if state.used}
    waiting: dict[str, int] = {}
    if left:
        params = {"left": orjson.dumps(left).decode(), "now": stamp}
        waiting = dict(connection.execute(_RATE_WAITING, params).fetchall())
    return [RateLimitUsage(state, waiting.get(state.limit.name, 0)) for state in states]


def concurrency_key_usage(
    connection: sqlite3.Connection,
    limits: ConcurrencyLimits,
    now: datetime,
    *,
    prefix: str | None,
    key: str | None,
    limit: int,
) -> list[ConcurrencyKeyUsage]:
    params: dict[str, object] = {
        "limits": orjson.dumps(dict(limits.by_task_type)).decode(),
        "now": micros(now),
        "limit": limit,
    }
    where = ""
    if key is not None:
        params["key"] = key
        where = "AND concurrency_key = :key"
    elif prefix:
        params["prefix"] = prefix
        where = "AND substr(concurrency_key, 1, length(:prefix)) = :prefix"
    sql = _KEYS.format(where=where, where_t=where.replace("concurrency_key", "t.concurrency_key"))
    rows = connection.execute(sql, params).fetchall()
    return [
        ConcurrencyKeyUsage(row["key"], row["active"], row["lim"], row["pending"], row["waiting"])
        for row in rows
    ]


def concurrency_summary(
    connection: sqlite3.Connection, limits: ConcurrencyLimits, now: datetime
) -> ConcurrencySummary:
    params = {"limits": orjson.dumps(dict(limits.by_task_type)).decode(), "now": micros(now)}
    rows = connection.execute(_SUMMARY.format(where=""), params).fetchall()
    head = next(row for row in rows if row["task_type"] is None)
    return ConcurrencySummary(
        keys_active=head["keys_active"],
        keys_at_limit=head["keys_at_limit"],
        waiting_by_task_type={
            row["task_type"]: row["keys_active"] for row in rows if row["task_type"] is not None
        },
    )
