"""Helpers for the Store contract suite (every test runs on SQLite and on PostgreSQL)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import pytest

from hetuflow.config import DatabaseConfig
from hetuflow.models import Agent, AgentRegistration
from hetuflow.store import create_store
from hetuflow.store.base import Store

from ._support import T0, ConnectAgent, OpenStore


@pytest.fixture
def connect(store: Store) -> ConnectAgent:
    """Connect (and so create) an agent by name."""

    async def make(
        name: str,
        *,
        capabilities: Sequence[str] = (),
        task_types: Sequence[str] = ("t",),
        slots: int = 10,
        node_id: str = "node-a",
    ) -> Agent:
        registration = AgentRegistration(
            capabilities=tuple(capabilities),
            supported_task_types=tuple(task_types),
            max_concurrent_tasks=slots,
            name=name,
        )
        return await store.connect_agent(registration, node_id=node_id, now=T0)

    return make


@pytest.fixture
async def open_store(database: DatabaseConfig) -> AsyncIterator[OpenStore]:
    """Open more Store instances on the same database (another server process, in effect)."""
    opened: list[Store] = []

    async def make() -> Store:
        extra = create_store(database)
        await extra.open()
        opened.append(extra)
        return extra

    yield make
    for extra in opened:
        await extra.close()
