"""Reconciliation reads what agents hold through its own narrow query (``Store.list_held``),
never through the console's task list (``list_tasks``, which at 1 M tasks read 100,000 full
rows per pass): a store whose ``list_tasks`` refuses still registers and reconciles."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from hetuflow.config import DatabaseConfig
from hetuflow.models import AttemptOutcome, ClaimGroup, Page, SlotOffer, Task, TaskStatus
from hetuflow.store.base import Store
from hetuflow.store.postgres import PostgresStore
from hetuflow.store.sqlite import SqliteStore

from .harness import agent, fast_config, serve


class _NoListing:
    async def list_tasks(self, *args: Any, **kwargs: Any) -> Page[Task]:
        raise AssertionError("reconciliation must not page through the task list")


class NoListingSqliteStore(_NoListing, SqliteStore):
    pass


class NoListingPostgresStore(_NoListing, PostgresStore):
    pass


def no_listing_store(database: DatabaseConfig) -> Store:
    if database.kind == "sqlite":
        return NoListingSqliteStore(database)
    return NoListingPostgresStore(database)


async def test_registration_and_reconcile_do_not_list_tasks(database: DatabaseConfig) -> None:
    config = fast_config(database, heartbeat_interval_seconds=5.0)  # the test runs the pass
    store = no_listing_store(database)
    async with serve(config, store=store) as server, agent(server, "work", slots=1) as client:
        await server.create_task(task_type="work")
        [task] = await client.dispatched(1)
        ref = {"task_id": task["task_id"], "attempt": task["attempt"]}
        await client.send({"type": "TaskStarted", **ref})
        await server.wait_status(UUID(task["task_id"]), TaskStatus.RUNNING)
        # Claimed behind the connection's back (as through a stale connection elsewhere).
        stale = await server.create_task(task_type="work")
        offer = SlotOffer(UUID(client.agent_id), 1, 1)
        claim = ClaimGroup(frozenset({"work"}), frozenset(), (offer,))
        [claimed] = await server.context.store.claim_tasks([claim], now=datetime.now(UTC))
        assert claimed.task.id == stale
        connections = list(server.engine.agents)
        await server.engine.reconciler.reconcile_many(connections)
        released = await server.task(stale)
        assert (released.status, released.attempts) == (TaskStatus.PENDING, 1)
        [attempt] = await server.context.store.list_attempts(stale)
        assert attempt.outcome is AttemptOutcome.LOST
        kept = await server.task(UUID(task["task_id"]))
        assert kept.status is TaskStatus.RUNNING
