"""PostgreSQL: the statements of a workflow step's result keep their generic plans.

A prepared statement whose batch is an array parameter (``= ANY($1)``) was planned anew at
every execution: the generic plan assumes the array holds 10 values, so a plan made for a
batch of one looked cheaper. The transactions that look batches up by key run on generic
plans (``PgDatabase.transaction(generic_plans=True)``).
"""

from __future__ import annotations

import contextlib
from itertools import pairwise

import pytest

from hetuflow.config import DatabaseConfig
from hetuflow.models import AgentRegistration
from hetuflow.store.postgres import PostgresStore

from ._support import T0
from .test_workflows import claim, create, finish, step

STEPS = 10


async def test_a_chain_of_steps_is_not_planned_at_every_result(database: DatabaseConfig) -> None:
    if database.kind != "postgres":
        pytest.skip("PostgreSQL's plan cache")
    # One connection, so every statement is prepared (and its plans counted) on it.
    store = PostgresStore(database.model_copy(update={"max_connections": 1}))
    await store.open()
    try:
        registration = AgentRegistration(
            capabilities=(), supported_task_types=("t",), max_concurrent_tasks=1, name="a1"
        )
        agent = await store.connect_agent(registration, node_id="node-a", now=T0)
        names = [f"s{index}" for index in range(STEPS)]
        await create(
            store, step(names[0]), *(step(name, before) for before, name in pairwise(names))
        )
        for name in names:
            dispatches = await claim(store, agent)
            assert list(dispatches) == [name]
            await finish(store, dispatches[name], result=name)
        async with store._db.connection() as connection:
            rows = await connection.fetch(
                "SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements"
                " WHERE statement LIKE '%workflow_edges%'"
            )
    finally:
        await store.close()
    # The settle's statements run at each result (a few of them once a step has a parent).
    settle = [row for row in rows if row["generic_plans"] + row["custom_plans"] >= STEPS - 1]
    assert len(settle) >= 3, rows
    for row in settle:
        assert row["custom_plans"] == 0, row["statement"]


async def test_generic_plans_last_as_long_as_their_transaction(database: DatabaseConfig) -> None:
    """``SET LOCAL``: the pooled connection's next user plans as usual, after a commit and
    after a rollback alike."""
    if database.kind != "postgres":
        pytest.skip("PostgreSQL's plan cache")
    store = PostgresStore(database.model_copy(update={"max_connections": 1}))
    await store.open()
    mode = "SELECT current_setting('plan_cache_mode')"
    try:
        async with store._db.transaction(generic_plans=True) as connection:
            assert await connection.fetchval(mode) == "force_generic_plan"
        with contextlib.suppress(ZeroDivisionError):
            async with store._db.transaction(generic_plans=True) as connection:
                assert await connection.fetchval(mode) == "force_generic_plan"
                raise ZeroDivisionError  # rolled back
        async with store._db.connection() as connection:
            assert await connection.fetchval(mode) == "auto"
            assert not connection.is_in_transaction()
    finally:
        await store.close()
