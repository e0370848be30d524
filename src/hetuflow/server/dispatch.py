"""TaskDispatcher: event-driven claim and push.

The dispatcher sleeps until something can change what is dispatchable: tasks became ready
(``TASKS_READY`` from this node or, through PostgreSQL ``LISTEN/NOTIFY``, from any node), a
slot was freed, an agent connected, the earliest future ``scheduled_at`` comes within the
lookahead window, or a rate limit that pending tasks wait for frees a unit (the instant its
oldest dispatch leaves the window). There is no polling timer.

A round first reads the ``dispatch_outlook``: whether any pending task of the offered types is
due, and if none is, when to look again (the earliest ``scheduled_at`` beyond the lookahead,
the instant a rate limit frees a unit). That one read is all most rounds cost, since most
follow a freed slot and find nothing; it is read outside the agents' lock, so a create
waiting to claim does not wait for it. After a claim that filled every slot it offered (a
backlog: agents take tasks as fast as their slots free), the next round claims at once,
without the outlook: it would say that something is due. A claim that leaves a slot free
ends the backlog, and the outlook is read after it, as after any such claim. When something
is due, the round takes the lock, makes one ``claim_tasks`` call for every group of agents
with free slots and pushes one ``TaskDispatch`` frame per agent. Tasks due within
``dispatch_lookahead_seconds`` are handed out early with ``start_at`` so the agent starts them
on the exact instant. While a round fills every offered slot another round follows at once
(more work may be waiting).

Slots freed by results that made no task pending (no retry, no workflow step: the
``SLOTS_FREED`` payload) wake the dispatcher only when it may have something to claim for
them: not when its last round found nothing due for every task type offered now, and nothing
woke it since (``wake``). Else each task of a serial producer cost a round after its result:
the outlook's read, one round trip of the task's four on PostgreSQL.

``create`` makes a round part of a create: the tasks are inserted and the free slots of this
node's agents are filled in one transaction (``Store.create_and_claim_tasks``), and the frames
go out before the creator answers. A task submitted while a slot is free reaches its agent
one durable commit after the request, not two, and is never written as pending at all. A
create none of whose tasks a slot could take there (``NewTask.placeable_at_create``: keyed,
rate-limited or idempotent tasks), or that finds every slot busy, only stores them, without
the agents' lock; the round it wakes claims them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

from hetuflow.errors import AgentNotFound
from hetuflow.models import (
    ClaimGroup,
    ClaimRequest,
    ConcurrencyLimits,
    Dispatch,
    DispatchOutlook,
    NewTask,
    Task,
    TaskStatus,
    offered_task_types,
)
from hetuflow.protocol import DispatchedTaskFrame, dispatched_task_frame
from hetuflow.server.context import ServerContext
from hetuflow.server.registry import AgentConnection, AgentSvc
from hetuflow.server.resilience import StoreRetry
from hetuflow.store.base import SLOTS_FREED

logger = logging.getLogger(__name__)


class TaskDispatcher:
    def __init__(self, context: ServerContext, agents: AgentSvc) -> None:
        self._context = context
        self._agents = agents
        self._wake = asyncio.Event()
        self._idle_types: frozenset[str] | None = None
        """The task types the last round found nothing due for, with nothing woken since."""
        self._backlog = False
        """The last claim filled every slot it offered: more is likely due, so the next round
        claims without reading the outlook first (``_round``)."""
        self.rounds = 0
        self._key_limits = ConcurrencyLimits(dict(context.config.concurrency))
        self._lookahead = timedelta(seconds=context.config.scheduler.dispatch_lookahead_seconds)

    def wake(self, payload: str = "") -> None:
        """Ask for a dispatch round (a Notifier callback, or called directly).

        ``SLOTS_FREED``: attempts ended and made no task pending. When the last round found
        nothing due for the task types it offered, every type offered now is among them, and
        nothing woke the dispatcher since, no task of those types is due (tasks become due
        only by what wakes it, or by its timer, which stays set), so there is no round."""
        if payload == SLOTS_FREED and self._idle_types is not None:
            offered = offered_task_types(self._agents.claim_groups())
            if self._idle_types.issuperset(offered):
                return
        self._idle_types = None
        self._wake.set()

    async def run(self) -> None:
        clock = self._context.clock
        deadline: float | None = None
        retry = StoreRetry(
            "dispatch", metrics=self._context.metrics, operation="claim_tasks", log=logger
        )
        self._wake.set()
        while True:
            if deadline is None:
                await self._wake.wait()
            else:
                try:
                    async with asyncio.timeout(max(deadline - clock.monotonic(), 0.0)):
                        await self._wake.wait()
                except TimeoutError:
                    pass
            self._wake.clear()
            try:
                deadline = await self.dispatch()
            except Exception as error:
                # A wake-up lost meanwhile does not matter: the next try claims what is ready.
                deadline = clock.monotonic() + retry.failed(error)
            else:
                retry.succeeded()

    async def dispatch(self) -> float | None:
        """Claim and push until no offered slot is left or nothing more is ready.

        Returns the monotonic instant at which a round is next due because a task's
        ``scheduled_at`` enters the lookahead window (None: nothing scheduled, or no free slot
        that such a task could take: a freed slot wakes the dispatcher anyway).
        """
        while True:
            claimed, offered, read_at, outlook = await self._round()
            if offered == 0:
                return None
            if claimed < offered:
                return await self._next_due(read_at, outlook)

    async def create(self, tasks: Sequence[NewTask]) -> tuple[list[tuple[Task, bool]], bool]:
        """Create ``tasks`` (``Store.create_tasks``) and, in the same transaction, hand the
        ones this node's free slots can take to their agents. Also says whether any created
        task is still pending (then other nodes' dispatchers should hear of it)."""
        store = self._context.store
        if self._agents.has_free_slots() and any(task.placeable_at_create for task in tasks):
            async with self._agents.lock:
                groups = self._agents.claim_groups()  # again: a round may have taken them
                now = self._context.clock.now()
                if groups:
                    try:
                        created, dispatches = await store.create_and_claim_tasks(
                            tasks, self._request(groups, now), now=now
                        )
                    except AgentNotFound as problem:
                        # An agent connected here has no row any more (the whole write was
                        # undone): the tasks are created pending, below; the agent's
                        # connection is dropped on the next heartbeat flush. The creator
                        # never sees this.
                        logger.warning("placing new tasks failed (%s): created pending", problem)
                    else:
                        self._route(dispatches)
                        waiting = any(
                            new and task.status is TaskStatus.PENDING for task, new in created
                        )
                        return created, waiting
        # No slot, or no new task a slot could take in this transaction (all keyed,
        # rate-limited or idempotent): the tasks are only stored, outside the agents' lock
        # (they claim nothing, so creates and claim rounds need not take turns for them), and
        # the round the creator's ``TASKS_READY`` wakes claims them. A claim here would cost
        # the create a whole round (with keys: a pass over every pending task) under the lock,
        # for no task of its own.
        created = await store.create_tasks(tasks, now=self._context.clock.now())
        return created, any(new for _, new in created)

    def _request(self, groups: Sequence[ClaimGroup], now: datetime) -> ClaimRequest:
        scheduler = self._context.config.scheduler
        return ClaimRequest(
            groups,
            until=now + self._lookahead,
            global_limit=scheduler.max_concurrent_tasks or None,  # 0: no global limit
            key_limits=self._key_limits,
        )

    async def _round(self) -> tuple[int, int, _Reading, DispatchOutlook | None]:
        """Claim once for every free slot: (claimed, offered, the instant the claim read, and
        the outlook read then when it found nothing due, so no claim was made)."""
        clock = self._context.clock
        store = self._context.store
        # The outlook is read outside the agents' lock: most rounds end with it, and creates
        # waiting for the lock would wait for that read too. A task that becomes due after it
        # was read wakes the dispatcher again (its creator, the scheduler or a freed slot).
        groups = self._agents.claim_groups()
        offered = sum(group.free_slots for group in groups)
        now = clock.now()
        read_at = _Reading(now, clock.monotonic())
        if offered == 0:
            return 0, 0, read_at, None
        until = now + self._lookahead
        self._idle_types = None
        if not self._backlog:
            task_types = offered_task_types(groups)
            outlook = await store.dispatch_outlook(task_types, now=now, until=until)
            if not outlook.due:
                # A wake during the read set the event: the round after this one reads again
                # (and ends this idleness) before any freed slot could be passed over.
                self._idle_types = frozenset(task_types)
                return 0, offered, read_at, outlook
        async with self._agents.lock:
            # The slots again (a create may have taken some meanwhile); the instant stays the
            # one the outlook read, so the timer set after the claim counts from it.
            groups = self._agents.claim_groups()
            offered = sum(group.free_slots for group in groups)
            if offered == 0:
                return 0, 0, read_at, None
            request = self._request(groups, now)
            dispatches = await store.claim_tasks(
                request.groups,
                now=now,
                until=request.until,
                global_limit=request.global_limit,
                key_limits=request.key_limits,
            )
            self.rounds += 1
            self._route(dispatches)
        self._backlog = len(dispatches) >= offered
        return len(dispatches), offered, read_at, None

    def _route(self, dispatches: list[Dispatch]) -> None:
        """Record each claimed attempt on its agent's connection and queue one frame each."""
        if not dispatches:
            return
        now = self._context.clock.now()
        metrics = self._context.metrics
        frames: dict[UUID, tuple[AgentConnection, list[DispatchedTaskFrame]]] = {}
        for dispatch in dispatches:
            task = dispatch.task
            entry = frames.get(dispatch.agent_id)
            if entry is None:
                connection = self._agents.current(dispatch.agent_id)
                if connection is None:
                    # Gone since the offer: its disconnect (grace, then release) gives the
                    # attempt back; it cannot be pushed anywhere else.
                    continue
                entry = frames[dispatch.agent_id] = (connection, [])
            connection = entry[0]
            connection.dispatched(task.id, dispatch.attempt, task.task_type)
            start_at = task.scheduled_at if task.scheduled_at > now else None
            entry[1].append(dispatched_task_frame(task, dispatch.attempt, start_at))
            metrics.task_dispatched(task.task_type, (now - task.scheduled_at).total_seconds())
        for connection, tasks in frames.values():
            connection.send_dispatch(tasks)

    async def _next_due(self, read_at: _Reading, outlook: DispatchOutlook | None) -> float | None:
        """When the next round is due, for what the claim read at ``read_at`` left pending
        (``outlook``: read then, when no claim was made; else it is read now).

        Every instant is taken after the claim's own reading, never a later one: a round
        takes time (the claim's commit, a loaded machine), and a task that enters the
        lookahead window or a rate limit window that frees between the claim's reading and
        this one must still set the timer (else nothing wakes the dispatcher for it). Such an
        instant is already past: the next round is due at once.
        """
        context = self._context
        lookahead = timedelta(seconds=context.config.scheduler.dispatch_lookahead_seconds)
        now = read_at.now
        if outlook is None:
            outlook = await context.store.dispatch_outlook((), now=now, until=now + lookahead)
        upcoming = outlook.next_scheduled_at
        # A rate limit's window frees at an exact instant: no lookahead (the claim then
        # would still find it without units).
        free_at = outlook.next_rate_limit_free_at
        instants = [at for at in (upcoming and upcoming - lookahead, free_at) if at is not None]
        if not instants:
            return None
        wait = (min(instants) - now).total_seconds()
        return read_at.monotonic + max(wait, 0.0)


@dataclass(frozen=True, slots=True)
class _Reading:
    """One reading of the clock: the wall instant a claim used and the monotonic one beside
    it (the dispatcher's timers are armed on the monotonic clock)."""

    now: datetime
    monotonic: float
