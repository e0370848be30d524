"""A small WebSocket server that plays the hetuflow server's side of the agent protocol.

It listens on a real socket, registers each connecting agent (``AgentRegistered``, also the
answer to a repeated ``AgentCapabilities``, as the real server does), records
every message the agent sends (decoded with ``decode_agent_message``, so a malformed message
fails the test) and lets a test send server messages, drop the connection, or hold the next
registration back.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from websockets.asyncio.server import Server, ServerConnection, serve

from hetuflow.protocol import (
    AgentCapabilities,
    AgentMessage,
    AgentRegistered,
    DispatchedTask,
    RunningAttempt,
    TaskDispatch,
    TaskOutcomeField,
    TaskResult,
    TaskResults,
    decode_agent_message,
    encode,
)

M = TypeVar("M")


@dataclass
class Received:
    connection: int
    message: AgentMessage
    at: float  # time.time() when received


@dataclass
class FakeServer:
    heartbeat_interval_seconds: float = 5.0
    superseded_next: list[RunningAttempt] = field(default_factory=list)
    hold_registration: asyncio.Event | None = None
    frames: int = 0
    agent_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    received: list[Received] = field(default_factory=list)
    authorizations: list[str | None] = field(default_factory=list)
    _queue: asyncio.Queue[Received] = field(default_factory=asyncio.Queue)
    _server: Server | None = None
    _connections: list[ServerConnection] = field(default_factory=list)
    _registered: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> None:
        self._server = await serve(self._handle, "127.0.0.1", 0, compression=None)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    @property
    def url(self) -> str:
        assert self._server is not None
        port = next(iter(self._server.sockets)).getsockname()[1]
        return f"ws://127.0.0.1:{port}/ws"

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    async def _handle(self, websocket: ServerConnection) -> None:
        self._connections.append(websocket)
        number = len(self._connections)
        request = websocket.request
        self.authorizations.append(request.headers.get("Authorization") if request else None)
        first = True
        async for frame in websocket:
            self.frames += 1
            message = decode_agent_message(frame)
            item = Received(number, message, time.time())
            self.received.append(item)
            self._queue.put_nowait(item)
            if first or isinstance(message, AgentCapabilities):  # a repeat is an update
                assert isinstance(message, AgentCapabilities), message
                first = False
                if self.hold_registration is not None:
                    hold, self.hold_registration = self.hold_registration, None
                    await hold.wait()
                superseded, self.superseded_next = self.superseded_next, []
                await websocket.send(
                    encode(
                        AgentRegistered(
                            agent_id=message.agent_id or self.agent_id,
                            name=message.name or "generated",
                            heartbeat_interval_seconds=self.heartbeat_interval_seconds,
                            server_time=datetime.now(UTC),
                            superseded=superseded,
                        )
                    )
                )

    # --- talking to the agent ----------------------------------------------------------------

    async def send(self, message: Any) -> None:
        """Send a protocol message (or a raw string) on the newest connection."""
        websocket = self._connections[-1]
        await websocket.send(message if isinstance(message, str) else encode(message))

    async def dispatch(self, *tasks: DispatchedTask) -> None:
        await self.send(TaskDispatch(tasks=list(tasks)))

    async def drop(self, code: int = 1000, reason: str = "") -> None:
        """Close the newest connection from the server side."""
        await self._connections[-1].close(code, reason)

    async def next(self, kind: type[M], timeout_seconds: float = 10.0) -> M:
        """The next received message of ``kind`` (others are skipped but kept in ``received``)."""
        async with asyncio.timeout(timeout_seconds):
            while True:
                item = await self._queue.get()
                if isinstance(item.message, kind):
                    return item.message

    async def next_received(self, kind: type[Any], timeout_seconds: float = 10.0) -> Received:
        async with asyncio.timeout(timeout_seconds):
            while True:
                item = await self._queue.get()
                if isinstance(item.message, kind):
                    return item

    async def results(self, count: int, timeout_seconds: float = 10.0) -> list[TaskOutcomeField]:
        """The next ``count`` results, from ``TaskResult`` and ``TaskResults`` messages."""
        found: list[TaskOutcomeField] = []
        async with asyncio.timeout(timeout_seconds):
            while len(found) < count:
                item = await self._queue.get()
                if isinstance(item.message, TaskResult):
                    found.append(item.message)
                elif isinstance(item.message, TaskResults):
                    found.extend(item.message.results)
        return found

    def all_of(self, kind: type[M]) -> list[M]:
        return [item.message for item in self.received if isinstance(item.message, kind)]

    def result_entries(self) -> list[TaskOutcomeField]:
        entries: list[TaskOutcomeField] = []
        for item in self.received:
            if isinstance(item.message, TaskResult):
                entries.append(item.message)
            elif isinstance(item.message, TaskResults):
                entries.extend(item.message.results)
        return entries


def task(
    task_type: str = "noop",
    payload: dict[str, Any] | None = None,
    *,
    task_id: str | None = None,
    attempt: int = 1,
    timeout_seconds: float | None = None,
    start_at: datetime | None = None,
) -> DispatchedTask:
    return DispatchedTask(
        task_id=task_id or str(uuid.uuid4()),
        attempt=attempt,
        name=f"{task_type}-task",
        task_type=task_type,
        payload=payload or {},
        timeout_seconds=timeout_seconds,
        start_at=start_at,
    )


def ids(entries: Sequence[TaskOutcomeField]) -> set[str]:
    return {entry.task_id for entry in entries}
