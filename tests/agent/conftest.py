"""Fixtures for the agent tests: a fake server on a real socket and a running agent."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from hetuflow.agent import Agent

from .fake_server import FakeServer


@pytest.fixture
async def server() -> AsyncIterator[FakeServer]:
    fake = FakeServer()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


@contextlib.asynccontextmanager
async def running(agent: Agent) -> AsyncIterator[asyncio.Task[None]]:
    """Run ``agent`` until the block ends; the block starts once it is registered."""
    runner = asyncio.create_task(agent.run())
    registered = asyncio.create_task(agent.wait_registered())
    try:
        done, _ = await asyncio.wait(
            {runner, registered}, timeout=10, return_when=asyncio.FIRST_COMPLETED
        )
        if runner in done:
            runner.result()  # raises what run() raised
        assert registered in done, "the agent did not register within 10 s"
        yield runner
    finally:
        registered.cancel()
        if not runner.done():
            await agent.stop()
        async with asyncio.timeout(15):
            await asyncio.gather(runner, return_exceptions=True)
