"""Retrying a workflow on every store: the steps that did not succeed and what depends on
them start over, what succeeded is kept and its results handed down again."""

from __future__ import annotations

from uuid import UUID

import pytest

from hetuflow.errors import WorkflowNotFound, WorkflowNotRetryable
from hetuflow.models import AttemptOutcome, TaskStatus
from hetuflow.store.base import Store
from hetuflow.workflows import OnFailure, RunIf, WorkflowStatus

from ._support import T0, ConnectAgent
from .test_workflows import claim, create, finish, reread, statuses, step


async def test_retry_reruns_the_failed_step_and_its_descendants_keeping_what_succeeded(
    store: Store, connect: ConnectAgent
) -> None:
    agent = await connect("a1")
    workflow = await create(
        store,
        step("a"),
        step("b", "a"),
        step("c", "b"),
        step("d", "a"),
        step("alert", "b", run_if=RunIf.ANY_FAILED),
        step("tidy", "a", run_if=RunIf.ANY_FAILED),
        on_failure=OnFailure.CONTINUE,
    )
    first = await claim(store, agent)
    await finish(store, first["a"], result={"n": 1})
    second = await claim(store, agent)
    assert set(second) == {"b", "d"}
    await finish(store, second["b"], AttemptOutcome.FAILED)
    await finish(store, second["d"], result="d")
    third = await claim(store, agent)
    assert set(third) == {"alert"}
    await finish(store, third["alert"], result="alerted")
    failed = await reread(store, workflow)
    assert failed.status is WorkflowStatus.FAILED
    assert statuses(failed)["c"] is TaskStatus.SKIPPED
    assert statuses(failed)["tidy"] is TaskStatus.SKIPPED

    retried, released = await store.retry_workflow(workflow.id, now=T0)
    assert released == 1
    assert retried.status is WorkflowStatus.RUNNING
    assert statuses(retried) == {
        "a": TaskStatus.SUCCEEDED,  # kept
        "b": TaskStatus.PENDING,  # failed: again, with a's result
        "c": TaskStatus.WAITING,  # skipped below b: waits for b again
        "d": TaskStatus.SUCCEEDED,  # kept
        "alert": TaskStatus.WAITING,  # ran after b: depends on b, so again
        "tidy": TaskStatus.SKIPPED,  # any_failed under a that succeeded: decided again
    }
    b = retried.steps[1].task
    assert (b.error, b.result, b.finished_at) == (None, None, None)
    again = await claim(store, agent)
    assert set(again) == {"b"}
    assert again["b"].attempt == second["b"].attempt + 1
    assert again["b"].task.parents == {"a": {"n": 1}}
    await finish(store, again["b"], result="b")
    rest = await claim(store, agent)
    assert set(rest) == {"c"}
    assert rest["c"].task.parents == {"b": "b"}
    await finish(store, rest["c"], result=None)
    final = await reread(store, workflow)
    assert statuses(final)["alert"] is TaskStatus.SKIPPED
    assert final.status is WorkflowStatus.SUCCEEDED


async def test_retry_of_a_cancelled_workflow_and_what_cannot_be_retried(
    store: Store, connect: ConnectAgent
) -> None:
    agent = await connect("a1")
    workflow = await create(store, step("a"), step("b", "a"))
    with pytest.raises(WorkflowNotRetryable, match="still running"):
        await store.retry_workflow(workflow.id, now=T0)
    await store.cancel_workflow(workflow.id, now=T0)
    retried, released = await store.retry_workflow(workflow.id, now=T0)
    assert (retried.status, retried.cancelled_at, released) == (WorkflowStatus.RUNNING, None, 1)
    assert statuses(retried) == {"a": TaskStatus.PENDING, "b": TaskStatus.WAITING}
    first = await claim(store, agent)
    await finish(store, first["a"], result=1)
    second = await claim(store, agent)
    await finish(store, second["b"], result=2)
    assert (await reread(store, workflow)).status is WorkflowStatus.SUCCEEDED
    with pytest.raises(WorkflowNotRetryable, match="no failed"):
        await store.retry_workflow(workflow.id, now=T0)
    with pytest.raises(WorkflowNotFound):
        await store.retry_workflow(UUID(int=1), now=T0)
    assert await store.workflow_of_step(first["a"].task.id) == workflow.id
    assert await store.workflow_of_step(UUID(int=1)) is None
