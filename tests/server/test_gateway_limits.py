"""Gateway limits from the configuration: frame size (enforced by uvicorn with the options
``hetuflow-server start`` gives it) and bad frames per connection."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from websockets.asyncio.client import connect

from hetuflow.cli.server import _uvicorn_config
from hetuflow.config import Config, DatabaseConfig, ServerConfig
from hetuflow.server.app import create_app

from .harness import Agent, capabilities, fast_config, free_socket


@contextlib.asynccontextmanager
async def started(config: Config) -> AsyncIterator[str]:
    """The server as ``start`` runs it (same uvicorn options); yields the ws URL."""
    sock = free_socket()
    port = sock.getsockname()[1]
    server_config = ServerConfig.model_validate(
        {**config.server.model_dump(), "bind_address": f"127.0.0.1:{port}", "log_level": "warning"}
    )
    config = config.model_copy(update={"server": server_config})
    server = uvicorn.Server(_uvicorn_config(config, create_app(config)))
    runner = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(15):
            while not server.started:
                if runner.done():
                    runner.result()
                await asyncio.sleep(0.01)
        yield f"ws://127.0.0.1:{port}/ws"
    finally:
        server.should_exit = True
        await runner
        sock.close()


def limited(database: DatabaseConfig, **server: Any) -> Config:
    config = fast_config(database)
    return config.model_copy(update={"server": ServerConfig.model_validate(server)})


async def test_a_frame_over_the_limit_closes_the_connection_with_1009(
    database: DatabaseConfig,
) -> None:
    async with (
        started(limited(database, max_frame_bytes=64 * 1024)) as url,
        connect(url, open_timeout=5, close_timeout=1, max_size=None) as ws,
    ):
        client = Agent(ws)
        await client.send(capabilities(["echo"], name="big"))
        await client.expect("AgentRegistered")
        line = {"task_id": "x", "attempt": 1, "line": "a" * 70_000}
        await client.send({"type": "TaskLogs", "lines": [line]})
        assert (await client.closed())[0] == 1009  # message too big
        assert not [frame for frame in client.frames if frame["type"] == "Error"]


async def test_bad_frames_per_connection_are_configurable(database: DatabaseConfig) -> None:
    config = limited(database, max_bad_frames=3, bad_frame_window_seconds=30)
    async with started(config) as url, connect(url, open_timeout=5, close_timeout=1) as ws:
        client = Agent(ws)
        for _ in range(3):
            await client.send("{not json")
            assert (await client.expect("Error"))["code"] == "protocol_violation"
        await client.send("{not json")
        assert await client.closed() == (1008, "more than 3 bad frames in 30 s")
