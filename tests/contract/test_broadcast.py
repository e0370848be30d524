"""Contract: broadcasts, a parent and one child pinned to each matching agent."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from hetuflow.config import DatabaseConfig
from hetuflow.errors import NoAgentForBroadcast
from hetuflow.models import (
    Agent,
    AgentStatus,
    AttemptOutcome,
    AttemptRef,
    AttemptResult,
    BroadcastPolicy,
    Dispatch,
    NewBroadcast,
    NewTask,
    Task,
    TaskFilter,
    TaskStatus,
)
from hetuflow.store.base import Store

from ._support import T0, ConnectAgent, OpenStore, group

LATER = T0 + timedelta(seconds=5)


async def _broadcast(
    store: Store, task: NewTask | None = None, policy: BroadcastPolicy = BroadcastPolicy.ALL
) -> tuple[Task, list[Task]]:
    return await store.create_broadcast(task or NewTask("b", "t"), policy=policy, now=T0)


async def _reread(store: Store, task_id: object) -> Task:
    task = await store.get_task(task_id)  # type: ignore[arg-type]
    assert task is not None
    return task


def _result(dispatch: Dispatch, outcome: AttemptOutcome, result: object = None) -> AttemptResult:
    ref = AttemptRef(dispatch.task.id, dispatch.attempt, dispatch.agent_id)
    error = None if outcome is AttemptOutcome.SUCCEEDED else "boom"
    return AttemptResult(ref, outcome, result=result, error=error, finished_at=LATER)


async def _claim_each(store: Store, agents: list[Agent]) -> dict[str, Dispatch]:
    """Claim for each agent alone; its name -> the one dispatch it got."""
    got: dict[str, Dispatch] = {}
    for agent in agents:
        [dispatch] = await store.claim_tasks([group([agent], free=1)], now=T0)
        got[agent.name] = dispatch
    return got


async def test_one_child_per_matching_agent_pinned_to_it(
    store: Store, connect: ConnectAgent
) -> None:
    a = await connect("a", capabilities=["gpu"])
    b = await connect("b", capabilities=["gpu", "x"])
    await connect("no-gpu")
    await connect("other-type", capabilities=["gpu"], task_types=["u"])
    off = await connect("off", capabilities=["gpu"])
    await store.set_agent_status(off.id, AgentStatus.OFFLINE, session=off.session, now=T0)
    disabled = await connect("disabled", capabilities=["gpu"])
    await store.set_agent_enabled(disabled.id, False, now=T0)

    parent, children = await _broadcast(
        store, NewTask("b", "t", payload={"k": 1}, required_capabilities=("gpu",))
    )
    assert parent.status is TaskStatus.WAITING
    assert parent.broadcast_policy is BroadcastPolicy.ALL
    assert {child.pinned_agent_id for child in children} == {a.id, b.id}
    stored = await store.list_broadcast_children(parent.id)
    assert [child.pinned_agent_id for child in stored] == [a.id, b.id]  # by agent name
    assert [(c.status, c.broadcast_of, c.payload) for c in stored] == [
        (TaskStatus.PENDING, parent.id, {"k": 1})
    ] * 2
    assert await _reread(store, parent.id) == parent
    assert await store.list_broadcast_children(stored[0].id) == []


async def test_no_matching_agent_creates_nothing(store: Store, connect: ConnectAgent) -> None:
    await connect("a", task_types=["other"])
    with pytest.raises(NoAgentForBroadcast, match="'t'"):
        await _broadcast(store)
    page = await store.list_tasks(TaskFilter(), limit=10)
    assert page.items == []


async def test_a_pinned_child_is_claimed_only_for_its_agent(
    store: Store, connect: ConnectAgent
) -> None:
    a = await connect("a", slots=1)
    b = await connect("b", slots=1)
    parent, children = await _broadcast(store)
    c = await connect("c")  # joins later: nothing for it
    assert await store.claim_tasks([group([c])], now=T0) == []
    # b's slot full: its child waits even though a has room (a takes only its own).
    both = await store.claim_tasks([group([a, b], free=1), group([b], free=0)], now=T0)
    assert len(both) == 2
    assert {(d.task.id, d.agent_id) for d in both} == {
        (child.id, child.pinned_agent_id) for child in children
    }
    assert [d.task.broadcast_of for d in both] == [parent.id, parent.id]  # the handler's too
    assert await store.claim_tasks([group([a, b, c])], now=T0) == []
    assert (await _reread(store, parent.id)).status is TaskStatus.WAITING


async def test_a_full_agent_leaves_its_child_pending_and_others_run(
    store: Store, connect: ConnectAgent
) -> None:
    a = await connect("a")
    b = await connect("b")
    await _broadcast(store)
    await store.create_tasks([NewTask("plain", "t")], now=T0 + timedelta(seconds=1))
    got = await store.claim_tasks([group([a], free=2), group([b], free=0)], now=LATER)
    assert sorted(d.task.name for d in got) == ["b", "plain"]
    assert {d.agent_id for d in got} == {a.id}


async def test_the_parent_ends_with_its_last_child_and_gathers_results(
    store: Store, connect: ConnectAgent
) -> None:
    agents = [await connect("a"), await connect("b")]
    parent, _ = await _broadcast(store)
    got = await _claim_each(store, agents)
    await store.finish_attempts([_result(got["a"], AttemptOutcome.SUCCEEDED, {"n": 1})], now=LATER)
    assert (await _reread(store, parent.id)).status is TaskStatus.WAITING
    await store.finish_attempts([_result(got["b"], AttemptOutcome.SUCCEEDED, 2)], now=LATER)
    done = await _reread(store, parent.id)
    assert (done.status, done.result, done.error) == (
        TaskStatus.SUCCEEDED,
        {"a": {"n": 1}, "b": 2},
        None,
    )
    assert done.finished_at == LATER


@pytest.mark.parametrize(
    ("policy", "expected"),
    [(BroadcastPolicy.ALL, TaskStatus.FAILED), (BroadcastPolicy.ANY, TaskStatus.SUCCEEDED)],
)
async def test_a_failed_child_fails_the_parent_per_policy(
    store: Store, connect: ConnectAgent, policy: BroadcastPolicy, expected: TaskStatus
) -> None:
    agents = [await connect("a"), await connect("b")]
    parent, _ = await _broadcast(store, policy=policy)
    got = await _claim_each(store, agents)
    await store.finish_attempts(
        [
            _result(got["a"], AttemptOutcome.FAILED),
            _result(got["b"], AttemptOutcome.SUCCEEDED, "ok"),
        ],
        now=LATER,
    )
    done = await _reread(store, parent.id)
    assert done.status is expected
    assert done.result == {"a": None, "b": "ok"}
    if expected is TaskStatus.FAILED:
        assert done.error == "failed on 1 of 2 agents: a (failed)"


async def test_cancelling_the_parent_cancels_the_children(
    store: Store, connect: ConnectAgent
) -> None:
    a = await connect("a")
    await connect("b")
    parent, _ = await _broadcast(store)
    [held] = await store.claim_tasks([group([a])], now=T0)
    cancelled = await store.cancel_task(parent.id, now=LATER)
    assert cancelled.status is TaskStatus.CANCELLED
    children = {c.pinned_agent_id: c for c in await store.list_broadcast_children(parent.id)}
    assert children[a.id].status is TaskStatus.CANCELLING
    [other] = [c for agent_id, c in children.items() if agent_id != a.id]
    assert (other.status, other.error) == (TaskStatus.CANCELLED, "its broadcast was cancelled")
    await store.finish_attempts([_result(held, AttemptOutcome.CANCELLED)], now=LATER)
    assert (await _reread(store, held.task.id)).status is TaskStatus.CANCELLED
    after = await _reread(store, parent.id)
    assert (after.status, after.result) == (TaskStatus.CANCELLED, None)


async def test_a_cancelled_child_may_end_the_parent(store: Store, connect: ConnectAgent) -> None:
    a = await connect("a")
    await connect("b")
    parent, children = await _broadcast(store)
    [held] = await store.claim_tasks([group([a])], now=T0)
    await store.finish_attempts([_result(held, AttemptOutcome.SUCCEEDED, 1)], now=LATER)
    [waiting] = [c for c in children if c.pinned_agent_id != a.id]
    await store.cancel_task(waiting.id, now=LATER)
    done = await _reread(store, parent.id)
    assert (done.status, done.error) == (
        TaskStatus.FAILED,
        "failed on 1 of 2 agents: b (cancelled)",
    )


async def test_deleting_an_agent_cancels_its_children_and_settles(
    store: Store, connect: ConnectAgent
) -> None:
    a = await connect("a")
    b = await connect("b")
    parent, _ = await _broadcast(store, policy=BroadcastPolicy.ANY)
    [held_a] = await store.claim_tasks([group([a])], now=T0)
    [held_b] = await store.claim_tasks([group([b])], now=T0)
    await store.finish_attempts([_result(held_a, AttemptOutcome.SUCCEEDED, "x")], now=LATER)
    # b goes away holding its child: released (pending again), then deleted.
    await store.set_agent_status(b.id, AgentStatus.OFFLINE, session=b.session, now=LATER)
    await store.release_agent(b.id, now=LATER)
    assert (await _reread(store, held_b.task.id)).status is TaskStatus.PENDING
    assert (await _reread(store, parent.id)).status is TaskStatus.WAITING  # waits for b
    await store.delete_agent(b.id, now=LATER)
    child = await _reread(store, held_b.task.id)
    assert (child.status, child.error) == (TaskStatus.CANCELLED, "its agent was deleted")
    done = await _reread(store, parent.id)
    assert done.status is TaskStatus.SUCCEEDED
    assert done.result == {"a": "x", str(b.id): None}  # a deleted agent: by its id


async def test_concurrent_last_finishes_settle_the_parent_once(
    store: Store, connect: ConnectAgent, open_store: OpenStore, database: DatabaseConfig
) -> None:
    """Every child finished at once through its own store (another node, in effect): on
    PostgreSQL the settles race on the parent row; exactly one of them sees every child
    ended and settles it."""
    if database.kind != "postgres":
        pytest.skip("SQLite has one writer: finishes do not overlap")
    agents = [await connect(f"a{index}") for index in range(6)]
    nodes = [await open_store() for _ in agents]
    for round_ in range(5):
        parent, _ = await store.create_broadcast(
            NewTask(f"b{round_}", "t"), policy=BroadcastPolicy.ALL, now=T0
        )
        got = await _claim_each(store, agents)
        await asyncio.gather(
            *(
                node.finish_attempts(
                    [_result(got[agent.name], AttemptOutcome.SUCCEEDED, agent.name)], now=LATER
                )
                for node, agent in zip(nodes, agents, strict=True)
            )
        )
        done = await _reread(store, parent.id)
        assert done.status is TaskStatus.SUCCEEDED, round_
        assert done.result == {agent.name: agent.name for agent in agents}


# --- broadcasts in a batch ----------------------------------------------------------------------


async def test_a_batch_creates_tasks_and_broadcasts_together(
    store: Store, connect: ConnectAgent
) -> None:
    a = await connect("a")
    b = await connect("b")
    items: list[NewTask | NewBroadcast] = [
        NewTask("first", "t"),
        NewBroadcast(NewTask("everywhere", "t"), BroadcastPolicy.ANY),
        NewTask("last", "t", idempotency_key="k"),
    ]
    made = await store.create_batch(items, now=T0)
    assert [(task.name, created) for task, created, _ in made] == [
        ("first", True),
        ("everywhere", True),
        ("last", True),
    ]
    parent, _, children = made[1]
    assert (parent.status, parent.broadcast_policy) == (TaskStatus.WAITING, BroadcastPolicy.ANY)
    assert [c.pinned_agent_id for c in children] == [a.id, b.id]
    assert made[0][2] == made[2][2] == ()
    assert await _reread(store, parent.id) == parent
    stored = await store.list_broadcast_children(parent.id)
    assert [(c.id, c.status) for c in stored] == [(c.id, TaskStatus.PENDING) for c in children]
    # The idempotency key of a plain task still answers with the existing task.
    again = await store.create_batch([NewTask("last", "t", idempotency_key="k")], now=LATER)
    assert [(task.id, created) for task, created, _ in again] == [(made[2][0].id, False)]


async def test_a_broadcast_no_agent_matches_fails_the_whole_batch(
    store: Store, connect: ConnectAgent
) -> None:
    await connect("a")
    items: list[NewTask | NewBroadcast] = [
        NewTask("plain", "t"),
        NewBroadcast(NewTask("ok", "t")),
        NewBroadcast(NewTask("gpu", "t", required_capabilities=("gpu",))),
    ]
    with pytest.raises(NoAgentForBroadcast, match=r"^tasks\[2\]: no online, enabled") as error:
        await store.create_batch(items, now=T0)
    assert error.value.field == "tasks[2].dispatch"
    assert (await store.list_tasks(TaskFilter(), limit=10)).items == []


# --- start deadline ---------------------------------------------------------------------------


async def test_a_child_not_started_by_its_deadline_fails_and_the_parent_settles(
    store: Store, connect: ConnectAgent
) -> None:
    a = await connect("a")
    b = await connect("b")
    parent, children = await store.create_broadcast(
        NewTask("b", "t"), policy=BroadcastPolicy.ALL, now=T0, start_deadline_seconds=30
    )
    deadline = T0 + timedelta(seconds=30)
    assert parent.start_deadline_at == deadline
    assert {c.start_deadline_at for c in children} == {deadline}
    assert (await _reread(store, children[0].id)).start_deadline_at == deadline
    [held] = await store.claim_tasks([group([a])], now=T0)
    await store.set_agent_status(b.id, AgentStatus.OFFLINE, session=b.session, now=T0)
    # Before the deadline nothing ends.
    assert await store.expire_broadcast_children(now=deadline - timedelta(seconds=1)) == []
    [expired] = await store.expire_broadcast_children(now=deadline)
    assert expired.pinned_agent_id == b.id
    assert expired.status is TaskStatus.FAILED
    assert expired.error == "not started by its start deadline: agent b was offline"
    assert expired.finished_at == deadline
    assert await _reread(store, expired.id) == expired
    # a's child was started: it runs on; the parent settles when it ends.
    assert (await _reread(store, parent.id)).status is TaskStatus.WAITING
    assert await store.expire_broadcast_children(now=deadline + timedelta(hours=1)) == []
    await store.finish_attempts([_result(held, AttemptOutcome.SUCCEEDED, "ok")], now=LATER)
    done = await _reread(store, parent.id)
    assert (done.status, done.result) == (TaskStatus.FAILED, {"a": "ok", "b": None})
    assert done.error == "failed on 1 of 2 agents: b (failed)"


async def test_the_deadline_counts_from_the_start_time_and_any_policy_succeeds(
    store: Store, connect: ConnectAgent
) -> None:
    a = await connect("a")
    b = await connect("b")
    start = T0 + timedelta(minutes=10)
    parent, _ = await store.create_broadcast(
        NewTask("b", "t", scheduled_at=start),
        policy=BroadcastPolicy.ANY,
        now=T0,
        start_deadline_seconds=5,
    )
    await store.set_agent_enabled(b.id, False, now=T0)  # after: it has its child
    assert parent.start_deadline_at == start + timedelta(seconds=5)
    [held] = await store.claim_tasks([group([a])], now=start)
    await store.finish_attempts([_result(held, AttemptOutcome.SUCCEEDED, 1)], now=start)
    assert await store.expire_broadcast_children(now=start + timedelta(seconds=4)) == []
    [expired] = await store.expire_broadcast_children(now=start + timedelta(seconds=5))
    assert expired.error == "not started by its start deadline: agent b was disabled"
    done = await _reread(store, parent.id)
    assert (done.status, done.result) == (TaskStatus.SUCCEEDED, {"a": 1, "b": None})


async def test_without_a_deadline_a_child_waits(store: Store, connect: ConnectAgent) -> None:
    b = await connect("b")
    parent, _ = await _broadcast(store)
    assert parent.start_deadline_at is None
    await store.set_agent_status(b.id, AgentStatus.OFFLINE, session=b.session, now=T0)
    assert await store.expire_broadcast_children(now=T0 + timedelta(days=365)) == []
    plain = await store.create_tasks([NewTask("plain", "t")], now=T0)
    assert plain[0][0].start_deadline_at is None


async def test_concurrent_expiries_end_each_child_once(
    store: Store, connect: ConnectAgent, open_store: OpenStore, database: DatabaseConfig
) -> None:
    """Every node's reaper expires at once: each child ends once, the parent settles once."""
    agents = [await connect(f"a{index}") for index in range(5)]
    parent, children = await store.create_broadcast(
        NewTask("b", "t"), policy=BroadcastPolicy.ALL, now=T0, start_deadline_seconds=1
    )
    for agent in agents:
        await store.set_agent_status(agent.id, AgentStatus.OFFLINE, session=agent.session, now=T0)
    nodes = [store] + [await open_store() for _ in range(3)]
    when = T0 + timedelta(seconds=2)
    ended = await asyncio.gather(*(node.expire_broadcast_children(now=when) for node in nodes))
    assert sorted(task.id for batch in ended for task in batch) == sorted(c.id for c in children)
    done = await _reread(store, parent.id)
    assert done.status is TaskStatus.FAILED
    assert done.error is not None
    assert done.error.startswith("failed on 5 of 5 agents")
