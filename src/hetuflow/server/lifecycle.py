"""The lifecycle loops: reconnect grace, the reaper, cancel routing and history cleanup.

- **Grace**: when an agent's connection drops, its attempts wait
  ``reconnect_grace_seconds``. If it reconnects (here or on another node) and reports them,
  they continue; otherwise it is marked offline (fenced by its session, so a stale node cannot
  mark a newer connection offline) and ``release_agent`` puts its attempts back to pending,
  and ``TASKS_READY`` wakes the dispatchers at once.
- **Reaper**: every heartbeat interval, ``reap_agents`` takes agents whose heartbeat is older
  than ``interval * misses`` (silent agents, agents of a node that died) offline and releases
  their attempts. Local connections that stay silent that long are closed. Every connection
  not heard from within the last interval gets a ``Ping``, so a live agent is always heard
  from (those that heartbeat on time are not pinged: no frame per agent per interval).
- **Cancel routing**: ``TASK_CANCEL`` names an attempt and its agent; the node holding that
  agent's connection sends ``TaskCancel``; the agent's result (``cancelled``) completes it.
- **Cleanup**: finished tasks older than ``retention_seconds`` are deleted in short batches,
  and agents offline for longer than ``prune_offline_agents_after_seconds`` are deleted
  (tombstones, as ``DELETE /api/agents/{id}``: their tasks' history stays), one log line each.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import timedelta
from uuid import UUID

from hetuflow.models import Agent, AgentStatus
from hetuflow.protocol import CloseCode, encode_frame, parse_uuid, ping_frame
from hetuflow.server.context import ServerContext
from hetuflow.server.registry import (
    AgentConnection,
    AgentSvc,
)
from hetuflow.server.resilience import StoreRetry
from hetuflow.store.base import TASKS_READY

logger = logging.getLogger(__name__)

CLEANUP_BATCH = 1000
PRUNE_BATCH = 100
ERROR_BACKOFF_SECONDS = 1.0
REFRESH_ENABLED_EVERY = 6
"""Reaper passes between two reads of every agent's ``enabled`` flag (one read lists every
agent: with 10,000 agents, doing it every pass was a fifth of the node's idle CPU)."""


@dataclass(frozen=True, slots=True)
class _Grace:
    session: int
    deadline: float  # monotonic


