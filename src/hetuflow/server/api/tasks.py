"""Task routes: create (one or a batch), list, get, cancel, retry, attempts, logs (and follow)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import AfterValidator, AwareDatetime, StringConstraints

from hetuflow.errors import InvalidInput
from hetuflow.models import (
    MAX_CONCURRENCY_KEY_LENGTH,
    BroadcastPolicy,
    TaskCursor,
    TaskFilter,
    TaskStatus,
    id_prefix_range,
)
from hetuflow.server.api.deps import Context, Queue
from hetuflow.server.api.errors import error_responses
from hetuflow.server.api.schemas import (
    FINAL_DESCRIPTION,
    AttemptList,
    AttemptOut,
    LogLineOut,
    LogPage,
    RateLimitName,
    TaskBatchCreate,
    TaskBatchOut,
    TaskChildren,
    TaskCreate,
    TaskOut,
    TaskPage,
    TaskWebhookOut,
    WebhookDeliveryOut,
    encode_json,
    storable_text,
    task_json,
    utc_datetime,
)
from hetuflow.server.context import ServerContext
from hetuflow.server.tasks import TaskQueue

router = APIRouter(prefix="/api/tasks", tags=["tasks"])

LOG_POLL_INTERVAL_SECONDS = 0.25
"""How often a live log stream looks for new lines while the task runs."""
KEEPALIVE_SECONDS = 15.0
"""A comment line is sent this often on an idle stream, so proxies keep it open."""
_STREAM_PAGE = 500

QueryText = Annotated[
    str, StringConstraints(min_length=1, max_length=255), AfterValidator(storable_text)
]
ConcurrencyKeyText = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_CONCURRENCY_KEY_LENGTH),
    AfterValidator(storable_text),
]
QueryDatetime = Annotated[AwareDatetime, AfterValidator(utc_datetime)]


def _id_prefix(value: str) -> str:
    id_prefix_range(value)  # ValueError (422) unless 1 to 32 hex digits
    return value


IdPrefix = Annotated[str, StringConstraints(max_length=36), AfterValidator(_id_prefix)]


@router.post(
    "",
    status_code=201,
    response_model=TaskOut,
    summary="Create a task",
    responses={
        200: {"model": TaskOut, "description": "The idempotency key matched: the existing task"},
        **error_responses(400, 409, 413, 422),
    },
)
async def create_task(body: TaskCreate, request: Request) -> Response:
    """Store a task and wake the dispatchers. **201** with the new task; **200** with the
    existing one when `idempotency_key` was already used.

    A broadcast (`"dispatch": "all"`): **201** with the parent (`waiting`,
    `broadcast_policy` set); its children, one per matching agent, are listed by
    `GET /api/tasks/{id}/children`. **409** `no_agent_for_broadcast` when no agent matches
    (nothing is created)."""
    # Usually answered before FastAPI by ``hot_routes.HotRoutes`` (``created_body``, the
    # same checks); this route documents it and answers what that path leaves to FastAPI.
    queue: TaskQueue = request.app.state.task_queue
    context: ServerContext = request.app.state.context
    answer, status = await created_body(queue, context, body)
    return _json_bytes(answer, status)


async def created_body(
    queue: TaskQueue, context: ServerContext, body: TaskCreate
) -> tuple[bytes, int]:
    """``POST /api/tasks``'s body and status: 201 with the new task, 200 with the existing one
    of an idempotency key already used."""
    new = body.to_new_task(
        now=context.clock.now(),
        default_backoff_seconds=context.config.scheduler.retry_interval_seconds,
    )
    if body.is_broadcast:
        parent, _ = await queue.create_broadcast(
            new, body.broadcast_policy or BroadcastPolicy.ALL, body.start_deadline_seconds
        )
        return encode_json(task_json(parent)), 201
    task, created = await queue.create(new)
    reason = (await queue.explain_created([task])).get(task.id)
    return encode_json(task_json(task, reason)), 201 if created else 200


@router.post(
    "/batch",
    status_code=201,
    response_model=TaskBatchOut,
    summary="Create many tasks in one transaction",
    responses=error_responses(400, 409, 413, 422),
)
async def create_tasks(body: TaskBatchCreate, queue: Queue, context: Context) -> Response:
    """All the tasks are created, or none (one transaction). At most
    `[server] max_batch_tasks` per request.

    A broadcast item (`"dispatch": "all"`) is created with its children in the same
    transaction; its item in the answer is the parent. **409** `no_agent_for_broadcast`
    naming the item (`tasks[i]`) when no agent matches one: nothing is created."""
    # Usually answered before FastAPI by ``hot_routes.HotRoutes`` (``created_batch_body``).
    return _json_bytes(await created_batch_body(queue, context, body), 201)


async def created_batch_body(
    queue: TaskQueue, context: ServerContext, body: TaskBatchCreate
) -> bytes:
    """``POST /api/tasks/batch``'s body (201): the tasks, and which of them were created."""
    now = context.clock.now()
    backoff = context.config.scheduler.retry_interval_seconds
    results = await queue.create_many(
        [item.to_item(now=now, default_backoff_seconds=backoff) for item in body.tasks]
    )
    reasons = await queue.explain_created([task for task, _ in results])
    answer = {
        "items": [task_json(task, reasons.get(task.id)) for task, _ in results],
        "created": [created for _, created in results],
    }
    return encode_json(answer)


