"""The console's operator tools in headless Chromium: loading and empty states, times and their
zone, bulk cancel / retry, replay, tasks by type, and the no-agent banner."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, Route, expect

from .conftest import screenshot
from .server import ServerProcess

pytestmark = pytest.mark.browser

TASK_URL = re.compile(r"#/tasks/[0-9a-f-]{36}$")
SLOW = 30_000  # milliseconds


def tasks_of(server: ServerProcess, **params: Any) -> list[dict[str, Any]]:
    page: dict[str, Any] = server.api("GET", "/api/tasks", params={"limit": 1000, **params})
    items: list[dict[str, Any]] = page["items"]
    return items


def test_loading_then_empty_states_and_no_failure_line(page: Page, server: ServerProcess) -> None:
    held: list[Route] = []

    def hold(route: Route) -> None:
        held.append(route)

    page.route("**/api/events", hold)
    page.goto("/")
    # Before the first snapshot every box says it is loading: nothing is blank.
    for box in ("#status-tiles", "#status-chart", "#agents-summary", "#failure-chart"):
        expect(page.locator(f"{box} .loading")).to_have_text("Loading…")
    screenshot(page, "dashboard-loading")
    assert held, "the dashboard asked for its snapshots"
    page.unroute("**/api/events")  # the held request goes on
    page.reload()

    expect(page.locator("#no-tasks")).to_contain_text("No tasks yet")
    expect(page.locator("#failure-chart")).to_contain_text("Nothing finished in the last hour.")
    expect(page.locator("#failure-chart svg")).to_have_count(0)
    screenshot(page, "dashboard-empty")

    page.goto("/#/tasks")
    expect(page.locator("#task-table tbody")).to_contain_text("No tasks yet. Create one")
    page.goto("/#/tasks/types")
    expect(page.locator("#type-stats")).to_contain_text("No task was created in this window.")

    # Tasks that all succeed: 0 % failures draws no line at all, and says so.
    for _ in range(2):
        server.api(
            "POST", "/api/tasks", json={"task_type": "shell", "payload": {"command": "true"}}
        )
    page.goto("/")
    expect(page.locator("#throughput-total")).to_have_text(
        "2 finished in the last hour", timeout=SLOW
    )
    expect(page.locator("#failure-total")).to_have_text(
        "No failures: all 2 finished tasks succeeded or were cancelled."
    )
    expect(page.locator("#failure-chart svg")).to_have_count(0)
    expect(page.locator("#throughput-chart svg")).to_have_count(1)


def test_times_show_their_zone_24_hour_and_the_utc_toggle_is_remembered(
    page: Page, server: ServerProcess
) -> None:
    task = server.api(
        "POST", "/api/tasks", json={"task_type": "shell", "payload": {"command": "true"}}
    )
    page.goto(f"/#/tasks/{task['id']}")
    created = page.locator("#task-details dt:text-is('Created') + dd")
    # The browser runs in Asia/Shanghai (conftest): its zone is named, no AM/PM.
    expect(created).to_contain_text("GMT+8")
    assert not re.search(r"\b[AP]M\b", created.inner_text())
    expect(page.locator("#time-toggle")).to_have_text("Local time")
    page.click("#time-toggle")
    expect(page.locator("#time-toggle")).to_have_text("UTC")
    expect(created).to_contain_text("UTC")
    page.reload()
    expect(page.locator("#time-toggle")).to_have_text("UTC")
    expect(page.locator("#task-details dt:text-is('Created') + dd")).to_contain_text("UTC")
    assert page.evaluate("localStorage.getItem('hetuflow.time')") == "utc"


def test_bulk_cancel_and_retry_by_selection_and_by_filter(
    page: Page, server: ServerProcess
) -> None:
    batch = {"tasks": [{"task_type": "nobody-type", "name": f"stuck-{n}"} for n in range(55)]}
    server.api("POST", "/api/tasks/batch", json=batch)
    page.goto("/#/tasks?task_type=nobody-type")
    rows = page.locator("#task-table tbody tr")
    expect(rows).to_have_count(50)
    expect(page.locator("#bulk-bar")).to_be_hidden()

    # Two ticked rows, cancelled (after a confirmation step).
    rows.nth(0).locator("input.pick").check()
    rows.nth(1).locator("input.pick").check()
    expect(page.locator("#bulk-count")).to_have_text("2 selected")
    page.click("#bulk-cancel")
    page.click("#bulk-confirm")
    expect(page.locator("#toast")).to_have_text("Cancelled 2 tasks")
    expect(page.locator("#bulk-bar")).to_be_hidden()
    assert len(tasks_of(server, task_type="nobody-type", status="cancelled")) == 2
    expect(rows.locator(".badge.cancelled")).to_have_count(2)

    # The cancelled ones, retried through the page's checkbox.
    page.goto("/#/tasks?task_type=nobody-type&status=cancelled")
    expect(rows).to_have_count(2)
    page.check("#select-page")
    expect(page.locator("#bulk-count")).to_have_text("2 selected")
    page.click("#bulk-retry")
    page.click("#bulk-confirm")
    expect(page.locator("#toast")).to_have_text("Retried 2 tasks")
    assert len(tasks_of(server, task_type="nobody-type", status="pending")) == 55

    # Every task matching the filter, past the first page.
    page.goto("/#/tasks?task_type=nobody-type&status=pending")
    expect(rows).to_have_count(50)
    page.check("#select-page")
    expect(page.locator("#bulk-count")).to_have_text("50 selected")
    page.click("#select-matching")
    expect(page.locator("#bulk-count")).to_have_text("All 55 tasks matching this filter selected")
    screenshot(page, "tasks-bulk")
    page.click("#bulk-cancel")
    expect(page.locator("#bulk-bar")).to_contain_text("Cancel 55 tasks?")
    page.click("#bulk-confirm")
    expect(page.locator("#toast")).to_have_text("Cancelled 55 tasks")
    assert tasks_of(server, task_type="nobody-type", status="pending") == []
    expect(page.locator("#task-table tbody")).to_contain_text("No task matches.")


def test_the_banner_says_which_tasks_no_agent_serves(page: Page, server: ServerProcess) -> None:
    page.goto("/")
    expect(page.locator("#live")).to_have_text("live")
    banner = page.locator("#unserved-banner")
    expect(banner).to_be_hidden()
    server.api(
        "POST",
        "/api/tasks/batch",
        json={"tasks": [{"task_type": "nobody-type"} for _ in range(61)]},
    )
    server.api(
        "POST",
        "/api/tasks",
        json={
            "task_type": "shell",
            "required_capabilities": ["gpu"],
            "payload": {"command": "true"},
        },
    )
    expect(banner).to_be_visible(timeout=SLOW)
    expect(banner.locator("li").nth(0)).to_have_text(
        "61 tasks of type nobody-type: no agent serves it"
    )
    expect(banner.locator("li").nth(1)).to_have_text(
        "1 task of type shell: no agent serving it has the capability gpu"
    )
    screenshot(page, "dashboard-unserved")
    # The same banner on the task list; its link filters the list to those tasks.
    page.goto("/#/tasks")
    banner.locator("a", has_text="61 tasks of type nobody-type").click()
    expect(page).to_have_url(re.compile(r"#/tasks\?status=pending&task_type=nobody-type$"))
    expect(page.locator("#task-table tbody tr")).to_have_count(50)
    # Once they are cancelled nobody waits in vain: the banner goes.
    server.api("POST", "/api/tasks/bulk-cancel", json={"filter": {"task_type": "nobody-type"}})
    server.api("POST", "/api/tasks/bulk-cancel", json={"filter": {"task_type": "shell"}})
    expect(banner).to_be_hidden(timeout=SLOW)


def test_replay_a_succeeded_task_and_see_it_by_type(page: Page, server: ServerProcess) -> None:
    task = server.api(
        "POST",
        "/api/tasks",
        json={"task_type": "shell", "name": "replay-me", "payload": {"command": "echo again"}},
    )
    page.goto(f"/#/tasks/{task['id']}")
    expect(page.locator("#task-status .badge")).to_have_text("succeeded", timeout=SLOW)
    expect(page.locator("#retry-task")).to_have_count(0)  # retry is for failures; replay for any
    page.click("#replay-task")
    page.wait_for_url(lambda url: TASK_URL.search(url) is not None and task["id"] not in url)
    expect(page.locator("#task-name")).to_contain_text("replay-me")
    expect(page.locator("#replay-of")).to_have_text(task["id"][:8])
    expect(page.locator("#task-status .badge")).to_have_text("succeeded", timeout=SLOW)
    expect(page.locator("#task-logs")).to_contain_text("again")
    replay_id = page.url.rsplit("/", 1)[1]
    assert server.api("GET", f"/api/tasks/{replay_id}")["replay_of"] == task["id"]
    page.click("#replay-of")
    expect(page).to_have_url(re.compile(f"#/tasks/{task['id']}$"))

    page.goto("/#/tasks")
    page.click("#by-type")
    row = page.locator("#type-table tr[data-task-type=shell]")
    expect(row.locator("td").nth(1)).to_have_text("2")
    expect(row.locator("a.count[data-status=succeeded]")).to_contain_text("2")
    assert "—" not in row.locator("td").nth(5).inner_text()  # a run time p50 was measured
    screenshot(page, "tasks-by-type")


def test_the_dead_letter_filter_and_its_bulk_retry(
    page: Page, server: ServerProcess, tmp_path: Path
) -> None:
    fixed = tmp_path / "fixed"  # the cause of the failures, mended before the retry

    def failing(name: str) -> str:
        task = server.api(
            "POST",
            "/api/tasks",
            json={
                "task_type": "shell",
                "name": name,
                "payload": {"command": f"test -e '{fixed}'"},
                "max_retries": 5,
                "retry_on": ["timed_out", "agent_lost"],
                "retry_jitter": 0.5,
            },
        )
        task_id: str = task["id"]
        return task_id

    dead = [failing("dead-1"), failing("dead-2")]
    server.api("POST", "/api/tasks", json={"task_type": "nobody-type", "name": "waiting"})
    server.wait_for(
        "both to fail at once (failed is not in retry_on)",
        lambda: {t["id"] for t in tasks_of(server, status="failed")} == set(dead),
    )
    page.goto(f"/#/tasks/{dead[0]}")
    expect(page.locator("#retry-policy")).to_have_text(
        "on timed out, agent lost; backoff 60 s doubling, at most 3600 s, jitter 50%"
    )
    expect(page.locator("#task-error")).to_contain_text(
        "not retried: retry_on does not include failed"
    )

    page.goto("/#/tasks")
    rows = page.locator("#task-table tbody tr")
    expect(rows).to_have_count(3)
    page.check("#filter-final")
    expect(page).to_have_url(re.compile(r"#/tasks\?final=true$"))
    expect(rows).to_have_count(2)
    expect(rows.locator(".badge.failed")).to_have_count(2)
    screenshot(page, "tasks-dead-letters")
    fixed.touch()
    page.check("#select-page")
    page.click("#bulk-retry")
    page.click("#bulk-confirm")
    expect(page.locator("#toast")).to_have_text("Retried 2 tasks")
    expect(page.locator("#task-table tbody")).to_contain_text("No dead letters")
    server.wait_for(
        "the retries to succeed",
        lambda: (
            sorted(t["replay_of"] for t in tasks_of(server, status="succeeded")) == sorted(dead)
        ),
    )
