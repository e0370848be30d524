"""Contract: a start folded into a result (``AttemptResult.started_at``) is recorded with it,
fenced like the result; an earlier start is kept."""

from __future__ import annotations

from datetime import timedelta

from hetuflow.models import (
    AttemptOutcome,
    AttemptRef,
    AttemptResult,
    AttemptStart,
    NewTask,
    TaskStatus,
)
from hetuflow.store.base import Store

from ._support import T0, ConnectAgent, group, stored


async def test_a_result_records_its_folded_start(store: Store, connect: ConnectAgent) -> None:
    agent = await connect("a1")
    other = await connect("a2")
    await store.create_tasks([NewTask("one", "t"), NewTask("two", "t")], now=T0)
    dispatched = await store.claim_tasks([group([agent], free=2)], now=T0 + timedelta(hours=1))
    one, two = sorted(dispatched, key=lambda d: d.task.name)
    early, started, finished = (T0 + timedelta(hours=2, seconds=s) for s in (1, 2, 3))
    ref_one = AttemptRef(one.task.id, one.attempt, agent.id)
    ref_two = AttemptRef(two.task.id, two.attempt, agent.id)
    assert await store.start_attempts([AttemptStart(ref_two, early)]) == [True]
    outcomes = await store.finish_attempts(
        [
            AttemptResult(
                AttemptRef(one.task.id, one.attempt, other.id),  # not its agent: fenced
                AttemptOutcome.SUCCEEDED,
                started_at=early,
                finished_at=finished,
            ),
            AttemptResult(
                ref_one, AttemptOutcome.SUCCEEDED, started_at=started, finished_at=finished
            ),
            AttemptResult(
                ref_two, AttemptOutcome.SUCCEEDED, started_at=started, finished_at=finished
            ),
        ],
        now=finished,
    )
    assert [outcome.accepted for outcome in outcomes] == [False, True, True]
    for outcome, expected in zip(outcomes[1:], (started, early), strict=True):
        outcome_task = await stored(store, outcome)
        assert outcome_task.status is TaskStatus.SUCCEEDED
        assert outcome_task.started_at == expected
        [attempt] = await store.list_attempts(outcome.ref.task_id)
        assert (attempt.started_at, attempt.finished_at) == (expected, finished)
