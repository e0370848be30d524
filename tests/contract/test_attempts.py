"""Contract: starting and finishing attempts (fenced), retries, progress, release, logs."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest

from hetuflow.config import DatabaseConfig
from hetuflow.models import (
    Agent,
    AttemptOutcome,
    AttemptRef,
    AttemptResult,
    AttemptStart,
    Dispatch,
    LogLine,
    NewTask,
    RetryPolicy,
    TaskStatus,
)
from hetuflow.store.base import Store

from ._support import T0, ConnectAgent, group, stored


async def _dispatch(store: Store, agent: Agent, task: NewTask) -> Dispatch:
    await store.create_tasks([task], now=T0)
    [dispatch] = await store.claim_tasks([group([agent], free=1)], now=T0 + timedelta(hours=1))
    return dispatch


def _ref(dispatch: Dispatch, *, attempt: int | None = None) -> AttemptRef:
    number = dispatch.attempt if attempt is None else attempt
    return AttemptRef(dispatch.task.id, number, dispatch.agent_id)


async def test_start_is_fenced_and_idempotent(store: Store, connect: ConnectAgent) -> None:
    agent = await connect("a1")
    other = await connect("a2")
    dispatch = await _dispatch(store, agent, NewTask("n", "t"))
    started = T0 + timedelta(seconds=3)
    stale = AttemptStart(_ref(dispatch, attempt=2), started)
    wrong_agent = AttemptStart(AttemptRef(dispatch.task.id, 1, other.id), started)
    good = AttemptStart(_ref(dispatch), started)
    assert await store.start_attempts([stale, wrong_agent, good, good]) == [
        False,
        False,
        True,
        True,
    ]
    task = await store.get_task(dispatch.task.id)
    assert task is not None
    assert task.status is TaskStatus.RUNNING
    assert task.started_at == started
    [attempt] = await store.list_attempts(dispatch.task.id)
    assert attempt.started_at == started


async def test_success_is_recorded_once(store: Store, connect: ConnectAgent) -> None:
    agent = await connect("a1")
    dispatch = await _dispatch(store, agent, NewTask("n", "t"))
    now = T0 + timedelta(hours=2)
    result = AttemptResult(_ref(dispatch), AttemptOutcome.SUCCEEDED, result={"rows": 3})
    first, duplicate = await store.finish_attempts([result, result], now=now)
    assert first.accepted
    assert not duplicate.accepted
    first_task = await stored(store, first)
    assert first_task.status is TaskStatus.SUCCEEDED
    assert first_task.result == {"rows": 3}
    assert first_task.finished_at == now
    [again] = await store.finish_attempts([result], now=now)
    assert not again.accepted
    assert (again.task_type, again.status) == ("t", TaskStatus.SUCCEEDED)
    [attempt] = await store.list_attempts(dispatch.task.id)
    assert attempt.outcome is AttemptOutcome.SUCCEEDED
    assert attempt.finished_at == now
    assert (await store.get_agent(agent.id)).running == 0  # type: ignore[union-attr]
    [unknown] = await store.finish_attempts(
        [AttemptResult(AttemptRef(uuid.uuid4(), 1, agent.id), AttemptOutcome.SUCCEEDED)], now=now
    )
    assert not unknown.accepted
    assert (unknown.task_type, unknown.status) == (None, None)


async def test_stale_attempt_and_wrong_agent_are_rejected(
    store: Store, connect: ConnectAgent
) -> None:
    agent = await connect("a1")
    other = await connect("a2")
    dispatch = await _dispatch(store, agent, NewTask("n", "t"))
    assert await store.release_agent(agent.id, now=T0) == [dispatch.task.id]
    [second] = await store.claim_tasks([group([other], free=1)], now=T0 + timedelta(hours=1))
    assert second.attempt == 2
    stale = AttemptResult(_ref(dispatch), AttemptOutcome.SUCCEEDED, result="old")
    impostor = AttemptResult(AttemptRef(second.task.id, 2, agent.id), AttemptOutcome.FAILED)
    rejected = await store.finish_attempts([stale, impostor], now=T0)
    assert [outcome.accepted for outcome in rejected] == [False, False]
    task = await store.get_task(second.task.id)
    assert task is not None
    assert task.status is TaskStatus.DISPATCHED
    assert task.result is None


async def test_failure_retries_with_backoff_then_fails(store: Store, connect: ConnectAgent) -> None:
    agent = await connect("a1")
    retry = RetryPolicy(max_retries=2, backoff_seconds=10, backoff_factor=3)
    dispatch = await _dispatch(store, agent, NewTask("n", "t", retry=retry))
    now = T0 + timedelta(hours=2)
    [first] = await store.finish_attempts(
        [AttemptResult(_ref(dispatch), AttemptOutcome.FAILED, error="boom")], now=now
    )
    assert first.accepted
    first_task = await stored(store, first)
    assert first_task.status is TaskStatus.PENDING
    assert first_task.error == "boom"
    assert first_task.scheduled_at == now + timedelta(seconds=10)
    assert first_task.finished_at is None
    assert await store.claim_tasks([group([agent])], now=now + timedelta(seconds=9)) == []
    [second] = await store.claim_tasks([group([agent])], now=now + timedelta(seconds=10))
    assert second.attempt == 2
    [timed_out] = await store.finish_attempts(
        [AttemptResult(_ref(second), AttemptOutcome.TIMED_OUT)], now=now
    )
    timed_out_task = await stored(store, timed_out)
    assert timed_out_task.status is TaskStatus.PENDING
    assert timed_out_task.scheduled_at == now + timedelta(seconds=30)
    [third] = await store.claim_tasks([group([agent])], now=now + timedelta(minutes=1))
    [final] = await store.finish_attempts(
        [AttemptResult(_ref(third), AttemptOutcome.TIMED_OUT, error="slow")], now=now
    )
    final_task = await stored(store, final)
    assert final_task.status is TaskStatus.TIMED_OUT
    assert final_task.finished_at == now
    assert final_task.attempts == 3
    outcomes = [attempt.outcome for attempt in await store.list_attempts(dispatch.task.id)]
    assert outcomes == [AttemptOutcome.FAILED, AttemptOutcome.TIMED_OUT, AttemptOutcome.TIMED_OUT]


async def test_failure_without_retries_fails(store: Store, connect: ConnectAgent) -> None:
    agent = await connect("a1")
    dispatch = await _dispatch(store, agent, NewTask("n", "t"))
    [done] = await store.finish_attempts(
        [AttemptResult(_ref(dispatch), AttemptOutcome.FAILED, result=[1, [2, "x"]], error="x")],
        now=T0,
    )
    done_task = await stored(store, done)
    assert done_task.result == [1, [2, "x"]]
    done_task = await stored(store, done)
    assert done_task.status is TaskStatus.FAILED


async def test_progress_only_for_the_current_attempt(store: Store, connect: ConnectAgent) -> None:
    agent = await connect("a1")
    dispatch = await _dispatch(store, agent, NewTask("n", "t"))
    await store.set_progress([(_ref(dispatch), 0.4), (_ref(dispatch, attempt=7), 0.9)])
    task = await store.get_task(dispatch.task.id)
    assert task is not None
    assert task.progress == 0.4


async def test_release_agent_returns_tasks_and_keeps_some(
    store: Store, connect: ConnectAgent
) -> None:
    agent = await connect("a1")
    retry = RetryPolicy(max_retries=1)
    await store.create_tasks([NewTask(f"n{i}", "t", retry=retry) for i in range(3)], now=T0)
    held = await store.claim_tasks([group([agent], free=3)], now=T0)
    kept, back, cancelling = held
    await store.cancel_task(cancelling.task.id, now=T0)
    released = await store.release_agent(agent.id, now=T0, keep=[_ref(kept)])
    assert released == [back.task.id]
    assert (await store.get_task(kept.task.id)).status is TaskStatus.DISPATCHED  # type: ignore[union-attr]
    assert (await store.get_task(back.task.id)).status is TaskStatus.PENDING  # type: ignore[union-attr]
    assert (await store.get_task(cancelling.task.id)).status is TaskStatus.CANCELLED  # type: ignore[union-attr]
    [lost] = await store.list_attempts(back.task.id)
    assert lost.outcome is AttemptOutcome.LOST
    assert lost.finished_at == T0
    assert await store.release_agent(agent.id, now=T0, keep=[_ref(kept)]) == []
    # a lost attempt does not spend the retry budget: one failure still gets its retry
    [again] = await store.claim_tasks([group([agent], free=1)], now=T0)
    assert again.task.id == back.task.id
    assert again.attempt == 2
    [failed] = await store.finish_attempts(
        [AttemptResult(_ref(again), AttemptOutcome.FAILED)], now=T0
    )
    failed_task = await stored(store, failed)
    assert failed_task.status is TaskStatus.PENDING


async def test_logs_keep_order_per_task(store: Store, connect: ConnectAgent) -> None:
    agent = await connect("a1")
    dispatch = await _dispatch(store, agent, NewTask("n", "t"))
    task_id = dispatch.task.id
    await store.append_logs(
        [LogLine(task_id, 1, "stdout", f"line {i}", T0 + timedelta(seconds=i)) for i in range(3)]
    )
    await store.append_logs(
        [
            LogLine(task_id, 2, "stderr", "retry line", T0),
            LogLine(uuid.uuid4(), 1, "stdout", "for a task that is gone", T0),
        ]
    )
    lines = await store.list_logs(task_id)
    assert [(line.seq, line.line) for line in lines] == [
        (1, "line 0"),
        (2, "line 1"),
        (3, "line 2"),
        (4, "retry line"),
    ]
    assert lines[1].at == T0 + timedelta(seconds=1)
    assert lines[3].stream == "stderr"
    assert [line.seq for line in await store.list_logs(task_id, after_seq=2, limit=1)] == [3]
    assert [line.line for line in await store.list_logs(task_id, attempt=2)] == ["retry line"]


@contextlib.asynccontextmanager
async def _postgres_with_tasks(
    store: Store, database: DatabaseConfig
) -> AsyncIterator[tuple[Any, str]]:
    """3,000 tasks in the store, a plain connection to its PostgreSQL database and one task's
    id (skips on SQLite)."""
    if database.kind != "postgres":
        pytest.skip("PostgreSQL's planner")
    import asyncpg

    for _ in range(30):
        await store.create_tasks([NewTask("t", "t") for _ in range(100)], now=T0)
    connection = await asyncpg.connect(database.url)
    try:
        yield connection, str(await connection.fetchval("SELECT id FROM tasks LIMIT 1"))
    finally:
        await connection.close()


async def test_a_postgres_finish_looks_tasks_up_by_key_on_a_new_database(
    store: Store, database: DatabaseConfig
) -> None:
    """The finish's statement joins its batch (a JSON document) to the tasks by id. Told the
    batch's length, the planner looks the few rows up by key; assuming 100 rows (its guess for
    any set-returning function) it read a new database's whole tasks table at every flush."""
    import orjson

    from hetuflow.store._pg_attempts import _FINISH
    from hetuflow.store._pg_db import sized

    async with _postgres_with_tasks(store, database) as (connection, task_id):
        change = {"id": task_id, "number": 1, "status": "succeeded", "finished": True}
        rows = await connection.fetch(
            "EXPLAIN " + sized(_FINISH, 1), orjson.dumps([change]).decode(), T0
        )
    plan = "\n".join(row[0] for row in rows)
    assert "Index Scan using tasks_pkey on tasks" in plan, plan
    assert "Seq Scan on tasks" not in plan, plan