class LifecycleSvc:
    def __init__(self, context: ServerContext, agents: AgentSvc) -> None:
        self._context = context
        self._agents = agents
        self._graces: dict[UUID, _Grace] = {}
        self._grace_changed = asyncio.Event()
        self._cancels: list[str] = []
        self._cancel_ready = asyncio.Event()
        self._passes = 0
        self._reap_after = 0.0
        """Monotonic time before which no agent is reaped: heartbeats could not be recorded
        while the database was away, so silence is counted again from its return."""

    # --- grace ---------------------------------------------------------------------------

    def begin_grace(self, connection: AgentConnection) -> None:
        """The connection of a registered agent dropped: give it time to come back."""
        assert connection.agent_id is not None
        grace = self._context.config.scheduler.reconnect_grace_seconds
        self._graces[connection.agent_id] = _Grace(
            connection.session, self._context.clock.monotonic() + grace
        )
        self._grace_changed.set()

    async def run_grace(self) -> None:
        clock = self._context.clock
        retry = StoreRetry(
            "releasing disconnected agents",
            metrics=self._context.metrics,
            operation="release_agent",
            log=logger,
        )
        while True:
            if self._graces:
                first = min(grace.deadline for grace in self._graces.values())
                try:
                    async with asyncio.timeout(max(first - clock.monotonic(), 0.0)):
                        await self._grace_changed.wait()
                except TimeoutError:
                    pass
            else:
                await self._grace_changed.wait()
            self._grace_changed.clear()
            now = clock.monotonic()
            for agent_id, grace in list(self._graces.items()):
                if grace.deadline <= now:
                    try:
                        await self._end_grace(agent_id, grace)
                    except Exception as error:
                        retry.failed(error)
                        self._graces[agent_id] = _Grace(grace.session, now + ERROR_BACKOFF_SECONDS)
                        continue
                    retry.succeeded()
                    if self._graces.get(agent_id) is grace:
                        del self._graces[agent_id]

    async def _end_grace(self, agent_id: UUID, grace: _Grace) -> None:
        context = self._context
        store = context.store
        released: list[UUID] = []
        async with self._agents.lock:
            if self._agents.current(agent_id) is not None:
                return  # it came back to this node
            agent = await store.get_agent(agent_id)
            if agent is None or agent.session != grace.session:
                return  # deleted, or it came back to another node
            now = context.clock.now()
            await store.set_agent_status(
                agent_id, AgentStatus.OFFLINE, session=grace.session, now=now
            )
            # Fenced too: the agent may reconnect on another node right after the line above.
            released = await store.release_agent(agent_id, now=now, session=grace.session)
        if released:
            logger.info(
                "agent %s did not come back: %d attempt(s) released", agent.name, len(released)
            )
            await context.notifier.publish(TASKS_READY, "")

    # --- reaper --------------------------------------------------------------------------

    async def run_reaper(self) -> None:
        context = self._context
        scheduler = context.config.scheduler
        interval = scheduler.heartbeat_interval_seconds
        retry = StoreRetry(
            "reaping silent agents", metrics=context.metrics, operation="reap_agents", log=logger
        )
        while True:
            await asyncio.sleep(interval)
            try:
                await self.reap()
            except Exception as error:
                retry.failed(error)
                silence = interval * scheduler.heartbeat_misses
                self._reap_after = context.clock.monotonic() + silence
            else:
                retry.succeeded()

    async def reap(self) -> None:
        context = self._context
        scheduler = context.config.scheduler
        silence = scheduler.heartbeat_interval_seconds * scheduler.heartbeat_misses
        now = context.clock.now()
        reaped: list[UUID] = []
        if context.clock.monotonic() >= self._reap_after:
            reaped = await context.store.reap_agents(
                stale_before=now - timedelta(seconds=silence), now=now
            )
        monotonic = context.clock.monotonic()
        quiet_since = monotonic - silence
        # An agent heard from within the last interval (its heartbeats) needs no Ping.
        ping_before = monotonic - scheduler.heartbeat_interval_seconds
        ping = encode_frame(ping_frame(now))
        for connection in self._agents:
            if connection.last_seen < quiet_since:
                # Half-open socket: the disconnect path (grace, release) takes over.
                connection.close(CloseCode.HEARTBEAT_TIMEOUT, f"nothing heard for {silence:g} s")
            elif connection.last_seen < ping_before:
                connection.send(ping, "Ping")
        if reaped:
            logger.info("reaped %d silent agent(s)", len(reaped))
            await self._drop_reaped(reaped)
            await context.notifier.publish(TASKS_READY, "")
        # Broadcast children their agent did not start by their start deadline end failed
        # (docs/guarantees.md, Broadcast): checked once a pass, on every node.
        expired = await context.store.expire_broadcast_children(now=now)
        if expired:
            logger.info("%d broadcast child(ren) not started by their start deadline", len(expired))
        self._passes += 1
        if self._passes % REFRESH_ENABLED_EVERY == 1:
            await self._refresh_enabled()

    async def _drop_reaped(self, reaped: list[UUID]) -> None:
        """Agents the cluster declared offline that are connected here must register again;
        anything claimed for them since is given back too."""
        context = self._context
        async with self._agents.lock:
            for agent_id in reaped:
                connection = self._agents.current(agent_id)
                if connection is None:
                    continue
                self._agents.detach(connection)
                connection.give_back()
                connection.close(CloseCode.DECLARED_OFFLINE, "declared offline; register again")
                await context.store.release_agent(agent_id, now=context.clock.now())

    async def _refresh_enabled(self) -> None:
        """Pick up agents enabled or disabled in the database (every ``REFRESH_ENABLED_EVERY``
        reaper passes; a connection reads its flag when it registers)."""
        if len(self._agents) == 0:
            return
        agents = {agent.id: agent for agent in await self._context.store.list_agents()}
        for connection in self._agents:
            agent = agents.get(connection.agent_id) if connection.agent_id else None
            if agent is not None and agent.enabled != connection.enabled:
                connection.set_enabled(agent.enabled)

    # --- cancel routing --------------------------------------------------------------------

    def on_task_cancel(self, payload: str) -> None:
        """Notifier callback for ``TASK_CANCEL``: queue it for the cancel loop."""
        self._cancels.append(payload)
        self._cancel_ready.set()

    async def run_cancels(self) -> None:
        while True:
            await self._cancel_ready.wait()
            self._cancel_ready.clear()
            payloads, self._cancels = self._cancels, []
            # Under the lock: a dispatch of the same attempt being routed goes out first.
            async with self._agents.lock:
                for payload in payloads:
                    self._route_cancel(payload)

    def _route_cancel(self, payload: str) -> None:
        if not payload:
            return  # the notifier reconnected: a wake-up for everyone, no cancel in it
        parts = payload.split(":")
        if len(parts) != 3 or not parts[1].isdigit():
            logger.warning("ignoring malformed cancel notification %r", payload)
            return
        task_id, agent_id = parse_uuid(parts[0]), parse_uuid(parts[2])
        if task_id is None or agent_id is None:
            return
        connection = self._agents.current(agent_id)
        if connection is not None:
            connection.send_cancel(task_id, int(parts[1]), "cancelled")

    # --- cleanup -----------------------------------------------------------------------------

    async def run_cleanup(self) -> None:
        scheduler = self._context.config.scheduler
        retry = StoreRetry(
            "cleanup",
            metrics=self._context.metrics,
            operation="delete_finished_tasks",
            log=logger,
        )
        while True:
            try:
                deleted = await self.cleanup()
                if deleted:
                    logger.info("cleanup deleted %d finished task(s)", deleted)
                await self.prune_agents()
            except Exception as error:
                retry.failed(error)
            else:
                retry.succeeded()
            await asyncio.sleep(scheduler.cleanup_interval_seconds)

    async def cleanup(self) -> int:
        """Delete finished tasks past retention in short batches; return how many."""
        context = self._context
        retention = timedelta(seconds=context.config.scheduler.retention_seconds)
        total = 0
        while True:
            deleted = await context.store.delete_finished_tasks(
                finished_before=context.clock.now() - retention, limit=CLEANUP_BATCH
            )
            total += deleted
            if deleted < CLEANUP_BATCH:
                return total
            await asyncio.sleep(0)  # let dispatch and results run between batches

    async def prune_agents(self) -> list[Agent]:
        """Delete agents offline for longer than ``prune_offline_agents_after_seconds`` (0:
        never), in batches; log one line per agent; return them as they were."""
        context = self._context
        after = context.config.scheduler.prune_offline_agents_after_seconds
        if after <= 0:
            return []
        now = context.clock.now()
        pruned: list[Agent] = []
        while True:
            batch = await context.store.prune_agents(
                offline_before=now - timedelta(seconds=after), now=now, limit=PRUNE_BATCH
            )
            for agent in batch:
                heard = agent.last_heartbeat_at or agent.connected_at or agent.created_at
                logger.info(
                    "pruned agent %s (%s): offline since %s, longer than"
                    " [scheduler] prune_offline_agents_after_seconds = %g",
                    agent.name,
                    agent.id,
                    heard.isoformat(),
                    after,
                )
            pruned.extend(batch)
            if len(batch) < PRUNE_BATCH:
                break
        if pruned:
            await context.notifier.publish(TASKS_READY, "")  # what they held is pending again
        return pruned
