"""Agents offline for longer than ``[scheduler] prune_offline_agents_after_seconds`` are
deleted by the cleanup loop (tombstones: their tasks' history stays), one log line each; with
a frozen clock stepped past the limit, on both databases."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from fastapi import FastAPI

from hetuflow.clock import FrozenClock
from hetuflow.config import Config, DatabaseConfig, SchedulerConfig
from hetuflow.models import AgentRegistration
from hetuflow.server.app import create_app
from hetuflow.server.engine import SchedulerEngine

from .harness import eventually

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
WEEK = 7 * 24 * 3600.0


@asynccontextmanager
async def running(
    database: DatabaseConfig, clock: FrozenClock, **scheduler: float
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    config = Config(database=database, scheduler=SchedulerConfig(**scheduler))
    app = create_app(config, clock=clock)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
            yield app, http


async def names(http: httpx.AsyncClient) -> list[str]:
    return [agent["name"] for agent in (await http.get("/api/agents")).json()["items"]]


async def test_an_agent_offline_past_the_limit_is_pruned_with_a_log_line(
    database: DatabaseConfig, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FrozenClock(T0)
    async with running(database, clock, cleanup_interval_seconds=3600) as (app, http):
        stale = (await http.post("/api/agents", json={"name": "stale"})).json()
        clock.advance(timedelta(days=2))
        await http.post("/api/agents", json={"name": "fresh"})
        # Connected (on another node): never pruned, however old.
        store = app.state.context.store
        await store.connect_agent(
            AgentRegistration((), ("t",), 1, name="connected"), node_id="elsewhere", now=T0
        )
        lifecycle = app.state.engine.lifecycle

        clock.advance(timedelta(days=5) - timedelta(seconds=1))  # stale: 7 days minus 1 s
        assert await lifecycle.prune_agents() == []

        clock.advance(timedelta(seconds=2))
        with caplog.at_level(logging.INFO, logger="hetuflow.server.lifecycle"):
            pruned = await lifecycle.prune_agents()
        assert [agent.name for agent in pruned] == ["stale"]
        lines = [r.getMessage() for r in caplog.records if "pruned agent" in r.getMessage()]
        assert lines == [
            f"pruned agent stale ({stale['id']}): offline since {T0.isoformat()}, longer than"
            " [scheduler] prune_offline_agents_after_seconds = 604800"
        ]
        assert await names(http) == ["connected", "fresh"]
        gone = await http.get(f"/api/agents/{stale['id']}")
        assert gone.status_code == 404


async def test_zero_never_prunes(database: DatabaseConfig) -> None:
    clock = FrozenClock(T0)
    async with running(database, clock, prune_offline_agents_after_seconds=0) as (app, http):
        await http.post("/api/agents", json={"name": "old"})
        clock.advance(timedelta(days=3650))
        engine: SchedulerEngine = app.state.engine
        assert await engine.lifecycle.prune_agents() == []
        assert await names(http) == ["old"]


async def test_the_cleanup_loop_prunes(database: DatabaseConfig) -> None:
    """The engine's own cleanup loop does it (every ``cleanup_interval_seconds``)."""
    clock = FrozenClock(T0)
    async with running(
        database, clock, cleanup_interval_seconds=0.05, prune_offline_agents_after_seconds=60
    ) as (_, http):
        await http.post("/api/agents", json={"name": "old"})
        assert await names(http) == ["old"]
        clock.advance(61)

        async def pruned() -> bool:
            return await names(http) == []

        await eventually(pruned, timeout_seconds=10)


def test_the_default_is_a_week() -> None:
    assert SchedulerConfig().prune_offline_agents_after_seconds == WEEK
