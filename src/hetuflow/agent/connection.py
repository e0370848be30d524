"""One WebSocket connection to the server: register, then read, write and heartbeat.

``Connection.register`` sends ``AgentCapabilities`` and waits for ``AgentRegistered``;
``Connection.serve`` then runs three loops until the connection closes: the reader (dispatch,
cancel, ping, errors), the outbox's writer and the heartbeat (every
``heartbeat_interval_seconds`` from the registration, with the held attempts).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime

from websockets.asyncio.client import ClientConnection

from hetuflow.agent.outbox import Outbox
from hetuflow.agent.slots import Slots
from hetuflow.errors import ProtocolViolation, RegistrationRefused
from hetuflow.protocol import (
    AgentCapabilities,
    AgentHeartbeat,
    AgentRegistered,
    CloseCode,
    Error,
    Ping,
    Pong,
    ServerMessage,
    TaskCancel,
    TaskDispatch,
    decode_server_message,
    encode,
)

log = logging.getLogger("hetuflow.agent")


# Close codes the server uses (named in ``protocol.CloseCode``; docs/protocol.md)
CLOSE_SUPERSEDED = CloseCode.SUPERSEDED
"""A newer connection of the same agent took over: another process runs as this agent."""
CLOSE_UNAUTHORIZED = CloseCode.UNAUTHORIZED
"""The agent token belongs to another agent than the one this agent registers as."""
CLOSE_PROTOCOL_VERSION = CloseCode.PROTOCOL_VERSION
CLOSE_AGENT_NOT_FOUND = CloseCode.AGENT_NOT_FOUND
CLOSE_AGENT_DELETED = CloseCode.AGENT_DELETED
"""The agent was deleted on the server: coming back with its id is refused."""


class Connection:
    """A connected session; made per connection by the runtime."""

    def __init__(
        self,
        websocket: ClientConnection,
        outbox: Outbox,
        slots: Slots,
        *,
        agent_id: Callable[[], str | None],
        on_registered: Callable[[AgentRegistered], None],
    ) -> None:
        self.websocket = websocket
        self.outbox = outbox
        self.slots = slots
        self._agent_id = agent_id
        self._on_registered = on_registered
        self.heartbeat_interval_seconds = 5.0

    async def register(self, hello: AgentCapabilities, timeout_seconds: float) -> AgentRegistered:
        """Send ``hello``; return the server's ``AgentRegistered``.

        Raises ``RegistrationRefused`` on an ``Error``, ``TimeoutError`` when no answer comes,
        or the websockets error when the connection closes.
        """
        await self.websocket.send(encode(hello))
        async with asyncio.timeout(timeout_seconds):
            while True:
                message = self._decode(await self.websocket.recv())
                if isinstance(message, AgentRegistered):
                    self.heartbeat_interval_seconds = message.heartbeat_interval_seconds
                    return message
                if isinstance(message, Error):
                    raise RegistrationRefused(
                        f"{message.code}: {message.message}", error_code=message.code
                    )
                if isinstance(message, Ping):
                    await self.websocket.send(encode(Pong(timestamp=datetime.now(UTC))))
                elif message is not None:
                    log.warning("ignoring %s received before AgentRegistered", message.type)

    async def serve(self) -> None:
        """Read, write and heartbeat until the connection closes (returns) or fails (raises)."""
        loops = [
            asyncio.create_task(self._read(), name="hetuflow-agent-reader"),
            asyncio.create_task(
                self.outbox.pump(self.websocket.send), name="hetuflow-agent-writer"
            ),
            asyncio.create_task(self._heartbeat(), name="hetuflow-agent-heartbeat"),
        ]
        try:
            done, _ = await asyncio.wait(loops, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for loop in loops:
                loop.cancel()
            await asyncio.gather(*loops, return_exceptions=True)
        for loop in done:
            if not loop.cancelled() and (error := loop.exception()) is not None:
                raise error

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.websocket.close()

    # --- loops -----------------------------------------------------------------------------

    async def _read(self) -> None:
        async for frame in self.websocket:
            message = self._decode(frame)
            if message is not None:
                self._handle(message)

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval_seconds)
            self.outbox.control(
                AgentHeartbeat(
                    agent_id=self._agent_id(),
                    timestamp=datetime.now(UTC),
                    running=self.slots.held(),
                )
            )

    # --- messages --------------------------------------------------------------------------

    @staticmethod
    def _decode(frame: str | bytes) -> ServerMessage | None:
        try:
            return decode_server_message(frame)
        except ProtocolViolation as error:
            log.warning("ignoring a frame from the server: %s", error.message)
            return None

    def _handle(self, message: ServerMessage) -> None:
        if isinstance(message, TaskDispatch):
            self.slots.dispatch(message.tasks)
        elif isinstance(message, TaskCancel):
            if not self.slots.stop(message.task_id, message.attempt, message.reason):
                log.debug(
                    "cancel of task %s attempt %d: not held", message.task_id, message.attempt
                )
        elif isinstance(message, Ping):
            self.outbox.control(Pong(timestamp=datetime.now(UTC)))
        elif isinstance(message, Error):
            log.warning(
                "server error %s%s%s: %s",
                message.code,
                f" about {message.message_type}" if message.message_type else "",
                f" (task {message.task_id})" if message.task_id else "",
                message.message,
            )
        else:  # AgentRegistered again: the server re-registered us
            self.heartbeat_interval_seconds = message.heartbeat_interval_seconds
            self._on_registered(message)
