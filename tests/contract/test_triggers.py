"""Contract: triggers, hooks and events (an event id is delivered once, on every store)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import pytest

from hetuflow.errors import (
    EventIdReused,
    HookNameTaken,
    HookNotFound,
    TriggerNameTaken,
    TriggerNotFound,
)
from hetuflow.models import NewTask, TaskFilter, TaskStatus
from hetuflow.store.base import Store
from hetuflow.triggers import NewEvent, NewHook, NewTrigger, event_task, event_workflow
from hetuflow.workflows import NewStep, NewWorkflow, check_workflow

from ._support import T0, OpenStore


def _trigger(name: str, key: str = "order.created", **filter: object) -> NewTrigger:
    return NewTrigger(
        name=name, event_key=key, filter=dict(filter), task={"task_type": "t", "name": name}
    )


def _tasks(event: NewEvent, *names: str) -> list[tuple[str, NewTask]]:
    return [(name, event_task(NewTask(name=name, task_type="t"), event)) for name in names]


async def test_triggers_are_stored_listed_by_key_and_deleted(store: Store) -> None:
    paid = await store.create_trigger(_trigger("paid", status="paid"), now=T0)
    other = await store.create_trigger(_trigger("shipped", "order.shipped"), now=T0)
    assert (paid.name, paid.event_key, paid.filter, paid.created_at) == (
        "paid",
        "order.created",
        {"status": "paid"},
        T0,
    )
    assert paid.task == {"task_type": "t", "name": "paid"}
    assert await store.get_trigger(paid.id) == paid
    assert await store.list_triggers() == [paid, other]
    assert await store.list_triggers(event_key="order.shipped") == [other]
    with pytest.raises(TriggerNameTaken):
        await store.create_trigger(_trigger("paid", "x"), now=T0)
    await store.delete_trigger(paid.id)
    assert await store.get_trigger(paid.id) is None
    with pytest.raises(TriggerNotFound):
        await store.delete_trigger(paid.id)


async def test_hooks_keep_their_secret_and_names_are_unique(store: Store) -> None:
    hook = await store.create_hook(NewHook("stripe", "payment.done", "s" * 32), now=T0)
    assert (hook.name, hook.event_key, hook.secret, hook.created_at) == (
        "stripe",
        "payment.done",
        "s" * 32,
        T0,
    )
    assert await store.get_hook("stripe") == hook
    assert await store.list_hooks() == [hook]
    with pytest.raises(HookNameTaken):
        await store.create_hook(NewHook("stripe", "other", "t" * 32), now=T0)
    await store.delete_hook("stripe")
    assert await store.get_hook("stripe") is None
    with pytest.raises(HookNotFound):
        await store.delete_hook("stripe")


async def test_an_event_creates_its_tasks_once(store: Store) -> None:
    event = NewEvent("evt-1", "order.created", {"order": 7})
    first = await store.record_event(event, _tasks(event, "a", "b"), now=T0)
    assert first.created
    assert first.matched == 2
    assert [t.name for t in first.tasks] == ["a", "b"]
    assert first.tasks[0].payload == {
        "event": {"key": "order.created", "id": "evt-1", "data": {"order": 7}}
    }
    # The replay creates nothing and answers with the first delivery's tasks.
    later = T0 + timedelta(minutes=5)
    again = await store.record_event(event, _tasks(event, "a", "b", "c"), now=later)
    assert not again.created
    assert (again.matched, again.received_at) == (2, T0)
    assert [t.id for t in again.tasks] == [t.id for t in first.tasks]
    page = await store.list_tasks(TaskFilter(), limit=10)
    assert page.total == 2
    assert await store.get_event("evt-1") == again
    assert await store.get_event("evt-2") is None


async def test_an_event_id_with_another_key_is_refused(store: Store) -> None:
    event = NewEvent("evt-1", "order.created", {})
    await store.record_event(event, _tasks(event, "a"), now=T0)
    other = NewEvent("evt-1", "order.shipped", {})
    with pytest.raises(EventIdReused):
        await store.record_event(other, _tasks(other, "b"), now=T0)
    assert (await store.list_tasks(TaskFilter(), limit=10)).total == 1


async def test_an_event_no_filter_matched_is_recorded_without_tasks(store: Store) -> None:
    event = NewEvent("evt-1", "order.created", {"status": "open"})
    first = await store.record_event(event, [], now=T0)
    assert first.created
    assert (first.matched, first.tasks) == (0, ())
    again = await store.record_event(event, _tasks(event, "a"), now=T0)
    assert not again.created
    assert again.tasks == ()
    assert (await store.list_tasks(TaskFilter(), limit=10)).total == 0


async def test_concurrent_deliveries_of_one_id_create_once(
    store: Store, open_store: OpenStore
) -> None:
    """Two server processes receive the same event at once: the primary key decides."""
    other = await open_store()
    event = NewEvent(str(uuid.uuid4()), "order.created", {})
    results = await asyncio.gather(
        *(s.record_event(event, _tasks(event, "a", "b"), now=T0) for s in (store, other) * 3)
    )
    assert sum(r.created for r in results) == 1
    ids = {tuple(t.id for t in r.tasks) for r in results}
    assert len(ids) == 1
    assert (await store.list_tasks(TaskFilter(), limit=10)).total == 2


async def test_an_event_creates_workflows_once(store: Store) -> None:
    event = NewEvent("evt-w", "order.created", {"order": 7})
    template = NewWorkflow(
        "ship",
        (
            NewStep("pack", NewTask(name="pack", task_type="t")),
            NewStep("send", NewTask(name="send", task_type="t"), depends_on=("pack",)),
        ),
    )
    workflow = event_workflow(template, event)
    triggered = [("ship", workflow, check_workflow(workflow))]
    first = await store.record_event(event, _tasks(event, "a"), workflows=triggered, now=T0)
    assert first.created
    assert first.matched == 2
    [made] = first.workflows
    assert [(s.name, s.task.status) for s in made.steps] == [
        ("pack", TaskStatus.PENDING),
        ("send", TaskStatus.WAITING),
    ]
    assert made.steps[1].task.payload["event"] == {
        "key": "order.created",
        "id": "evt-w",
        "data": {"order": 7},
    }
    again = await store.record_event(event, [], workflows=triggered, now=T0)
    assert not again.created
    assert [w.id for w in again.workflows] == [made.id]
    assert [t.name for t in again.tasks] == ["a"]
    assert (await store.list_workflows(limit=10, offset=0)).total == 1
    assert (await store.list_tasks(TaskFilter(), limit=10)).total == 3


async def test_deleting_a_rate_limit_takes_it_out_of_the_triggers_that_name_it(
    store: Store,
) -> None:
    await store.create_rate_limit("crm", 5, 60, now=T0)
    await store.create_rate_limit("mail", 5, 60, now=T0)
    crm, mail = {"name": "crm", "units": 2}, {"name": "mail", "units": 1}
    task = await store.create_trigger(
        NewTrigger("task", "k", {}, task={"task_type": "t", "rate_limits": [crm, mail]}), now=T0
    )
    only = await store.create_trigger(
        NewTrigger("only", "k", {}, task={"task_type": "t", "rate_limits": [crm]}), now=T0
    )
    steps = [
        {"name": "a", "task_type": "t", "rate_limits": [mail, crm]},
        {"name": "b", "task_type": "t", "depends_on": ["a"]},
    ]
    flow = await store.create_trigger(
        NewTrigger("flow", "k", {}, workflow={"name": "w", "steps": steps}), now=T0
    )
    other = await store.create_trigger(
        NewTrigger("other", "k", {}, task={"task_type": "t", "rate_limits": [mail]}), now=T0
    )
    await store.delete_rate_limit("crm")
    assert await store.get_trigger(other.id) == other  # names only what is left
    changed = await store.get_trigger(task.id)
    assert changed is not None
    assert changed.task == {"task_type": "t", "rate_limits": [mail]}
    emptied = await store.get_trigger(only.id)
    assert emptied is not None
    assert emptied.task == {"task_type": "t"}
    stepped = await store.get_trigger(flow.id)
    assert stepped is not None
    assert stepped.task is None
    assert stepped.workflow == {
        "name": "w",
        "steps": [{"name": "a", "task_type": "t", "rate_limits": [mail]}, steps[1]],
    }
