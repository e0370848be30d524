"""Concurrency key routes: the keys in use, busiest first, with their active and waiting tasks
(docs/api.md#concurrency-keys).

A key exists while tasks carry it (`concurrency_key` at create); its limit is kept by the claim
of every node (docs/guarantees.md). This is a snapshot read, for people and dashboards."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import AfterValidator, Field, StringConstraints

from hetuflow.models import MAX_CONCURRENCY_KEY_LENGTH, ConcurrencyKeyUsage, ConcurrencyLimits
from hetuflow.server.api.deps import Context
from hetuflow.server.api.errors import error_responses
from hetuflow.server.api.schemas import _Output, storable_text

router = APIRouter(prefix="/api/concurrency-keys", tags=["concurrency keys"])

KeyText = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_CONCURRENCY_KEY_LENGTH),
    AfterValidator(storable_text),
]


class ConcurrencyKeyOut(_Output):
    key: str
    active: int = Field(description="Its tasks dispatched, running or cancelling, all nodes.")
    limit: int = Field(
        description="At most this many active at once: its tasks' `max_concurrent_per_key`, "
        "else the `[concurrency]` limit of their task type, else 1 (the smallest when its "
        "unfinished tasks differ)."
    )
    pending: int = Field(description="Its pending tasks, due or not.")
    waiting: int = Field(
        description="Due pending tasks its limit holds back now (`pending_reason: "
        "concurrency_limit`); `GET /api/tasks?concurrency_key=<key>&status=pending` lists them."
    )
    at_limit: bool = Field(description="`active` has reached `limit`.")

    @classmethod
    def of(cls, usage: ConcurrencyKeyUsage) -> ConcurrencyKeyOut:
        return cls(
            key=usage.key,
            active=usage.active,
            limit=usage.limit,
            pending=usage.pending,
            waiting=usage.waiting,
            at_limit=usage.active >= usage.limit,
        )


class ConcurrencyKeyList(_Output):
    items: list[ConcurrencyKeyOut] = Field(
        description="Busiest first: most active, then most waiting, then by key."
    )


@router.get(
    "",
    response_model=ConcurrencyKeyList,
    summary="List concurrency keys in use",
    responses=error_responses(422),
)
async def list_concurrency_keys(
    context: Context,
    prefix: Annotated[
        KeyText | None,
        Query(description="Only keys that start with this text.", examples=["customer:"]),
    ] = None,
    key: Annotated[
        KeyText | None, Query(description="Only this key (exactly).", examples=["customer:42"])
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="At most this many keys.")] = 50,
) -> ConcurrencyKeyList:
    """The keys that have unfinished tasks (pending, dispatched, running or cancelling):
    those with none are not listed. One read over the unfinished keyed tasks, whose cost
    grows with them (not with the finished ones)."""
    usages = await context.store.concurrency_key_usage(
        limits=ConcurrencyLimits(dict(context.config.concurrency)),
        now=context.clock.now(),
        prefix=prefix,
        key=key,
        limit=limit,
    )
    return ConcurrencyKeyList(items=[ConcurrencyKeyOut.of(usage) for usage in usages])
