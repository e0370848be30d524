"""Metrics and logs without a server process: a store that cannot answer counts a database
error (and the scrape still answers), two apps never share a registry, the JSON log format.

``tests/browser/test_metrics_live.py`` checks that each metric moves on a real server.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from hetuflow.config import Config, DatabaseConfig
from hetuflow.logging import LogFormat, configure_logging
from hetuflow.server.app import create_app
from hetuflow.server.metrics import Metrics

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
