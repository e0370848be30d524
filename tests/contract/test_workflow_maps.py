"""Fan-out from data (``map_over``) on every store: one child step per item of the parent's
list, released in the transaction of the parent's success; the mapped step collects its
children's results in item order once every child has ended (exactly once, also when
children finish at once on two PostgreSQL store instances); a result that is no list, or
too long, fails the mapped step; an empty list succeeds it at once; retry re-runs only the
children that did not succeed."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from hetuflow.errors import WorkflowInvalid, WorkflowNotRetryable
from hetuflow.models import AttemptOutcome, NewTask, TaskStatus
from hetuflow.store.base import Store
from hetuflow.workflows import (
    MAX_MAP_ITEMS,
    NewStep,
    NewWorkflow,
    OnFailure,
    RunIf,
    WorkflowStatus,
    check_workflow,
)

from ._support import T0, ConnectAgent, OpenStore
from .test_workflows import claim, create, finish, reread, statuses, step


def mapped(name: str, over: str, *depends_on: str) -> NewStep:
    task = NewTask(name, "t", payload={"step": name})
    return NewStep(name, task, (over, *depends_on), map_over=over)


async def test_a_list_fans_out_and_the_fan_in_sees_the_results_in_item_order(
    store: Store, connect: ConnectAgent
) -> None:
    agent = await connect("a1", slots=10)
    workflow = await create(
        store,
        step("fetch"),
        step("config"),
        mapped("square", "fetch", "config"),
        step("total", "square"),
    )
    first = await claim(store, agent)
    await finish(store, first["config"], result={"factor": 2})
    await finish(store, first["fetch"], result=[3, {"n": 4}, 5])
    shown = await reread(store, workflow)
    assert statuses(shown) == {
        "fetch": TaskStatus.SUCCEEDED,
        "config": TaskStatus.SUCCEEDED,
        "square": TaskStatus.WAITING,
        "square[0]": TaskStatus.PENDING,
        "square[1]": TaskStatus.PENDING,
        "square[2]": TaskStatus.PENDING,
        "total": TaskStatus.WAITING,
    }
    square = shown.steps[2]
    assert (square.map_over, square.depends_on) == ("fetch", ("fetch", "config"))
    children = shown.steps[3:6]
    assert [(c.map_of, c.map_index, c.depends_on) for c in children] == [
        ("square", i, ()) for i in range(3)
    ]
    runs = await claim(store, agent)
    assert set(runs) == {"square[0]", "square[1]", "square[2]"}
    assert runs["square[1]"].task.payload == {"step": "square", "item": {"n": 4}, "map_index": 1}
    assert runs["square[1]"].task.parents == {"fetch": {"n": 4}, "config": {"factor": 2}}
    for index in (2, 0):
        await finish(store, runs[f"square[{index}]"], result=index * 10)
        assert statuses(await reread(store, workflow))["square"] is TaskStatus.WAITING
    await finish(store, runs["square[1]"], result="one")
    shown = await reread(store, workflow)
    assert shown.steps[2].task.status is TaskStatus.SUCCEEDED
    assert shown.steps[2].task.result == [0, "one", 20]
    fan_in = await claim(store, agent)
    assert set(fan_in) == {"total"}
    assert fan_in["total"].task.parents == {"square": [0, "one", 20]}
    await finish(store, fan_in["total"], result="done")
    assert (await reread(store, workflow)).status is WorkflowStatus.SUCCEEDED


async def test_an_empty_list_succeeds_the_mapped_step_at_once_with_no_children(
    store: Store, connect: ConnectAgent
) -> None:
    agent = await connect("a1")
    workflow = await create(store, step("fetch"), mapped("each", "fetch"), step("after", "each"))
    await finish(store, (await claim(store, agent))["fetch"], result=[])
    shown = await reread(store, workflow)
    assert statuses(shown) == {
        "fetch": TaskStatus.SUCCEEDED,
        "each": TaskStatus.SUCCEEDED,
        "after": TaskStatus.PENDING,
    }
    assert shown.steps[1].task.result == []
    assert (await claim(store, agent))["after"].task.parents == {"each": []}


@pytest.mark.parametrize(
    ("result", "reason"),
    [
        ({"items": [1]}, "map_over: step 'fetch' returned an object, not a JSON array"),
        ("abc", "map_over: step 'fetch' returned a string, not a JSON array"),
        (None, "map_over: step 'fetch' returned null, not a JSON array"),
        (
            list(range(MAX_MAP_ITEMS + 1)),
            f"map_over: step 'fetch' returned {MAX_MAP_ITEMS + 1} items, over the limit of"
            f" {MAX_MAP_ITEMS}",
        ),
    ],
)
async def test_a_result_that_is_no_list_or_too_long_fails_the_mapped_step(
    store: Store, connect: ConnectAgent, result: object, reason: str
) -> None:
    agent = await connect("a1")
    workflow = await create(
        store,
        step("fetch"),
        mapped("each", "fetch"),
        step("after", "each"),
        step("alert", "each", run_if=RunIf.ANY_FAILED),
    )
    await finish(store, (await claim(store, agent))["fetch"], result=result)
    shown = await reread(store, workflow)
    assert statuses(shown) == {
        "fetch": TaskStatus.SUCCEEDED,
        "each": TaskStatus.FAILED,
        "after": TaskStatus.SKIPPED,
        "alert": TaskStatus.PENDING,
    }
    assert shown.steps[1].task.error is not None
    assert shown.steps[1].task.error.startswith(reason)
    assert shown.steps[2].task.error == "skipped: step 'each' failed"
    assert len(shown.steps) == 4  # no child was created


async def test_the_mapped_step_waits_for_every_child_then_fails_and_retry_reruns_the_failed(
    store: Store, connect: ConnectAgent
) -> None:
    agent = await connect("a1", slots=10)
    workflow = await create(
        store, step("fetch"), mapped("each", "fetch"), step("after", "each"), step("other")
    )
    first = await claim(store, agent)
    await finish(store, first["fetch"], result=["a", "b", "c"])
    runs = await claim(store, agent)
    await finish(store, runs["each[1]"], AttemptOutcome.FAILED)
    # under on_failure stop the waiting steps are skipped, but the mapped step waits on
    shown = statuses(await reread(store, workflow))
    assert (shown["each"], shown["after"]) == (TaskStatus.WAITING, TaskStatus.SKIPPED)
    await finish(store, runs["each[0]"], result="A")
    await finish(store, runs["each[2]"], result="C")
    await finish(store, first["other"], result=None)
    failed = await reread(store, workflow)
    assert failed.status is WorkflowStatus.FAILED
    assert failed.steps[1].task.status is TaskStatus.FAILED
    assert failed.steps[1].task.error == "1 of 3 items did not succeed: step 'each[1]' failed"

    again, released = await store.retry_workflow(workflow.id, now=T0)
    assert released == 1
    assert statuses(again) == {
        "fetch": TaskStatus.SUCCEEDED,
        "each": TaskStatus.WAITING,
        "each[0]": TaskStatus.SUCCEEDED,
        "each[1]": TaskStatus.PENDING,
        "each[2]": TaskStatus.SUCCEEDED,
        "after": TaskStatus.WAITING,
        "other": TaskStatus.SUCCEEDED,
    }
    rerun = await claim(store, agent)
    assert set(rerun) == {"each[1]"}
    assert rerun["each[1]"].task.payload["item"] == "b"
    assert rerun["each[1]"].task.parents == {"fetch": "b"}
    await finish(store, rerun["each[1]"], result="B")
    after = await claim(store, agent)
    assert after["after"].task.parents == {"each": ["A", "B", "C"]}
    await finish(store, after["after"], result=None)
    assert (await reread(store, workflow)).status is WorkflowStatus.SUCCEEDED


async def test_a_retry_that_would_compute_the_mapped_list_again_is_refused(
    store: Store, connect: ConnectAgent
) -> None:
    agent = await connect("a1", slots=10)
    workflow = await create(
        store,
        step("first"),
        step("fetch", "first", run_if=RunIf.ALL_DONE),
        mapped("each", "fetch"),
        on_failure=OnFailure.CONTINUE,
    )
    await finish(store, (await claim(store, agent))["first"], AttemptOutcome.FAILED)
    await finish(store, (await claim(store, agent))["fetch"], result=[1])
    await finish(store, (await claim(store, agent))["each[0]"], result=1)
    assert (await reread(store, workflow)).status is WorkflowStatus.FAILED
    with pytest.raises(WorkflowNotRetryable, match="step 'each' was mapped over a result"):
        await store.retry_workflow(workflow.id, now=T0)


async def test_cancelling_the_workflow_cancels_the_children(
    store: Store, connect: ConnectAgent
) -> None:
    agent = await connect("a1")
    workflow = await create(store, step("fetch"), mapped("each", "fetch"))
    await finish(store, (await claim(store, agent))["fetch"], result=[1, 2])
    cancelled, active = await store.cancel_workflow(workflow.id, now=T0)
    assert active == []
    assert statuses(cancelled) == {
        "fetch": TaskStatus.SUCCEEDED,
        "each": TaskStatus.CANCELLED,
        "each[0]": TaskStatus.CANCELLED,
        "each[1]": TaskStatus.CANCELLED,
    }
    again, released = await store.retry_workflow(workflow.id, now=T0)
    assert released == 2
    runs = await claim(store, agent)
    assert {name: d.task.payload["item"] for name, d in runs.items()} == {
        "each[0]": 1,
        "each[1]": 2,
    }
    for dispatch in runs.values():
        await finish(store, dispatch, result=dispatch.task.payload["map_index"])
    done = await reread(store, again)
    assert done.status is WorkflowStatus.SUCCEEDED
    assert done.steps[1].task.result == [0, 1]


async def test_children_finishing_at_once_on_two_nodes_are_collected_exactly_once(
    store: Store, connect: ConnectAgent, open_store: OpenStore
) -> None:
    """The children of fan-outs finish concurrently through two store instances: the mapped
    step ends once, with every child's result, and its fan-in is released once."""
    other = await open_store()
    agent = await connect("a1", slots=1000)
    for round_ in range(5):
        workflow = await create(
            store, step("fetch"), mapped("each", "fetch"), step("total", "each")
        )
        await finish(store, (await claim(store, agent))["fetch"], result=list(range(8)))
        runs = await claim(store, agent)
        assert len(runs) == 8
        stores: Sequence[Store] = (store, other)
        await asyncio.gather(
            *(
                finish(stores[i % 2], runs[f"each[{i}]"], result={"i": i, "round": round_})
                for i in range(8)
            )
        )
        released = await claim(store, agent)
        assert set(released) == {"total"}, round_
        assert released["total"].task.parents == {
            "each": [{"i": i, "round": round_} for i in range(8)]
        }
        await finish(store, released["total"], result=None)
        assert (await reread(store, workflow)).status is WorkflowStatus.SUCCEEDED


