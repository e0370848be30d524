"""Statistics for the console: per-type counts and durations, the timeline of finished tasks
over a window, unserved tasks."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import Field

from hetuflow.models import (
    TERMINAL_TASK_STATUSES,
    PendingReason,
    TaskStatus,
    TaskTypeStats,
    TimelineBucket,
)
from hetuflow.server.api.deps import Context
from hetuflow.server.api.errors import error_responses
from hetuflow.server.api.schemas import _Output
from hetuflow.server.insights import (
    CHART_WINDOWS,
    MAX_WINDOW_SECONDS,
    TIMELINE_SAMPLE,
    TYPE_STATS_SAMPLE,
    TaskInsights,
)

router = APIRouter(prefix="/api/stats", tags=["system"])
TERMINAL = sorted(TERMINAL_TASK_STATUSES)


class PercentilesOut(_Output):
    p50: float | None = Field(description="Seconds; null when nothing was measured.")
    p95: float | None


class TaskTypeOut(_Output):
    task_type: str
    total: int
    by_status: dict[TaskStatus, int] = Field(description="Every status, zeros included.")
    queue_wait_seconds: PercentilesOut = Field(
        description="From when a task became due to its first start (tasks that started)."
    )
    run_seconds: PercentilesOut = Field(
        description="From its first start to its finish, retries included (finished tasks)."
    )

    @classmethod
    def of(cls, item: TaskTypeStats) -> TaskTypeOut:
        return cls(
            task_type=item.task_type,
            total=sum(item.by_status.values()),
            by_status={status: item.by_status.get(status, 0) for status in TaskStatus},
            queue_wait_seconds=PercentilesOut(p50=item.queue_wait.p50, p95=item.queue_wait.p95),
            run_seconds=PercentilesOut(p50=item.run_time.p50, p95=item.run_time.p95),
        )


class TaskTypesOut(_Output):
    since: datetime = Field(description="Tasks created at or after this instant are counted.")
    window_seconds: float
    items: list[TaskTypeOut] = Field(description="By task type name.")
    sampled: int = Field(description="Tasks counted.")
    truncated: bool = Field(
        description=f"The window held more than {TYPE_STATS_SAMPLE} tasks: only the newest "
        f"{TYPE_STATS_SAMPLE} are counted."
    )


WindowName = Literal["15m", "1h", "6h", "24h", "7d"]


class TimelineBucketOut(_Output):
    start: datetime = Field(description="The bucket holds tasks finished from here on.")
    by_status: dict[TaskStatus, int] = Field(
        description="Tasks finished in the bucket, by terminal status (zeros included)."
    )
    queue_wait_seconds: PercentilesOut = Field(
        description="Of the tasks finished in the bucket that started: from due to first start."
    )
    run_seconds: PercentilesOut = Field(
        description="Of the tasks finished in the bucket that started: from first start to "
        "finish, retries included."
    )

    @classmethod
    def of(cls, item: TimelineBucket, start: datetime) -> TimelineBucketOut:
        return cls(
            start=start,
            by_status={status: item.by_status.get(status, 0) for status in TERMINAL},
            queue_wait_seconds=PercentilesOut(p50=item.queue_wait.p50, p95=item.queue_wait.p95),
            run_seconds=PercentilesOut(p50=item.run_time.p50, p95=item.run_time.p95),
        )


class TimelineOut(_Output):
    window: WindowName
    bucket_seconds: int = Field(description="The width of every bucket.")
    since: datetime = Field(description="The start of the first bucket.")
    buckets: list[TimelineBucketOut] = Field(
        description="Oldest first, every bucket of the window (the last one holds now)."
    )
    sampled: int = Field(description="Finished tasks counted.")
    truncated: bool = Field(
        description=f"The window held more than {TIMELINE_SAMPLE} finished tasks: only the "
        f"newest {TIMELINE_SAMPLE} are counted."
    )


class UnservedOut(_Output):
    task_type: str
    required_capabilities: list[str]
    pending: int = Field(description="Due pending tasks of this type and capability set.")
    reason: PendingReason = Field(
        description="`no_agent_for_task_type` (no online, enabled agent supports the type) or "
        "`no_agent_with_capabilities` (some do, none has every required capability)."
    )


class UnservedList(_Output):
    items: list[UnservedOut] = Field(description="Largest groups first.")
    total: int = Field(description="Unserved pending tasks over the groups listed.")


async def get_insights(context: Context) -> TaskInsights:
    return TaskInsights(context.store, context.clock)


Insights = Annotated[TaskInsights, Depends(get_insights)]


@router.get(
    "/task-types",
    response_model=TaskTypesOut,
    summary="Tasks grouped by task type",
    responses=error_responses(422),
)
async def task_types(
    insights: Insights,
    window_seconds: Annotated[
        float,
        Query(gt=0, le=MAX_WINDOW_SECONDS, description="Look back this far (default 24 h)."),
    ] = 24 * 3600.0,
) -> TaskTypesOut:
    """Per task type, over the tasks created in the last `window_seconds` (at most 7 days;
    the newest 50 000 of them): counts by status, and queue wait and run time
    p50 / p95 in seconds (nearest-rank percentiles). One database read."""
    window = await insights.task_types(window_seconds=window_seconds)
    return TaskTypesOut(
        since=window.since,
        window_seconds=window_seconds,
        items=[TaskTypeOut.of(item) for item in window.items],
        sampled=window.sampled,
        truncated=window.truncated,
    )


@router.get(
    "/timeline",
    response_model=TimelineOut,
    summary="Finished tasks and their durations over a window",
    responses=error_responses(422),
)
async def timeline(
    insights: Insights,
    window: Annotated[
        WindowName,
        Query(
            description="How far back: `15m` (30-second buckets), `1h` (1 minute), `6h` "
            "(5 minutes), `24h` (20 minutes) or `7d` (2 hours). Anything else is a 422."
        ),
    ] = "1h",
) -> TimelineOut:
    """The tasks that finished in the window, bucket by bucket (30 to 84 buckets): counts by
    terminal status (the console's throughput and failure charts) and queue wait and run time
    p50 / p95 in seconds (nearest rank; its duration chart). At most the newest 100 000
    finished tasks of the window are read. One database read."""
    found = await insights.timeline(CHART_WINDOWS[window])
    width = timedelta(seconds=found.window.bucket_seconds)
    return TimelineOut(
        window=window,
        bucket_seconds=found.window.bucket_seconds,
        since=found.since,
        buckets=[
            TimelineBucketOut.of(bucket, found.since + width * bucket.index)
            for bucket in found.buckets
        ],
        sampled=found.sampled,
        truncated=found.truncated,
    )


@router.get(
    "/unserved",
    response_model=UnservedList,
    summary="Tasks no agent can run",
)
async def unserved(insights: Insights) -> UnservedList:
    """Due pending tasks that wait because no online, enabled agent supports their task type
    or has their required capabilities, grouped by (task type, capabilities), largest first
    (at most 200 groups of pending tasks are examined). Tasks that only
    wait for a busy agent or the global limit are not listed."""
    items = [
        UnservedOut(
            task_type=item.task_type,
            required_capabilities=list(item.required_capabilities),
            pending=item.count,
            reason=item.reason,
        )
        for item in await insights.unserved()
    ]
    return UnservedList(items=items, total=sum(item.pending for item in items))
