"""PostgreSQL: replays and the console's per-task-type statistics (see ``Store.replay_task``,
``Store.task_type_stats``, ``Store.count_pending_groups``)."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta
from uuid import UUID

from hetuflow.clock import utc
from hetuflow.errors import TaskNotFinished, TaskNotFound
from hetuflow.models import (
    PendingGroup,
    Percentiles,
    Task,
    TaskStatus,
    TaskTypeStats,
    TimelineBucket,
    spec_of,
)
from hetuflow.store._claims import Aging
from hetuflow.store._pg_db import CODEC, Conn
from hetuflow.store._pg_tasks import TERMINAL_SQL, insert_tasks
from hetuflow.store._rows import task_from


async def replay_task(connection: Conn, task_id: UUID, now: datetime, aging: Aging) -> Task:
    # FOR SHARE: the cleanup loop cannot delete the original while its replay is written.
    row = await connection.fetchrow("SELECT * FROM tasks WHERE id = $1 FOR SHARE", task_id)
    if row is None:
        raise TaskNotFound(f"no task with id {task_id}", field="task_id")
    source = task_from(row, CODEC)
    if not source.status.is_terminal:
        raise TaskNotFinished(
            f"only a finished task can be replayed; this one is {source.status}", field="task_id"
        )
    [(task, _)] = await insert_tasks(connection, [spec_of(source)], now, aging)
    await connection.execute("UPDATE tasks SET replay_of = $1 WHERE id = $2", source.id, task.id)
    return dataclasses.replace(task, replay_of=source.id)


def _summary(group: str) -> str:
    """The rest of a summary read after its ``recent`` CTE (the tasks summarised, with
    ``status``, ``started_at``, ``finished_at``, ``due_at`` and the ``group`` column): per
    group, the count by status and the wait and run p50 and p95."""
    return f"""
, counts AS (
    SELECT {group}, jsonb_object_agg(status, n) AS by_status
    FROM (SELECT {group}, status, count(*) AS n FROM recent GROUP BY {group}, status) c
    GROUP BY {group}
), durations AS (
    SELECT {group},
           percentile_disc(0.5) WITHIN GROUP (ORDER BY wait) AS wait_p50,
           percentile_disc(0.95) WITHIN GROUP (ORDER BY wait) AS wait_p95,
           percentile_disc(0.5) WITHIN GROUP (ORDER BY run) AS run_p50,
           percentile_disc(0.95) WITHIN GROUP (ORDER BY run) AS run_p95
    FROM (SELECT {group},
                 extract(epoch FROM started_at - due_at)::float8 AS wait,
                 extract(epoch FROM finished_at - started_at)::float8 AS run
          FROM recent WHERE started_at IS NOT NULL) s
    GROUP BY {group}
)
SELECT c.{group}, c.by_status, d.wait_p50, d.wait_p95, d.run_p50, d.run_p95
FROM counts c LEFT JOIN durations d USING ({group})
ORDER BY c.{group}"""


_TYPE_STATS = """
WITH recent AS (
    SELECT task_type, status, started_at, finished_at,
           CASE WHEN scheduled_at <= started_at THEN greatest(scheduled_at, created_at)
                ELSE created_at END AS due_at
    FROM tasks
    WHERE created_at >= $1
    ORDER BY created_at DESC
    LIMIT $2
)""" + _summary("task_type")
"""One read. ``percentile_disc``: the value at rank ceil(p * N) (nearest rank), as the SQLite
store computes it; aggregates skip NULLs, so unfinished tasks only count for the wait."""


async def task_type_stats(connection: Conn, since: datetime, limit: int) -> list[TaskTypeStats]:
    rows = await connection.fetch(_TYPE_STATS, since, limit)
    return [
        TaskTypeStats(
            task_type=row["task_type"],
            by_status={
                TaskStatus(status): count for status, count in CODEC.json(row["by_status"]).items()
            },
            queue_wait=Percentiles(p50=row["wait_p50"], p95=row["wait_p95"]),
            run_time=Percentiles(p50=row["run_p50"], p95=row["run_p95"]),
        )
        for row in rows
    ]


_TIMELINE = f"""
WITH recent AS (
    SELECT floor(extract(epoch FROM finished_at - $1) / $2)::int AS bucket, status,
           started_at, finished_at,
           CASE WHEN scheduled_at <= started_at THEN greatest(scheduled_at, created_at)
                ELSE created_at END AS due_at
    FROM tasks
    WHERE finished_at >= $1 AND finished_at < $3 AND status IN {TERMINAL_SQL}
    ORDER BY finished_at DESC
    LIMIT $4
)""" + _summary("bucket")
"""One read through ``tasks_finished``; percentiles as in ``_TYPE_STATS``."""


async def task_timeline(
    connection: Conn, since: datetime, bucket_seconds: int, buckets: int, limit: int
) -> list[TimelineBucket]:
    until = since + timedelta(seconds=bucket_seconds * buckets)
    rows = await connection.fetch(_TIMELINE, utc(since), float(bucket_seconds), utc(until), limit)
    return [
        TimelineBucket(
            index=row["bucket"],
            by_status={
                TaskStatus(status): count for status, count in CODEC.json(row["by_status"]).items()
            },
            queue_wait=Percentiles(p50=row["wait_p50"], p95=row["wait_p95"]),
            run_time=Percentiles(p50=row["run_p50"], p95=row["run_p95"]),
        )
        for row in rows
    ]


async def count_pending_groups(connection: Conn, now: datetime, limit: int) -> list[PendingGroup]:
    rows = await connection.fetch(
        """
        SELECT task_type, required_capabilities, count(*) AS n
        FROM tasks
        WHERE status = 'pending' AND scheduled_at <= $1
        GROUP BY task_type, required_capabilities
        ORDER BY n DESC, task_type, required_capabilities
        LIMIT $2""",
        now,
        limit,
    )
    return [PendingGroup(row[0], CODEC.texts(row[1]), row[2]) for row in rows]
