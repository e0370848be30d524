"""``[scheduler] priority_aging_seconds`` reaches the claim: tasks created through the API
are ordered with the configured aging (docs/guarantees.md, "Ordering and aging")."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from hetuflow.clock import FrozenClock
from hetuflow.config import Config, DatabaseConfig, SchedulerConfig, load_config
from hetuflow.server.app import create_app

from .helpers import hold_task


@pytest.mark.parametrize(("aging", "first"), [(60.0, "waited-low"), (0.0, "fresh-normal")])
async def test_the_configured_aging_orders_the_claim(
    database: DatabaseConfig, aging: float, first: str
) -> None:
    """A low task that waited an hour goes before a normal one just created, unless aging is
    off (strict priority)."""
    clock = FrozenClock(datetime(2030, 1, 1, tzinfo=UTC))
    config = Config(database=database, scheduler=SchedulerConfig(priority_aging_seconds=aging))
    app = create_app(config, clock=clock)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
            body = {"name": "waited-low", "task_type": "t", "priority": "low"}
            assert (await http.post("/api/tasks", json=body)).status_code == 201
            clock.advance(timedelta(hours=1))
            body = {"name": "fresh-normal", "task_type": "t", "priority": "normal"}
            assert (await http.post("/api/tasks", json=body)).status_code == 201
        dispatch = await hold_task(app, "t")
    assert dispatch.task.name == first


def test_the_setting_is_read_from_the_environment() -> None:
    assert load_config(env={}).scheduler.priority_aging_seconds == 60
    env = {"HETUFLOW_SCHEDULER__PRIORITY_AGING_SECONDS": "0"}
    assert load_config(env=env).scheduler.priority_aging_seconds == 0
