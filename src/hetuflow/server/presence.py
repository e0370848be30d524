"""Presence: what the cluster says about the agents connected to this node, and what this
node tells it.

Notifier callbacks (another node registered a newer connection of an agent; an operator
drained, resumed, disabled or enabled one) change the connections here. The heartbeat loop
records, in one store call every couple of seconds, a heartbeat for every agent heard from
since, closes the connections of agents deleted meanwhile (4010), and runs the periodic
reconciliation of the connections that are due.
"""

from __future__ import annotations

import asyncio
import logging
from uuid import UUID

from hetuflow.protocol import CloseCode, parse_uuid
from hetuflow.server.context import ServerContext
from hetuflow.server.dispatch import TaskDispatcher
from hetuflow.server.reconcile import Reconciler, reconcile_interval
from hetuflow.server.registry import AgentConnection, AgentSvc
from hetuflow.server.resilience import StoreRetry
from hetuflow.store.base import TASKS_READY

logger = logging.getLogger("hetuflow.server.gateway")  # the gateway's log, as before the split

AGENT_ENABLED_CHANGED = "hetuflow_agent_enabled_changed"
"""Notifier channel, payload ``<agent_id>:0`` (disabled by an operator) or ``<agent_id>:1``
(enabled): the node holding that agent's connection stops or starts giving it tasks."""


class Presence:
    """The node-wide side of this node's agent connections. See the module docstring."""

    def __init__(
        self,
        context: ServerContext,
        agents: AgentSvc,
        dispatcher: TaskDispatcher,
        reconciler: Reconciler,
    ) -> None:
        self._context = context
        self._agents = agents
        self._dispatcher = dispatcher
        self._reconciler = reconciler

    def on_agent_connected(self, payload: str) -> None:
        """Notifier callback: an agent registered somewhere; drop an older connection here."""
        agent_text, _, session_text = payload.partition(":")
        agent_id = parse_uuid(agent_text)
        if agent_id is None or not session_text.isdigit():
            return
        connection = self._agents.current(agent_id)
        if connection is not None and connection.session < int(session_text):
            self._agents.detach(connection)
            connection.close(CloseCode.SUPERSEDED, "superseded by a newer connection of this agent")

    def _flagged(self, payload: str) -> tuple[AgentConnection, bool] | None:
        """A notifier payload ``<agent id>:<0|1>`` as the agent's connection here and the
        flag; None when the agent is not connected here or the payload is malformed."""
        agent_text, _, flag = payload.partition(":")
        agent_id = parse_uuid(agent_text)
        connection = self._agents.current(agent_id) if agent_id is not None else None
        if connection is None or flag not in ("0", "1"):
            return None
        return connection, flag == "1"

    def on_agent_drain_changed(self, payload: str) -> None:
        """Notifier callback: an operator drained (``<id>:1``) or resumed (``<id>:0``) an
        agent; if its connection is here, stop or start giving it tasks."""
        flagged = self._flagged(payload)
        if flagged is None:
            return
        connection, on = flagged
        connection.set_operator_drained(on)
        logger.info(
            "agent %s %s by an operator",
            connection.name,
            "drained" if connection.drained_by_operator else "resumed",
        )
        if not connection.drained_by_operator:
            self._dispatcher.wake()

    def on_agent_enabled_changed(self, payload: str) -> None:
        """Notifier callback: an operator disabled (``<id>:0``) or enabled (``<id>:1``) an
        agent; if its connection is here, stop or start giving it tasks."""
        flagged = self._flagged(payload)
        if flagged is None:
            return
        connection, on = flagged
        connection.set_enabled(on)
        logger.info(
            "agent %s %s by an operator",
            connection.name,
            "enabled" if connection.enabled else "disabled",
        )
        if connection.enabled:
            self._dispatcher.wake()

    async def flush_heartbeats(self) -> None:
        """Record a heartbeat for every agent heard from since the last flush (one call)."""
        seen = [c for c in self._agents if c.agent_id is not None and c.take_seen()]
        if not seen:
            return
        try:
            deleted = await self._context.store.record_heartbeats(
                [c.agent_id for c in seen if c.agent_id is not None], now=self._context.clock.now()
            )
        except BaseException:
            for connection in seen:
                connection.unsee()
            raise
        if deleted:
            await self._drop_deleted(deleted)

    async def _drop_deleted(self, agent_ids: list[UUID]) -> None:
        """Agents deleted while connected here (deleting refuses a connected agent, but the
        store may have declared one offline that this node still holds): stop what they run,
        close with 4010 and give back what was claimed for them since."""
        context = self._context
        released: list[UUID] = []
        async with self._agents.lock:
            for agent_id in agent_ids:
                connection = self._agents.current(agent_id)
                if connection is None:
                    continue
                # Released first: if that fails, the connection stays for the next flush.
                released += await context.store.release_agent(agent_id, now=context.clock.now())
                self._agents.detach(connection)
                for task_id, attempt in connection.give_back():
                    connection.send_cancel(task_id, attempt, "superseded")
                connection.close(CloseCode.AGENT_DELETED, "agent deleted")
                logger.warning("agent %s was deleted: its connection is closed", connection.name)
        if released:  # what they held is pending again
            await context.notifier.publish(TASKS_READY, "")

    async def run_heartbeats(self) -> None:
        """Engine loop: flush heartbeats every couple of seconds, and reconcile when due."""
        scheduler = self._context.config.scheduler
        period = min(2.0, scheduler.heartbeat_interval_seconds / 2)
        retry = StoreRetry(
            "recording heartbeats",
            metrics=self._context.metrics,
            operation="record_heartbeats",
            log=logger,
        )
        while True:
            await asyncio.sleep(period)
            try:
                await self.flush_heartbeats()
                await self._reconcile_due()
            except Exception as error:
                retry.failed(error)
            else:
                retry.succeeded()

    async def _reconcile_due(self) -> None:
        """Reconcile every connection that is due, all with one store read."""
        now = self._context.clock.monotonic()
        due = [c for c in self._agents if c.next_reconcile <= now and not c.closing]
        if not due:
            return
        interval = reconcile_interval(self._context)
        for connection in due:
            connection.reconcile_at(now + interval)
        await self._reconciler.reconcile_many(due)
