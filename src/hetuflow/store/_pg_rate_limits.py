"""PostgreSQL: named rate limits, their windows, and the spends claims record (see
``_rate_limits``)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

import asyncpg

from hetuflow.clock import utc
from hetuflow.errors import RateLimitNameTaken, RateLimitNotFound, RateLimitUnknown
from hetuflow.models import RateLimit, RateLimitState
from hetuflow.store._pg_db import CODEC, Conn
from hetuflow.store._rate_limits import PRUNE_MARGIN_SECONDS, trigger_without

_WINDOW = "s.name = r.name AND s.at > $2::timestamptz - make_interval(secs => r.per_seconds)"

_STATES = f"""
SELECT r.name, r.max_units, r.per_seconds, r.created_at,
       (SELECT coalesce(sum(s.units), 0) FROM rate_limit_spends AS s WHERE {_WINDOW}) AS used,
       (SELECT min(s.at) FROM rate_limit_spends AS s WHERE {_WINDOW}) AS oldest
FROM rate_limits AS r WHERE r.name = ANY($1::text[])"""
"""Each limit with the units spent in the window that ends at ``$2`` and its oldest spend
(``rate_limit_spends_window``: one range read per limit)."""

_PRUNE = f"""
DELETE FROM rate_limit_spends AS s USING rate_limits AS r
WHERE s.name = r.name AND s.name = ANY($1::text[])
  AND s.at <= $2::timestamptz - make_interval(secs => r.per_seconds + {PRUNE_MARGIN_SECONDS})"""
"""Spends that left every window a claim from ``$2`` on can count, ``PRUNE_MARGIN_SECONDS``
ago (a claim reading the clock a little before ``$2`` may still commit after this one)."""

NEXT_FREE_SQL = """
SELECT min(s.at + make_interval(secs => r.per_seconds))
FROM rate_limits AS r JOIN rate_limit_spends AS s ON s.name = r.name
WHERE s.at + make_interval(secs => r.per_seconds) > {now}
  AND EXISTS (SELECT 1 FROM task_rate_limits AS l JOIN tasks AS t ON t.id = l.task_id
              WHERE l.name = r.name AND t.status = 'pending')"""
"""The earliest instant after ``{now}`` when a spend leaves the window of a limit that pending
tasks name (``Store.dispatch_outlook``)."""


def _limit(row: asyncpg.Record) -> RateLimit:
    return RateLimit(row["name"], row["max_units"], row["per_seconds"], utc(row["created_at"]))


async def create_rate_limit(
    connection: Conn, name: str, limit: int, per_seconds: float, now: datetime
) -> RateLimit:
    try:
        row = await connection.fetchrow(
            "INSERT INTO rate_limits (name, max_units, per_seconds, created_at)"
            " VALUES ($1, $2, $3, $4) RETURNING *",
            name,
            limit,
            per_seconds,
            utc(now),
        )
    except asyncpg.UniqueViolationError as error:
        raise RateLimitNameTaken(f"a rate limit named {name!r} exists", field="name") from error
    assert row is not None
    return _limit(row)


async def list_rate_limits(connection: Conn) -> list[RateLimit]:
    rows = await connection.fetch("SELECT * FROM rate_limits ORDER BY name")
    return [_limit(row) for row in rows]


async def delete_rate_limit(connection: Conn, name: str) -> None:
    """Delete a limit, and take it out of the cron jobs and the triggers' templates that name
    it (their later tasks are created and dispatched as if they never named it); its rows of
    ``cron_job_rate_limits`` cascade."""
    await connection.execute(
        """UPDATE cron_jobs SET rate_limits = (
            SELECT jsonb_agg(u.value ORDER BY u.position)
            FROM jsonb_array_elements(cron_jobs.rate_limits) WITH ORDINALITY AS u(value, position)
            WHERE u.value ->> 'name' <> $1)
        WHERE id IN (SELECT cron_job_id FROM cron_job_rate_limits WHERE name = $1)""",
        name,
    )
    for row in await connection.fetch("SELECT id, task, workflow FROM triggers FOR UPDATE"):
        changed = trigger_without(CODEC.json(row["task"]), CODEC.json(row["workflow"]), name)
        if changed is not None:
            await connection.execute(
                "UPDATE triggers SET task = $2, workflow = $3 WHERE id = $1", row["id"], *changed
            )
    status = await connection.execute("DELETE FROM rate_limits WHERE name = $1", name)
    if status.endswith(" 0"):
        raise RateLimitNotFound(f"no rate limit named {name!r}", field="name")


async def rate_limit_states(
    connection: Conn, names: Sequence[str], now: datetime
) -> dict[str, RateLimitState]:
    rows = await connection.fetch(_STATES, sorted(set(names)), utc(now))
    states = {}
    for row in rows:
        limit = _limit(row)
        oldest = row["oldest"]
        free = None if oldest is None else utc(oldest) + timedelta(seconds=limit.per_seconds)
        states[limit.name] = RateLimitState(limit, row["used"], free)
    return states


async def record_spends(
    connection: Conn, spent: Sequence[tuple[str, int]], names: Sequence[str], now: datetime
) -> None:
    """Record a claim's spends at ``now`` and drop the spends of ``names`` that no window
    from ``now`` on counts."""
    stamp = utc(now)
    if names:
        await connection.execute(_PRUNE, sorted(set(names)), stamp)
    if spent:
        await connection.execute(
            "INSERT INTO rate_limit_spends (name, at, units)"
            " SELECT n, $3::timestamptz, u FROM unnest($1::text[], $2::int[]) AS x(n, u)",
            [name for name, _ in spent],
            [units for _, units in spent],
            stamp,
        )


async def check_units(connection: Conn, task_ids: Sequence[object]) -> None:
    """``RateLimitUnknown`` if one of the tasks asks more units of a limit than it allows in
    a window (it could never run)."""
    row = await connection.fetchrow(
        "SELECT l.name, l.units, r.max_units FROM task_rate_limits AS l"
        " JOIN rate_limits AS r ON r.name = l.name"
        " WHERE l.task_id = ANY($1::uuid[]) AND l.units > r.max_units LIMIT 1",
        list(task_ids),
    )
    if row is not None:
        raise RateLimitUnknown(
            f"a task asks {row['units']} units of rate limit {row['name']!r}, which allows"
            f" {row['max_units']} per window",
            field="rate_limits",
        )


async def check_cron_units(connection: Conn, cron_job_id: object) -> None:
    """``RateLimitUnknown`` if the cron job asks more units of a limit than it allows in a
    window (its tasks could never run)."""
    row = await connection.fetchrow(
        "SELECT l.name, l.units, r.max_units FROM cron_job_rate_limits AS l"
        " JOIN rate_limits AS r ON r.name = l.name"
        " WHERE l.cron_job_id = $1 AND l.units > r.max_units LIMIT 1",
        cron_job_id,
    )
    if row is not None:
        raise RateLimitUnknown(
            f"a cron job asks {row['units']} units of rate limit {row['name']!r}, which allows"
            f" {row['max_units']} per window",
            field="rate_limits",
        )
