"""Registration and reconciliation: what an agent runs versus what the database says it holds.

On registration the agent lists the attempts it is still running (``AgentCapabilities.running``).
Each one is compared with the database: an attempt that is still the task's current one and
held by this agent is kept (it continues, nothing runs twice); any other is superseded and
listed in ``AgentRegistered.superseded`` so the agent stops it. Attempts the database says the
agent holds but it does not report are released (back to pending, re-dispatched at once).

Periodically (every ``heartbeat_interval * heartbeat_misses * 2``) the same comparison runs for
each connected agent, keeping what the connection holds plus what the agent last reported:
an attempt claimed for the agent through a stale connection on another node (which the agent
never received) is given back instead of waiting forever, and the cancel of every kept attempt
that is ``cancelling`` is sent again: a cancel whose notification never reached this node
(published while its PostgreSQL notifier was disconnected) still reaches the agent. Agents
take a repeated cancel as a no-op.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from uuid import UUID

from hetuflow.models import Agent, AttemptRef, HeldTask, TaskStatus
from hetuflow.protocol import (
    AttemptFrame,
    CloseCode,
    RunningAttempt,
    agent_registered_frame,
    parse_uuid,
)
from hetuflow.server.context import ServerContext
from hetuflow.server.registry import AgentConnection, AgentSvc
from hetuflow.server.results import ResultWriter
from hetuflow.store.base import TASKS_READY

logger = logging.getLogger(__name__)


def reconcile_interval(context: ServerContext) -> float:
    """Seconds between two reconciliations of a connection (and before the first)."""
    scheduler = context.config.scheduler
    return scheduler.heartbeat_interval_seconds * scheduler.heartbeat_misses * 2


class Reconciler:
    def __init__(self, context: ServerContext, agents: AgentSvc, results: ResultWriter) -> None:
        self._context = context
        self._agents = agents
        self._results = results

    async def _held_in_store(self, agent_id: UUID) -> dict[UUID, HeldTask]:
        held = await self._context.store.list_held([agent_id])
        return {task.id: task for task in held if task.agent_id == agent_id}

    async def attach(
        self, connection: AgentConnection, agent: Agent, running: Iterable[RunningAttempt]
    ) -> int | None:
        """Attach a freshly registered connection: keep and supersede attempts, send
        ``AgentRegistered`` as its first frame. Returns how many attempts the store gives the
        agent that it did not report (None if a newer connection of the same agent is already
        attached here: this one is then closed).

        Those unreported attempts are not released at once: an agent buffers the results of
        work that ended while it was disconnected and sends them right after registering. The
        caller schedules a ``reconcile`` a little later, which releases what is still missing.
        """
        context = self._context
        # Results the agent sent on a previous connection are written before we compare.
        await self._results.drain()
        async with self._agents.lock:
            held = await self._held_in_store(agent.id)
            kept: dict[UUID, tuple[int, str]] = {}
            superseded: list[AttemptFrame] = []
            cancelling: list[tuple[UUID, int]] = []
            for item in running:
                task_id = parse_uuid(item.task_id)
                task = held.get(task_id) if task_id is not None else None
                if task is None or task.attempts != item.attempt:
                    superseded.append({"task_id": item.task_id, "attempt": item.attempt})
                    continue
                kept[task.id] = (item.attempt, task.task_type)
                if task.status == TaskStatus.CANCELLING:
                    cancelling.append((task.id, item.attempt))
            connection.register(agent, kept, shared=self._agents.shared)
            replaced = self._agents.attach(connection)
            if replaced is connection:
                connection.close(CloseCode.SUPERSEDED, "a newer connection of this agent is open")
                return None
            if replaced is not None:
                replaced.close(
                    CloseCode.SUPERSEDED, "superseded by a newer connection of this agent"
                )
            connection.send_message(
                agent_registered_frame(
                    agent.id,
                    agent.name,
                    heartbeat_interval_seconds=context.config.scheduler.heartbeat_interval_seconds,
                    now=context.clock.now(),
                    superseded=superseded,
                )
            )
            for task_id, attempt in cancelling:
                connection.send_cancel(task_id, attempt, "cancelled")
        return len(held) - len(kept)

    async def reconcile(self, connection: AgentConnection, reported: set[tuple[UUID, int]]) -> None:
        """Give back attempts the store says this agent holds but that neither this
        connection dispatched nor the agent reports; cancel reported ones that are stale."""
        await self.reconcile_many([connection], {connection: reported})

    async def reconcile_many(
        self,
        connections: Sequence[AgentConnection],
        reported: Mapping[AgentConnection, set[tuple[UUID, int]]] | None = None,
    ) -> None:
        """``reconcile`` for many connections with one store read for all of them (the
        periodic pass of a node with thousands of agents must not read once per agent)."""
        await self._results.drain()
        released = False
        async with self._agents.lock:
            current = [c for c in connections if self._agents.is_current(c)]
            if not current:
                return
            held_by_agent = await self._held_in_store_many(
                [c.agent_id for c in current if c.agent_id is not None]
            )
            for connection in current:
                assert connection.agent_id is not None
                held = held_by_agent.get(connection.agent_id, {})
                seen = reported.get(connection, set()) if reported else set()
                keep = self._compare(connection, held, seen)
                if len(held) > len(keep):
                    released |= bool(
                        await self._release(connection.agent_id, keep, connection.session)
                    )
        if released:
            await self._context.notifier.publish(TASKS_READY, "")

    async def _held_in_store_many(
        self, agent_ids: Sequence[UUID]
    ) -> dict[UUID, dict[UUID, HeldTask]]:
        """The active tasks each agent holds, in one narrow read (``Store.list_held``: the
        columns compared, through the index on the holding agent)."""
        grouped: dict[UUID, dict[UUID, HeldTask]] = {}
        for task in await self._context.store.list_held(agent_ids):
            grouped.setdefault(task.agent_id, {})[task.id] = task
        return grouped

    def _compare(
        self,
        connection: AgentConnection,
        held: dict[UUID, HeldTask],
        reported: set[tuple[UUID, int]],
    ) -> dict[UUID, tuple[int, str]]:
        """Align the connection with the store (under the registry lock); return what the
        agent keeps. The caller releases the rest of ``held``."""
        keep: dict[UUID, tuple[int, str]] = {}
        finishing: dict[UUID, tuple[int, str]] = {}
        for task_id, task in held.items():
            if connection.holds(task_id, task.attempts) or (task_id, task.attempts) in reported:
                keep[task_id] = (task.attempts, task.task_type)
            elif (task_id, task.attempts) in connection.recently_finished:
                # Its result arrived after the drain and is on its way to the store: not
                # released, and not held again either (its slot is free).
                finishing[task_id] = (task.attempts, task.task_type)
        for task_id, attempt in reported - connection.recently_finished.keys():
            if task_id not in keep or keep[task_id][0] != attempt:
                connection.send_cancel(task_id, attempt, "superseded")
        # Attempts the store no longer gives this agent (released elsewhere) free their
        # slot and are stopped; reported work this connection did not know of is held.
        for task_id, (attempt, _) in list(connection.held.items()):
            if task_id not in keep:
                del connection.held[task_id]
                connection.send_cancel(task_id, attempt, "superseded")
        for task_id, entry in keep.items():
            connection.held.setdefault(task_id, entry)
        for task_id, (attempt, _) in keep.items():
            if held[task_id].status == TaskStatus.CANCELLING:  # its notification may be lost
                connection.send_cancel(task_id, attempt, "cancelled")
        return keep | finishing

    async def _release(
        self, agent_id: UUID, keep: dict[UUID, tuple[int, str]], session: int
    ) -> list[UUID]:
        """Release what the agent holds but did not report, while ``session`` is still its
        connection (a newer connection on another node keeps its attempts)."""
        refs = [AttemptRef(task_id, attempt, agent_id) for task_id, (attempt, _) in keep.items()]
        released = await self._context.store.release_agent(
            agent_id, now=self._context.clock.now(), keep=refs, session=session
        )
        if released:
            logger.info("agent %s: %d attempt(s) it does not run released", agent_id, len(released))
        return released
