"""Workflows on every store: creation, release on the last parent's success (exactly once,
also under concurrent finishes on two PostgreSQL store instances), skip propagation, the
``on_failure`` policies, ``run_if``, and cancel."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from uuid import UUID

import pytest

from hetuflow.errors import WorkflowAlreadyFinished, WorkflowNotFound
from hetuflow.models import (
    Agent,
    AttemptOutcome,
    AttemptRef,
    AttemptResult,
    Dispatch,
    NewTask,
    RetryPolicy,
    TaskStatus,
)
from hetuflow.store.base import Store
from hetuflow.workflows import (
    NewStep,
    NewWorkflow,
    OnFailure,
    RunIf,
    Workflow,
    WorkflowStatus,
    check_workflow,
)

from ._support import T0, ConnectAgent, OpenStore, group


def step(
    name: str, *depends_on: str, run_if: RunIf = RunIf.ALL_SUCCEEDED, retries: int = 0
) -> NewStep:
    task = NewTask(name, "t", payload={"step": name}, retry=RetryPolicy(max_retries=retries))
    return NewStep(name, task, tuple(depends_on), run_if)


async def create(store: Store, *steps: NewStep, on_failure: OnFailure = OnFailure.STOP) -> Workflow:
    workflow = NewWorkflow("wf", tuple(steps), on_failure)
    return await store.create_workflow(workflow, check_workflow(workflow), now=T0)


def statuses(workflow: Workflow) -> dict[str, TaskStatus]:
    return {s.name: s.task.status for s in workflow.steps}


async def reread(store: Store, workflow: Workflow) -> Workflow:
    found = await store.get_workflow(workflow.id)
    assert found is not None
    return found


async def claim(store: Store, agent: Agent) -> dict[str, Dispatch]:
    """Claim whatever is pending for ``agent``; by step name."""
    dispatches = await store.claim_tasks([group([agent])], now=T0)
    return {d.task.name: d for d in dispatches}


async def finish(
    store: Store,
    dispatch: Dispatch,
    outcome: AttemptOutcome = AttemptOutcome.SUCCEEDED,
    result: object = None,
) -> None:
    ref = AttemptRef(dispatch.task.id, dispatch.attempt, dispatch.agent_id)
    [done] = await store.finish_attempts(
        [AttemptResult(ref, outcome, result=result, error=None if result else "boom")], now=T0
    )
    assert done.accepted


async def test_create_makes_every_step_at_once(store: Store) -> None:
    workflow = await create(store, step("a"), step("b"), step("c", "a", "b"))
    assert [s.name for s in workflow.steps] == ["a", "b", "c"]
    assert statuses(workflow) == {
        "a": TaskStatus.PENDING,
        "b": TaskStatus.PENDING,
        "c": TaskStatus.WAITING,
    }
    assert workflow.steps[2].depends_on == ("a", "b")
    assert workflow.status is WorkflowStatus.RUNNING
    assert await store.get_workflow(workflow.id) == workflow
    page = await store.list_workflows(limit=10, offset=0)
    assert page.total == 1
    assert page.items[0].step_counts == {TaskStatus.PENDING: 2, TaskStatus.WAITING: 1}
    assert page.items[0].status is WorkflowStatus.RUNNING


async def test_a_step_is_released_by_its_last_parent_with_their_results(
    store: Store, connect: ConnectAgent
) -> None:
    agent = await connect("a1")
    workflow = await create(store, step("a"), step("b"), step("c", "a", "b"))
    first = await claim(store, agent)
    assert set(first) == {"a", "b"}
    assert first["a"].task.parents is None
    await finish(store, first["a"], result={"rows": 3})
    assert statuses(await reread(store, workflow))["c"] is TaskStatus.WAITING
    assert await claim(store, agent) == {}
    await finish(store, first["b"], result=[1, 2])
    assert statuses(await reread(store, workflow))["c"] is TaskStatus.PENDING
    second = await claim(store, agent)
    assert set(second) == {"c"}
    assert second["c"].task.parents == {"a": {"rows": 3}, "b": [1, 2]}
    await finish(store, second["c"], result="done")
    final = await reread(store, workflow)
    assert final.status is WorkflowStatus.SUCCEEDED
    assert final.finished_at is not None


async def test_a_retried_parent_releases_its_child_only_when_it_succeeds(
    store: Store, connect: ConnectAgent
) -> None:
    agent = await connect("a1")
    workflow = await create(store, step("a", retries=1), step("b", "a"))
    first = await claim(store, agent)
    await finish(store, first["a"], AttemptOutcome.FAILED)
    assert statuses(await reread(store, workflow)) == {
        "a": TaskStatus.PENDING,  # a retry is due (after its backoff)
        "b": TaskStatus.WAITING,
    }


async def test_a_failure_skips_the_descendants_naming_the_failed_step(
    store: Store, connect: ConnectAgent
) -> None:
    agent = await connect("a1")
    workflow = await create(
        store,
        step("a"),
        step("b", "a"),
        step("c", "b"),
        step("d"),
        step("e", "d"),
        on_failure=OnFailure.CONTINUE,
    )
    first = await claim(store, agent)
    await finish(store, first["a"], AttemptOutcome.FAILED)
    after = await reread(store, workflow)
    by_name = {s.name: s.task for s in after.steps}
    assert by_name["b"].status is TaskStatus.SKIPPED
    assert by_name["c"].status is TaskStatus.SKIPPED
    assert by_name["b"].error == "skipped: step 'a' failed"
    assert by_name["c"].error == "skipped: step 'a' failed"
    assert by_name["b"].finished_at is not None
    # continue: the independent branch goes on
    assert by_name["e"].status is TaskStatus.WAITING
    await finish(store, first["d"], result=1)
    assert set(await claim(store, agent)) == {"e"}
    assert (await reread(store, workflow)).status is WorkflowStatus.RUNNING


async def test_stop_skips_waiting_steps_but_running_ones_finish_and_clean_up_runs(
    store: Store, connect: ConnectAgent
) -> None:
    agent = await connect("a1")
    workflow = await create(
        store,
        step("a"),
        step("d"),
        step("e", "d"),
        step("cleanup", "a", "e", run_if=RunIf.ALL_DONE),
        step("alert", "a", run_if=RunIf.ANY_FAILED),
    )
    first = await claim(store, agent)
    assert set(first) == {"a", "d"}
    await finish(store, first["a"], AttemptOutcome.FAILED)
    after = {s.name: s.task for s in (await reread(store, workflow)).steps}
    assert after["e"].status is TaskStatus.SKIPPED
    assert after["e"].error == "skipped: the workflow stopped because step 'a' failed"
    assert after["d"].status is TaskStatus.DISPATCHED  # running ones finish
    assert after["alert"].status is TaskStatus.PENDING  # any_failed: a parent failed
    assert after["cleanup"].status is TaskStatus.PENDING  # all_done: a done, e skipped
    await finish(store, first["d"], result="late")
    second = await claim(store, agent)
    assert set(second) == {"alert", "cleanup"}
    assert second["cleanup"].task.parents == {"a": None, "e": None}
    for dispatch in second.values():
        await finish(store, dispatch, result="ok")
    final = await reread(store, workflow)
    assert final.status is WorkflowStatus.FAILED
    assert statuses(final)["d"] is TaskStatus.SUCCEEDED


async def test_any_failed_is_skipped_when_every_parent_succeeded(
    store: Store, connect: ConnectAgent
) -> None:
    agent = await connect("a1")
    workflow = await create(
        store, step("a"), step("b"), step("alert", "a", "b", run_if=RunIf.ANY_FAILED)
    )
    first = await claim(store, agent)
    await finish(store, first["a"], result=1)
    assert statuses(await reread(store, workflow))["alert"] is TaskStatus.WAITING
    await finish(store, first["b"], result=2)
    final = await reread(store, workflow)
    alert = final.steps[2].task
    assert alert.status is TaskStatus.SKIPPED
    assert alert.error == "skipped: run_if any_failed, and every parent succeeded"
    assert final.status is WorkflowStatus.SUCCEEDED


async def test_cancelling_a_waiting_step_skips_its_descendants(store: Store) -> None:
    workflow = await create(
        store, step("a"), step("b", "a"), step("c", "b"), on_failure=OnFailure.CONTINUE
    )
    b = workflow.steps[1].task
    cancelled = await store.cancel_task(b.id, now=T0)
    assert cancelled.status is TaskStatus.CANCELLED
    after = statuses(await reread(store, workflow))
    assert after == {
        "a": TaskStatus.PENDING,
        "b": TaskStatus.CANCELLED,
        "c": TaskStatus.SKIPPED,
    }


async def test_cancel_workflow_cancels_waiting_and_pending_steps_and_names_active_ones(
    store: Store, connect: ConnectAgent
) -> None:
    agent = await connect("a1", slots=1)
    workflow = await create(store, step("a"), step("b"), step("c", "a", "b"))
    first = await claim(store, agent)  # one slot: a or b runs, the other stays pending
    [running] = first.values()
    cancelled, active = await store.cancel_workflow(workflow.id, now=T0)
    assert active == [running.task.id]
    assert cancelled.status is WorkflowStatus.CANCELLED
    assert cancelled.cancelled_at == T0
    by_name = statuses(cancelled)
    assert by_name[running.task.name] is TaskStatus.DISPATCHED
    assert by_name["c"] is TaskStatus.CANCELLED
    other = ({"a", "b"} - {running.task.name}).pop()
    assert by_name[other] is TaskStatus.CANCELLED
    # the active step goes through the task cancel path, and its confirmation ends it
    assert (await store.cancel_task(running.task.id, now=T0)).status is TaskStatus.CANCELLING
    await finish(store, running, AttemptOutcome.CANCELLED)
    final = await reread(store, workflow)
    assert all(s.task.status is TaskStatus.CANCELLED for s in final.steps)
    assert final.status is WorkflowStatus.CANCELLED
    # cancelling again is harmless; an unknown or finished workflow is an error
    assert (await store.cancel_workflow(workflow.id, now=T0))[1] == []
    with pytest.raises(WorkflowNotFound):
        await store.cancel_workflow(UUID(int=1), now=T0)
    done = await create(store, step("x"))
    x = await claim(store, agent)
    await finish(store, x["x"], result=None)
    with pytest.raises(WorkflowAlreadyFinished):
        await store.cancel_workflow(done.id, now=T0)


async def test_plain_tasks_finish_as_before(store: Store, connect: ConnectAgent) -> None:
    agent = await connect("a1")
    [(task, _)] = await store.create_tasks([NewTask("plain", "t")], now=T0)
    first = await claim(store, agent)
    assert first["plain"].task.parents is None
    await finish(store, first["plain"], result={"ok": True})
    stored = await store.get_task(task.id)
    assert stored is not None
    assert stored.status is TaskStatus.SUCCEEDED


async def test_parents_finishing_at_once_on_two_nodes_release_their_child_exactly_once(
    store: Store, connect: ConnectAgent, open_store: OpenStore
) -> None:
    """Fan-ins whose parents finish concurrently through two store instances (two server
    nodes on PostgreSQL; two processes' connections on one SQLite file): every child is
    released once, with every parent's result. (A read-then-write count of the finished
    parents fails this on PostgreSQL.)"""
    other = await open_store()
    agent = await connect("a1", slots=1000)
    for round_ in range(10):
        parents = [step(f"p{i}") for i in range(6)]
        workflow = await create(store, *parents, step("child", *[p.name for p in parents]))
        claimed = await claim(store, agent)
        assert len(claimed) == 6
        stores: Sequence[Store] = (store, other)
        await asyncio.gather(
            *(
                finish(stores[i % 2], claimed[f"p{i}"], result={"i": i, "round": round_})
                for i in range(6)
            )
        )
        child = (await reread(store, workflow)).steps[-1].task
        assert child.status is TaskStatus.PENDING, round_
        released = await claim(store, agent)
        assert set(released) == {"child"}
        assert released["child"].attempt == 1
        assert released["child"].task.parents == {
            f"p{i}": {"i": i, "round": round_} for i in range(6)
        }
        await finish(store, released["child"], result=None)


async def test_each_end_of_a_workflow_is_reported_once_by_the_store_that_ended_it(
    store: Store, connect: ConnectAgent, open_store: OpenStore
) -> None:
    """``on_workflow_finished``: the steps of a workflow finish concurrently through two
    store instances (two nodes); exactly one reports the workflow, after its commit. A cancel
    that leaves nothing running, a cancelled step, and a retry that ends again report too."""
    other = await open_store()
    reports: dict[int, list[WorkflowStatus]] = {0: [], 1: []}
    stores: Sequence[Store] = (store, other)
    for index, each in enumerate(stores):
        each.on_workflow_finished(reports[index].append)
    agent = await connect("a1", slots=100)
    for round_ in range(5):
        await create(store, *[step(f"s{i}") for i in range(6)])
        claimed = await claim(store, agent)
        await asyncio.gather(*(finish(stores[i % 2], claimed[f"s{i}"], result=i) for i in range(6)))
        assert reports[0] + reports[1] == [WorkflowStatus.SUCCEEDED] * (round_ + 1)
    reports[0].clear()
    reports[1].clear()

    waiting = await create(store, step("a"), step("b", "a"))
    await store.cancel_workflow(waiting.id, now=T0)
    assert reports[0] == [WorkflowStatus.CANCELLED]
    await store.cancel_workflow(waiting.id, now=T0)  # already ended: not reported again
    assert reports[0] == [WorkflowStatus.CANCELLED]

    alone = await create(store, step("a"), step("b", "a"))
    await other.cancel_task(alone.steps[0].task.id, now=T0)
    assert reports[1] == [WorkflowStatus.FAILED]  # a was cancelled, b skipped

    running = await create(store, step("a"))
    [dispatch] = (await claim(store, agent)).values()
    _, active = await store.cancel_workflow(running.id, now=T0)
    assert active == [dispatch.task.id]
    assert reports[0] == [WorkflowStatus.CANCELLED]  # a step is still running
    await store.finish_attempts(
        [
            AttemptResult(
                AttemptRef(dispatch.task.id, dispatch.attempt, dispatch.agent_id),
                AttemptOutcome.CANCELLED,
            )
        ],
        now=T0,
    )
    assert reports[0] == [WorkflowStatus.CANCELLED, WorkflowStatus.CANCELLED]
