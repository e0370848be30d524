"""Metrics and logs without a server process: a store that cannot answer counts a database
error (and the scrape still answers), two apps never share a registry, the JSON log format.

``tests/browser/test_metrics_live.py`` checks that each metric moves on a real server.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from hetuflow.clock import FrozenClock
from hetuflow.config import Config, DatabaseConfig
from hetuflow.logging import LogFormat, configure_logging
from hetuflow.models import AgentRegistration, ClaimGroup, ConcurrencyLimits, SlotOffer
from hetuflow.server.app import create_app
from hetuflow.server.metrics import FLOW_TTL_SECONDS, Metrics

Labels = dict[str, str]


def sample(text: str, name: str, labels: Labels | None = None) -> float:
    """The value of one sample in a Prometheus exposition (0 when it is absent)."""
    wanted = labels or {}
    for family in text_string_to_metric_families(text):
        for item in family.samples:
            if item.name == name and all(item.labels.get(k) == v for k, v in wanted.items()):
                return float(item.value)
    return 0.0


async def test_a_store_that_cannot_answer_counts_a_database_error(tmp_path: Path) -> None:
    # Without the app's lifespan the store is never opened: every read fails.
    app = create_app(Config(database=DatabaseConfig(type="sqlite", path=str(tmp_path / "x.db"))))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
        first = await client.get("/metrics")
        second = await client.get("/metrics")
    assert first.status_code == second.status_code == 200
    errors = {"operation": "metrics_scrape"}
    assert sample(first.text, "hetuflow_database_errors_total", errors) == 1
    assert sample(second.text, "hetuflow_database_errors_total", errors) == 2


async def test_created_tasks_count_as_submitted_and_idempotent_replays_do_not(
    sqlite_database: DatabaseConfig,
) -> None:
    app = create_app(Config(database=sqlite_database))
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://localhost") as client,
    ):
        one = {"task_type": "report", "idempotency_key": "nightly"}
        assert (await client.post("/api/tasks", json=one)).status_code == 201
        assert (await client.post("/api/tasks", json=one)).status_code == 200  # a replay
        batch = [one, {"task_type": "report"}, {"task_type": "mail"}, {"task_type": "mail"}]
        response = await client.post("/api/tasks/batch", json={"tasks": batch})
        assert response.json()["created"] == [False, True, True, True]
        text = (await client.get("/metrics")).text
    submitted = "hetuflow_tasks_submitted_total"
    assert sample(text, submitted, {"task_type": "report"}) == 2
    assert sample(text, submitted, {"task_type": "mail"}) == 2


def test_each_metrics_object_has_its_own_registry() -> None:
    one, other = Metrics(), Metrics()
    one.task_submitted("shell", 3)
    one.set_pending({"shell": 2, "gone": 1})
    one.set_pending({"shell": 5})
    text = one.render().decode()
    assert sample(text, "hetuflow_tasks_submitted_total", {"task_type": "shell"}) == 3
    assert sample(text, "hetuflow_tasks_pending", {"task_type": "shell"}) == 5
    assert sample(text, "hetuflow_tasks_pending", {"task_type": "gone"}) == 0
    assert sample(other.render().decode(), "hetuflow_tasks_submitted_total") == 0


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.usefixtures("restore_logging")
def test_json_logs_carry_task_and_agent_ids() -> None:
    stream = io.StringIO()
    configure_logging("json", "info", stream=stream)
    log = logging.getLogger("hetuflow.test")
    log.debug("not shown at info")
    log.info("task %s dispatched", "t-1", extra={"task_id": "t-1", "agent_id": "a-9"})
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("handler failed", extra={"task_id": "t-2"})
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["message"] == "task t-1 dispatched"
    assert (first["level"], first["logger"]) == ("info", "hetuflow.test")
    assert (first["task_id"], first["agent_id"]) == ("t-1", "a-9")
    assert first["time"].endswith("+00:00")
    assert second["task_id"] == "t-2"
    assert "ValueError: boom" in second["exc_info"]


@pytest.mark.usefixtures("restore_logging")
def test_text_logs_append_the_extra_fields_and_bad_settings_are_refused() -> None:
    stream = io.StringIO()
    configure_logging("text", "warning", stream=stream)
    configure_logging("text", "warning", stream=stream)  # replaces, never duplicates
    logging.getLogger("hetuflow.test").warning("agent lost", extra={"agent_id": "a-1"})
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    assert lines[0].endswith("hetuflow.test: agent lost agent_id=a-1")
    with pytest.raises(ValueError, match="log format"):
        configure_logging("xml", "info")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="log level"):
        configure_logging("json", "chatty")


@pytest.mark.usefixtures("restore_logging")
@pytest.mark.parametrize("log_format", ["text", "json"])
def test_uvicorns_colour_copy_of_a_message_is_not_logged(log_format: LogFormat) -> None:
    stream = io.StringIO()
    configure_logging(log_format, "info", stream=stream)
    # As uvicorn logs (another logger name: uvicorn's own may not propagate after a test ran
    # uvicorn with its default logging config).
    logging.getLogger("hetuflow.test.uvicorn").info(
        "Started server process [%d]",
        42,
        extra={"color_message": "Started server process [\x1b[36m%d\x1b[0m]", "node": "n1"},
    )
    [line] = stream.getvalue().splitlines()
    assert "Started server process [42]" in line
    assert "color_message" not in line
    assert "\x1b" not in line
    assert "n1" in line  # other extra fields are still shown


async def test_flow_control_gauges_are_read_at_scrape_on_both_stores(
    database: DatabaseConfig,
) -> None:
    clock = FrozenClock(datetime(2030, 1, 1, 12, tzinfo=UTC))
    config = Config(database=database, concurrency={"report": 2})
    app = create_app(config, clock=clock)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://localhost") as client,
    ):
        limit = {"name": "crm-api", "limit": 1, "per_seconds": 60}
        assert (await client.post("/api/rate-limits", json=limit)).status_code == 201
        uses = [{"name": "crm-api"}]
        tasks: list[dict[str, object]] = [{"task_type": "r", "rate_limits": uses} for _ in range(3)]
        tasks += [{"task_type": "report", "concurrency_key": "customer:1"} for _ in range(4)]
        tasks += [{"task_type": "mail", "concurrency_key": f"m:{n % 2}"} for n in range(4)]
        tasks += [{"task_type": "mail", "concurrency_key": "roomy", "max_concurrent_per_key": 3}]
        response = await client.post("/api/tasks/batch", json={"tasks": tasks})
        assert response.status_code == 201, response.text
        store = app.state.context.store
        agent = await store.connect_agent(
            AgentRegistration((), ("r", "report", "mail"), 100, name="far"),
            node_id="elsewhere",
            now=clock.now(),
        )
        group = ClaimGroup(
            frozenset({"r", "report", "mail"}), frozenset(), (SlotOffer(agent.id, 100, 0),)
        )
        claimed = await store.claim_tasks(
            [group], now=clock.now(), key_limits=ConcurrencyLimits({"report": 2})
        )
        assert len(claimed) == 1 + 2 + 2 + 1
        text = (await client.get("/metrics")).text

        crm = {"name": "crm-api"}
        assert sample(text, "hetuflow_rate_limit_units", crm) == 1
        assert sample(text, "hetuflow_rate_limit_window_seconds", crm) == 60
        assert sample(text, "hetuflow_rate_limit_used_units", crm) == 1
        assert sample(text, "hetuflow_rate_limit_waiting_tasks", crm) == 2
        assert sample(text, "hetuflow_concurrency_keys_active") == 4  # customer:1, m:0, m:1, roomy
        assert sample(text, "hetuflow_concurrency_keys_at_limit") == 3
        waiting = "hetuflow_concurrency_waiting_tasks"
        assert sample(text, waiting, {"task_type": "report"}) == 2
        assert sample(text, waiting, {"task_type": "mail"}) == 2

        # read at most once per FLOW_TTL_SECONDS: a scrape right after shows the last reading
        assert (await client.delete("/api/rate-limits/crm-api")).status_code == 204
        again = (await client.get("/metrics")).text
        assert sample(again, "hetuflow_rate_limit_used_units", crm) == 1
        clock.advance(FLOW_TTL_SECONDS)
        later = (await client.get("/metrics")).text
        assert 'hetuflow_rate_limit_units{name="crm-api"}' not in later  # its series are gone
        assert sample(later, "hetuflow_concurrency_keys_active") == 4