@pytest.mark.parametrize(
    ("steps", "field", "message"),
    [
        (
            (step("a"), NewStep("b", NewTask("b", "t"), (), map_over="a")),
            "steps.b.map_over",
            "step 'b' maps over 'a', which is not in its depends_on",
        ),
        (
            (step("a"), NewStep("b", NewTask("b", "t"), ("a",), RunIf.ALL_DONE, "a")),
            "steps.b.run_if",
            "a mapped step runs only if all its parents succeeded",
        ),
        (
            (step("a"), mapped("b", "a"), step("b[0]")),
            "steps.b[0].name",
            "has the name of a child of mapped step 'b'",
        ),
    ],
)
def test_a_map_over_that_cannot_run_is_refused_naming_the_step(
    steps: tuple[NewStep, ...], field: str, message: str
) -> None:
    with pytest.raises(WorkflowInvalid, match=message.replace("[", r"\[")) as raised:
        check_workflow(NewWorkflow("wf", steps, OnFailure.STOP))
    assert raised.value.field == field


async def test_a_list_at_the_limit_fans_out_in_full(store: Store, connect: ConnectAgent) -> None:
    agent = await connect("a1")
    workflow = await create(store, step("fetch"), mapped("each", "fetch"))
    await finish(store, (await claim(store, agent))["fetch"], result=list(range(MAX_MAP_ITEMS)))
    shown = await reread(store, workflow)
    assert len(shown.steps) == 2 + MAX_MAP_ITEMS
    last = shown.steps[-1]
    assert (last.name, last.task.status, last.task.payload["item"]) == (
        f"each[{MAX_MAP_ITEMS - 1}]",
        TaskStatus.PENDING,
        MAX_MAP_ITEMS - 1,
    )