@router.get("", response_model=TaskPage, summary="List tasks", responses=error_responses(422))
async def list_tasks(
    queue: Queue,
    status: Annotated[
        list[TaskStatus] | None, Query(description="Only these statuses (repeatable).")
    ] = None,
    task_type: Annotated[QueryText | None, Query()] = None,
    agent_id: Annotated[UUID | None, Query(description="Tasks held (or last held) by it.")] = None,
    cron_job_id: Annotated[UUID | None, Query(description="Tasks fired by this cron job.")] = None,
    created_after: Annotated[QueryDatetime | None, Query()] = None,
    created_before: Annotated[QueryDatetime | None, Query()] = None,
    q: Annotated[
        QueryText | None,
        Query(
            description="Text anywhere in the name, task type, payload, result or error "
            "(their JSON text; any case). From 3 characters on it is read from a trigram "
            "index; shorter text reads every task.",
            examples=["acme-corp"],
        ),
    ] = None,
    id_prefix: Annotated[
        IdPrefix | None,
        Query(
            description="Only tasks whose id starts with these hex digits (dashes ignored): "
            "how the CLI finds the task of a short id like `0a1b2c3d`.",
            examples=["0a1b2c3d"],
        ),
    ] = None,
    concurrency_key: Annotated[
        ConcurrencyKeyText | None,
        Query(
            description="Only tasks with this concurrency key (exactly); with "
            "`status=pending`, the tasks waiting on it.",
            examples=["customer:42"],
        ),
    ] = None,
    rate_limit: Annotated[
        RateLimitName | None,
        Query(
            description="Only tasks that name this rate limit; with `status=pending`, the "
            "tasks waiting on it.",
            examples=["crm-api"],
        ),
    ] = None,
    final: Annotated[bool, Query(description=FINAL_DESCRIPTION)] = False,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    cursor: Annotated[
        str | None,
        Query(
            max_length=200,
            description="Start after this position: the `next` of the previous page (opaque). "
            "Same cost however deep the page; stable while tasks are created.",
        ),
    ] = None,
    include_total: Annotated[
        bool | None,
        Query(
            description="Count every match into `total` (a count: its cost grows with the "
            "matches). Default: true on a first page, false when following a `cursor`."
        ),
    ] = None,
    offset: Annotated[
        int,
        Query(
            ge=0,
            le=2**31 - 1,
            description="Skip this many more (kept for compatibility: its cost grows with "
            "the offset; follow `next` instead).",
        ),
    ] = 0,
) -> TaskPage:
    """Newest first, one page; `next` is the cursor of the following page (null on the
    last). `total` counts every match when asked (see `include_total`)."""
    query = TaskFilter(
        statuses=tuple(dict.fromkeys(status or ())),
        task_type=task_type,
        agent_id=agent_id,
        cron_job_id=cron_job_id,
        created_after=created_after,
        created_before=created_before,
        text=q,
        id_range=None if id_prefix is None else id_prefix_range(id_prefix),
        concurrency_key=concurrency_key,
        rate_limit=rate_limit,
        final=final,
    )
    after = None
    if cursor is not None:
        try:
            after = TaskCursor.decode(cursor)
        except ValueError as error:
            raise InvalidInput(str(error), field="cursor") from None
    with_total = include_total if include_total is not None else after is None
    page = await queue.list(query, limit=limit, offset=offset, after=after, with_total=with_total)
    reasons, waits = await queue.explain_waits(page.items)
    return TaskPage(
        items=[TaskOut.of(task, reasons.get(task.id), waits.get(task.id)) for task in page.items],
        total=page.total,
        limit=page.limit,
        offset=page.offset,
        next=None if page.next is None else page.next.encode(),
    )


