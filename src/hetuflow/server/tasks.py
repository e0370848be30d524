"""TaskQueue: the service that creates, reads, cancels, retries and explains tasks.

Used by the REST routes (and by anything else in the server that creates tasks). It owns no
state: the Store keeps the tasks, the Notifier wakes the dispatchers of every node after a
commit.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

import orjson

from hetuflow.clock import Clock
from hetuflow.config import SchedulerConfig, WebhooksConfig
from hetuflow.errors import (
    InvalidInput,
    PayloadTooLarge,
    StoreUnavailable,
    TaskNotFound,
    TaskNotRetryable,
)
from hetuflow.models import (
    ACTIVE_TASK_STATUSES,
    Agent,
    AgentStatus,
    BroadcastPolicy,
    NewBroadcast,
    NewTask,
    Page,
    PendingReason,
    Task,
    TaskCursor,
    TaskFilter,
    TaskStatus,
    spec_of,
)
from hetuflow.server.concurrency import ConcurrencyKeys
from hetuflow.server.dispatch import TaskDispatcher
from hetuflow.server.metrics import Metrics
from hetuflow.server.registry import AgentSvc, ConnectionState
from hetuflow.server.webhooks import check_webhook_target
from hetuflow.store.base import TASK_CANCEL, TASKS_READY, Notifier, Store

log = logging.getLogger("hetuflow.tasks")

RETRYABLE_STATUSES = frozenset(
    {TaskStatus.FAILED, TaskStatus.TIMED_OUT, TaskStatus.CANCELLED, TaskStatus.QUARANTINED}
)


_Waiting = tuple[NewTask, "asyncio.Future[tuple[Task, bool]]"]
"""A single create waiting for its group commit."""


class TaskQueue:
    def __init__(
        self,
        store: Store,
        notifier: Notifier,
        clock: Clock,
        scheduler: SchedulerConfig,
        *,
        max_batch_tasks: int = 1000,
        metrics: Metrics | None = None,
        max_payload_bytes: int | None = None,
        agents: AgentSvc | None = None,
        dispatcher: TaskDispatcher | None = None,
        sees_every_agent: bool = False,
        concurrency: ConcurrencyKeys | None = None,
        webhooks: WebhooksConfig | None = None,
    ) -> None:
        self.store = store
        self.notifier = notifier
        self.clock = clock
        self.scheduler = scheduler
        self.max_batch_tasks = max_batch_tasks
        self.metrics = metrics
        self.max_payload_bytes = max_payload_bytes
        self.webhooks = webhooks
        """Checks ``webhook_url`` (``check_webhook_target``); None: not checked."""
        self.agents = agents
        """This node's connected agents (``explain_created``); None: always ask the store."""
        self.sees_every_agent = sees_every_agent and agents is not None
        """Every agent is connected to this node (SQLite: one server process), so
        ``explain_created`` may say ``agents_busy`` from ``agents`` without reading the store."""
        self.dispatcher = dispatcher
        """Creates tasks and fills this node's free slots in one transaction; None: tasks
        are only stored, and dispatchers hear of them through ``TASKS_READY``."""
        self.concurrency = concurrency
        """Concurrency keys: the cancel strategies at create, ``concurrency_limit`` in
        ``explain``; None: keys are only kept by the claim."""
        self._waiting: list[_Waiting] = []
        self._group_lock = asyncio.Lock()

    # --- create -----------------------------------------------------------------------------

    async def create(self, task: NewTask) -> tuple[Task, bool]:
        """Create one task; ``created`` is False when its idempotency key already existed.

        Group commit: creates arriving while another one is being committed wait for it,
        then all of them are written in one transaction (one durable commit instead of one
        each). Each caller still returns only once its own task is committed, and a task
        that fails alone fails alone (the group is then written one task at a time)."""
        self._check_payloads([task])
        entry: _Waiting = (task, asyncio.get_running_loop().create_future())
        self._waiting.append(entry)
        async with self._group_lock:
            if not entry[1].done():
                group, self._waiting = self._waiting, []
                # Shielded: a cancelled caller must not cancel the others' commit.
                await asyncio.shield(self._commit_group(group))
        return await entry[1]

    async def _commit_group(self, group: list[_Waiting]) -> None:
        """Write ``group``; every future gets its task or its error (never raises)."""
        try:
            results = await self._store_tasks([task for task, _ in group])
        except Exception as error:
            if len(group) > 1 and not isinstance(error, StoreUnavailable):
                for entry in group:
                    await self._commit_group([entry])
                return
            for _, future in group:
                if not future.done():
                    future.set_exception(error)
            return
        for (_, future), result in zip(group, results, strict=True):
            if not future.done():
                future.set_result(result)

    async def create_many(self, tasks: Sequence[NewTask | NewBroadcast]) -> list[tuple[Task, bool]]:
        """Create tasks in one transaction (all or none), then wake the dispatchers.

        A ``NewBroadcast`` among them is created with its children in that transaction (its
        result: the parent); one no agent matches fails the whole batch
        (``NoAgentForBroadcast`` naming ``tasks[i]``). Each task actually created counts in
        ``hetuflow_tasks_submitted_total`` (when the queue was given ``metrics``; a
        broadcast's children, not its parent); an idempotent replay does not."""
        if not tasks:
            raise InvalidInput("give at least one task", field="tasks")
        if len(tasks) > self.max_batch_tasks:
            raise InvalidInput(
                f"at most {self.max_batch_tasks} tasks per batch, got {len(tasks)}", field="tasks"
            )
        plain = [item.task if isinstance(item, NewBroadcast) else item for item in tasks]
        self._check_payloads(plain)
        if not any(isinstance(item, NewBroadcast) for item in tasks):
            return await self._store_tasks(plain)
        return await self._store_batch(tasks)

    async def _store_batch(
        self, items: Sequence[NewTask | NewBroadcast]
    ) -> list[tuple[Task, bool]]:
        """A batch with broadcasts (``Store.create_batch``): no group commit and no dispatch
        in the create's transaction; the dispatchers are woken after it."""
        for index, item in enumerate(items):
            if isinstance(item, NewBroadcast):
                _refuse_keys(item.task, f"tasks[{index}].")
        made = await self.store.create_batch(items, now=self.clock.now())
        results = [(task, created) for task, created, _ in made]
        keyed = [
            (item, result)
            for item, result in zip(items, results, strict=True)
            if isinstance(item, NewTask) and item.concurrency_strategy
        ]
        if self.concurrency is not None and keyed:
            applied = await self.concurrency.apply(
                [item for item, _ in keyed], [result for _, result in keyed], self._cancel_for_key
            )
            replaced = {
                before[0].id: after for (_, before), after in zip(keyed, applied, strict=True)
            }
            results = [replaced.get(task.id, (task, created)) for task, created in results]
        if self.metrics is not None:
            submitted: Counter[str] = Counter()
            for task, created, children in made:
                if children:
                    submitted[task.task_type] += len(children)
                elif created:
                    submitted[task.task_type] += 1
            for task_type, count in submitted.items():
                self.metrics.task_submitted(task_type, count)
        await self._publish(TASKS_READY)
        return results

    async def _store_tasks(self, tasks: Sequence[NewTask]) -> list[tuple[Task, bool]]:
        if self.dispatcher is not None:
            results, waiting = await self.dispatcher.create(tasks)
        else:
            results = await self.store.create_tasks(tasks, now=self.clock.now())
            waiting = any(created for _, created in results)
        if self.concurrency is not None and any(t.concurrency_strategy for t in tasks):
            results = await self.concurrency.apply(tasks, results, self._cancel_for_key)
        submitted = Counter(task.task_type for task, created in results if created)
        if self.metrics is not None:
            for task_type, count in submitted.items():
                self.metrics.task_submitted(task_type, count)
        if waiting:
            await self._publish(TASKS_READY)
        return results

    async def create_broadcast(
        self,
        task: NewTask,
        policy: BroadcastPolicy = BroadcastPolicy.ALL,
        start_deadline_seconds: float | None = None,
    ) -> tuple[Task, list[Task]]:
        """A broadcast (docs/guarantees.md, Broadcast): the parent and one child pinned to
        each agent that matches now (``Store.create_broadcast``), then the dispatchers are
        woken. ``NoAgentForBroadcast`` (nothing created) when none matches; ``InvalidInput``
        for an idempotency or concurrency key (a broadcast takes neither).
        ``start_deadline_seconds``: a child not started that long after the start time
        ends failed (``Store.expire_broadcast_children``)."""
        _refuse_keys(task, "")
        self._check_payloads([task])
        parent, children = await self.store.create_broadcast(
            task, policy=policy, now=self.clock.now(), start_deadline_seconds=start_deadline_seconds
        )
        if self.metrics is not None:
            self.metrics.task_submitted(task.task_type, len(children))
        await self._publish(TASKS_READY)
        return parent, children

    async def children(self, task_id: UUID) -> list[Task]:
        """A broadcast's children, by agent name (``TaskNotFound`` for no such task; empty
        for a task that is no broadcast parent)."""
        await self.get(task_id)
        return await self.store.list_broadcast_children(task_id)

    def _check_payloads(self, tasks: Sequence[NewTask]) -> None:
        """``PayloadTooLarge`` for a payload over ``max_payload_bytes`` as compact JSON;
        ``InvalidInput`` for a ``webhook_url`` this server cannot deliver to."""
        if self.webhooks is not None:
            for index, task in enumerate(tasks):
                check_webhook_target(
                    task.webhook_url,
                    self.webhooks,
                    field="webhook_url" if len(tasks) == 1 else f"tasks[{index}].webhook_url",
                )
        limit = self.max_payload_bytes
        if limit is None:
            return
        for index, task in enumerate(tasks):
            size = len(orjson.dumps(task.payload))
            if size > limit:
                raise PayloadTooLarge(
                    f"the payload is {size} bytes as JSON; the limit is {limit} bytes"
                    " ([server] max_payload_bytes)",
                    field="payload" if len(tasks) == 1 else f"tasks[{index}].payload",
                )

    async def retry(self, task_id: UUID) -> Task:
        """A new task with the same spec as a failed, timed-out, cancelled or quarantined
        one, its ``replay_of`` naming the original. A workflow
        step is not retried alone (its descendants would not follow): ``TaskNotRetryable``
        naming the workflow to retry instead (docs/workflows.md, Retry)."""
        task = await self.get(task_id)
        _refuse_broadcast(task)
        workflow_id = await self.store.workflow_of_step(task_id)
        if workflow_id is not None:
            raise TaskNotRetryable(
                f"task {task_id} is a step of workflow {workflow_id}: retry the workflow"
                f" (POST /api/workflows/{workflow_id}/retry, retry-workflow {workflow_id})",
                field="task_id",
            )
        if task.status not in RETRYABLE_STATUSES:
            raise TaskNotRetryable(
                "only failed, timed_out or cancelled tasks can be retried;"
                f" this one is {task.status}",
                field="task_id",
            )
        # its spec (concurrency key and retry policy included), linked by ``replay_of``: it
        # leaves the dead-letter view (``TaskFilter.final``)
        again = dataclasses.replace(spec_of(task), replay_of=task.id)
        created, _ = await self.create(again)
        return created

    # --- read -------------------------------------------------------------------------------

    async def get(self, task_id: UUID) -> Task:
        task = await self.store.get_task(task_id)
        if task is None:
            raise TaskNotFound(f"no task with id {task_id}", field="task_id")
        return task

    async def get_explained(
        self, task_id: UUID
    ) -> tuple[Task, PendingReason | None, datetime | None]:
        """A task (``TaskNotFound``), why it waits when pending, and for a ``rate_limited``
        one when a unit frees (``explain_waits``)."""
        task, online = await self.store.get_task_and_agents(task_id, now=self.clock.now())
        if task is None:
            raise TaskNotFound(f"no task with id {task_id}", field="task_id")
        reasons, waits = await self.explain_waits([task], online=online)
        return task, reasons.get(task.id), waits.get(task.id)

    async def list(
        self,
        query: TaskFilter,
        *,
        limit: int,
        offset: int = 0,
        after: TaskCursor | None = None,
        with_total: bool = True,
    ) -> Page[Task]:
        return await self.store.list_tasks(
            query, limit=limit, offset=offset, after=after, with_total=with_total
        )

    async def explain(self, tasks: Sequence[Task]) -> dict[UUID, PendingReason]:
        """Why each pending task in ``tasks`` is not running (``explain_waits``)."""
        reasons, _ = await self.explain_waits(tasks)
        return reasons

    async def explain_waits(
        self, tasks: Sequence[Task], *, online: Sequence[Agent] | None = None
    ) -> tuple[dict[UUID, PendingReason], dict[UUID, datetime | None]]:
        """Why each pending task in ``tasks`` is not running, from one look at the agents,
        and for a ``rate_limited`` one when a unit of the limits holding it back frees.

        In order: its start time is in the future; its concurrency key is full; a rate limit
        it names has not its units left in the window; no online agent supports its task
        type; none of those has every required capability; all of those are full; the global
        ``max_concurrent_tasks`` is reached; otherwise it is queued for dispatch.

        When this node sees every agent (``sees_every_agent``: SQLite, one server process)
        its registry gives the same answer for a task some agent connected here could run,
        without reading the store (``explain_created``); the store answers the rest.

        ``online``: the online agents, already read with the tasks (``get_task_and_agents``);
        None: read them when needed.
        """
        if self.sees_every_agent:
            return await self._explain_here(tasks, online)
        return await self._explain_from_store(tasks, online)

    async def _explain_from_store(
        self, tasks: Sequence[Task], online: Sequence[Agent] | None = None
    ) -> tuple[dict[UUID, PendingReason], dict[UUID, datetime | None]]:
        """``explain_waits`` from the store's agent rows (``online``, or read here); they are
        read only when some task's reason depends on them (a task due later is ``scheduled``
        whatever the agents)."""
        now = self.clock.now()
        reasons: dict[UUID, PendingReason] = {}
        due: list[Task] = []
        for task in tasks:
            if task.status is not TaskStatus.PENDING:
                continue
            if task.scheduled_at > now:
                reasons[task.id] = PendingReason.SCHEDULED
            else:
                due.append(task)
        limited = await self._rate_limited(due, now)
        keys_full = set() if self.concurrency is None else await self.concurrency.full(due)
        waiting: list[Task] = []
        for task in due:
            if task.id in keys_full:
                reasons[task.id] = PendingReason.CONCURRENCY_LIMIT
            elif task.id in limited:
                reasons[task.id] = PendingReason.RATE_LIMITED
            else:
                waiting.append(task)
        if not waiting:
            return reasons, limited
        if online is None:
            online = await self.store.list_agents(statuses=[AgentStatus.ONLINE])
        agents = [agent for agent in online if agent.enabled]
        global_full: bool | None = None
        for task in waiting:
            reason = _reason_among(task, agents)
            if reason is None:
                if global_full is None:
                    global_full = await self._global_limit_reached()
                reason = PendingReason.GLOBAL_LIMIT if global_full else PendingReason.QUEUED
            reasons[task.id] = reason
        return reasons, limited

    async def _rate_limited(
        self, pending: Sequence[Task], now: datetime
    ) -> dict[UUID, datetime | None]:
        """The due tasks a rate limit holds back (one of them has not their units left in
        its window now), with when the latest of those limits frees a unit. A snapshot."""
        due = [task for task in pending if task.rate_limits and task.scheduled_at <= now]
        if not due:
            return {}
        names = sorted({use.name for task in due for use in task.rate_limits})
        states = await self.store.rate_limit_states(names, now=now)
        limited: dict[UUID, datetime | None] = {}
        for task in due:
            lacking = [
                states[use.name]
                for use in task.rate_limits
                if use.name in states and not states[use.name].fits(use.units)
            ]
            if lacking:
                frees = [state.next_free_at for state in lacking if state.next_free_at]
                limited[task.id] = max(frees) if frees else None
        return limited

    async def explain_created(self, tasks: Sequence[Task]) -> dict[UUID, PendingReason]:
        """``explain`` for tasks just created (``_explain_here``)."""
        reasons, _ = await self._explain_here(tasks)
        return reasons

    async def _explain_here(
        self, tasks: Sequence[Task], online: Sequence[Agent] | None = None
    ) -> tuple[dict[UUID, PendingReason], dict[UUID, datetime | None]]:
        """``explain_waits`` cheap on the hot path, for tasks just created: a due task that an agent
        connected to this node can start now is ``queued`` without reading the store (the
        dispatcher was woken and claims it at once). When this node sees every agent
        (``sees_every_agent``) and one connected here could run the task but has no free
        slot (the producer's usual case: its agents are busy), ``agents_busy`` (or
        ``global_limit``) comes from the registry too; the other tasks are explained from
        the store, which also knows the agents' rows. Other nodes' held tasks are not counted
        against the global limit here (with several nodes; ``GET /api/tasks/{id}`` gives the
        full answer)."""
        now = self.clock.now()
        agents = self.agents
        limit = self.scheduler.max_concurrent_tasks  # 0: no global limit
        room = agents is not None and (not limit or agents.held_count() < limit)
        startable: dict[tuple[str, tuple[str, ...]], bool] = {}
        reasons: dict[UUID, PendingReason] = {}
        rest: list[Task] = []
        for task in tasks:
            if task.status is not TaskStatus.PENDING:
                continue
            if task.scheduled_at > now:
                reasons[task.id] = PendingReason.SCHEDULED
                continue
            if (
                task.concurrency_key is not None
                or task.rate_limits
                or task.pinned_agent_id is not None
            ):
                rest.append(task)  # its key or a rate limit may be full, its agent away
                continue
            key = (task.task_type, task.required_capabilities)
            local = startable.get(key)
            if local is None:
                local = startable[key] = room and agents is not None and agents.can_start(*key)
            reason = PendingReason.QUEUED if local else None
            if reason is None and self.sees_every_agent and agents is not None:
                reason = _local_reason(task, agents, room)
            if reason is not None:
                reasons[task.id] = reason
            else:
                rest.append(task)
        limited: dict[UUID, datetime | None] = {}
        if rest:
            more, limited = await self._explain_from_store(rest, online)
            reasons.update(more)
        return reasons, limited

    async def _global_limit_reached(self) -> bool:
        if not self.scheduler.max_concurrent_tasks:
            return False  # 0: no global limit
        counts = await self.store.count_tasks_by_type(statuses=sorted(ACTIVE_TASK_STATUSES))
        return sum(counts.values()) >= self.scheduler.max_concurrent_tasks

    # --- cancel -----------------------------------------------------------------------------

    async def cancel(self, task_id: UUID, reason: str | None = None) -> Task:
        """pending -> cancelled (``reason``, if given, its error); dispatched/running ->
        cancelling, and the node holding the agent is told to stop it (``TASK_CANCEL``).
        ``TaskAlreadyFinished`` for a finished task. Cancelling a task that is already
        cancelling repeats the stop request."""
        task = await self.store.cancel_task(task_id, now=self.clock.now(), reason=reason)
        if task.status is TaskStatus.CANCELLING and task.agent_id is not None:
            await self._publish(TASK_CANCEL, f"{task.id}:{task.attempts}:{task.agent_id}")
        if task.broadcast_policy is not None:  # a broadcast: its held children really stop
            for child in await self.store.list_broadcast_children(task.id):
                if child.status is TaskStatus.CANCELLING and child.agent_id is not None:
                    await self._publish(
                        TASK_CANCEL, f"{child.id}:{child.attempts}:{child.agent_id}"
                    )
        return task

    async def _cancel_for_key(self, task_id: UUID, reason: str) -> Task:
        return await self.cancel(task_id, reason)

    # --- replay -----------------------------------------------------------------------------

    async def replay(self, task_id: UUID) -> Task:
        """A new task with the same spec as a finished one (any terminal status, succeeded
        included), linked to it by ``replay_of``; the dispatchers are woken.
        ``TaskNotFinished`` for a task still pending or running."""
        if (original := await self.store.get_task(task_id)) is not None:
            _refuse_broadcast(original)
        task = await self.store.replay_task(task_id, now=self.clock.now())
        if self.metrics is not None:
            self.metrics.task_submitted(task.task_type, 1)
        await self._publish(TASKS_READY)
        return task

    async def _publish(self, channel: str, payload: str = "") -> None:
        # The change is committed; a lost wake-up only delays work (loops also re-check), so a
        # notifier hiccup must not turn a successful request into an error.
        try:
            await self.notifier.publish(channel, payload)
        except Exception:
            log.warning("could not publish %s %r", channel, payload, exc_info=True)


