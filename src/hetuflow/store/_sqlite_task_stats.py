"""SQLite: replays and the console's per-task-type statistics (see ``Store.replay_task``,
``Store.task_type_stats``, ``Store.count_pending_groups``)."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections import defaultdict
from datetime import datetime
from uuid import UUID

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
from hetuflow.store._sqlite_db import CODEC, micros
from hetuflow.store._sqlite_tasks import TERMINAL_SQL, create_tasks, get_task


def replay_task(connection: sqlite3.Connection, task_id: UUID, now: datetime, aging: Aging) -> Task:
    source = get_task(connection, task_id)
    if source is None:
        raise TaskNotFound(f"no task with id {task_id}", field="task_id")
    if not source.status.is_terminal:
        raise TaskNotFinished(
            f"only a finished task can be replayed; this one is {source.status}", field="task_id"
        )
    [(task, _)] = create_tasks(connection, [spec_of(source)], now, aging)
    connection.execute(
        "UPDATE tasks SET replay_of = ? WHERE id = ?", (str(source.id), str(task.id))
    )
    return dataclasses.replace(task, replay_of=source.id)


def _summary(group: str) -> str:
    """The rest of a summary read after its ``recent`` CTE (the tasks summarised, with
    ``status``, ``started_at``, ``finished_at``, ``due_at`` and the ``group`` column): rows of
    (kind, group, what, value): each status's count, then the wait and run p50 and p95."""
    return f"""
, durations AS (
    SELECT 'wait' AS kind, {group}, started_at - due_at AS d
    FROM recent WHERE started_at IS NOT NULL
    UNION ALL
    SELECT 'run', {group}, finished_at - started_at
    FROM recent WHERE started_at IS NOT NULL AND finished_at IS NOT NULL
), ranked AS (
    SELECT kind, {group}, d,
           row_number() OVER (PARTITION BY kind, {group} ORDER BY d) AS n,
           count(*) OVER (PARTITION BY kind, {group}) AS total
    FROM durations
)
SELECT 'count' AS kind, {group}, status AS what, count(*) AS value
FROM recent GROUP BY {group}, status
UNION ALL
SELECT kind, {group}, 'p50', d FROM ranked WHERE n = (total * 50 + 99) / 100
UNION ALL
SELECT kind, {group}, 'p95', d FROM ranked WHERE n = (total * 95 + 99) / 100"""


_TYPE_STATS = """
WITH recent AS (
    SELECT task_type, status, started_at, finished_at,
           CASE WHEN scheduled_at <= started_at THEN max(scheduled_at, created_at)
                ELSE created_at END AS due_at
    FROM tasks
    WHERE created_at >= ?
    ORDER BY created_at DESC
    LIMIT ?
)""" + _summary("task_type")
"""One read. Percentiles by nearest rank (the value at rank ceil(p * N)), as PostgreSQL's
``percentile_disc``; durations in microseconds."""


def task_type_stats(
    connection: sqlite3.Connection, since: datetime, limit: int
) -> list[TaskTypeStats]:
    counts: dict[str, dict[TaskStatus, int]] = defaultdict(dict)
    marks: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
    for kind, task_type, what, value in connection.execute(_TYPE_STATS, (micros(since), limit)):
        if kind == "count":
            counts[task_type][TaskStatus(what)] = value
        else:
            marks[(kind, task_type)][what] = value / 1_000_000
    return [
        TaskTypeStats(
            task_type=task_type,
            by_status=by_status,
            queue_wait=_percentiles(marks.get(("wait", task_type))),
            run_time=_percentiles(marks.get(("run", task_type))),
        )
        for task_type, by_status in sorted(counts.items())
    ]


def _percentiles(found: dict[str, float] | None) -> Percentiles:
    if not found:
        return Percentiles()
    return Percentiles(p50=found.get("p50"), p95=found.get("p95"))


_TIMELINE = f"""
WITH recent AS (
    SELECT (finished_at - ?1) / ?2 AS bucket, status, started_at, finished_at,
           CASE WHEN scheduled_at <= started_at THEN max(scheduled_at, created_at)
                ELSE created_at END AS due_at
    FROM tasks
    WHERE finished_at >= ?1 AND finished_at < ?3 AND status IN {TERMINAL_SQL}
    ORDER BY finished_at DESC
    LIMIT ?4
)""" + _summary("bucket")
"""One read through ``tasks_finished``; percentiles as in ``_TYPE_STATS``."""


def task_timeline(
    connection: sqlite3.Connection, since: datetime, bucket_seconds: int, buckets: int, limit: int
) -> list[TimelineBucket]:
    start = micros(since)
    width = bucket_seconds * 1_000_000
    counts: dict[int, dict[TaskStatus, int]] = defaultdict(dict)
    marks: dict[tuple[str, int], dict[str, float]] = defaultdict(dict)
    rows = connection.execute(_TIMELINE, (start, width, start + width * buckets, limit))
    for kind, bucket, what, value in rows:
        if kind == "count":
            counts[bucket][TaskStatus(what)] = value
        else:
            marks[(kind, bucket)][what] = value / 1_000_000
    return [
        TimelineBucket(
            index=bucket,
            by_status=by_status,
            queue_wait=_percentiles(marks.get(("wait", bucket))),
            run_time=_percentiles(marks.get(("run", bucket))),
        )
        for bucket, by_status in sorted(counts.items())
    ]


def count_pending_groups(
    connection: sqlite3.Connection, now: datetime, limit: int
) -> list[PendingGroup]:
    rows = connection.execute(
        """
        SELECT task_type, required_capabilities, count(*) AS n
        FROM tasks
        WHERE status = 'pending' AND scheduled_at <= ?
        GROUP BY task_type, required_capabilities
        ORDER BY n DESC, task_type, required_capabilities
        LIMIT ?""",
        (micros(now), limit),
    )
    return [PendingGroup(row[0], CODEC.texts(row[1]), row[2]) for row in rows]
