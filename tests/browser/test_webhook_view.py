"""Outgoing webhooks in the console, in headless Chromium against a real ``hetuflow-server
start --local-agent`` with ``[webhooks]`` on and a real HTTP receiver on 127.0.0.1: a task's
page shows its delivery (pending with the receiver's 500 and the next attempt, then delivered,
followed live after the task ended), a refused connection's error, and a cron job's page shows
the webhook, concurrency key and rate limits every task it creates carries."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from .conftest import screenshot
from .server import ServerProcess, free_port, run_server

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]

SLOW = 30_000  # milliseconds
CONFIG = """
[webhooks]
secret = "browser-webhook-secret-0123456789"
backoff_seconds = 1
max_backoff_seconds = 1
jitter = 0
poll_interval_seconds = 0.2
max_attempts = 1000
"""


class Receiver:
    """Answers every POST with ``status`` (the test changes it) and counts them."""

    def __init__(self) -> None:
        self.status = 500
        self.count = 0
        self.url = ""


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            state.count += 1
            self.send_response(state.status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            return

    http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{http.server_address[1]}/hook"
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        http.shutdown()
        http.server_close()
        thread.join()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    config = tmp_path / "webhooks.toml"
    config.write_text(CONFIG)
    with run_server(tmp_path, "--config", str(config)) as running:
        yield running


def create(server: ServerProcess, **body: Any) -> dict[str, Any]:
    spec = {"task_type": "shell", "payload": {"command": "echo done"}, **body}
    task: dict[str, Any] = server.api("POST", "/api/tasks", json=spec)
    return task


def test_a_task_page_follows_its_webhook_delivery_until_delivered(
    page: Page, server: ServerProcess, receiver: Receiver
) -> None:
    task = create(server, name="reported", webhook_url=receiver.url)
    page.goto(f"/#/tasks/{task['id']}")
    expect(page.locator("#webhook-url")).to_have_text(receiver.url)
    delivery = page.locator("#task-webhook .delivery")
    expect(delivery).to_have_count(1, timeout=SLOW)
    expect(page.locator("#task-status .badge")).to_have_text("succeeded")
    # the receiver answers 500: pending, its answer and when the next attempt goes
    expect(delivery.locator(".delivery-state .badge")).to_have_text("pending")
    expect(delivery.locator(".delivery-state")).to_contain_text("of its succeeded status")
    expect(delivery.locator(".delivery-last")).to_contain_text("HTTP 500", timeout=SLOW)
    expect(delivery.locator(".delivery-last .error")).to_have_count(0)  # not said twice
    expect(delivery.locator(".delivery-next")).to_be_visible()
    attempts = int(delivery.locator(".delivery-attempts").inner_text())
    assert attempts >= 1
    screenshot(page, "task-webhook-pending")

    # the receiver recovers: the page (the task long ended) follows the delivery by itself
    receiver.status = 204
    expect(delivery.locator(".delivery-state .badge")).to_have_text("delivered", timeout=SLOW)
    expect(delivery.locator(".delivery-last")).to_contain_text("HTTP 204")
    expect(delivery.locator(".delivery-next")).to_have_count(0)
    expect(delivery.locator(".delivery-delivered")).to_be_visible()
    shown = int(delivery.locator(".delivery-attempts").inner_text())
    api = server.api("GET", f"/api/tasks/{task['id']}/webhook")["items"][0]
    assert api["state"] == "delivered"
    assert shown == api["attempts"] == receiver.count >= 2
    screenshot(page, "task-webhook-delivered")


def test_a_refused_connection_shows_its_error_and_a_task_without_webhook_shows_none(
    page: Page, server: ServerProcess
) -> None:
    closed = f"http://127.0.0.1:{free_port()}/nobody"
    task = create(server, name="unheard", webhook_url=closed)
    page.goto(f"/#/tasks/{task['id']}")
    delivery = page.locator("#task-webhook .delivery")
    expect(delivery.locator(".delivery-last .error")).to_contain_text(
        re.compile("Connect|refused", re.IGNORECASE), timeout=SLOW
    )
    expect(delivery.locator(".delivery-state .badge")).to_have_text("pending")

    plain = create(server, name="quiet")
    server.wait_for(
        "the quiet task", lambda: server.api("GET", f"/api/tasks/{plain['id']}")["finished_at"]
    )
    page.goto(f"/#/tasks/{plain['id']}")
    expect(page.locator("#task-status .badge")).to_have_text("succeeded")
    expect(page.locator("#task-webhook")).to_be_hidden()


def test_a_cron_job_page_shows_its_webhook_key_and_rate_limits(
    page: Page, server: ServerProcess, receiver: Receiver
) -> None:
    server.api("POST", "/api/rate-limits", json={"name": "crm-api", "limit": 5, "per_seconds": 60})
    job = server.api(
        "POST",
        "/api/cron-jobs",
        json={
            "name": "nightly",
            "cron_expression": "0 3 * * *",
            "task_type": "shell",
            "payload": {"command": "true"},
            "webhook_url": receiver.url,
            "concurrency_key": "tenant:9",
            "max_concurrent_per_key": 2,
            "concurrency_strategy": "cancel_newest",
            "rate_limits": [{"name": "crm-api", "units": 3}],
        },
    )
    plain = server.api(
        "POST",
        "/api/cron-jobs",
        json={"name": "plain", "cron_expression": "0 4 * * *", "task_type": "shell"},
    )
    page.goto(f"/#/cron/{job['id']}")
    expect(page.locator("#cron-webhook-url")).to_have_text(receiver.url, timeout=SLOW)
    expect(page.locator("#cron-concurrency-key")).to_have_text(
        "tenant:9 (at most 2 at once), cancel_newest"
    )
    expect(page.locator("#cron-rate-limits")).to_have_text("crm-api 3 units")
    screenshot(page, "cron-job-flow")
    page.locator("#cron-rate-limits a").click()
    expect(page).to_have_url(re.compile(r"#/tasks\?status=pending&rate_limit=crm-api$"))

    page.goto(f"/#/cron/{plain['id']}")
    expect(page.locator("#cron-webhook-url")).to_have_text("none", timeout=SLOW)
    expect(page.locator("#cron-concurrency-key")).to_have_text("none")
    expect(page.locator("#cron-rate-limits")).to_have_text("none")
