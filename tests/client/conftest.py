"""A real server on a free port, run by uvicorn in a thread, for the synchronous Client."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from hetuflow.client import AsyncClient, Client
from hetuflow.config import Config, DatabaseConfig
from hetuflow.server.app import create_app


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def server_url(database: DatabaseConfig) -> Iterator[str]:
    port = free_port()
    app = create_app(Config(database=database))
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="on",
            ws="websockets-sansio",
        )
    )
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive(), "the server did not start"
        assert time.monotonic() < deadline, "the server did not start in time"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=20)


@pytest.fixture
def client(server_url: str) -> Iterator[Client]:
    with Client(server_url) as opened:
        yield opened


@pytest.fixture
async def app(database: DatabaseConfig) -> AsyncIterator[FastAPI]:
    application = create_app(Config(database=database))
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def async_client(app: FastAPI) -> AsyncIterator[AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with AsyncClient("http://localhost", transport=transport) as opened:
        yield opened
