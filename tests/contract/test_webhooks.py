"""Contract: the webhook outbox (docs/webhooks.md). A task with a ``webhook_url`` gets one
delivery row in the transaction that ends it (a result, a cancel, a lost agent), none for an
attempt that is retried; claims are exclusive (two nodes on PostgreSQL) and leased; outcomes
are fenced by the claim's token."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from hetuflow.models import (
    Agent,
    AttemptOutcome,
    AttemptRef,
    AttemptResult,
    BroadcastPolicy,
    NewCronJob,
    NewTask,
    RetryPolicy,
    Task,
    TaskStatus,
)
from hetuflow.store.base import Store
from hetuflow.webhooks import DeliveryOutcome, DeliveryState
from hetuflow.workflows import NewStep, NewWorkflow, check_workflow

from ._support import T0, ConnectAgent, OpenStore, group

URL = "https://hooks.example.com/done"
LATER = T0 + timedelta(minutes=1)
LEASE = timedelta(seconds=30)


async def _dispatch(store: Store, agent: Agent, new: NewTask) -> tuple[Task, AttemptRef]:
    [(task, _)] = await store.create_tasks([new], now=T0)
    [dispatch] = await store.claim_tasks([group([agent], free=1)], now=T0)
    assert dispatch.task.id == task.id
    return task, AttemptRef(task.id, dispatch.attempt, agent.id)


async def test_a_final_result_writes_one_delivery_with_the_settled_state(
    store: Store, connect: ConnectAgent
) -> None:
    agent = await connect("a")
    task, ref = await _dispatch(store, agent, NewTask("report", "t", webhook_url=URL))
    assert task.webhook_url == URL
    assert await store.list_webhook_deliveries(task.id) == []
    result = AttemptResult(ref, AttemptOutcome.SUCCEEDED, result={"rows": 3})
    [done] = await store.finish_attempts([result], now=LATER)
    assert done.accepted
    [delivery] = await store.list_webhook_deliveries(task.id)
    assert delivery.url == URL
    assert (delivery.name, delivery.task_type) == ("report", "t")
    assert delivery.status is TaskStatus.SUCCEEDED
    assert delivery.result == {"rows": 3}
    assert delivery.task_attempts == 1
    assert delivery.state is DeliveryState.PENDING
    assert delivery.attempts == 0
    assert delivery.next_attempt_at == LATER
    assert delivery.finished_at == LATER
    # A second identical result is rejected and writes nothing more.
    [again] = await store.finish_attempts([result], now=LATER)
    assert not again.accepted
    assert len(await store.list_webhook_deliveries(task.id)) == 1


async def test_a_retried_attempt_writes_nothing_the_last_one_does(
    store: Store, connect: ConnectAgent
) -> None:
    agent = await connect("a")
    new = NewTask("n", "t", webhook_url=URL, retry=RetryPolicy(max_retries=1, backoff_seconds=0))
    task, ref = await _dispatch(store, agent, new)
    [first] = await store.finish_attempts(
        [AttemptResult(ref, AttemptOutcome.FAILED, error="boom")], now=LATER
    )
    assert first.status is TaskStatus.PENDING
    assert await store.list_webhook_deliveries(task.id) == []
    [dispatch] = await store.claim_tasks([group([agent], free=1)], now=LATER)
    ref = AttemptRef(task.id, dispatch.attempt, agent.id)
    [last] = await store.finish_attempts(
        [AttemptResult(ref, AttemptOutcome.FAILED, error="boom again")], now=LATER
    )
    assert last.status is TaskStatus.FAILED
    [delivery] = await store.list_webhook_deliveries(task.id)
    assert (delivery.status, delivery.error, delivery.task_attempts) == (
        TaskStatus.FAILED,
        "boom again",
        2,
    )


async def test_cancel_and_lost_agent_settles_write_deliveries(
    store: Store, connect: ConnectAgent
) -> None:
    [(pending, _)] = await store.create_tasks([NewTask("p", "none", webhook_url=URL)], now=T0)
    await store.cancel_task(pending.id, now=LATER, reason="not needed")
    [cancelled] = await store.list_webhook_deliveries(pending.id)
    assert (cancelled.status, cancelled.error) == (TaskStatus.CANCELLED, "not needed")

    agent = await connect("a")
    new = NewTask("l", "t", webhook_url=URL, retry=RetryPolicy(retry_on=()))
    lost, _ = await _dispatch(store, agent, new)
    await store.release_agent(agent.id, now=LATER)
    [delivery] = await store.list_webhook_deliveries(lost.id)
    assert delivery.status is TaskStatus.FAILED


async def test_no_url_no_delivery_and_a_cron_job_passes_its_url_on(store: Store) -> None:
    [(plain, _)] = await store.create_tasks([NewTask("p", "t")], now=T0)
    await store.cancel_task(plain.id, now=LATER)
    assert await store.list_webhook_deliveries(plain.id) == []
    assert await store.next_webhook_attempt_at() is None

    job = await store.create_cron_job(
        NewCronJob("nightly", "0 3 * * *", "t", webhook_url=URL), next_fire_at=None, now=T0
    )
    assert job.webhook_url == URL
    reread = await store.get_cron_job(job.id)
    assert reread is not None
    assert reread.webhook_url == URL


async def test_claims_lease_and_fence_the_outcome(store: Store) -> None:
    [(task, _)] = await store.create_tasks([NewTask("p", "t", webhook_url=URL)], now=T0)
    await store.cancel_task(task.id, now=T0)
    assert await store.next_webhook_attempt_at() == T0
    [claimed] = await store.claim_webhook_deliveries(now=T0, lease_until=T0 + LEASE, limit=10)
    assert claimed.attempts == 1
    assert claimed.claim_token is not None
    # Leased: not due again until the lease ends.
    assert await store.claim_webhook_deliveries(now=T0, lease_until=T0 + LEASE, limit=10) == []
    assert await store.next_webhook_attempt_at() == T0 + LEASE
    # The claimer "died"; after the lease another claim takes it, and the first claim's
    # outcome no longer counts.
    [again] = await store.claim_webhook_deliveries(
        now=T0 + LEASE, lease_until=T0 + 2 * LEASE, limit=10
    )
    assert again.id == claimed.id
    assert again.attempts == 2
    delivered = DeliveryOutcome(DeliveryState.DELIVERED, None, 204, None)
    assert not await store.record_webhook_attempt(
        claimed.id, claimed.claim_token, delivered, now=T0 + LEASE
    )
    assert again.claim_token is not None
    retry_at = T0 + LEASE + timedelta(seconds=5)
    failed = DeliveryOutcome(DeliveryState.PENDING, retry_at, 500, "HTTP 500")
    assert await store.record_webhook_attempt(again.id, again.claim_token, failed, now=T0 + LEASE)
    [seen] = await store.list_webhook_deliveries(task.id)
    assert (seen.state, seen.last_status_code, seen.next_attempt_at) == (
        DeliveryState.PENDING,
        500,
        retry_at,
    )
    [third] = await store.claim_webhook_deliveries(
        now=retry_at, lease_until=retry_at + LEASE, limit=1
    )
    assert third.claim_token is not None
    assert await store.record_webhook_attempt(third.id, third.claim_token, delivered, now=retry_at)
    [done] = await store.list_webhook_deliveries(task.id)
    assert (done.state, done.attempts, done.delivered_at, done.next_attempt_at) == (
        DeliveryState.DELIVERED,
        3,
        retry_at,
        None,
    )
    assert await store.next_webhook_attempt_at() is None


async def test_deleting_a_finished_task_deletes_its_deliveries(store: Store) -> None:
    [(task, _)] = await store.create_tasks([NewTask("p", "t", webhook_url=URL)], now=T0)
    await store.cancel_task(task.id, now=T0)
    assert await store.delete_finished_tasks(finished_before=LATER, limit=10) == 1
    assert await store.list_webhook_deliveries(task.id) == []
    assert await store.next_webhook_attempt_at() is None


async def test_concurrent_claims_never_share_a_delivery(
    store: Store, open_store: OpenStore
) -> None:
    """Two nodes (two store instances; on PostgreSQL, two pools) claiming at once: every
    delivery is claimed by exactly one of them."""
    created = await store.create_tasks(
        [NewTask(f"n{i}", "t", webhook_url=URL) for i in range(40)], now=T0
    )
    for task, _ in created:
        await store.cancel_task(task.id, now=T0)
    other = await open_store()

    async def drain(node: Store) -> list[str]:
        taken: list[str] = []
        while batch := await node.claim_webhook_deliveries(now=T0, lease_until=T0 + LEASE, limit=3):
            taken.extend(str(delivery.id) for delivery in batch)
            await asyncio.sleep(0)
        return taken

    first, second = await asyncio.gather(drain(store), drain(other))
    assert len(first) + len(second) == 40
    assert len(set(first) | set(second)) == 40


async def test_a_broadcast_reports_once_by_its_parent(store: Store, connect: ConnectAgent) -> None:
    agents = [await connect("a"), await connect("b")]
    parent, children = await store.create_broadcast(
        NewTask("b", "t", webhook_url=URL), policy=BroadcastPolicy.ALL, now=T0
    )
    assert parent.webhook_url == URL
    assert all(child.webhook_url is None for child in children)
    for agent in agents:
        [dispatch] = await store.claim_tasks([group([agent], free=1)], now=T0)
        ref = AttemptRef(dispatch.task.id, dispatch.attempt, agent.id)
        await store.finish_attempts(
            [AttemptResult(ref, AttemptOutcome.SUCCEEDED, result=1)], now=LATER
        )
    for child in children:
        assert await store.list_webhook_deliveries(child.id) == []
    [delivery] = await store.list_webhook_deliveries(parent.id)
    assert delivery.status is TaskStatus.SUCCEEDED
    assert delivery.result == {"a": 1, "b": 1}


async def test_a_cancelled_workflow_reports_each_step_that_names_a_url(store: Store) -> None:
    workflow = NewWorkflow(
        name="w",
        steps=(
            NewStep("first", NewTask("first", "t", webhook_url=URL)),
            NewStep("second", NewTask("second", "t", webhook_url=URL), depends_on=("first",)),
            NewStep("quiet", NewTask("quiet", "t")),
        ),
    )
    created = await store.create_workflow(workflow, check_workflow(workflow), now=T0)
    await store.cancel_workflow(created.id, now=LATER)
    steps = {step.name: step.task.id for step in created.steps}
    for name in ("first", "second"):
        [delivery] = await store.list_webhook_deliveries(steps[name])
        assert delivery.status is TaskStatus.CANCELLED
    assert await store.list_webhook_deliveries(steps["quiet"]) == []
