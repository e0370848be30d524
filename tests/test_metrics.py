"""``/metrics``: each metric moves when its event happens, on a real server with its agent.

Plus the pieces that need no server: a store that cannot answer counts a database error
(and the scrape still answers), two apps never share a registry, and the JSON log format.
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

from browser.server import ServerProcess, run_server
from hetuflow.config import Config, DatabaseConfig
from hetuflow.logging import configure_logging
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


class Scraper:
    def __init__(self, server: ServerProcess) -> None:
        self.server = server

    def text(self) -> str:
        response = httpx.get(self.server.url + "/metrics", timeout=10)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        return response.text

    def value(self, name: str, labels: Labels | None = None) -> float:
        return sample(self.text(), name, labels)

    def wait_until(self, name: str, labels: Labels | None, at_least: float) -> float:
        return float(
            self.server.wait_for(
                f"{name}{labels or ''} >= {at_least}",
                lambda: (value := self.value(name, labels)) >= at_least and value,
            )
        )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with run_server(tmp_path_factory.mktemp("metrics")) as running:
        yield running


@pytest.fixture
def scraper(server: ServerProcess) -> Scraper:
    return Scraper(server)


def test_a_task_moves_submitted_dispatched_started_finished_and_histograms(
    server: ServerProcess, scraper: Scraper
) -> None:
    shell = {"task_type": "shell"}
    before = scraper.text()
    counters = {
        "hetuflow_tasks_submitted_total": shell,
        "hetuflow_tasks_dispatched_total": shell,
        "hetuflow_tasks_started_total": shell,
        "hetuflow_tasks_finished_total": {**shell, "outcome": "succeeded"},
        "hetuflow_task_dispatch_latency_seconds_count": shell,
        "hetuflow_task_run_duration_seconds_count": {**shell, "outcome": "succeeded"},
        "hetuflow_ws_messages_total": {"direction": "out", "type": "TaskDispatch"},
    }
    start = {name: sample(before, name, labels) for name, labels in counters.items()}

    task = server.api("POST", "/api/tasks", json={**shell, "payload": {"command": "echo hi"}})
    server.wait_for(
        "the task to succeed",
        lambda: server.api("GET", f"/api/tasks/{task['id']}")["status"] == "succeeded",
    )
    for name, labels in counters.items():
        scraper.wait_until(name, labels, start[name] + 1)

    # A failure counts under its own outcome.
    failed_before = scraper.value("hetuflow_tasks_finished_total", {**shell, "outcome": "failed"})
    server.api("POST", "/api/tasks", json={**shell, "payload": {"command": "exit 3"}})
    scraper.wait_until(
        "hetuflow_tasks_finished_total", {**shell, "outcome": "failed"}, failed_before + 1
    )


def test_pending_tasks_by_type_are_read_at_scrape_time(
    server: ServerProcess, scraper: Scraper
) -> None:
    orphan = {"task_type": "nobody-runs-this"}
    assert scraper.value("hetuflow_tasks_pending", orphan) == 0
    first = server.api("POST", "/api/tasks", json=orphan)
    server.api("POST", "/api/tasks", json=orphan)
    assert scraper.value("hetuflow_tasks_pending", orphan) == 2
    server.api("DELETE", f"/api/tasks/{first['id']}")
    assert scraper.value("hetuflow_tasks_pending", orphan) == 1


def test_agents_connected_and_websocket_messages_in(
    server: ServerProcess, scraper: Scraper
) -> None:
    assert scraper.value("hetuflow_agents_connected") == 1  # the local agent
    assert scraper.value("hetuflow_ws_messages_total", {"direction": "in"}) >= 1
    registrations = scraper.value(
        "hetuflow_ws_messages_total", {"direction": "in", "type": "AgentCapabilities"}
    )
    assert registrations == 1


def test_cron_fires_and_misfires(server: ServerProcess, scraper: Scraper) -> None:
    fires = scraper.value("hetuflow_cron_fires_total")
    skipped = scraper.value("hetuflow_cron_misfires_total", {"action": "skipped"})
    job = server.api(
        "POST",
        "/api/cron-jobs",
        json={
            "name": "every-second",
            "cron_expression": "* * * * * *",
            "task_type": "shell",
            "payload": {"command": "sleep 600"},
            "overlap_policy": "skip",
        },
    )
    try:
        # The first tick fires; the next ones find that task still running and are skipped.
        scraper.wait_until("hetuflow_cron_fires_total", None, fires + 1)
        scraper.wait_until("hetuflow_cron_misfires_total", {"action": "skipped"}, skipped + 1)
    finally:
        server.api("DELETE", f"/api/cron-jobs/{job['id']}")


async def test_a_store_that_cannot_answer_counts_a_database_error(tmp_path: Path) -> None:
    # Without the app's lifespan the store is never opened: every read fails.
    app = create_app(Config(database=DatabaseConfig(type="sqlite", path=str(tmp_path / "x.db"))))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        first = await client.get("/metrics")
        second = await client.get("/metrics")
    assert first.status_code == second.status_code == 200
    errors = {"operation": "metrics_scrape"}
    assert sample(first.text, "hetuflow_database_errors_total", errors) == 1
    assert sample(second.text, "hetuflow_database_errors_total", errors) == 2


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
