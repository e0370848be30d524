"""The dashboard's charts over a chosen window: switching the window re-reads the timeline,
re-draws the charts with its buckets, and durations are drawn as p50 / p95 lines."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from .conftest import screenshot
from .server import ServerProcess

pytestmark = pytest.mark.browser

SLOW = 30_000  # milliseconds


def test_switching_the_window_redraws_the_charts(page: Page, server: ServerProcess) -> None:
    for command in ("sleep 0.3", "exit 3"):
        server.api(
            "POST", "/api/tasks", json={"task_type": "shell", "payload": {"command": command}}
        )
    asked: list[str] = []
    page.on(
        "request",
        lambda request: asked.append(request.url) if "/api/stats/timeline" in request.url else None,
    )
    page.goto("/")
    throughput = page.locator("#throughput-chart svg")
    expect(page.locator("#throughput-total")).to_have_text(
        "2 finished in the last hour", timeout=SLOW
    )
    expect(throughput).to_have_attribute("data-window", "1h")
    expect(page.locator("#chart-window [data-window='1h']")).to_have_attribute(
        "aria-pressed", "true"
    )
    # Durations as percentiles: a p50 and a p95 point for the bucket the tasks finished in.
    expect(page.locator("#run-chart svg .dot-p50").first).to_be_visible()
    expect(page.locator("#run-chart svg .dot-p95").first).to_be_visible()
    expect(page.locator("#wait-chart svg")).to_have_count(1)

    page.click("#chart-window [data-window='7d']")
    expect(throughput).to_have_attribute("data-window", "7d")
    expect(page.locator("#throughput-total")).to_have_text("2 finished in the last 7 days")
    expect(page.locator("#chart-window [data-window='7d']")).to_have_attribute(
        "aria-pressed", "true"
    )
    expect(page.locator("#chart-window [data-window='1h']")).to_have_attribute(
        "aria-pressed", "false"
    )
    expect(page.get_by_text("Throughput (tasks finished per 2 h, last 7 days)")).to_be_visible()
    expect(page.locator("#failure-total")).to_contain_text("1 of 2 failed or timed out (50%)")
    assert any("window=7d" in url for url in asked), asked
    screenshot(page, "dashboard-window-7d")

    # One bar part per task: the succeeded one and the failed one.
    expect(page.locator("#throughput-chart svg rect")).to_have_count(2)

    # The choice is remembered.
    page.reload()
    expect(page.locator("#throughput-chart svg")).to_have_attribute("data-window", "7d")
    page.click("#chart-window [data-window='15m']")
    expect(page.locator("#throughput-total")).to_have_text("2 finished in the last 15 minutes")
    expect(
        page.get_by_text("Throughput (tasks finished per 30 s, last 15 minutes)")
    ).to_be_visible()


def test_a_window_with_nothing_finished_says_so(page: Page, server: ServerProcess) -> None:
    page.goto("/")
    page.click("#chart-window [data-window='6h']")
    for box in ("#throughput-chart", "#failure-chart", "#wait-chart", "#run-chart"):
        expect(page.locator(box)).to_contain_text("Nothing finished in the last 6 hours.")
        expect(page.locator(f"{box} svg")).to_have_count(0)
