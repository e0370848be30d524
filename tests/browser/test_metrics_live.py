"""``/metrics`` on a real ``hetuflow-server start --local-agent``: each metric moves when its
event happens (task submitted, dispatched, started, finished; histograms; pending by type;
agents connected; WebSocket messages; cron fires and misfires).

It lives beside the browser tests because it shares their server process helper.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from .server import ServerProcess, run_server

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
