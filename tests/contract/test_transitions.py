"""Contract: every status change a store makes is one the status machine allows.

``models.TASK_TRANSITIONS`` and ``models.AGENT_TRANSITIONS`` are the status machine; the
stores move statuses in SQL (conditional updates, ``CASE`` expressions), which could drift
from the table. This drives each store through every operation that changes a status (create,
claim, start, finish with each outcome, retry, cancel in each state, release, reap, delete,
prune, cron fire, workflows' waiting steps, broadcasts), reads every row before and after each
call, and checks each before -> after pair against the table, and that every pair the table
lists is one some operation produces (no dead entry).
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TypeVar
from uuid import UUID

import pytest

from hetuflow.errors import TaskAlreadyFinished
from hetuflow.models import (
    AGENT_TRANSITIONS,
    TASK_TRANSITIONS,
    Agent,
    AgentStatus,
    AttemptOutcome,
    AttemptRef,
    AttemptResult,
    AttemptStart,
    BroadcastPolicy,
    ClaimRequest,
    CronFire,
    Dispatch,
    NewAgent,
    NewCronJob,
    NewTask,
    RetryPolicy,
    TaskFilter,
    TaskStatus,
    TickOutcome,
)
from hetuflow.store.base import Store
from hetuflow.workflows import (
    MAX_PARENT_RESULTS_BYTES,
    NewStep,
    NewWorkflow,
    OnFailure,
    RunIf,
    check_workflow,
)

from ._support import T0, ConnectAgent, group

R = TypeVar("R")

Pair = tuple[str, str]


@dataclass
class Recorder:
    """Reads every task and agent status around each store call and keeps the changes."""

    store: Store
    tasks: dict[Pair, set[str]] = field(default_factory=dict)
    agents: dict[Pair, set[str]] = field(default_factory=dict)
    created: dict[str, set[str]] = field(default_factory=dict)

    async def _snapshot(self) -> tuple[dict[UUID, TaskStatus], dict[UUID, AgentStatus]]:
        page = await self.store.list_tasks(TaskFilter(), limit=10_000, with_total=False)
        assert page.next is None
        agents = await self.store.list_agents()
        return {t.id: t.status for t in page.items}, {a.id: a.status for a in agents}

    async def __call__(self, operation: str, call: Awaitable[R]) -> R:
        tasks_before, agents_before = await self._snapshot()
        result = await call
        tasks_after, agents_after = await self._snapshot()
        for task_id, status in tasks_after.items():
            old = tasks_before.get(task_id)
            if old is None:
                self.created.setdefault(status, set()).add(operation)
            elif old is not status:
                self.tasks.setdefault((old, status), set()).add(operation)
        for agent_id, agent_status in agents_after.items():
            previous = agents_before.get(agent_id)
            if previous is not None and previous is not agent_status:
                self.agents.setdefault((previous, agent_status), set()).add(operation)
        return result


class Drive:
    """Builds tasks in a wanted status, each of its own task type, through the recorder."""

    def __init__(self, store: Store, record: Recorder, agent: Agent) -> None:
        self.store = store
        self.record = record
        self.agent = agent
        self.numbers = itertools.count()

    async def held(self, status: TaskStatus, *, retries: int = 0) -> Dispatch:
        """A new task, claimed by the agent, then started or cancelled to reach ``status``."""
        task_type = f"{self.agent.name}-{next(self.numbers)}"
        new = NewTask(task_type, task_type, retry=RetryPolicy(max_retries=retries))
        await self.record("create", self.store.create_tasks([new], now=T0))
        offer = group([self.agent], task_types=(task_type,))
        [dispatch] = await self.record("claim", self.store.claim_tasks([offer], now=T0))
        if status is TaskStatus.RUNNING:
            started = AttemptStart(ref(dispatch), started_at=T0)
            assert await self.record("start", self.store.start_attempts([started])) == [True]
        elif status is TaskStatus.CANCELLING:
            await self.record("cancel", self.store.cancel_task(dispatch.task.id, now=T0))
        return dispatch

    async def finish(
        self, dispatch: Dispatch, outcome: AttemptOutcome, result: object = None
    ) -> None:
        done = AttemptResult(ref(dispatch), outcome, result=result, error="boom")
        finishing = self.store.finish_attempts([done], now=T0)
        [outcome_] = await self.record(f"finish {outcome}", finishing)
        assert outcome_.accepted


def ref(dispatch: Dispatch) -> AttemptRef:
    return AttemptRef(dispatch.task.id, dispatch.attempt, dispatch.agent_id)


HELD = (TaskStatus.DISPATCHED, TaskStatus.RUNNING, TaskStatus.CANCELLING)


async def drive_tasks(store: Store, record: Recorder, drive: Drive) -> None:
    # finish, with every outcome, from every held status, with and without a retry left
    for status in HELD:
        for outcome in AttemptOutcome:
            if outcome is AttemptOutcome.LOST:
                continue  # agents report no lost attempt; release and reap end them lost
            for retries in (0, 1):
                await drive.finish(await drive.held(status, retries=retries), outcome)
    # cancel in each state: pending, held, terminal
    [(pending, _)] = await record("create", store.create_tasks([NewTask("p", "p")], now=T0))
    await record("cancel", store.cancel_task(pending.id, now=T0))
    for status in HELD:
        dispatch = await drive.held(status)
        await record("cancel", store.cancel_task(dispatch.task.id, now=T0))
    with pytest.raises(TaskAlreadyFinished):
        await record("cancel", store.cancel_task(pending.id, now=T0))
    # retry (the API's: a new task with the spec) and replay of a finished task
    await record("replay", store.replay_task(pending.id, now=T0))
    # create and claim in one transaction
    offer = ClaimRequest([group([drive.agent], task_types=("fresh",))])
    await record(
        "create_and_claim",
        store.create_and_claim_tasks([NewTask("fresh", "fresh")], offer, now=T0),
    )
    # cron fire, one tick and a batch
    job = await store.create_cron_job(NewCronJob("j", "* * * * *", "c"), next_fire_at=T0, now=T0)
    later = T0 + timedelta(minutes=1)
    await record(
        "fire_cron_tick",
        store.fire_cron_tick(
            job.id,
            tick_at=T0,
            next_fire_at=later,
            task=NewTask("cron", "c", cron_job_id=job.id),
            outcome=TickOutcome.FIRED,
            reason=None,
            now=T0,
        ),
    )
    fire = CronFire(
        job.id, later, later, TickOutcome.FIRED, NewTask("cron", "c", cron_job_id=job.id)
    )
    await record("fire_cron_ticks", store.fire_cron_ticks([fire], now=later))


async def drive_release(store: Store, record: Recorder, connect: ConnectAgent) -> None:
    """release, reap, delete and prune give back what an agent holds."""
    for operation in ("release", "reap", "delete", "prune"):
        agent = await record("connect", connect(f"holder-{operation}"))
        drive = Drive(store, record, agent)
        for status in HELD:
            await drive.held(status)
        if operation == "release":
            await record(operation, store.release_agent(agent.id, now=T0))
        elif operation == "reap":
            await record("heartbeat", store.record_heartbeats([agent.id], now=T0))
            stale = T0 + timedelta(hours=1)
            await record(operation, store.reap_agents(stale_before=stale, now=stale))
        else:
            # offline without a release (the node lost its connection), then deleted
            offline = store.set_agent_status(
                agent.id, AgentStatus.OFFLINE, session=agent.session, now=T0
            )
            assert await record("disconnect", offline)
            if operation == "delete":
                await record(operation, store.delete_agent(agent.id, now=T0))
            else:
                later = T0 + timedelta(hours=1)
                pruning = store.prune_agents(offline_before=later, now=later, limit=10)
                assert agent.id in [a.id for a in await record(operation, pruning)]
    # quarantine: a task lost with one agent after another (max_agent_crashes_per_task)
    for status in (TaskStatus.DISPATCHED, TaskStatus.RUNNING):
        task_type = f"poison-{status}"
        [(task, _)] = await record(
            "create", store.create_tasks([NewTask(task_type, task_type)], now=T0)
        )
        for crash in itertools.count(1):
            assert crash <= 10, "never quarantined"
            agent = await record("connect", connect(f"{task_type}-{crash}"))
            offer = group([agent], task_types=(task_type,))
            [dispatch] = await record("claim", store.claim_tasks([offer], now=T0))
            if status is TaskStatus.RUNNING:
                started = AttemptStart(ref(dispatch), started_at=T0)
                assert await record("start", store.start_attempts([started])) == [True]
            await record("release", store.release_agent(agent.id, now=T0))
            found = await store.get_task(task.id)
            assert found is not None
            if found.status is TaskStatus.QUARANTINED:
                break


async def drive_workflows(store: Store, record: Recorder, drive: Drive) -> None:
    def step(name: str, *parents: str, run_if: RunIf = RunIf.ALL_SUCCEEDED) -> NewStep:
        return NewStep(name, NewTask(name, "w"), parents, run_if)

    async def create(*steps: NewStep, on_failure: OnFailure = OnFailure.STOP) -> UUID:
        workflow = NewWorkflow("wf", steps, on_failure)
        made = await record(
            "create_workflow",
            store.create_workflow(workflow, check_workflow(workflow), now=T0),
        )
        return made.id

    async def run(outcome: AttemptOutcome, result: object = None) -> None:
        offer = group([drive.agent], task_types=("w",), free=1)
        [dispatch] = await record("claim", store.claim_tasks([offer], now=T0))
        await drive.finish(dispatch, outcome, result)

    # waiting -> pending: the parent succeeds
    await create(step("a"), step("b", "a"))
    await run(AttemptOutcome.SUCCEEDED)
    await run(AttemptOutcome.SUCCEEDED)
    # waiting -> skipped: the parent fails (and, under stop, every waiting step is skipped)
    await create(step("a"), step("b", "a"), step("c", "b"))
    await run(AttemptOutcome.FAILED)
    # waiting -> failed: the parents' results are too large to hand down
    await create(step("a"), step("b", "a"))
    await run(AttemptOutcome.SUCCEEDED, "x" * (MAX_PARENT_RESULTS_BYTES + 1))
    # waiting -> cancelled: one step, then the whole workflow
    workflow_id = await create(step("a"), step("b", "a"), step("c", "a"))
    found = await store.get_workflow(workflow_id)
    assert found is not None
    await record("cancel", store.cancel_task(found.steps[1].task.id, now=T0))
    await record("cancel_workflow", store.cancel_workflow(workflow_id, now=T0))

    # workflow retry: every step that did not succeed, and its descendants, start over
    async def retry(workflow_id: UUID) -> None:
        await record("retry_workflow", store.retry_workflow(workflow_id, now=T0))
        # cancel what it released (and what that releases: all_done steps), so the next
        # scenario claims only its own steps
        while True:
            found = await store.get_workflow(workflow_id)
            assert found is not None
            pending = [s.task.id for s in found.steps if s.task.status is TaskStatus.PENDING]
            if not pending:
                break
            for task_id in pending:
                await record("cancel", store.cancel_task(task_id, now=T0))

    all_done = RunIf.ALL_DONE
    # failed -> pending (a), skipped -> waiting (b, c)
    workflow_id = await create(step("a"), step("b", "a"), step("c", "b"))
    await run(AttemptOutcome.FAILED)
    await retry(workflow_id)
    # failed / timed out -> pending (a) and -> waiting (b: ran after a because all_done)
    for outcome in (AttemptOutcome.FAILED, AttemptOutcome.TIMED_OUT):
        workflow_id = await create(step("a"), step("b", "a", run_if=all_done))
        await run(outcome)
        await run(outcome)
        await retry(workflow_id)
    # cancelled -> pending (b: its parent had succeeded)
    workflow_id = await create(step("a"), step("b", "a"))
    await run(AttemptOutcome.SUCCEEDED)
    found = await store.get_workflow(workflow_id)
    assert found is not None
    await record("cancel", store.cancel_task(found.steps[1].task.id, now=T0))
    await retry(workflow_id)
    # cancelled -> waiting (b: its parent was cancelled too)
    workflow_id = await create(step("a"), step("b", "a"))
    await record("cancel_workflow", store.cancel_workflow(workflow_id, now=T0))
    await retry(workflow_id)
    # skipped -> pending: c waited on p while a failed (on_failure stop skips it); p then
    # succeeded, so a retry releases c at once
    workflow_id = await create(step("a"), step("p"), step("c", "p"))
    offer = group([drive.agent], task_types=("w",), free=2)
    claimed = await record("claim", store.claim_tasks([offer], now=T0))
    by_name = {dispatch.task.name: dispatch for dispatch in claimed}
    await drive.finish(by_name["a"], AttemptOutcome.FAILED)
    await drive.finish(by_name["p"], AttemptOutcome.SUCCEEDED)
    await retry(workflow_id)


async def drive_agents(store: Store, record: Recorder, connect: ConnectAgent) -> None:
    made = await store.create_agent(NewAgent("pre"), now=T0)
    agent = await record("connect", connect("pre"))
    assert agent.id == made.id
    await record("drain", store.set_agent_draining(agent.id, True, now=T0))
    await record("resume", store.set_agent_draining(agent.id, False, now=T0))
    await record("drain", store.set_agent_draining(agent.id, True, now=T0))
    again = await record("connect", connect("pre"))  # a draining agent reconnects
    await record("drain", store.set_agent_draining(agent.id, True, now=T0))
    stale = T0 + timedelta(hours=1)
    await record("reap", store.reap_agents(stale_before=stale, now=stale))
    again = await record("connect", connect("pre"))  # still drained: it connects draining
    await record("resume", store.set_agent_draining(agent.id, False, now=T0))
    await record(
        "disconnect",
        store.set_agent_status(again.id, AgentStatus.OFFLINE, session=again.session, now=T0),
    )
    again = await record("connect", connect("pre"))
    await record("drain", store.set_agent_draining(agent.id, True, now=T0))
    await record(
        "disconnect",
        store.set_agent_status(again.id, AgentStatus.OFFLINE, session=again.session, now=T0),
    )


def _offending(pairs: dict[Pair, set[str]], table: dict[str, frozenset[str]]) -> list[str]:
    return [
        f"{before} -> {after} by {sorted(operations)}"
        for (before, after), operations in sorted(pairs.items())
        if after not in table[before]
    ]


async def drive_broadcasts(store: Store, record: Recorder, connect: ConnectAgent) -> None:
    """A broadcast's parent: waiting -> succeeded (its children did), -> failed (one did
    not), -> cancelled (a cancel, which cancels its pending children)."""
    agent = await connect("broadcast", task_types=["bc"])
    drive = Drive(store, record, agent)
    for outcome in (AttemptOutcome.SUCCEEDED, AttemptOutcome.FAILED, None):
        new = NewTask("b", "bc")
        await record(
            "create_broadcast",
            store.create_broadcast(new, policy=BroadcastPolicy.ALL, now=T0),
        )
        offer = group([drive.agent], task_types=("bc",), free=1)
        if outcome is None:
            page = await store.list_tasks(TaskFilter(statuses=(TaskStatus.WAITING,)), limit=100)
            [parent] = [t for t in page.items if t.broadcast_policy is not None]
            await record("cancel", store.cancel_task(parent.id, now=T0))
            continue
        [dispatch] = await record("claim", store.claim_tasks([offer], now=T0))
        await drive.finish(dispatch, outcome)


def _listed(table: dict[str, frozenset[str]]) -> set[Pair]:
    return {(before, after) for before, afters in table.items() for after in afters}


async def test_every_task_status_change_is_in_the_table(
    store: Store, connect: ConnectAgent
) -> None:
    record = Recorder(store)
    agent = await connect("a", slots=1000)
    drive = Drive(store, record, agent)
    await drive_tasks(store, record, drive)
    await drive_release(store, record, connect)
    await drive_workflows(store, record, drive)
    await drive_broadcasts(store, record, connect)

    table = {str(k): frozenset(str(v) for v in vs) for k, vs in TASK_TRANSITIONS.items()}
    assert _offending(record.tasks, table) == []
    assert _listed(table) - set(record.tasks) == set(), "listed but never produced"
    # a task is born pending, waiting (a workflow step) or dispatched (created and claimed)
    assert set(record.created) == {
        TaskStatus.PENDING,
        TaskStatus.WAITING,
        TaskStatus.DISPATCHED,
    }


async def test_every_agent_status_change_is_in_the_table(
    store: Store, connect: ConnectAgent
) -> None:
    record = Recorder(store)
    await drive_agents(store, record, connect)
    await drive_release(store, record, connect)

    table = {str(k): frozenset(str(v) for v in vs) for k, vs in AGENT_TRANSITIONS.items()}
    assert _offending(record.agents, table) == []
    changes = {(before, after) for before, after in _listed(table) if before != after}
    assert changes - set(record.agents) == set(), "listed but never produced"
