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
names, else as a new agent under a generated name. Recording a registration is
``registration.Registrar``; attaching the connection (kept and superseded attempts) is
``reconcile.Reconciler.attach``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from fastapi import WebSocket
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from hetuflow.errors import (
    PermissionDenied,
    ProtocolViolation,
    Unauthenticated,
)
from hetuflow.models import (
    AgentStatus,
)
from hetuflow.protocol import (
    PROTOCOL_VERSION,
    AgentCapabilities,
    AgentDraining,
    AgentHeartbeat,
    AgentMessage,
    CloseCode,
    TaskLogs,
    TaskProgress,
    TaskResult,
    TaskResults,
    TaskStarted,
    decode_agent_message,
    encode_frame,
    parse_uuid,
    task_dispatch_frame,
)
from hetuflow.server.auth import AgentAccess, Authenticator, authenticate_agent
from hetuflow.server.context import ServerContext
from hetuflow.server.dispatch import TaskDispatcher
from hetuflow.server.reconcile import Reconciler
from hetuflow.server.registration import Registrar
from hetuflow.server.registry import (
    AgentConnection,
    AgentSvc,
)
from hetuflow.server.reports import Reports
from hetuflow.server.results import ResultWriter

logger = logging.getLogger(__name__)

NAMING_WINDOW_SECONDS = 0.25
"""How long a first ``AgentCapabilities`` naming no agent waits for the next frame: if that
is an ``AgentHeartbeat`` naming an agent (the seed's agents do so), the connection is that
agent; anything else, or nothing within the window, registers a new agent."""


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
        self._registrar = Registrar(context, agents, dispatcher, reconciler)
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
                    await self._registrar.register(connection, held)
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
            await self._registrar.register(connection, message)
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
            await self._registrar.register(connection, held, named)
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


async def _refuse(websocket: WebSocket, status: int, code: str, message: str) -> None:
    """Refuse a handshake with an HTTP answer in the API's error shape (the denial response
    extension); servers without it get a close before accept (HTTP 403)."""
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        headers = {"WWW-Authenticate": 'Bearer realm="hetuflow"'} if status == 401 else None
        body = {"error": {"code": code, "message": message, "field": None}}
        await websocket.send_denial_response(JSONResponse(body, status, headers=headers))
    else:
        await websocket.close(CloseCode.UNAUTHORIZED, message[:120])
