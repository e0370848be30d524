"""GatewaySvc: the ``/ws`` endpoint that agents connect to (docs/protocol.md).

Per connection, one reader and one writer coroutine, both owned by the endpoint call (no
task outlives it). The reader decodes each frame and acts on it without waiting for the
database: reports go to the ResultWriter's batches, frames to the connection's outbox. The
writer drains the outbox and sends everything pending back to back.

A frame that is not valid JSON, has an unknown type or a bad field, or comes out of order gets
an ``Error`` naming the problem and the connection carries on; more than ``bad_frame_limit``
of them within ``bad_frame_window_seconds`` close it with 1008 (policy violation); both are
``[server] max_bad_frames`` and ``bad_frame_window_seconds``.

With auth on, the handshake must carry an agent token (or an admin token): without a valid one
the connection is refused before it is accepted (HTTP 401/403 with the API's error body), so it
never sees a task. An agent token binds the connection to its agent: registering as another
one gets ``agent_token_mismatch`` and close code 4001.

The agent is named in ``AgentCapabilities`` (``agent_id`` or ``name``) or, as the seed's agent
does, in its first ``AgentHeartbeat``: a first ``AgentCapabilities`` naming none is held until
the next frame (at most ``NAMING_WINDOW_SECONDS``), and registers as the agent that heartbeat
names, else as a new agent under a generated name.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from uuid import UUID

from fastapi import WebSocket
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from hetuflow.errors import (
    AgentDeleted,
    AgentNotFound,
    PermissionDenied,
    StoreUnavailable,
    Unauthenticated,
)
from hetuflow.models import (
    AgentRegistration,
    AgentStatus,
)
from hetuflow.protocol import (
    PROTOCOL_VERSION,
    AgentCapabilities,
    AgentDraining,
    AgentHeartbeat,
    AgentMessage,
    AgentRegisteredFrame,
    CloseCode,
    ProtocolViolation,
    TaskLogs,
    TaskProgress,
    TaskResult,
    TaskResults,
    TaskStarted,
    agent_registered_frame,
    decode_agent_message,
    encode_frame,
    parse_uuid,
    task_dispatch_frame,
)
from hetuflow.server.auth import AgentAccess, Authenticator, authenticate_agent
from hetuflow.server.context import ServerContext
from hetuflow.server.dispatch import TaskDispatcher
from hetuflow.server.reconcile import Reconciler
from hetuflow.server.registry import (
    AgentConnection,
    AgentSvc,
)
from hetuflow.server.reports import Reports
from hetuflow.server.resilience import StoreRetry
from hetuflow.server.results import ResultWriter

logger = logging.getLogger(__name__)

AGENT_CONNECTED = "hetuflow_agent_connected"
"""Notifier channel, payload ``<agent_id>:<session>``: a node holding an older connection of
that agent closes it (the agent reconnected elsewhere)."""

NAMING_WINDOW_SECONDS = 0.25
"""How long a first ``AgentCapabilities`` naming no agent waits for the next frame: if that
is an ``AgentHeartbeat`` naming an agent (the seed's agents do so), the connection is that
agent; anything else, or nothing within the window, registers a new agent."""

AGENT_ENABLED_CHANGED = "hetuflow_agent_enabled_changed"
"""Notifier channel, payload ``<agent_id>:0`` (disabled by an operator) or ``<agent_id>:1``
(enabled): the node holding that agent's connection stops or starts giving it tasks."""


class GatewaySvc:
    def __init__(
        self,
        context: ServerContext,
        agents: AgentSvc,
        results: ResultWriter,
        dispatcher: TaskDispatcher,
        reconciler: Reconciler,
        *,
        on_disconnect: Callable[[AgentConnection], None],
        bad_frame_limit: int | None = None,
        bad_frame_window_seconds: float | None = None,
    ) -> None:
        self._context = context
        self._agents = agents
        self._results = results
        self._dispatcher = dispatcher
        self._reconciler = reconciler
        self._on_disconnect = on_disconnect
        server = context.config.server
        self.bad_frame_limit = bad_frame_limit or server.max_bad_frames
        self.bad_frame_window_seconds = bad_frame_window_seconds or server.bad_frame_window_seconds
        self.naming_window_seconds = NAMING_WINDOW_SECONDS
        self.connections: set[AgentConnection] = set()
        """Every open WebSocket of the node, registered or not."""
        self._reports = Reports(context.clock, results, self._bad_frame)
        self.stopping = False
        self._all_closed = asyncio.Event()
        self._all_closed.set()

    # --- the endpoint -------------------------------------------------------------------

    async def endpoint(self, websocket: WebSocket) -> None:
        """Serve one agent connection until either side closes it."""
        access = await self._admit(websocket)
        if access is None:
            return
        await websocket.accept()
        connection = AgentConnection(websocket, self._context.clock.monotonic())
        connection.bind(access.agent_id, access.agent_name)
        if self.stopping:
            connection.close(1001, "server shutting down")
        self.connections.add(connection)
        self._all_closed.clear()
        try:
            async with asyncio.TaskGroup() as group:
                reader = group.create_task(self._read(connection))
                writer = group.create_task(self._write(connection))

                def reader_done(_: asyncio.Task[None]) -> None:
                    if connection.disconnect_code is not None:
                        writer.cancel()  # the peer is gone: nothing more to send

                reader.add_done_callback(reader_done)
                writer.add_done_callback(lambda _: reader.cancel())
        finally:
            self.connections.discard(connection)
            if not self.connections:
                self._all_closed.set()
            self._disconnected(connection)

    async def _admit(self, websocket: WebSocket) -> AgentAccess | None:
        """Check the handshake's token; refuse the connection (not accepted) without one."""
        authenticator: Authenticator = websocket.app.state.authenticator
        try:
            return await authenticate_agent(authenticator, websocket)
        except (Unauthenticated, PermissionDenied) as problem:
            status = 401 if isinstance(problem, Unauthenticated) else 403
            await _refuse(websocket, status, problem.code, problem.message)
        except Exception:
            logger.exception("checking an agent's token failed")
            self._context.metrics.database_error("find_api_token")
            await _refuse(websocket, 503, "store_unavailable", "could not check the token; retry")
        return None

    def _disconnected(self, connection: AgentConnection) -> None:
        if not self._agents.detach(connection):
            return  # never registered, or superseded by a newer connection
        if self.stopping or connection.disconnect_code == CloseCode.SERVICE_RESTART:
            return  # this node stops: the agent reconnects elsewhere with its work
        self._on_disconnect(connection)

    async def _write(self, connection: AgentConnection) -> None:
        websocket = connection.websocket
        metrics = self._context.metrics
        try:
            while True:
                frames = await connection.next_frames()
                for message_type, item in frames:
                    if message_type == "TaskDispatch":
                        item = encode_frame(task_dispatch_frame(item))
                    await websocket.send_text(item)
                    metrics.ws_message("out", message_type)
                if connection.close_code is not None:
                    await websocket.close(connection.close_code, connection.close_reason)
                    return
        except asyncio.CancelledError:
            raise
        except Exception as error:  # the socket failed: the reader sees the disconnect
            logger.debug("writing to agent %s failed: %r", connection.name, error)

    async def _read(self, connection: AgentConnection) -> None:
        websocket = connection.websocket
        clock = self._context.clock
        scheduler = self._context.config.scheduler
        deadline = clock.monotonic() + scheduler.heartbeat_interval_seconds * (
            scheduler.heartbeat_misses
        )
        # An AgentCapabilities naming no agent, waiting for the first heartbeat to name one
        # (until the next frame, or naming_window_seconds).
        held: AgentCapabilities | None = None
        while connection.close_code is None:
            try:
                if connection.registered:
                    message = await websocket.receive()
                else:
                    async with asyncio.timeout(max(deadline - clock.monotonic(), 0.0)):
                        message = await websocket.receive()
            except TimeoutError:
                if held is not None:  # nothing named an agent: register a new one
                    await self._register(connection, held)
                    held = None
                    continue
                connection.close(CloseCode.REGISTRATION_TIMEOUT, "no AgentCapabilities in time")
                return
            except Exception:  # the transport broke
                connection.disconnected(CloseCode.ABNORMAL)
                return
            if message["type"] == "websocket.disconnect":
                connection.disconnected(int(message.get("code") or CloseCode.NO_STATUS))
                return
            frame = message.get("text")
            if frame is None:
                frame = message.get("bytes") or b""
            connection.heard(clock.monotonic())
            try:
                decoded: AgentMessage | ProtocolViolation = decode_agent_message(frame)
            except ProtocolViolation as problem:
                decoded = problem
            held, handle = await self._through_hold(connection, held, decoded)
            if held is not None:
                deadline = min(deadline, clock.monotonic() + self.naming_window_seconds)
            elif isinstance(decoded, ProtocolViolation):
                self._bad_frame(connection, "protocol_violation", decoded.message, None)
            elif handle:
                self._context.metrics.ws_message("in", decoded.type)
                await self._handle(connection, decoded)
            del message, frame, decoded  # not kept alive while waiting for the next frame

    def _bad_frame(
        self,
        connection: AgentConnection,
        code: str,
        problem: str,
        message_type: str | None,
        task_id: str | None = None,
    ) -> None:
        connection.send_error(code, problem, message_type=message_type, task_id=task_id)
        now = self._context.clock.monotonic()
        if connection.bad_frame(now, self.bad_frame_window_seconds) > self.bad_frame_limit:
            connection.close(
                CloseCode.POLICY_VIOLATION,
                f"more than {self.bad_frame_limit} bad frames in "
                f"{self.bad_frame_window_seconds:g} s",
            )

    # --- messages -----------------------------------------------------------------------

    async def _handle(self, connection: AgentConnection, message: AgentMessage) -> None:
        if isinstance(message, AgentCapabilities):
            await self._register(connection, message)
            return
        if not connection.registered:
            self._bad_frame(
                connection,
                "not_registered",
                f"{message.type} before registration: send AgentCapabilities first",
                message.type,
            )
            return
        reports = self._reports
        if isinstance(message, TaskResult):
            reports.results(connection, (message,), message.type)
        elif isinstance(message, TaskResults):
            reports.results(connection, message.results, message.type)
        elif isinstance(message, TaskLogs):
            reports.logs(connection, message)
        elif isinstance(message, TaskStarted):
            reports.started(connection, message)
        elif isinstance(message, TaskProgress):
            reports.progress(connection, message)
        elif isinstance(message, AgentHeartbeat):
            if message.agent_id and not self._names_this_agent(connection, message.agent_id):
                return
            reports.heartbeat(connection, message)
        elif isinstance(message, AgentDraining):
            await self._on_draining(connection)
        # TaskAccepted and Pong only prove the agent is alive (last_seen, set above).

    async def _through_hold(
        self,
        connection: AgentConnection,
        held: AgentCapabilities | None,
        message: AgentMessage | ProtocolViolation,
    ) -> tuple[AgentCapabilities | None, bool]:
        """Hold a first ``AgentCapabilities`` naming no agent, or end a hold with the next
        frame, even a bad one (registering as the agent a heartbeat names, else as a new
        agent). Returns what is held now and whether ``message`` is still to be handled."""
        if held is not None:
            if isinstance(message, AgentCapabilities):
                return None, True  # it replaces the held one
            named = None if isinstance(message, ProtocolViolation) else heartbeat_name(message)
            await self._register(connection, held, named)
            return None, connection.registered  # else refused: closing
        if isinstance(message, AgentCapabilities) and self._hold(connection, message):
            return message, False
        return None, True

    def _hold(self, connection: AgentConnection, message: AgentCapabilities) -> bool:
        """Whether to hold a first ``AgentCapabilities`` that names no agent: the seed's
        agents name themselves in their first ``AgentHeartbeat`` instead. A token bound to an
        agent names it already."""
        return (
            not connection.registered
            and connection.bound_agent_id is None
            and not message.agent_id
            and not message.name
            and message.protocol_version == PROTOCOL_VERSION
            and self.naming_window_seconds > 0
        )

    def _names_this_agent(self, connection: AgentConnection, named: str) -> bool:
        """Whether a heartbeat's ``agent_id`` (an id, or a name) is the connection's agent;
        if not: with a token bound to the agent, refused like a registration as another
        agent (4001), else an ``Error`` ``agent_mismatch`` (a bad frame)."""
        agent_id = parse_uuid(named)
        if (agent_id == connection.agent_id) if agent_id is not None else named == connection.name:
            return True
        problem = f"this connection is agent {connection.name!r}; a heartbeat cannot name {named!r}"
        if connection.bound_agent_id is not None:
            connection.send_error(
                "agent_token_mismatch",
                f"this token belongs to agent {connection.bound_name!r}; it cannot register"
                f" as {named!r}",
                message_type="AgentHeartbeat",
            )
            connection.close(CloseCode.UNAUTHORIZED, "the token belongs to another agent")
        else:
            self._bad_frame(connection, "agent_mismatch", problem, "AgentHeartbeat")
        return False

    async def _register(
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

    async def _on_draining(self, connection: AgentConnection) -> None:
        connection.drain()
        assert connection.agent_id is not None
        context = self._context
        try:
            await context.store.set_agent_status(
                connection.agent_id,
                AgentStatus.DRAINING,
                session=connection.session,
                now=context.clock.now(),
            )
        except Exception:
            context.metrics.database_error("set_agent_status")
            logger.exception("recording that agent %s drains failed", connection.name)

    # --- node-wide ------------------------------------------------------------------------

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

    def on_agent_drain_changed(self, payload: str) -> None:
        """Notifier callback: an operator drained (``<id>:1``) or resumed (``<id>:0``) an
        agent; if its connection is here, stop or start giving it tasks."""
        agent_text, _, flag = payload.partition(":")
        agent_id = parse_uuid(agent_text)
        connection = self._agents.current(agent_id) if agent_id is not None else None
        if connection is None or flag not in ("0", "1"):
            return
        connection.set_operator_drained(flag == "1")
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
        agent_text, _, flag = payload.partition(":")
        agent_id = parse_uuid(agent_text)
        connection = self._agents.current(agent_id) if agent_id is not None else None
        if connection is None or flag not in ("0", "1"):
            return
        connection.set_enabled(flag == "1")
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
        async with self._agents.lock:
            for agent_id in agent_ids:
                connection = self._agents.current(agent_id)
                if connection is None:
                    continue
                # Released first: if that fails, the connection stays for the next flush.
                await context.store.release_agent(agent_id, now=context.clock.now())
                self._agents.detach(connection)
                for task_id, attempt in connection.give_back():
                    connection.send_cancel(task_id, attempt, "superseded")
                connection.close(CloseCode.AGENT_DELETED, "agent deleted")
                logger.warning("agent %s was deleted: its connection is closed", connection.name)

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

    async def close_all(self, code: int, reason: str, timeout_seconds: float = 2.0) -> None:
        """Close every connection (shutdown) and wait for their endpoints to finish."""
        self.stopping = True
        for connection in list(self.connections):
            connection.close(code, reason)
        try:
            async with asyncio.timeout(timeout_seconds):
                await self._all_closed.wait()
        except TimeoutError:
            logger.warning("%d agent connection(s) still open at shutdown", len(self.connections))


class AgentSocketRoute:
    """ASGI middleware, outermost in the app: WebSocket connections to ``path`` go straight
    to ``GatewaySvc.endpoint``.

    Through the router they would keep every layer of the HTTP stack (exception and body
    middlewares, FastAPI's exit stacks and dependency solving) suspended for the whole life
    of the connection: about 12 KB per idle agent. None of those layers does anything for a
    WebSocket; the endpoint answers its own errors.
    """

    def __init__(self, app: ASGIApp, *, gateway: GatewaySvc, path: str = "/ws") -> None:
        self.app = app
        self.gateway = gateway
        self.path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and scope["path"] == self.path:
            await self.gateway.endpoint(WebSocket(scope, receive, send))
        else:
            await self.app(scope, receive, send)


def heartbeat_name(message: AgentMessage) -> str | None:
    """The agent an ``AgentHeartbeat`` names (its ``agent_id``: an id or a name), if any."""
    if isinstance(message, AgentHeartbeat) and message.agent_id:
        return message.agent_id
    return None


def reconcile_interval(context: ServerContext) -> float:
    scheduler = context.config.scheduler
    return scheduler.heartbeat_interval_seconds * scheduler.heartbeat_misses * 2


async def _refuse(websocket: WebSocket, status: int, code: str, message: str) -> None:
    """Refuse a handshake with an HTTP answer in the API's error shape (the denial response
    extension); servers without it get a close before accept (HTTP 403)."""
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        headers = {"WWW-Authenticate": 'Bearer realm="hetuflow"'} if status == 401 else None
        body = {"error": {"code": code, "message": message, "field": None}}
        await websocket.send_denial_response(JSONResponse(body, status, headers=headers))
    else:
        await websocket.close(CloseCode.UNAUTHORIZED, message[:120])