@pytest.mark.parametrize(
    ("middle", "status"),
    [
        (AttemptOutcome.SUCCEEDED, WorkflowStatus.SUCCEEDED),
        (AttemptOutcome.FAILED, WorkflowStatus.FAILED),
    ],
)
async def test_a_fan_out_reports_its_children_and_the_workflow_ends_once_with_the_last(
    store: Store, connect: ConnectAgent, middle: AttemptOutcome, status: WorkflowStatus
) -> None:
    """``on_tasks_created`` hears of the children once the fan-out has committed;
    ``on_workflow_finished`` hears nothing while children run, then the workflow's end once,
    from the transaction of its last child (here the mapped step is the last step)."""
    ended: list[WorkflowStatus] = []
    created: list[tuple[str, int]] = []
    store.on_workflow_finished(ended.append)
    store.on_tasks_created(lambda task_type, count: created.append((task_type, count)))
    agent = await connect("a1", slots=10)
    workflow = await create(store, step("fetch"), mapped("each", "fetch"), step("other"))
    first = await claim(store, agent)
    await finish(store, first["other"], result=None)
    await finish(store, first["fetch"], result=["a", "b", "c"])
    assert created == [("t", 3)]
    runs = await claim(store, agent)
    await finish(store, runs["each[0]"], result="A")
    await finish(store, runs["each[1]"], middle, result="B")
    assert ended == []
    await finish(store, runs["each[2]"], result="C")
    assert ended == [status]
    assert (await reread(store, workflow)).status is status
    assert created == [("t", 3)]