def _refuse_keys(task: NewTask, where: str) -> None:
    """``InvalidInput`` for a broadcast with an idempotency or concurrency key (``where``:
    the item's place in a batch, ``tasks[i].``)."""
    if task.idempotency_key is not None:
        raise InvalidInput("a broadcast takes no idempotency_key", field=f"{where}idempotency_key")
    if task.concurrency_key is not None:
        raise InvalidInput("a broadcast takes no concurrency_key", field=f"{where}concurrency_key")


def _refuse_broadcast(task: Task) -> None:
    """``TaskNotRetryable`` for a broadcast's parent or child: its agents are chosen when it
    is created, so a run again is a new broadcast."""
    if task.broadcast_policy is not None or task.broadcast_of is not None:
        raise TaskNotRetryable(
            f"task {task.id} is part of a broadcast: create a new broadcast"
            ' ("dispatch": "all") to run it again',
            field="task_id",
        )


def _reason_among(task: Task, agents: Sequence[Agent]) -> PendingReason | None:
    """``_agent_reason`` among ``agents``; a pinned task (a broadcast child) only among its
    own agent, ``agent_offline`` when that one is not there."""
    if task.pinned_agent_id is not None:
        pinned = [agent for agent in agents if agent.id == task.pinned_agent_id]
        if not pinned:
            return PendingReason.AGENT_OFFLINE
        return _agent_reason(task, pinned)
    return _agent_reason(task, agents)


