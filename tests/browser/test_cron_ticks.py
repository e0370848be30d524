"""A cron job's tick history in headless Chromium, against a real ``hetuflow-server start
--local-agent`` firing a real every-second schedule: ticks fired on time, skipped while the
previous task still runs (and why), fired late after the job was disabled, each with its task."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from .conftest import screenshot
from .server import ServerProcess

pytestmark = pytest.mark.browser

SLOW = 30_000  # milliseconds


def ticks(server: ServerProcess, job_id: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = server.api("GET", f"/api/cron-jobs/{job_id}/ticks")["items"]
    return items


def test_the_tick_history_says_fired_skipped_late_and_why(
    page: Page, server: ServerProcess, tmp_path: Path
) -> None:
    opened = tmp_path / "open"
    job = server.api(
        "POST",
        "/api/cron-jobs",
        json={
            "name": "every-second",
            "cron_expression": "* * * * * *",
            "timezone": "Europe/Paris",
            "task_type": "shell",
            "payload": {"command": f"while [ ! -e '{opened}' ]; do sleep 0.05; done"},
            "overlap_policy": "skip",
            "misfire_policy": "run_once",
        },
    )
    # The first tick's task holds on: the next ticks are skipped (overlap_policy=skip).
    server.wait_for(
        "a fired and a skipped tick",
        lambda: {t["outcome"] for t in ticks(server, job["id"])} == {"fired", "skipped"},
    )
    page.goto(f"/#/cron/{job['id']}")
    history = page.locator("#cron-ticks")
    skipped = history.locator("tr[data-kind=skipped]").first
    expect(skipped.locator(".badge")).to_have_text("skipped")
    expect(skipped.locator("td").nth(3)).not_to_be_empty()  # why
    fired = history.locator("tr[data-kind=on_time]").last
    expect(fired.locator(".badge")).to_have_text("fired")
    fired.locator("td").nth(4).locator("a").click()
    expect(page).to_have_url(re.compile(r"#/tasks/[0-9a-f-]{36}$"))
    expect(page.locator("#task-details")).to_contain_text("fired by a cron job")
    page.go_back()

    # Disabled for a few seconds, then enabled: the missed ticks run once, late.
    opened.touch()
    server.api("POST", f"/api/cron-jobs/{job['id']}/disable")
    disabled_at = datetime.now(UTC)
    server.wait_for(
        "three seconds of missed ticks",
        lambda: (datetime.now(UTC) - disabled_at).total_seconds() > 3,
    )
    server.api("POST", f"/api/cron-jobs/{job['id']}/enable")
    late = history.locator("tr[data-kind=late]").first
    expect(late.locator(".badge")).to_have_text("fired late", timeout=SLOW)
    expect(late.locator("td").nth(3)).to_contain_text("ran once now for")
    expect(late.locator("td").nth(2)).to_contain_text("after the tick")
    expect(page.locator("#tick-counts [data-kind=late]")).to_contain_text("fired late")
    expect(history.locator("tr").first.locator("th").first).to_have_text("Tick (Europe/Paris)")
    server.api("POST", f"/api/cron-jobs/{job['id']}/disable")
    screenshot(page, "cron-ticks")

    page.click("#cron-tasks")
    expect(page).to_have_url(re.compile(f"#/tasks\\?cron_job_id={job['id']}$"))
    expect(page.locator("#task-table tbody tr").first).to_have_attribute("data-id", re.compile("."))
