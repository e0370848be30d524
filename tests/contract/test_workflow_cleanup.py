"""Cleanup keeps a workflow whole: its steps' rows go only with the workflow, once every step
has ended before the retention cut-off."""

from __future__ import annotations

from datetime import timedelta

from hetuflow.models import NewTask
from hetuflow.store.base import Store

from ._support import T0, ConnectAgent
from .test_workflows import claim, create, finish, reread, step

LATER = T0 + timedelta(days=30)


async def test_cleanup_keeps_a_running_workflows_finished_steps(
    store: Store, connect: ConnectAgent
) -> None:
    agent = await connect("a1")
    workflow = await create(store, step("a"), step("b", "a"))
    [(plain, _)] = await store.create_tasks([NewTask("plain", "t")], now=T0)
    first = await claim(store, agent)
    await finish(store, first["a"], result=1)
    await finish(store, first["plain"], result=2)
    # a is finished and old, but its workflow runs on (b is pending): a stays
    assert await store.delete_finished_tasks(finished_before=LATER, limit=100) == 1
    assert await store.get_task(plain.id) is None
    running = await reread(store, workflow)
    assert [s.name for s in running.steps] == ["a", "b"]
    assert running.steps[0].task.result == 1
    second = await claim(store, agent)
    await finish(store, second["b"], result=None)
    # every step ended at T0: before a cut-off at T0 nothing goes, after it everything does
    assert await store.delete_finished_tasks(finished_before=T0, limit=100) == 0
    assert len((await reread(store, workflow)).steps) == 2
    assert await store.delete_finished_tasks(finished_before=LATER, limit=100) == 2
    assert await store.get_workflow(workflow.id) is None
    assert await store.get_task(running.steps[0].task.id) is None
    assert (await store.list_workflows(limit=10, offset=0)).total == 0
