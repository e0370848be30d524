"""Rate limit routes: create, list, get, delete named rate limits, each with its use of the
current window and the tasks it holds back (docs/api.md#rate-limits).

A task names the limits it spends from in ``rate_limits`` (``POST /api/tasks``); the claim of
every node keeps each limit's window (docs/guarantees.md#rate-limits)."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Response
from pydantic import AfterValidator, Field

from hetuflow.errors import RateLimitNotFound
from hetuflow.models import MAX_RATE_LIMIT_NAME_LENGTH, RateLimit, RateLimitState, RateLimitUsage
from hetuflow.server.api.deps import Context
from hetuflow.server.api.errors import error_responses
from hetuflow.server.api.schemas import RateLimitName, _Input, _Output, storable_text
from hetuflow.store.base import TASKS_READY

router = APIRouter(prefix="/api/rate-limits", tags=["rate limits"])
log = logging.getLogger("hetuflow.rate_limits")

MAX_RATE_LIMIT = 1_000_000_000
MAX_RATE_WINDOW_SECONDS = 366 * 24 * 3600.0


class RateLimitCreate(_Input):
    """At most `limit` units dispatched in any window of `per_seconds`, across all nodes."""

    name: RateLimitName = Field(description="Unique; tasks name it.", examples=["crm-api"])
    limit: int = Field(ge=1, le=MAX_RATE_LIMIT, description="Units per window.", examples=[100])
    per_seconds: float = Field(
        gt=0,
        le=MAX_RATE_WINDOW_SECONDS,
        allow_inf_nan=False,
        description="The window's length in seconds.",
        examples=[60],
    )


class RateLimitOut(_Output):
    name: str
    limit: int
    per_seconds: float
    created_at: datetime
    used: int = Field(description="Units dispatched in the window that ends now.")
    next_free_at: datetime | None = Field(
        description="When the oldest dispatch of the window leaves it, freeing its units "
        "(null: none in it)."
    )
    waiting: int = Field(
        default=0,
        description="Due pending tasks it holds back now: they name it and ask more units "
        "than it has left in the window (`pending_reason: rate_limited`, unless their "
        "concurrency key holds them first). `GET /api/tasks?rate_limit=<name>&status=pending` "
        "lists them.",
    )

    @classmethod
    def of(cls, limit: RateLimit, state: RateLimitState | None, waiting: int = 0) -> RateLimitOut:
        return cls(
            name=limit.name,
            limit=limit.limit,
            per_seconds=limit.per_seconds,
            created_at=limit.created_at,
            used=0 if state is None else state.used,
            next_free_at=None if state is None else state.next_free_at,
            waiting=waiting,
        )

    @classmethod
    def of_usage(cls, usage: RateLimitUsage) -> RateLimitOut:
        return cls.of(usage.state.limit, usage.state, usage.waiting)


class RateLimitList(_Output):
    items: list[RateLimitOut] = Field(description="By name.")


PathName = Annotated[
    str,
    Path(min_length=1, max_length=MAX_RATE_LIMIT_NAME_LENGTH),
    AfterValidator(storable_text),
]


@router.post(
    "",
    status_code=201,
    response_model=RateLimitOut,
    summary="Create a rate limit",
    responses=error_responses(409, 422),
)
async def create_rate_limit(body: RateLimitCreate, context: Context) -> RateLimitOut:
    """**409** `rate_limit_name_taken` if the name exists."""
    made = await context.store.create_rate_limit(
        body.name, body.limit, body.per_seconds, now=context.clock.now()
    )
    return RateLimitOut.of(made, None)


@router.get("", response_model=RateLimitList, summary="List rate limits")
async def list_rate_limits(context: Context) -> RateLimitList:
    """Every limit with its use of the current window (`used`, `next_free_at`) and the
    tasks it holds back (`waiting`), read in one snapshot."""
    usages = await context.store.rate_limit_usage(now=context.clock.now())
    return RateLimitList(items=[RateLimitOut.of_usage(usage) for usage in usages])


@router.get(
    "/{name}",
    response_model=RateLimitOut,
    summary="Get a rate limit",
    responses=error_responses(404),
)
async def get_rate_limit(name: PathName, context: Context) -> RateLimitOut:
    """The limit with its use of the current window and the tasks it holds back."""
    usages = await context.store.rate_limit_usage(now=context.clock.now())
    usage = next((usage for usage in usages if usage.state.limit.name == name), None)
    if usage is None:
        raise RateLimitNotFound(f"no rate limit named {name!r}", field="name")
    return RateLimitOut.of_usage(usage)


@router.delete(
    "/{name}",
    status_code=204,
    summary="Delete a rate limit",
    responses=error_responses(404),
)
async def delete_rate_limit(name: PathName, context: Context) -> Response:
    """The tasks that named it are no longer held back by it (they are dispatched as any
    other); their `rate_limits` still show the name. It is taken out of the cron jobs and the
    triggers that name it, in the same transaction: their later tasks are created without
    it."""
    await context.store.delete_rate_limit(name)
    try:
        await context.notifier.publish(TASKS_READY, "")
    except Exception:  # committed: a lost wake-up only delays (dispatchers also re-check)
        log.warning("could not publish %s", TASKS_READY, exc_info=True)
    return Response(status_code=204)
