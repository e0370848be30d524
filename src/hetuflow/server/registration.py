"""Registration: an ``AgentCapabilities`` recorded as the connection's agent.

Checks the protocol version and the agent the handshake's token is bound to, records the
connection in the store (``Store.connect_agent``: the agent's id, name and session), then,
for a first registration, has the ``Reconciler`` attach it (keep and supersede the attempts
the agent reports, ``AgentRegistered`` first) and tells other nodes (``AGENT_CONNECTED``) so
they close an older connection of the agent; a repeated one updates what the agent declares.
A refusal answers an ``Error`` and closes with its code (``protocol.CloseCode``).
"""

from __future__ import annotations

import logging
from uuid import UUID

from hetuflow.errors import AgentDeleted, AgentNotFound, StoreUnavailable
from hetuflow.models import AgentRegistration
from hetuflow.protocol import (
    PROTOCOL_VERSION,
    AgentCapabilities,
    AgentRegisteredFrame,
    CloseCode,
    agent_registered_frame,
    parse_uuid,
)
from hetuflow.server.context import ServerContext
from hetuflow.server.dispatch import TaskDispatcher
from hetuflow.server.reconcile import Reconciler, reconcile_interval
from hetuflow.server.registry import AgentConnection, AgentSvc

logger = logging.getLogger("hetuflow.server.gateway")  # the gateway's log, as before the split

AGENT_CONNECTED = "hetuflow_agent_connected"
"""Notifier channel, payload ``<agent_id>:<session>``: a node holding an older connection of
that agent closes it (the agent reconnected elsewhere)."""


class Registrar:
    """Registers the connections of the gateway (``GatewaySvc``) as their agents."""

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

    async def register(
        self, connection: AgentConnection, message: AgentCapabilities, named: str | None = None
    ) -> None:
        """Register (or update) from ``message``; ``named``: the agent the first heartbeat
        names (an id or a name), for a held ``AgentCapabilities`` that named none."""
        context = self._context
        if message.protocol_version != PROTOCOL_VERSION:
            connection.send_error(
                "protocol_version_unsupported",
                f"protocol version {message.protocol_version} is not supported; "
                f"this server speaks version {PROTOCOL_VERSION}",
                message_type=message.type,
            )
            connection.close(CloseCode.PROTOCOL_VERSION, "protocol version not supported")
            return
        registration = self._registration(connection, message, named)
        if registration is None:
            return
        try:
            agent = await context.store.connect_agent(
                registration, node_id=context.node_id, now=context.clock.now()
            )
        except AgentNotFound as problem:
            connection.send_error("agent_not_found", problem.message, message_type=message.type)
            connection.close(CloseCode.AGENT_NOT_FOUND, "unknown agent id")
            return
        except AgentDeleted as problem:
            connection.send_error(problem.code, problem.message, message_type=message.type)
            connection.close(CloseCode.AGENT_DELETED, "agent deleted")
            return
        except Exception as error:
            if isinstance(error, StoreUnavailable):
                # Expected while the database is away; the agent retries with backoff.
                logger.warning("registering agent %r failed: %s", registration.name, error)
            else:
                logger.exception("registering agent failed")
            context.metrics.database_error("connect_agent")
            connection.send_error(
                "store_unavailable", "the server could not record the registration; retry"
            )
            connection.close(CloseCode.TRY_AGAIN_LATER, "database unavailable")
            return
        if connection.registered:
            # A repeated AgentCapabilities updates what the agent declares.
            connection.redeclare(agent, shared=self._agents.shared)
            connection.send_message(self._registered_frame(connection))
        else:
            unreported = await self._reconciler.attach(connection, agent, message.running)
            if unreported is None:
                return
            # Unreported attempts get one heartbeat interval for their buffered results.
            connection.reconcile_at(
                context.clock.monotonic()
                + (
                    context.config.scheduler.heartbeat_interval_seconds
                    if unreported
                    else reconcile_interval(context)
                )
            )
            logger.info("agent %s (%s) connected", agent.name, agent.id)
            await context.notifier.publish(AGENT_CONNECTED, f"{agent.id}:{agent.session}")
        self._dispatcher.wake()

    def _registration(
        self, connection: AgentConnection, message: AgentCapabilities, named: str | None
    ) -> AgentRegistration | None:
        capabilities = message.capabilities
        agent_id: UUID | None = connection.agent_id
        name = message.name
        named_id = message.agent_id or named
        if agent_id is None and named_id:
            agent_id = parse_uuid(named_id)
            if agent_id is None:
                name = name or named_id  # a name where an id was expected
        bound = connection.bound_agent_id
        if bound is not None:
            if (agent_id is not None and agent_id != bound) or (
                name is not None and name != connection.bound_name
            ):
                connection.send_error(
                    "agent_token_mismatch",
                    f"this token belongs to agent {connection.bound_name!r}; it cannot register"
                    f" as {name or str(agent_id)!r}",
                    message_type=message.type,
                )
                connection.close(CloseCode.UNAUTHORIZED, "the token belongs to another agent")
                return None
            agent_id, name = bound, None
        return AgentRegistration(
            capabilities=tuple(capabilities.capabilities),
            supported_task_types=tuple(capabilities.supported_task_types),
            max_concurrent_tasks=capabilities.max_concurrent_tasks,
            agent_id=agent_id,
            name=None if connection.registered else name,
        )

    def _registered_frame(self, connection: AgentConnection) -> AgentRegisteredFrame:
        assert connection.agent_id is not None
        return agent_registered_frame(
            connection.agent_id,
            connection.name,
            heartbeat_interval_seconds=self._context.config.scheduler.heartbeat_interval_seconds,
            now=self._context.clock.now(),
        )
