"""PostgreSQL: cron jobs and their ticks.

A tick's primary key ``(cron_job_id, tick_at)`` decides which node fires it: the loser's
``INSERT ... ON CONFLICT DO NOTHING`` waits for the winner's commit and inserts nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from uuid import UUID

import asyncpg

from hetuflow.clock import utc
from hetuflow.errors import CronJobNameTaken, CronJobNotFound, RateLimitUnknown
from hetuflow.models import (
    UNSET,
    CronFire,
    CronJob,
    CronJobChanges,
    CronTick,
    NewCronJob,
    NewTask,
    RateLimitUse,
    Task,
    TickOutcome,
)
from hetuflow.store import _pg_rate_limits as rates_sql
from hetuflow.store._claims import Aging
from hetuflow.store._pg_db import CODEC, Conn, uid
from hetuflow.store._pg_tasks import insert_tasks
from hetuflow.store._pg_workflows import create_workflow
from hetuflow.store._rows import cron_columns, cron_job_from, cron_tick_from, uses_json
from hetuflow.workflows import check_workflow


def _not_found(cron_job_id: UUID) -> CronJobNotFound:
    return CronJobNotFound(f"cron job {cron_job_id} does not exist", field="cron_job_id")


async def create_cron_job(
    connection: Conn, job: NewCronJob, next_fire_at: datetime | None, now: datetime
) -> CronJob:
    try:
        row = await connection.fetchrow(
            """
            INSERT INTO cron_jobs (
                id, name, cron_expression, timezone, task_type, payload, priority,
                required_capabilities, timeout_seconds, max_retries, backoff_seconds,
                backoff_factor, max_backoff_seconds, enabled, misfire_policy, catch_up_limit,
                overlap_policy, start_deadline_seconds, next_fire_at, created_at, updated_at,
                concurrency_key, max_concurrent_per_key, workflow, backoff_jitter, retry_on,
                webhook_url, concurrency_strategy)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16,
                    $17, $18, $19, $20, $20, $21, $22, $23, $24, $25, $26, $27)
            RETURNING *""",
            uuid.uuid4(),
            job.name,
            job.cron_expression,
            job.timezone,
            job.task_type,
            job.payload,
            job.priority.rank,
            list(job.required_capabilities),
            job.timeout_seconds,
            job.retry.max_retries,
            job.retry.backoff_seconds,
            job.retry.backoff_factor,
            job.retry.max_backoff_seconds,
            job.enabled,
            job.misfire_policy.value,
            job.catch_up_limit,
            job.overlap_policy.value,
            job.start_deadline_seconds,
            CODEC.put_time(next_fire_at),
            utc(now),
            job.concurrency_key,
            job.max_concurrent_per_key,
            job.workflow,
            job.retry.jitter,
            list(job.retry.retry_on),
            job.webhook_url,
            job.concurrency_strategy.value,
        )
    except asyncpg.UniqueViolationError as error:
        raise CronJobNameTaken(f"a cron job named {job.name!r} exists", field="name") from error
    if row is None:
        raise ValueError("INSERT ... RETURNING gave no row")
    created = cron_job_from(row, CODEC)
    if job.rate_limits:
        await set_rate_limits(connection, created.id, job.rate_limits)
        created = replace(created, rate_limits=job.rate_limits)
    return created


async def get_cron_job(connection: Conn, cron_job_id: UUID) -> CronJob | None:
    row = await connection.fetchrow("SELECT * FROM cron_jobs WHERE id = $1", cron_job_id)
    return None if row is None else cron_job_from(row, CODEC)


async def list_cron_jobs(connection: Conn) -> list[CronJob]:
    rows = await connection.fetch("SELECT * FROM cron_jobs ORDER BY name")
    return [cron_job_from(row, CODEC) for row in rows]


async def update_cron_job(
    connection: Conn, cron_job_id: UUID, changes: CronJobChanges, now: datetime
) -> CronJob:
    columns = cron_columns(changes, CODEC)
    columns["updated_at"] = utc(now)
    assignments = ", ".join(f"{column} = ${index}" for index, column in enumerate(columns, 2))
    try:
        row = await connection.fetchrow(
            f"UPDATE cron_jobs SET {assignments} WHERE id = $1 RETURNING *",
            cron_job_id,
            *columns.values(),
        )
    except asyncpg.UniqueViolationError as error:
        name = changes.name
        raise CronJobNameTaken(f"a cron job named {name!r} exists", field="name") from error
    if row is None:
        raise _not_found(cron_job_id)
    updated = cron_job_from(row, CODEC)
    if changes.rate_limits is not UNSET:
        await set_rate_limits(connection, cron_job_id, changes.rate_limits)
        updated = replace(updated, rate_limits=changes.rate_limits)
    return updated


_UNKNOWN = (
    "a cron job names rate limit {}, which does not exist (POST /api/rate-limits creates one)"
)


async def set_rate_limits(
    connection: Conn, cron_job_id: UUID, uses: Sequence[RateLimitUse]
) -> None:
    """The job's rate limits become ``uses`` (its column and its ``cron_job_rate_limits``
    rows), in the caller's transaction; ``RateLimitUnknown`` for a limit that does not exist
    or more units than it allows, as for a task. The foreign key holds the limits' rows
    (``KEY SHARE``): a delete of one of them waits, then takes it out of the job."""
    await connection.execute("DELETE FROM cron_job_rate_limits WHERE cron_job_id = $1", cron_job_id)
    await connection.execute(
        "UPDATE cron_jobs SET rate_limits = $2 WHERE id = $1", cron_job_id, uses_json(uses)
    )
    if not uses:
        return
    names, units = [use.name for use in uses], [use.units for use in uses]
    missing = await connection.fetchval(
        "SELECT n FROM unnest($1::text[]) AS n"
        " WHERE NOT EXISTS (SELECT 1 FROM rate_limits WHERE name = n) LIMIT 1",
        names,
    )
    try:
        if missing is not None:
            raise RateLimitUnknown(_UNKNOWN.format(repr(missing)), field="rate_limits")
        await connection.execute(
            "INSERT INTO cron_job_rate_limits (cron_job_id, name, units)"
            " SELECT $1, u.name, u.units FROM unnest($2::text[], $3::int[]) AS u(name, units)",
            cron_job_id,
            names,
            units,
        )
    except asyncpg.ForeignKeyViolationError as error:  # deleted since the read above
        raise RateLimitUnknown(_UNKNOWN.format("a rate limit"), field="rate_limits") from error
    await rates_sql.check_cron_units(connection, cron_job_id)


async def delete_cron_job(connection: Conn, cron_job_id: UUID) -> None:
    if await connection.execute("DELETE FROM cron_jobs WHERE id = $1", cron_job_id) == "DELETE 0":
        raise _not_found(cron_job_id)


async def due_cron_jobs(connection: Conn, until: datetime, limit: int) -> list[CronJob]:
    rows = await connection.fetch(
        "SELECT * FROM cron_jobs WHERE enabled AND next_fire_at <= $1"
        " ORDER BY next_fire_at, id LIMIT $2",
        utc(until),
        limit,
    )
    return [cron_job_from(row, CODEC) for row in rows]


async def fire_cron_tick(
    connection: Conn,
    cron_job_id: UUID,
    tick_at: datetime,
    next_fire_at: datetime | None,
    task: NewTask | None,
    outcome: TickOutcome,
    reason: str | None,
    now: datetime,
    aging: Aging,
) -> Task | None:
    tick, stamp = utc(tick_at), utc(now)
    try:
        won = await connection.fetchval(
            """
            INSERT INTO cron_ticks (cron_job_id, tick_at, outcome, reason, recorded_at)
            VALUES ($1, $2, $3, $4, $5)
            ON CONFLICT (cron_job_id, tick_at) DO NOTHING
            RETURNING true""",
            cron_job_id,
            tick,
            outcome.value,
            reason,
            stamp,
        )
    except asyncpg.ForeignKeyViolationError as error:
        raise _not_found(cron_job_id) from error
    if not won:
        return None
    created: Task | None = None
    if task is not None:
        [(created, _)] = await insert_tasks(connection, [task], now, aging)
        await connection.execute(
            "UPDATE cron_ticks SET task_id = $3 WHERE cron_job_id = $1 AND tick_at = $2",
            cron_job_id,
            tick,
            created.id,
        )
    await connection.execute(
        """
        UPDATE cron_jobs
        SET next_fire_at = $2,
            last_fire_at = CASE WHEN $3 = 'fired' THEN $4 ELSE last_fire_at END,
            last_task_id = coalesce($5, last_task_id),
            updated_at = $6
        WHERE id = $1""",
        cron_job_id,
        CODEC.put_time(next_fire_at),
        outcome.value,
        tick,
        None if created is None else created.id,
        stamp,
    )
    return created


_INSERT_TICKS = """
INSERT INTO cron_ticks (cron_job_id, tick_at, outcome, reason, recorded_at)
SELECT f.job_id, f.tick_at, f.outcome, f.reason, $5
FROM unnest($1::uuid[], $2::timestamptz[], $3::text[], $4::text[])
     WITH ORDINALITY AS f(job_id, tick_at, outcome, reason, n)
