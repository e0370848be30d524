"""SQLite: named rate limits, their windows, and the spends claims record (see
``_rate_limits``). Times are INTEGER microseconds; the single writer serialises claims."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime, timedelta

from hetuflow.errors import RateLimitNameTaken, RateLimitNotFound, RateLimitUnknown
from hetuflow.models import RateLimit, RateLimitState
from hetuflow.store._rate_limits import PRUNE_MARGIN_SECONDS, trigger_without
from hetuflow.store._rows import Row
from hetuflow.store._sqlite_db import CODEC, id_list, json_rows, micros

_WINDOW = "s.name = r.name AND s.at > ? - CAST(r.per_seconds * 1000000 AS INTEGER)"

_STATES = f"""
SELECT r.name, r.max_units, r.per_seconds, r.created_at,
       (SELECT coalesce(sum(s.units), 0) FROM rate_limit_spends AS s WHERE {_WINDOW}) AS used,
       (SELECT min(s.at) FROM rate_limit_spends AS s WHERE {_WINDOW}) AS oldest
FROM rate_limits AS r WHERE r.name IN (SELECT value FROM json_each(?))"""

_PRUNE = f"""
DELETE FROM rate_limit_spends
WHERE name IN (SELECT value FROM json_each(?))
  AND at <= ? - (SELECT CAST((r.per_seconds + {PRUNE_MARGIN_SECONDS}) * 1000000 AS INTEGER)
                 FROM rate_limits AS r WHERE r.name = rate_limit_spends.name)"""
"""Spends that left every window a claim from the instant given on can count,
``PRUNE_MARGIN_SECONDS`` ago (see ``_rate_limits``)."""

_NEXT_FREE = """
SELECT min(s.at + CAST(r.per_seconds * 1000000 AS INTEGER))
FROM rate_limits AS r JOIN rate_limit_spends AS s ON s.name = r.name
WHERE s.at + CAST(r.per_seconds * 1000000 AS INTEGER) > ?
  AND EXISTS (SELECT 1 FROM task_rate_limits AS l JOIN tasks AS t ON t.id = l.task_id
              WHERE l.name = r.name AND t.status = 'pending')"""


def _limit(row: Row) -> RateLimit:
    created = CODEC.time(row["created_at"])
    assert created is not None
    return RateLimit(row["name"], row["max_units"], row["per_seconds"], created)


def create_rate_limit(
    connection: sqlite3.Connection, name: str, limit: int, per_seconds: float, now: datetime
) -> RateLimit:
    try:
        row = connection.execute(
            "INSERT INTO rate_limits (name, max_units, per_seconds, created_at)"
            " VALUES (?, ?, ?, ?) RETURNING *",
            (name, limit, per_seconds, micros(now)),
        ).fetchone()
    except sqlite3.IntegrityError as error:
        raise RateLimitNameTaken(f"a rate limit named {name!r} exists", field="name") from error
    return _limit(row)


def list_rate_limits(connection: sqlite3.Connection) -> list[RateLimit]:
    return [_limit(row) for row in connection.execute("SELECT * FROM rate_limits ORDER BY name")]


def delete_rate_limit(connection: sqlite3.Connection, name: str) -> None:
    """Delete a limit, and take it out of the cron jobs and the triggers' templates that name
    it (their later tasks are created and dispatched as if they never named it); its rows of
    ``cron_job_rate_limits`` cascade."""
    connection.execute(
        """UPDATE cron_jobs SET rate_limits = (
            SELECT CASE WHEN count(*) = 0 THEN NULL ELSE json_group_array(json(u.value)) END
            FROM json_each(cron_jobs.rate_limits) AS u WHERE u.value ->> 'name' <> ?)
        WHERE id IN (SELECT cron_job_id FROM cron_job_rate_limits WHERE name = ?)""",
        (name, name),
    )
    for row in connection.execute("SELECT id, task, workflow FROM triggers").fetchall():
        task, workflow = (
            None if row[k] is None else CODEC.json(row[k]) for k in ("task", "workflow")
        )
        changed = trigger_without(task, workflow, name)
        if changed is not None:
            connection.execute(
                "UPDATE triggers SET task = ?, workflow = ? WHERE id = ?",
                (*(None if part is None else CODEC.put_json(part) for part in changed), row["id"]),
            )
    if connection.execute("DELETE FROM rate_limits WHERE name = ?", (name,)).rowcount == 0:
        raise RateLimitNotFound(f"no rate limit named {name!r}", field="name")


def rate_limit_states(
    connection: sqlite3.Connection, names: Sequence[str], now: datetime
) -> dict[str, RateLimitState]:
    stamp = micros(now)
    rows = connection.execute(_STATES, (stamp, stamp, id_list(sorted(set(names))))).fetchall()
    states = {}
    for row in rows:
        limit = _limit(row)
        oldest = CODEC.time(row["oldest"])
        free = None if oldest is None else oldest + timedelta(seconds=limit.per_seconds)
        states[limit.name] = RateLimitState(limit, row["used"], free)
    return states


def record_spends(
    connection: sqlite3.Connection,
    spent: Sequence[tuple[str, int]],
    names: Sequence[str],
    now: datetime,
) -> None:
    """Record a claim's spends at ``now`` and drop the spends of ``names`` that no window
    from ``now`` on counts."""
    stamp = micros(now)
    if names:
        connection.execute(_PRUNE, (id_list(sorted(set(names))), stamp))
    if spent:
        connection.execute(
            "INSERT INTO rate_limit_spends (name, at, units)"
            " SELECT value ->> 0, ?, value ->> 1 FROM json_each(?)",
            (stamp, json_rows(spent)),
        )


def insert_uses(connection: sqlite3.Connection, uses: Sequence[tuple[str, str, int]]) -> None:
    """Record what the tasks of a batch spend ((task id, name, units); tasks the insert
    skipped for their idempotency key are left out). ``RateLimitUnknown`` if one names a
    limit that does not exist, or asks more units of one than it allows in a window (it
    could never run)."""
    document = json_rows(uses)
    check_uses(connection, document, "a task")
    connection.execute(
        "INSERT OR IGNORE INTO task_rate_limits (task_id, name, units)"
        " SELECT c.value ->> 0, c.value ->> 1, c.value ->> 2 FROM json_each(?) AS c"
        " WHERE EXISTS (SELECT 1 FROM tasks WHERE id = c.value ->> 0)",
        (document,),
    )


def check_uses(connection: sqlite3.Connection, document: str, who: str) -> None:
    """``RateLimitUnknown`` if one of the uses of ``document`` (``json_rows`` of (owner id,
    name, units)) names a limit that does not exist, or asks more units of one than it
    allows in a window; ``who`` ("a task", "a cron job") names the owner in the message."""
    row = connection.execute(
        "SELECT c.value ->> 1 AS name, c.value ->> 2 AS units, r.max_units"
        " FROM json_each(?) AS c LEFT JOIN rate_limits AS r ON r.name = c.value ->> 1"
        " WHERE r.name IS NULL OR c.value ->> 2 > r.max_units LIMIT 1",
        (document,),
    ).fetchone()
    if row is not None:
        if row["max_units"] is None:
            raise RateLimitUnknown(
                f"{who} names rate limit {row['name']!r}, which does not exist"
                " (POST /api/rate-limits creates one)",
                field="rate_limits",
            )
        raise RateLimitUnknown(
            f"{who} asks {row['units']} units of rate limit {row['name']!r}, which allows"
            f" {row['max_units']} per window",
            field="rate_limits",
        )


def next_free_at(connection: sqlite3.Connection, now: datetime) -> datetime | None:
    """The earliest instant after ``now`` when a spend leaves the window of a limit that
    pending tasks name (the dispatcher's timer)."""
    return CODEC.time(connection.execute(_NEXT_FREE, (micros(now),)).fetchone()[0])
