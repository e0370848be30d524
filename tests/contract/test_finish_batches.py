"""Contract: a batch of results is decided as if in one transaction, in batch order, whatever
mix it holds (PostgreSQL writes its plain successes in one statement first, the rest in a
transaction after it: ``finish_succeeded``)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from hetuflow.models import (
    AttemptOutcome,
    AttemptRef,
    AttemptResult,
    Dispatch,
    NewTask,
    TaskStatus,
)
from hetuflow.store.base import Store
from hetuflow.store.postgres import PostgresStore

from ._support import T0, ConnectAgent, group, stored
from .test_workflows import create, reread, statuses, step

LATER = T0 + timedelta(hours=1)


def _result(
    dispatch: Dispatch,
    outcome: AttemptOutcome = AttemptOutcome.SUCCEEDED,
    *,
    attempt: int | None = None,
    result: object = None,
) -> AttemptResult:
    number = dispatch.attempt if attempt is None else attempt
    ref = AttemptRef(dispatch.task.id, number, dispatch.agent_id)
    error = None if outcome is AttemptOutcome.SUCCEEDED else "boom"
    return AttemptResult(ref, outcome, result=result, error=error, started_at=T0)


async def test_a_mixed_batch_is_decided_in_order(store: Store, connect: ConnectAgent) -> None:
    agent = await connect("a1", slots=10)
    workflow = await create(store, step("a"), step("b", "a"))
    await store.create_tasks([NewTask(name, "t") for name in ("p1", "p2", "p3", "p4")], now=T0)
    claimed = {d.task.name: d for d in await store.claim_tasks([group([agent])], now=T0)}
    assert set(claimed) == {"a", "p1", "p2", "p3", "p4"}
    assert (await store.cancel_task(claimed["p3"].task.id, now=T0)).status is (
        TaskStatus.CANCELLING
    )
    batch = [
        _result(claimed["p1"], result={"rows": 1}),
        _result(claimed["a"], result="step"),
        _result(claimed["p2"], AttemptOutcome.FAILED),  # no retries: failed
        _result(claimed["p3"]),  # a success while cancelling: cancelled
        _result(claimed["p1"], attempt=2),  # not its attempt
        _result(claimed["p4"], AttemptOutcome.FAILED),  # the first of its task decides
        _result(claimed["p4"]),
    ]
    outcomes = await store.finish_attempts(batch, now=LATER)
    assert [(o.accepted, o.status) for o in outcomes] == [
        (True, TaskStatus.SUCCEEDED),
        (True, TaskStatus.SUCCEEDED),
        (True, TaskStatus.FAILED),
        (True, TaskStatus.CANCELLED),
        (False, TaskStatus.SUCCEEDED),
        (True, TaskStatus.FAILED),
        (False, TaskStatus.FAILED),
    ]
    for outcome in outcomes:
        assert outcome.task_type == "t"
    p1 = await stored(store, outcomes[0])
    assert (p1.result, p1.finished_at, p1.started_at) == ({"rows": 1}, LATER, T0)
    [attempt] = await store.list_attempts(p1.id)
    assert (attempt.outcome, attempt.finished_at, attempt.started_at) == (
        AttemptOutcome.SUCCEEDED,
        LATER,
        T0,
    )
    # The step's end settled its workflow in the same write: the next step is released.
    assert statuses(await reread(store, workflow)) == {
        "a": TaskStatus.SUCCEEDED,
        "b": TaskStatus.PENDING,
    }
    assert (await store.get_agent(agent.id)).running == 0  # type: ignore[union-attr]


async def test_on_postgres_plain_successes_are_one_statement(
    store: Store, connect: ConnectAgent, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not isinstance(store, PostgresStore):
        pytest.skip("PostgreSQL's round trips")
    from asyncpg.connection import Connection

    agent = await connect("a1", slots=10)
    await store.create_tasks([NewTask(f"n{i}", "t") for i in range(3)], now=T0)
    dispatches = await store.claim_tasks([group([agent])], now=T0)
    sent: list[str] = []
    original = Connection.fetch

    def counting(self: Any, query: str, *args: Any) -> Any:
        sent.append(" ".join(query.split()))
        return original(self, query, *args)

    monkeypatch.setattr(Connection, "fetch", counting)
    for name in ("execute", "fetchrow", "fetchval"):
        monkeypatch.setattr(Connection, name, None)  # any other call fails the test
    outcomes = await store.finish_attempts([_result(d) for d in dispatches], now=LATER)
    assert [o.status for o in outcomes] == [TaskStatus.SUCCEEDED] * 3
    assert len(sent) == 1
    assert sent[0].startswith("WITH c AS")