def _agent_reason(task: Task, agents: Sequence[Agent]) -> PendingReason | None:
    """The agent-side reason a due task waits, or None if some capable agent has a free slot."""
    supporting = [agent for agent in agents if task.task_type in agent.supported_task_types]
    if not supporting:
        return PendingReason.NO_AGENT_FOR_TASK_TYPE
    capable = [
        agent for agent in supporting if agent.can_run(task.task_type, task.required_capabilities)
    ]
    if not capable:
        return PendingReason.NO_AGENT_WITH_CAPABILITIES
    if all(agent.running >= agent.max_concurrent_tasks for agent in capable):
        return PendingReason.AGENTS_BUSY
    return None


def _local_reason(task: Task, agents: AgentSvc, room: bool) -> PendingReason | None:
    """Why a due task that no agent connected here can start now waits, when some agent
    connected here could run it (their slots are full, or the global limit is reached); None
    when none could (the store knows of agents elsewhere)."""
    capable = [
        agent
        for agent in agents
        # Taking work, as the store's ``online`` agents: a draining agent is not one of them.
        if agent.state is ConnectionState.REGISTERED
        and not agent.drained_by_operator
        and agent.enabled
        and task.task_type in agent.task_types
        and agent.capabilities.issuperset(task.required_capabilities)
    ]
    if not capable:
        return None
    if room or all(agent.free_slots <= 0 for agent in capable):
        return PendingReason.AGENTS_BUSY
    return PendingReason.GLOBAL_LIMIT