@router.get(
    "/{task_id}", response_model=TaskOut, summary="Get a task", responses=error_responses(404)
)
async def get_task(task_id: UUID, request: Request) -> Response:
    """A pending task says why it is not running in `pending_reason`."""
    # Usually answered before FastAPI by ``hot_routes.HotRoutes`` (same body, same checks);
    # this route documents it and answers the ids that path leaves to FastAPI.
    queue: TaskQueue = request.app.state.task_queue
    return _json_bytes(await task_body(queue, task_id), 200)


async def task_body(queue: TaskQueue, task_id: UUID) -> bytes:
    """``GET /api/tasks/{id}``'s body: the task and why it waits (``TaskNotFound``)."""
    task, reason, wait = await queue.get_explained(task_id)
    return encode_json(task_json(task, reason, wait))


def _json_bytes(body: bytes, status_code: int) -> Response:
    """A body the route built itself (``response_model`` still documents it)."""
    return Response(body, status_code, media_type="application/json")


@router.delete(
    "/{task_id}",
    response_model=TaskOut,
    summary="Cancel a task",
    responses=error_responses(404, 409),
)
async def cancel_task(task_id: UUID, queue: Queue) -> TaskOut:
    """A pending task becomes `cancelled` at once. A dispatched or running one becomes
    `cancelling`: its agent is told to stop the work and confirms, then it is `cancelled`.
    **409** for a task that already finished."""
    return TaskOut.of(await queue.cancel(task_id))


@router.post(
    "/{task_id}/retry",
    status_code=201,
    response_model=TaskOut,
    summary="Run a finished task again",
    responses=error_responses(404, 409),
)
async def retry_task(task_id: UUID, queue: Queue) -> TaskOut:
    """Create a new task with the same spec as a `failed`, `timed_out`, `cancelled` or
    `quarantined` one and return it, its `replay_of` naming the original (which so leaves the
    dead-letter view, `GET /api/tasks?final=true`). **409** for any other status, and for a
    workflow step (its message names the workflow: retry that,
    `POST /api/workflows/{id}/retry`, so its descendants follow)."""
    task = await queue.retry(task_id)
    return TaskOut.of(task, (await queue.explain([task])).get(task.id))


@router.get(
    "/{task_id}/children",
    response_model=TaskChildren,
    summary="List a broadcast's children",
    responses=error_responses(404),
)
async def list_children(task_id: UUID, queue: Queue) -> TaskChildren:
    """One child per agent the broadcast went to, by agent name (each `pinned_agent_id`);
    empty for a task that is no broadcast parent."""
    children = await queue.children(task_id)
    reasons = await queue.explain(children)
    return TaskChildren(items=[TaskOut.of(child, reasons.get(child.id)) for child in children])


@router.get(
    "/{task_id}/webhook",
    response_model=TaskWebhookOut,
    summary="Show how a task's final status is being delivered",
    responses=error_responses(404),
)
async def task_webhook(task_id: UUID, queue: Queue, context: Context) -> TaskWebhookOut:
    """The task's `webhook_url` and its deliveries (docs/webhooks.md): state, attempts, the
    last HTTP status or error, and when the next attempt is due."""
    task = await queue.get(task_id)
    deliveries = await context.store.list_webhook_deliveries(task_id)
    return TaskWebhookOut(
        webhook_url=task.webhook_url,
        items=[WebhookDeliveryOut.of(delivery) for delivery in deliveries],
    )


