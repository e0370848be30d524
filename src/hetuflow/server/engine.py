"""SchedulerEngine: the background loops of one server node, in one task group.

Built once by the app factory. ``run`` subscribes to the Notifier channels, starts every loop
(dispatcher, result writer, heartbeat flush, reaper, grace, cancel routing, cleanup, the
cron service and the webhook sender) in one ``asyncio.TaskGroup``, sets ``started`` and runs
until cancelled. On the way out it closes every agent connection with 1001 (going away) so agents
reconnect, to another node if there is one, and writes the reports still queued.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from hetuflow.models import LogBudget
from hetuflow.protocol import CloseCode
from hetuflow.server.context import ServerContext
from hetuflow.server.cron_service import CronService
from hetuflow.server.dispatch import TaskDispatcher
from hetuflow.server.gateway import GatewaySvc
from hetuflow.server.lifecycle import LifecycleSvc
from hetuflow.server.presence import AGENT_ENABLED_CHANGED, Presence
from hetuflow.server.reconcile import Reconciler
from hetuflow.server.registration import AGENT_CONNECTED
from hetuflow.server.registry import AgentSvc
from hetuflow.server.resilience import supervise
from hetuflow.server.results import ResultWriter
from hetuflow.server.webhooks import WebhookSender
from hetuflow.store.base import AGENT_DRAIN_CHANGED, SLOTS_FREED, TASK_CANCEL, TASKS_READY

logger = logging.getLogger(__name__)

SLOTS_FREED_WITHIN_SECONDS = 0.005
"""How late other nodes may hear of slots freed here (``Notifier.publish``)."""


class SchedulerEngine:
    def __init__(self, context: ServerContext) -> None:
        self.context = context
        self.started = asyncio.Event()
        scheduler = context.config.scheduler
        self.agents = AgentSvc(context.metrics)
        self.dispatcher = TaskDispatcher(context, self.agents)
        self.results = ResultWriter(
            context.store,
            context.clock,
            context.metrics,
            LogBudget(scheduler.max_log_bytes_per_attempt, scheduler.max_log_lines_per_attempt),
            self._attempts_finished,
            max_log_line_bytes=scheduler.max_log_line_bytes,
        )
        self.lifecycle = LifecycleSvc(context, self.agents)
        self.reconciler = Reconciler(context, self.agents, self.results)
        self.gateway = GatewaySvc(
            context,
            self.agents,
            self.results,
            self.dispatcher,
            self.reconciler,
            on_disconnect=self.lifecycle.begin_grace,
        )
        self.presence = Presence(context, self.agents, self.dispatcher, self.reconciler)
        self.webhooks = WebhookSender(context)

    async def _attempts_finished(self, made_pending: bool) -> None:
        """Results were accepted: slots are free here, and retries, released workflow steps
        or the global limit may let any node dispatch more. Without retries or steps
        (``made_pending`` False) nothing new is pending: a dispatcher that found nothing due
        for its offered task types skips the round (``SLOTS_FREED``). ``publish`` wakes this
        node's dispatcher at once (it subscribes to ``TASKS_READY``)."""
        if made_pending:
            await self.context.notifier.publish(TASKS_READY)
            return
        # Only a node held back by the global limit can use slots freed here: hearing of
        # them a few milliseconds late, in one NOTIFY with the flushes' meanwhile, costs it
        # little (one NOTIFY per flush was a round trip of each serial producer's task).
        await self.context.notifier.publish(
            TASKS_READY, SLOTS_FREED, within_seconds=SLOTS_FREED_WITHIN_SECONDS
        )

    def _loops(self) -> list[tuple[str, Callable[[], Coroutine[Any, Any, Any]]]]:
        return [
            ("dispatcher", self.dispatcher.run),
            ("result-writer", self.results.run),
            ("heartbeats", self.presence.run_heartbeats),
            ("reaper", self.lifecycle.run_reaper),
            ("reconnect-grace", self.lifecycle.run_grace),
            ("cancel-routing", self.lifecycle.run_cancels),
            ("cleanup", self.lifecycle.run_cleanup),
            ("cron", CronService(self.context).run),
            ("webhooks", self.webhooks.run),
        ]

    async def run(self) -> None:
        notifier = self.context.notifier
        notifier.subscribe(TASKS_READY, self.dispatcher.wake)
        notifier.subscribe(TASK_CANCEL, self.lifecycle.on_task_cancel)
        notifier.subscribe(AGENT_CONNECTED, self.presence.on_agent_connected)
        notifier.subscribe(AGENT_DRAIN_CHANGED, self.presence.on_agent_drain_changed)
        notifier.subscribe(AGENT_ENABLED_CHANGED, self.presence.on_agent_enabled_changed)
        try:
            async with asyncio.TaskGroup() as group:
                for name, loop in self._loops():
                    # Supervised: a loop that fails is restarted, never ends the group.
                    group.create_task(supervise(name, loop), name=f"hetuflow-{name}")
                self.started.set()
        finally:
            await asyncio.shield(self._shutdown())

    async def _shutdown(self) -> None:
        await self.gateway.close_all(CloseCode.GOING_AWAY, "server shutting down")
        with contextlib.suppress(Exception):
            await self.results.flush()