WHERE EXISTS (SELECT 1 FROM cron_jobs AS j WHERE j.id = f.job_id)
ORDER BY f.n
ON CONFLICT (cron_job_id, tick_at) DO NOTHING
RETURNING cron_job_id, tick_at"""

_LINK_TASKS = """
UPDATE cron_ticks AS c SET task_id = f.task_id
FROM unnest($1::uuid[], $2::timestamptz[], $3::uuid[]) AS f(job_id, tick_at, task_id)
WHERE c.cron_job_id = f.job_id AND c.tick_at = f.tick_at"""

_ADVANCE_JOBS = """
UPDATE cron_jobs AS j
SET next_fire_at = f.next_fire_at,
    last_fire_at = CASE WHEN f.outcome = 'fired' THEN f.tick_at ELSE j.last_fire_at END,
    last_task_id = coalesce(f.task_id, j.last_task_id),
    updated_at = $6
FROM unnest($1::uuid[], $2::timestamptz[], $3::text[], $4::timestamptz[], $5::uuid[])
     AS f(job_id, next_fire_at, outcome, tick_at, task_id)
WHERE j.id = f.job_id"""


async def fire_cron_ticks(
    connection: Conn, fires: Sequence[CronFire], now: datetime, aging: Aging
) -> list[tuple[bool, Task | None]]:
    """Four statements whatever the number of ticks: insert the ticks (in (job, tick) order,
    so concurrent nodes queue on the same keys in the same order), insert the winners'
    tasks, link them to their ticks, advance the winners' jobs; plus, for each won tick of a
    job that starts workflows, its workflow (``create_workflow``) and the tick's link."""
    stamp = utc(now)
    ordered = sorted(fires, key=lambda fire: (fire.cron_job_id, fire.tick_at))
    try:
        rows = await connection.fetch(
            _INSERT_TICKS,
            [fire.cron_job_id for fire in ordered],
            [utc(fire.tick_at) for fire in ordered],
            [fire.outcome.value for fire in ordered],
            [fire.reason for fire in ordered],
            stamp,
        )
    except asyncpg.ForeignKeyViolationError as error:  # a job deleted at this very moment
        raise CronJobNotFound("a cron job being fired was deleted", field="cron_job_id") from error
    won_keys = {(uid(row["cron_job_id"]), row["tick_at"]) for row in rows}
    won = [fire for fire in ordered if (fire.cron_job_id, fire.tick_at) in won_keys]
    firing = [fire for fire in won if fire.task is not None]
    created: dict[tuple[UUID, datetime], Task] = {}
    if firing:
        inserted = await insert_tasks(connection, [f.task for f in firing if f.task], now, aging)
        for fire, (task, _) in zip(firing, inserted, strict=True):
            created[(fire.cron_job_id, fire.tick_at)] = task
        await connection.execute(
            _LINK_TASKS,
            [fire.cron_job_id for fire in firing],
            [utc(fire.tick_at) for fire in firing],
            [created[(fire.cron_job_id, fire.tick_at)].id for fire in firing],
        )
    for fire in won:  # a workflow cron job: the tick starts one, in this transaction
        if fire.workflow is not None:
            workflow = fire.workflow
            started = await create_workflow(
                connection, workflow, check_workflow(workflow), now, aging
            )
            await connection.execute(
                "UPDATE cron_ticks SET workflow_id = $3 WHERE cron_job_id = $1 AND tick_at = $2",
                fire.cron_job_id,
                utc(fire.tick_at),
                started.id,
            )
    if won:
        tasks = [created.get((fire.cron_job_id, fire.tick_at)) for fire in won]
        await connection.execute(
            _ADVANCE_JOBS,
            [fire.cron_job_id for fire in won],
            [CODEC.put_time(fire.next_fire_at) for fire in won],
            [fire.outcome.value for fire in won],
            [utc(fire.tick_at) for fire in won],
            [None if task is None else task.id for task in tasks],
            stamp,
        )
    settled: list[tuple[bool, Task | None]] = []
    for fire in fires:
        key = (fire.cron_job_id, fire.tick_at)
        settled.append((key in won_keys, created.get(key)))
    return settled


async def list_cron_ticks(connection: Conn, cron_job_id: UUID, limit: int) -> list[CronTick]:
    rows = await connection.fetch(
        "SELECT * FROM cron_ticks WHERE cron_job_id = $1 ORDER BY tick_at DESC LIMIT $2",
        cron_job_id,
        limit,
    )
    return [cron_tick_from(row, CODEC) for row in rows]