@router.get(
    "/{task_id}/attempts",
    response_model=AttemptList,
    summary="List a task's attempts",
    responses=error_responses(404),
)
async def list_attempts(task_id: UUID, queue: Queue, context: Context) -> AttemptList:
    """One entry per dispatch, oldest first: which agent, when, and how it ended."""
    await queue.get(task_id)
    attempts = await context.store.list_attempts(task_id)
    return AttemptList(items=[AttemptOut.of(attempt) for attempt in attempts])


@router.get(
    "/{task_id}/logs",
    response_model=LogPage,
    summary="Read a task's log lines",
    responses=error_responses(404, 422),
)
async def list_logs(
    task_id: UUID,
    queue: Queue,
    context: Context,
    after_seq: Annotated[int, Query(ge=0, le=2**62, description="Lines after this seq.")] = 0,
    attempt: Annotated[
        int | None, Query(ge=1, le=2**31 - 1, description="Only this attempt.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> LogPage:
    """Lines in order; page with `after_seq` = the previous page's `next_after_seq`."""
    await queue.get(task_id)
    lines = await context.store.list_logs(
        task_id, after_seq=after_seq, attempt=attempt, limit=limit
    )
    return LogPage(
        items=[LogLineOut.of(line) for line in lines],
        next_after_seq=lines[-1].seq if lines else after_seq,
    )


@router.get(
    "/{task_id}/logs/stream",
    summary="Follow a task's logs live (Server-Sent Events)",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"text/event-stream": {}},
            "description": "`event: log` per line (`id` = seq, `data` = the line as JSON), "
            'then one `event: end` with `{"status": ...}` when the task has finished.',
        },
        **error_responses(404, 422),
    },
)
async def stream_logs(
    task_id: UUID,
    queue: Queue,
    context: Context,
    after_seq: Annotated[int, Query(ge=0, le=2**62)] = 0,
    attempt: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
    last_event_id: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> StreamingResponse:
    """Sends the existing lines, then new ones as they arrive; ends when the task is
    finished (with `event: end`), or without `end` when the server stops. Reconnecting clients
    resume from `Last-Event-ID`."""
    await queue.get(task_id)
    if last_event_id is not None and last_event_id.isdigit():
        after_seq = max(after_seq, min(int(last_event_id), 2**62))
    return StreamingResponse(
        _follow(queue, context, task_id, after_seq=after_seq, attempt=attempt),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _follow(
    queue: TaskQueue, context: ServerContext, task_id: UUID, *, after_seq: int, attempt: int | None
) -> AsyncIterator[str]:
    store = queue.store
    last = after_seq
    idle_since = queue.clock.monotonic()
    finished = False
    while True:
        lines = await store.list_logs(task_id, after_seq=last, attempt=attempt, limit=_STREAM_PAGE)
        for line in lines:
            last = line.seq
            yield _event("log", LogLineOut.of(line).model_dump_json(), event_id=str(line.seq))
        if lines:
            idle_since = queue.clock.monotonic()
            if len(lines) == _STREAM_PAGE:
                continue
        if finished:
            break
        task = await store.get_task(task_id)
        if task is None or task.status.is_terminal:
            finished = True  # one more read: lines committed before the result
            continue
        if queue.clock.monotonic() - idle_since >= KEEPALIVE_SECONDS:
            idle_since = queue.clock.monotonic()
            yield ": keep-alive\n\n"
        if await context.sleep_unless_stopping(LOG_POLL_INTERVAL_SECONDS):
            return  # the server stops: the client resumes from the last id elsewhere
    task = await store.get_task(task_id)
    status = task.status if task is not None else None
    yield _event("end", json.dumps({"status": status, "next_after_seq": last}))


def _event(name: str, data: str, *, event_id: str | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {name}\ndata: {data}\n\n"


@router.post(
    "/{task_id}/replay",
    status_code=201,
    response_model=TaskOut,
    summary="Replay a finished task",
    responses=error_responses(404, 409),
)
async def replay_task(task_id: UUID, queue: Queue) -> TaskOut:
    """Create a new task with the same spec (name, type, payload, priority, capabilities,
    timeout, retry policy; due now, no idempotency key) as a finished one, whatever its
    outcome (`succeeded` too), and return it with `replay_of` = the original's id.
    **409** `task_not_finished` while the task is pending or running."""
    task = await queue.replay(task_id)
    return TaskOut.of(task, (await queue.explain([task])).get(task.id))
