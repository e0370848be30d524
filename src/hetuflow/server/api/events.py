"""``GET /api/events``: a Server-Sent Events stream of dashboard snapshots for the console;
``GET /api/workflows/{id}/events``: one workflow's step transitions, for its DAG view.

Each ``snapshot`` event carries the counts of tasks by status, agents online and busy, tasks
finished per minute over the last hour by status (throughput and failures), and the next cron
fires. A snapshot is sent when it differs from the last one sent, checked every second, and at
least every ``KEEPALIVE_SECONDS``. Snapshots are built at most once per second per app,
however many consoles are watching.

The workflow stream sends the whole workflow first (``event: workflow``, the body of
``GET /api/workflows/{id}``), then ``event: step`` for each step whose status changed (the
step, and ``previous``: its status before) and ``event: workflow`` again when the set of steps
changed. It reads the workflow every ``WORKFLOW_POLL_SECONDS`` while the stream is open.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from hetuflow.errors import HetuflowError, WorkflowNotFound
from hetuflow.models import TERMINAL_TASK_STATUSES, AgentStatus, TaskStatus
from hetuflow.server.api.errors import error_responses
from hetuflow.server.api.workflow_schemas import WorkflowOut, WorkflowStepOut
from hetuflow.server.context import ServerContext
from hetuflow.workflows import Workflow

router = APIRouter(tags=["monitoring"])

POLL_SECONDS = 1.0
KEEPALIVE_SECONDS = 15.0
WINDOW_MINUTES = 60
NEXT_FIRES = 5
RETRY_MILLISECONDS = 2000
WORKFLOW_POLL_SECONDS = 0.5


def _iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


async def build_snapshot(context: ServerContext) -> dict[str, Any]:
    """The dashboard's numbers, read from the Store (a few reads, no lock)."""
    store = context.store
    now = context.clock.now()
    first_minute = now.replace(second=0, microsecond=0) - timedelta(minutes=WINDOW_MINUTES - 1)
    stats = await store.stats()
    agents = await store.list_agents(statuses=(AgentStatus.ONLINE, AgentStatus.DRAINING))
    finished = await store.count_finished_tasks(since=first_minute, until=now)
    jobs = await store.list_cron_jobs()

    minutes = [first_minute + timedelta(minutes=index) for index in range(WINDOW_MINUTES)]
    series: dict[str, list[int]] = {
        status.value: [0] * WINDOW_MINUTES for status in sorted(TERMINAL_TASK_STATUSES)
    }
    for minute, status, count in finished:
        index = int((minute - first_minute).total_seconds() // 60)
        if 0 <= index < WINDOW_MINUTES and status.value in series:
            series[status.value][index] += count

    upcoming = sorted(
        ((job.next_fire_at, job) for job in jobs if job.enabled and job.next_fire_at is not None),
        key=lambda pair: (pair[0], pair[1].name),
    )[:NEXT_FIRES]
    return {
        "tasks_by_status": {
            status.value: stats.tasks_by_status.get(status, 0) for status in TaskStatus
        },
        "agents": {
            "online": sum(1 for agent in agents if agent.status is AgentStatus.ONLINE),
            "draining": sum(1 for agent in agents if agent.status is AgentStatus.DRAINING),
            "busy": sum(1 for agent in agents if agent.running > 0),
            "total": stats.agents_total,
            "slots_used": sum(agent.running for agent in agents),
            "slots_total": sum(agent.max_concurrent_tasks for agent in agents),
        },
        "throughput": {"minutes": [_iso(minute) for minute in minutes], **series},
        "next_fires": [
            {
                "cron_job_id": str(job.id),
                "name": job.name,
                "task_type": job.task_type,
                "timezone": job.timezone,
                "next_fire_at": _iso(fire_at),
            }
            for fire_at, job in upcoming
        ],
        "cron_jobs_enabled": stats.cron_jobs_enabled,
    }


@dataclass
class SnapshotCache:
    """Shares one snapshot per ``POLL_SECONDS`` between every open stream of an app."""

    context: ServerContext
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    taken_at: float | None = None
    snapshot: dict[str, Any] = field(default_factory=dict)

    async def get(self) -> dict[str, Any]:
        async with self.lock:
            monotonic = self.context.clock.monotonic()
            if self.taken_at is None or monotonic - self.taken_at >= POLL_SECONDS * 0.9:
                try:
                    self.snapshot = await build_snapshot(self.context)
                except (HetuflowError, OSError) as error:
                    self.context.metrics.database_error("events_snapshot")
                    self.snapshot = {"error": {"code": "store_unavailable", "message": str(error)}}
                self.taken_at = monotonic
            return self.snapshot


def _cache(request: Request) -> SnapshotCache:
    state = request.app.state
    cache: SnapshotCache | None = getattr(state, "events_cache", None)
    if cache is None:
        cache = SnapshotCache(state.context)
        state.events_cache = cache
    return cache


def _event(snapshot: dict[str, Any], now: datetime) -> bytes:
    body = orjson.dumps({**snapshot, "generated_at": _iso(now)})
    return b"event: snapshot\ndata: " + body + b"\n\n"


async def _stream(cache: SnapshotCache) -> AsyncIterator[bytes]:
    """Runs until the client goes away (Starlette then cancels it) or the server stops (the
    console's EventSource reconnects after ``retry``)."""
    context = cache.context
    yield f"retry: {RETRY_MILLISECONDS}\n\n".encode()
    last: dict[str, Any] | None = None
    last_sent = 0.0
    while True:
        snapshot = await cache.get()
        monotonic = context.clock.monotonic()
        if snapshot != last or monotonic - last_sent >= KEEPALIVE_SECONDS:
            yield _event(snapshot, context.clock.now())
            last, last_sent = snapshot, monotonic
        if await context.sleep_unless_stopping(POLL_SECONDS):
            return


@router.get(
    "/api/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def stream_events(request: Request) -> StreamingResponse:
    """Dashboard snapshots as Server-Sent Events (``event: snapshot``, JSON ``data``).

    The first snapshot comes at once; later ones when something changed (checked every
    second) and at least every 15 seconds.
    """
    return StreamingResponse(
        _stream(_cache(request)),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


# --- one workflow's step transitions ------------------------------------------------------------


def _workflow_event(name: str, body: bytes) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + body + b"\n\n"


async def _workflow_stream(context: ServerContext, first: Workflow) -> AsyncGenerator[bytes, None]:
    """Runs until the client goes away or the server stops; a workflow that is gone (deleted
    by the cleanup) ends the stream with ``event: end``."""
    yield f"retry: {RETRY_MILLISECONDS}\n\n".encode()
    workflow = first
    yield _workflow_event("workflow", WorkflowOut.of_workflow(workflow).model_dump_json().encode())
    statuses = {step.name: step.task.status for step in workflow.steps}
    last_sent = context.clock.monotonic()
    while not await context.sleep_unless_stopping(WORKFLOW_POLL_SECONDS):
        try:
            fresh = await context.store.get_workflow(workflow.id)
        except (HetuflowError, OSError):
            context.metrics.database_error("events_workflow")
            continue  # the client keeps what it has; the next read may answer
        if fresh is None:
            yield b"event: end\ndata: {}\n\n"
            return
        monotonic = context.clock.monotonic()
        if {step.name for step in fresh.steps} != statuses.keys():
            yield _workflow_event(
                "workflow", WorkflowOut.of_workflow(fresh).model_dump_json().encode()
            )
            last_sent = monotonic
        else:
            for step in fresh.steps:
                previous = statuses[step.name]
                if step.task.status is not previous:
                    body = orjson.dumps(
                        {
                            **WorkflowStepOut.of(step).model_dump(mode="json"),
                            "previous": previous.value,
                            "workflow_status": fresh.status.value,
                        }
                    )
                    yield _workflow_event("step", body)
                    last_sent = monotonic
        statuses = {step.name: step.task.status for step in fresh.steps}
        if monotonic - last_sent >= KEEPALIVE_SECONDS:
            yield b": keep-alive\n\n"
            last_sent = monotonic


@router.get(
    "/api/workflows/{workflow_id}/events",
    response_class=StreamingResponse,
    summary="Follow a workflow's step transitions (Server-Sent Events)",
    responses={
        200: {
            "content": {"text/event-stream": {}},
            "description": "`event: workflow` (the workflow and its steps, as `GET"
            " /api/workflows/{id}`) first and whenever its set of steps changes; `event: step`"
            " (the step, with `previous`: its status before, and `workflow_status`) at each"
            " step's status change.",
        },
        **error_responses(404, 422),
    },
)
async def stream_workflow_events(workflow_id: UUID, request: Request) -> StreamingResponse:
    """The workflow first, then its steps' status changes as they happen (read every half
    second while the stream is open). The console's DAG view follows it."""
    context: ServerContext = request.app.state.context
    workflow = await context.store.get_workflow(workflow_id)
    if workflow is None:
        raise WorkflowNotFound(f"workflow {workflow_id} does not exist", field="workflow_id")
    return StreamingResponse(
        _workflow_stream(context, workflow),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
