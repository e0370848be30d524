"""SQLite: cron jobs and their ticks."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from uuid import UUID

from hetuflow.errors import CronJobNameTaken, CronJobNotFound
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
from hetuflow.store import _sqlite_rate_limits as rates_sql
from hetuflow.store._claims import Aging
from hetuflow.store._rows import cron_columns, cron_job_from, cron_tick_from, uses_json
from hetuflow.store._sqlite_db import CODEC, json_rows, micros
from hetuflow.store._sqlite_tasks import insert_task
from hetuflow.store._sqlite_workflows import create_workflow
from hetuflow.workflows import NewWorkflow, check_workflow


def _name_taken(name: object) -> CronJobNameTaken:
    return CronJobNameTaken(f"a cron job named {name!r} exists", field="name")


def create_cron_job(
    connection: sqlite3.Connection, job: NewCronJob, next_fire_at: datetime | None, now: datetime
) -> CronJob:
    job_id = str(uuid.uuid4())
    stamp = micros(now)
    try:
        row = connection.execute(
            """
            INSERT INTO cron_jobs (
                id, name, cron_expression, timezone, task_type, payload, priority,
                required_capabilities, timeout_seconds, max_retries, backoff_seconds,
                backoff_factor, max_backoff_seconds, enabled, misfire_policy, catch_up_limit,
                overlap_policy, start_deadline_seconds, next_fire_at, created_at, updated_at,
                concurrency_key, max_concurrent_per_key, workflow, backoff_jitter, retry_on,
                webhook_url, concurrency_strategy)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?,
                    ?, ?)
            RETURNING *""",
            (
                job_id,
                job.name,
                job.cron_expression,
                job.timezone,
                job.task_type,
                CODEC.put_json(job.payload),
                job.priority.rank,
                CODEC.put_texts(job.required_capabilities),
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
                stamp,
                stamp,
                job.concurrency_key,
                job.max_concurrent_per_key,
                None if job.workflow is None else CODEC.put_json(job.workflow),
                job.retry.jitter,
                CODEC.put_texts(job.retry.retry_on),
                job.webhook_url,
                job.concurrency_strategy.value,
            ),
        ).fetchone()
    except sqlite3.IntegrityError as error:
        raise _name_taken(job.name) from error
    created = cron_job_from(row, CODEC)
    if job.rate_limits:
        set_rate_limits(connection, job_id, job.rate_limits)
        created = replace(created, rate_limits=job.rate_limits)
    return created


def get_cron_job(connection: sqlite3.Connection, cron_job_id: UUID) -> CronJob | None:
    row = connection.execute("SELECT * FROM cron_jobs WHERE id = ?", (str(cron_job_id),)).fetchone()
    return None if row is None else cron_job_from(row, CODEC)


def list_cron_jobs(connection: sqlite3.Connection) -> list[CronJob]:
    rows = connection.execute("SELECT * FROM cron_jobs ORDER BY name")
    return [cron_job_from(row, CODEC) for row in rows]


def update_cron_job(
    connection: sqlite3.Connection, cron_job_id: UUID, changes: CronJobChanges, now: datetime
) -> CronJob:
    columns = cron_columns(changes, CODEC)
    columns["updated_at"] = micros(now)
    assignments = ", ".join(f"{column} = ?" for column in columns)
    try:
        row = connection.execute(
            f"UPDATE cron_jobs SET {assignments} WHERE id = ? RETURNING *",
            (*columns.values(), str(cron_job_id)),
        ).fetchone()
    except sqlite3.IntegrityError as error:
        raise _name_taken(changes.name) from error
    if row is None:
        raise CronJobNotFound(f"cron job {cron_job_id} does not exist", field="cron_job_id")
    updated = cron_job_from(row, CODEC)
    if changes.rate_limits is not UNSET:
        set_rate_limits(connection, str(cron_job_id), changes.rate_limits)
        updated = replace(updated, rate_limits=changes.rate_limits)
    return updated


def set_rate_limits(
    connection: sqlite3.Connection, cron_job_id: str, uses: Sequence[RateLimitUse]
) -> None:
    """The job's rate limits become ``uses`` (its column and its ``cron_job_rate_limits``
    rows); ``RateLimitUnknown`` (the caller's transaction rolls back) for a limit that does
    not exist or more units than it allows, as for a task."""
    connection.execute("DELETE FROM cron_job_rate_limits WHERE cron_job_id = ?", (cron_job_id,))
    column = uses_json(uses)
    connection.execute(
        "UPDATE cron_jobs SET rate_limits = ? WHERE id = ?",
        (None if column is None else CODEC.put_json(column), cron_job_id),
    )
    if not uses:
        return
    document = json_rows([(cron_job_id, use.name, use.units) for use in uses])
    rates_sql.check_uses(connection, document, "a cron job")
    connection.execute(
        "INSERT INTO cron_job_rate_limits (cron_job_id, name, units)"
        " SELECT c.value ->> 0, c.value ->> 1, c.value ->> 2 FROM json_each(?) AS c",
        (document,),
    )


def delete_cron_job(connection: sqlite3.Connection, cron_job_id: UUID) -> None:
    cursor = connection.execute("DELETE FROM cron_jobs WHERE id = ?", (str(cron_job_id),))
    if cursor.rowcount == 0:
        raise CronJobNotFound(f"cron job {cron_job_id} does not exist", field="cron_job_id")


def due_cron_jobs(connection: sqlite3.Connection, until: datetime, limit: int) -> list[CronJob]:
    rows = connection.execute(
        "SELECT * FROM cron_jobs WHERE enabled = 1 AND next_fire_at <= ?"
        " ORDER BY next_fire_at, id LIMIT ?",
        (micros(until), limit),
    )
    return [cron_job_from(row, CODEC) for row in rows]


def fire_cron_tick(
    connection: sqlite3.Connection,
    cron_job_id: UUID,
    tick_at: datetime,
    next_fire_at: datetime | None,
    task: NewTask | None,
    outcome: TickOutcome,
    reason: str | None,
    now: datetime,
    aging: Aging,
) -> Task | None:
    return _fire(connection, cron_job_id, tick_at, next_fire_at, task, outcome, reason, now, aging)[
        1
    ]


def _fire(
    connection: sqlite3.Connection,
    cron_job_id: UUID,
    tick_at: datetime,
    next_fire_at: datetime | None,
    task: NewTask | None,
    outcome: TickOutcome,
    reason: str | None,
    now: datetime,
    aging: Aging,
    workflow: NewWorkflow | None = None,
) -> tuple[bool, Task | None]:
    job_key, tick_key, stamp = str(cron_job_id), micros(tick_at), micros(now)
    try:
        won = connection.execute(
            """
            INSERT INTO cron_ticks (cron_job_id, tick_at, outcome, reason, recorded_at)
            VALUES (?, ?, ?, ?, ?)
            ON CONFLICT (cron_job_id, tick_at) DO NOTHING
            RETURNING cron_job_id""",
            (job_key, tick_key, outcome.value, reason, stamp),
        ).fetchone()
    except sqlite3.IntegrityError as error:
        raise CronJobNotFound(
            f"cron job {cron_job_id} does not exist", field="cron_job_id"
        ) from error
    if won is None:
        return False, None
    created: Task | None = None
    if task is not None:
        created, _ = insert_task(connection, task, now, aging)
        connection.execute(
            "UPDATE cron_ticks SET task_id = ? WHERE cron_job_id = ? AND tick_at = ?",
            (str(created.id), job_key, tick_key),
        )
    if workflow is not None:  # a workflow cron job: the tick starts one, in this transaction
        started = create_workflow(connection, workflow, check_workflow(workflow), now, aging)
        connection.execute(
            "UPDATE cron_ticks SET workflow_id = ? WHERE cron_job_id = ? AND tick_at = ?",
            (str(started.id), job_key, tick_key),
        )
    connection.execute(
        """
        UPDATE cron_jobs
        SET next_fire_at = ?,
            last_fire_at = CASE WHEN ? = 'fired' THEN ? ELSE last_fire_at END,
            last_task_id = coalesce(?, last_task_id),
            updated_at = ?
        WHERE id = ?""",
        (
            CODEC.put_time(next_fire_at),
            outcome.value,
            tick_key,
            None if created is None else str(created.id),
            stamp,
            job_key,
        ),
    )
    return True, created


def fire_cron_ticks(
    connection: sqlite3.Connection, fires: Sequence[CronFire], now: datetime, aging: Aging
) -> list[tuple[bool, Task | None]]:
    """Each fire as ``fire_cron_tick``, in (job, tick) order, in the caller's transaction; a
    job that no longer exists loses (SQLite rolls back only the failed statement)."""
    settled: list[tuple[bool, Task | None]] = [(False, None)] * len(fires)
    order = sorted(range(len(fires)), key=lambda i: (str(fires[i].cron_job_id), fires[i].tick_at))
    for index in order:
        fire = fires[index]
        try:
            won, task = _fire(
                connection,
                fire.cron_job_id,
                fire.tick_at,
                fire.next_fire_at,
                fire.task,
                fire.outcome,
                fire.reason,
                now,
                aging,
                fire.workflow,
            )
        except CronJobNotFound:
            continue
        settled[index] = (won, task)
    return settled


def list_cron_ticks(
    connection: sqlite3.Connection, cron_job_id: UUID, limit: int
) -> list[CronTick]:
    rows = connection.execute(
        "SELECT * FROM cron_ticks WHERE cron_job_id = ? ORDER BY tick_at DESC LIMIT ?",
        (str(cron_job_id), limit),
    )
    return [cron_tick_from(row, CODEC) for row in rows]
