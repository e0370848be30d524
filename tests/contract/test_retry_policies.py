"""Contract: retry policies as users expect them (docs/guarantees.md#retries): the backoff cap
and jitter kept with the task and the cron job, ``retry_on`` deciding which failures are
retried (a result's kind in the finish, a lost agent in the release and the reaper), and the
dead-letter view (``TaskFilter.final``)."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from uuid import UUID

import pytest

from hetuflow.models import (
    Agent,
    AttemptOutcome,
    AttemptRef,
    AttemptResult,
    CronJobChanges,
    FailureKind,
    NewCronJob,
    NewTask,
    RetryPolicy,
    Task,
    TaskFilter,
    TaskStatus,
    spec_of,
)
from hetuflow.store._rules import LOST_NOT_RETRIED
from hetuflow.store.base import Store
from hetuflow.workflows import OnFailure, RunIf

from ._support import T0, ConnectAgent, group
from .test_workflows import claim, create, reread, statuses, step

NO_LOST = (FailureKind.FAILED, FailureKind.TIMED_OUT)
LATER = T0 + timedelta(hours=1)


async def _run(
    store: Store,
    agent: Agent,
    new: NewTask,
    outcome: AttemptOutcome,
    *,
    error: str | None = "boom",
) -> Task:
    """Create ``new``, dispatch it to ``agent`` and end its attempt with ``outcome``."""
    [(task, _)] = await store.create_tasks([new], now=T0)
    [dispatch] = await store.claim_tasks([group([agent], free=1)], now=LATER)
    assert dispatch.task.id == task.id
    ref = AttemptRef(task.id, dispatch.attempt, agent.id)
    [done] = await store.finish_attempts([AttemptResult(ref, outcome, error=error)], now=LATER)
    assert done.accepted
    ended = await store.get_task(task.id)
    assert ended is not None
    return ended


async def test_the_retry_policy_is_kept_with_the_task(store: Store) -> None:
    policy = RetryPolicy(
        max_retries=4,
        backoff_seconds=5,
        max_backoff_seconds=30,
        jitter=0.25,
        retry_on=(FailureKind.TIMED_OUT, FailureKind.AGENT_LOST),
    )
    nothing = RetryPolicy(retry_on=())
    [(first, _), (second, _)] = await store.create_tasks(
        [NewTask("a", "t", retry=policy), NewTask("b", "t", retry=nothing)], now=T0
    )
    assert first.retry == policy
    assert (await store.get_task(first.id)).retry == policy  # type: ignore[union-attr]
    assert (await store.get_task(second.id)).retry == nothing  # type: ignore[union-attr]


async def test_the_retry_policy_is_kept_with_the_cron_job(store: Store) -> None:
    policy = RetryPolicy(max_retries=2, max_backoff_seconds=90, jitter=1.0, retry_on=NO_LOST)
    job = await store.create_cron_job(
        NewCronJob("nightly", "0 3 * * *", "t", retry=policy), next_fire_at=None, now=T0
    )
    assert job.retry == policy
    changed = dataclasses.replace(policy, jitter=0.5, retry_on=(FailureKind.FAILED,))
    updated = await store.update_cron_job(job.id, CronJobChanges(retry=changed), now=T0)
    assert updated.retry == changed
    assert (await store.get_cron_job(job.id)).retry == changed  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("outcome", "kind", "final"),
    [
        (AttemptOutcome.FAILED, FailureKind.FAILED, TaskStatus.FAILED),
        (AttemptOutcome.TIMED_OUT, FailureKind.TIMED_OUT, TaskStatus.TIMED_OUT),
    ],
)
async def test_a_failure_kind_not_in_retry_on_ends_the_task_at_once(
    store: Store,
    connect: ConnectAgent,
    outcome: AttemptOutcome,
    kind: FailureKind,
    final: TaskStatus,
) -> None:
    agent = await connect("a1")
    others = tuple(k for k in FailureKind if k is not kind)
    new = NewTask("n", "t", retry=RetryPolicy(max_retries=5, retry_on=others))
    ended = await _run(store, agent, new, outcome)
    assert ended.status is final
    assert ended.error == f"boom (not retried: retry_on does not include {kind})"
    assert ended.finished_at == LATER
    [attempt] = await store.list_attempts(ended.id)
    assert (attempt.outcome, attempt.error) == (outcome, "boom")  # the agent's own words


async def test_a_failure_kind_in_retry_on_is_retried_after_the_jittered_backoff(
    store: Store, connect: ConnectAgent
) -> None:
    agent = await connect("a1")
    retry = RetryPolicy(
        max_retries=1, backoff_seconds=100, jitter=0.5, retry_on=(FailureKind.FAILED,)
    )
    waiting = await _run(store, agent, NewTask("n", "t", retry=retry), AttemptOutcome.FAILED)
    assert (waiting.status, waiting.error) == (TaskStatus.PENDING, "boom")
    delay = waiting.scheduled_at - LATER
    assert timedelta(seconds=50) <= delay <= timedelta(seconds=100)


async def test_jitter_spreads_the_retries_of_tasks_that_failed_together(
    store: Store, connect: ConnectAgent
) -> None:
    agent = await connect("a1", slots=20)
    retry = RetryPolicy(max_retries=1, backoff_seconds=1000, jitter=1.0)
    created = await store.create_tasks(
        [NewTask(f"n{i}", "t", retry=retry) for i in range(20)], now=T0
    )
    dispatches = await store.claim_tasks([group([agent])], now=LATER)
    assert len(dispatches) == len(created)
    results = [
        AttemptResult(AttemptRef(d.task.id, d.attempt, agent.id), AttemptOutcome.FAILED)
        for d in dispatches
    ]
    await store.finish_attempts(results, now=LATER)
    due = set()
    for task, _ in created:
        again = await store.get_task(task.id)
        assert again is not None
        assert again.status is TaskStatus.PENDING
        assert LATER <= again.scheduled_at <= LATER + timedelta(seconds=1000)
        due.add(again.scheduled_at)
    assert len(due) > 10  # twenty draws over 1000 s: not all at one instant


async def _hold(store: Store, agent: Agent, retry: RetryPolicy) -> Task:
    [(task, _)] = await store.create_tasks([NewTask("n", "t", retry=retry)], now=T0)
    [dispatch] = await store.claim_tasks([group([agent], free=1)], now=LATER)
    assert dispatch.task.id == task.id
    return task


async def test_a_lost_agent_fails_a_task_whose_retry_on_lacks_agent_lost(
    store: Store, connect: ConnectAgent
) -> None:
    agent = await connect("a1")
    strict = await _hold(store, agent, RetryPolicy(max_retries=3, retry_on=NO_LOST))
    lenient = await _hold(store, agent, RetryPolicy())
    end = LATER + timedelta(seconds=5)
    assert await store.release_agent(agent.id, now=end) == [lenient.id]
    failed = await store.get_task(strict.id)
    assert failed is not None
    assert (failed.status, failed.error, failed.finished_at) == (
        TaskStatus.FAILED,
        LOST_NOT_RETRIED,
        end,
    )
    [attempt] = await store.list_attempts(strict.id)
    assert attempt.outcome is AttemptOutcome.LOST
    assert (await store.get_task(lenient.id)).status is TaskStatus.PENDING  # type: ignore[union-attr]
    assert (await store.get_agent(agent.id)).running == 0  # type: ignore[union-attr]
    other = await connect("a2")
    claimed = await store.claim_tasks([group([other])], now=end)
    assert [d.task.id for d in claimed] == [lenient.id]  # the failed one is not dispatched


async def test_the_reaper_fails_it_too(store: Store, connect: ConnectAgent) -> None:
    agent = await connect("a1")
    task = await _hold(store, agent, RetryPolicy(retry_on=(FailureKind.FAILED,)))
    assert await store.reap_agents(stale_before=LATER + timedelta(days=1), now=LATER) == [agent.id]
    reaped = await store.get_task(task.id)
    assert reaped is not None
    assert (reaped.status, reaped.error) == (TaskStatus.FAILED, LOST_NOT_RETRIED)


async def test_a_step_failed_by_its_lost_agent_settles_its_workflow(
    store: Store, connect: ConnectAgent
) -> None:
    agent = await connect("a1")
    first = step("a")
    strict = dataclasses.replace(
        first, task=dataclasses.replace(first.task, retry=RetryPolicy(retry_on=NO_LOST))
    )
    workflow = await create(
        store,
        strict,
        step("b", "a"),
        step("alert", "a", run_if=RunIf.ANY_FAILED),
        on_failure=OnFailure.CONTINUE,
    )
    await claim(store, agent)
    released = await store.release_agent(agent.id, now=T0)
    after = await reread(store, workflow)
    assert statuses(after) == {
        "a": TaskStatus.FAILED,
        "b": TaskStatus.SKIPPED,
        "alert": TaskStatus.PENDING,
    }
    assert released == [after.steps[2].task.id]  # the caller wakes the dispatchers for it


# --- the dead-letter view ---------------------------------------------------------------------


async def _ids(store: Store, query: TaskFilter) -> set[UUID]:
    page = await store.list_tasks(query, limit=100, offset=0)
    assert page.total == len(page.items)
    return {task.id for task in page.items}


async def test_final_lists_the_failures_no_task_retries_yet(
    store: Store, connect: ConnectAgent
) -> None:
    agent = await connect("a1")
    failed = await _run(store, agent, NewTask("f", "t"), AttemptOutcome.FAILED)
    timed_out = await _run(store, agent, NewTask("x", "t"), AttemptOutcome.TIMED_OUT)
    handled = await _run(store, agent, NewTask("h", "t"), AttemptOutcome.FAILED)
    replayed = await _run(store, agent, NewTask("r", "t"), AttemptOutcome.FAILED)
    succeeded = await _run(store, agent, NewTask("s", "t"), AttemptOutcome.SUCCEEDED)
    retrying = await _run(
        store, agent, NewTask("w", "t", retry=RetryPolicy(max_retries=1)), AttemptOutcome.FAILED
    )
    assert retrying.status is TaskStatus.PENDING  # a retry is due: not a dead letter
    cancelled = await store.cancel_task(
        (await store.create_tasks([NewTask("c", "t")], now=T0))[0][0].id, now=T0
    )
    # retried by hand (TaskQueue.retry creates it so) and replayed: both handled
    [(again, _)] = await store.create_tasks(
        [dataclasses.replace(spec_of(handled), replay_of=handled.id)], now=LATER
    )
    await store.replay_task(replayed.id, now=LATER)

    dead = {failed.id, timed_out.id}
    assert await _ids(store, TaskFilter(final=True)) == dead
    assert await _ids(store, TaskFilter(statuses=(TaskStatus.FAILED,), final=True)) == {failed.id}
    assert await _ids(store, TaskFilter(statuses=(TaskStatus.SUCCEEDED,), final=True)) == set()
    everything_failed = await _ids(store, TaskFilter(statuses=(TaskStatus.FAILED,)))
    assert everything_failed == {failed.id, handled.id, replayed.id}
    assert {succeeded.id, cancelled.id, again.id} & await _ids(
        store, TaskFilter(final=True)
    ) == set()
    assert (await store.get_task(again.id)).replay_of == handled.id  # type: ignore[union-attr]


async def test_a_quarantined_task_is_a_dead_letter(store: Store, connect: ConnectAgent) -> None:
    [(task, _)] = await store.create_tasks([NewTask("poison", "t")], now=T0)
    for crash in (1, 2, 3):
        agent = await connect(f"a{crash}")
        await store.claim_tasks([group([agent], free=1)], now=T0 + timedelta(hours=crash))
        await store.release_agent(agent.id, now=T0 + timedelta(hours=crash))
    assert await _ids(store, TaskFilter(final=True)) == {task.id}