@pytest.mark.parametrize("statement", ["_FINISH", "_FINISH_SUCCEEDED"])
async def test_a_postgres_finish_is_not_planned_at_every_execution(
    store: Store, database: DatabaseConfig, statement: str
) -> None:
    """A prepared statement is planned once per connection and reused (its generic plan),
    unless PostgreSQL finds a plan made for the values at hand cheaper: then it plans every
    execution anew. With ``LIMIT $3`` (the batch's length as a parameter) the finish was
    planned again at most flushes, at 350-700 µs each, more than running it. The generic
    plan shows the parameter (``$1``) where a plan made for the values shows the document."""
    import orjson

    from hetuflow.store import _pg_attempts
    from hetuflow.store._pg_db import sized

    async with _postgres_with_tasks(store, database) as (connection, task_id):
        await connection.execute("ANALYZE tasks, attempts")
        sql = sized(getattr(_pg_attempts, statement), 1)
        await connection.execute(f"PREPARE finish (json, timestamptz) AS {sql}")
        # _FINISH writes what its transaction decided; _FINISH_SUCCEEDED's fence refuses an
        # attempt 7 of an undispatched task
        change = {"id": task_id, "number": 7, "agent_id": str(uuid.uuid4())}
        change |= {"status": "succeeded", "finished": True, "failures": 0}
        execute = f"EXECUTE finish ('{orjson.dumps([change]).decode()}', '{T0.isoformat()}')"
        for _ in range(8):  # a plan for the values each of the first five times, then it picks
            await connection.execute(execute)
        rows = await connection.fetch(f"EXPLAIN (VERBOSE) {execute}")
    plan = "\n".join(row[0] for row in rows)
    assert "json_to_recordset($1)" in plan, plan
    assert "Index Scan using tasks_pkey on public.tasks" in plan, plan
