"""A real server (uvicorn, in this process, on a free port) and protocol-speaking test agents.

The agents here are plain ``websockets`` clients that send and read raw JSON frames, so the
tests see exactly what goes over the wire.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import httpx
import uvicorn
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from hetuflow.clock import Clock
from hetuflow.config import Config, DatabaseConfig, SchedulerConfig
from hetuflow.models import Task, TaskStatus
from hetuflow.protocol import decode_server_message
from hetuflow.server.app import create_app
from hetuflow.server.context import ServerContext
from hetuflow.server.engine import SchedulerEngine
from hetuflow.store.base import Store

Frame = dict[str, Any]


def fast_config(database: DatabaseConfig, **scheduler: Any) -> Config:
    """Fast timings so lifecycle tests finish in well under a second or two."""
    values: dict[str, Any] = {
        "heartbeat_interval_seconds": 0.5,
        "heartbeat_misses": 3,
        "reconnect_grace_seconds": 0.3,
        "dispatch_lookahead_seconds": 0.5,
        "retry_interval_seconds": 0.1,
    }
    values.update(scheduler)
    return Config(database=database, scheduler=SchedulerConfig(**values))


@dataclass
class Server:
    config: Config
    port: int
    engine: SchedulerEngine
    context: ServerContext
    http: httpx.AsyncClient

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    async def create_task(self, **body: Any) -> UUID:
        body.setdefault("name", body.get("task_type", "t"))
        response = await self.http.post("/api/tasks", json=body)
        assert response.status_code == 201, response.text
        return UUID(response.json()["id"])

    async def task(self, task_id: UUID) -> Task:
        task = await self.context.store.get_task(task_id)
        assert task is not None
        return task

    async def wait_task(
        self, task_id: UUID, predicate: Callable[[Task], bool], timeout_seconds: float = 10.0
    ) -> Task:
        """Poll the store until ``predicate(task)`` (with a deadline)."""
        async with asyncio.timeout(timeout_seconds):
            while True:
                task = await self.task(task_id)
                if predicate(task):
                    return task
                await asyncio.sleep(0.02)

    async def wait_status(
        self, task_id: UUID, status: TaskStatus, timeout_seconds: float = 10.0
    ) -> Task:
        return await self.wait_task(task_id, lambda t: t.status == status, timeout_seconds)


def free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextlib.asynccontextmanager
async def serve(
    config: Config,
    node_id: str = "node-test",
    *,
    store: Store | None = None,
    clock: Clock | None = None,
) -> AsyncIterator[Server]:
    app = create_app(config, node_id=node_id, store=store, clock=clock)
    sock = free_socket()
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", lifespan="on", ws="websockets-sansio")
    )
    runner = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(15):
            while not server.started:
                if runner.done():
                    runner.result()
                await asyncio.sleep(0.01)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            yield Server(config, port, app.state.engine, app.state.context, http)
    finally:
        server.should_exit = True
        await runner
        sock.close()


@dataclass(eq=False)
class Agent:
    """A test agent: a raw WebSocket connection speaking the protocol."""

    ws: ClientConnection
    agent_id: str = ""
    frames: list[Frame] = field(default_factory=list)

    async def send(self, frame: Frame | str) -> None:
        await self.ws.send(frame if isinstance(frame, str) else json.dumps(frame))

    async def recv(self, timeout_seconds: float = 5.0) -> Frame:
        async with asyncio.timeout(timeout_seconds):
            raw = await self.ws.recv()
        decode_server_message(raw)  # every frame the server sends is a valid message
        frame: Frame = json.loads(raw)
        self.frames.append(frame)
        return frame

    async def expect(self, message_type: str, timeout_seconds: float = 5.0) -> Frame:
        """Read until a frame of ``message_type`` arrives (answering pings on the way)."""
        async with asyncio.timeout(timeout_seconds):
            while True:
                frame = await self.recv(timeout_seconds)
                if frame["type"] == message_type:
                    return frame
                if frame["type"] == "Ping":
                    await self.send({"type": "Pong"})

    async def dispatched(self, count: int, timeout_seconds: float = 5.0) -> list[Frame]:
        """Collect ``count`` dispatched tasks (over one or more TaskDispatch frames)."""
        tasks: list[Frame] = []
        while len(tasks) < count:
            frame = await self.expect("TaskDispatch", timeout_seconds)
            tasks.extend(frame["tasks"])
        return tasks

    async def quiet(self, seconds: float) -> list[Frame]:
        """Frames other than Ping received within ``seconds`` (expected: none)."""
        got: list[Frame] = []
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                while True:
                    frame = await self.recv(seconds + 1)
                    if frame["type"] == "Ping":
                        await self.send({"type": "Pong"})
                    else:
                        got.append(frame)
        return got

    async def result(
        self, task: Frame, *, error: str | None = None, outcome: str | None = None, **extra: Any
    ) -> None:
        await self.send(
            {
                "type": "TaskResult",
                "task_id": task["task_id"],
                "attempt": task["attempt"],
                "result": extra.pop("result", {"ok": True}),
                "error": error,
                "outcome": outcome,
                **extra,
            }
        )

    async def closed(self, timeout_seconds: float = 5.0) -> tuple[int | None, str]:
        """Wait for the server to close the connection; return (code, reason)."""
        async with asyncio.timeout(timeout_seconds):
            with contextlib.suppress(ConnectionClosed):
                while True:
                    await self.recv(timeout_seconds)
        received = self.ws.protocol.close_rcvd
        return (received.code, received.reason) if received else (None, "")

    async def close(self) -> None:
        await self.ws.close()


def capabilities(
    task_types: list[str],
    *,
    capabilities: list[str] | None = None,
    slots: int = 3,
    name: str | None = None,
    agent_id: str | None = None,
    running: list[Frame] | None = None,
    protocol_version: int | None = None,
) -> Frame:
    frame: Frame = {
        "type": "AgentCapabilities",
        "capabilities": {
            "capabilities": capabilities or [],
            "max_concurrent_tasks": slots,
            "supported_task_types": task_types,
        },
    }
    if name is not None:
        frame["name"] = name
    if agent_id is not None:
        frame["agent_id"] = agent_id
    if running is not None:
        frame["running"] = running
    if protocol_version is not None:
        frame["protocol_version"] = protocol_version
    return frame


@contextlib.asynccontextmanager
async def agent(
    server: Server, *task_types: str, register: bool = True, **options: Any
) -> AsyncIterator[Agent]:
    """Connect (and by default register) a test agent; close it on the way out."""
    async with connect(server.ws_url, open_timeout=5, close_timeout=1) as ws:
        client = Agent(ws)
        if register:
            await client.send(capabilities(list(task_types), **options))
            registered = await client.expect("AgentRegistered")
            client.agent_id = registered["agent_id"]
        yield client


async def eventually(check: Callable[[], Awaitable[bool]], timeout_seconds: float = 5.0) -> None:
    async with asyncio.timeout(timeout_seconds):
        while True:
            if await check():
                return
            await asyncio.sleep(0.02)
