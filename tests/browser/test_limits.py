"""Flow control in the console, in headless Chromium against a real ``hetuflow-server start
--local-agent``: the Limits view (rate limits with their window and waiting tasks, the
busiest concurrency keys, each linking to the tasks waiting on it, live), a waiting task's
page saying why in words (its key and limit, its rate limit and when it can run), and a
broadcast parent's page listing its children per agent."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from .conftest import screenshot
from .server import ServerProcess

pytestmark = pytest.mark.browser

SLOW = 30_000  # milliseconds


def gate(path: Path) -> dict[str, Any]:
    """A shell payload that runs until ``path`` exists: the test decides when it ends."""
    return {"command": f"while [ ! -e '{path}' ]; do sleep 0.05; done; echo opened"}


def create(server: ServerProcess, **body: Any) -> dict[str, Any]:
    spec = {"task_type": "shell", "payload": {"command": "true"}, **body}
    task: dict[str, Any] = server.api("POST", "/api/tasks", json=spec)
    return task


def status_of(server: ServerProcess, task_id: str) -> str:
    status: str = server.api("GET", f"/api/tasks/{task_id}")["status"]
    return status


def test_the_limits_view_shows_keys_and_rate_limits_live_and_links_to_waiting_tasks(
    page: Page, server: ServerProcess, tmp_path: Path
) -> None:
    page.goto("/#/limits")
    expect(page.locator("nav.main a.active")).to_have_text("Limits")
    expect(page.locator("#rate-limit-table tbody")).to_contain_text("No rate limit")
    expect(page.locator("#concurrency-key-table tbody")).to_contain_text("No concurrency key")

    opened = tmp_path / "open"
    server.api(
        "POST", "/api/rate-limits", json={"name": "crm-api", "limit": 1, "per_seconds": 3600}
    )
    uses = [{"name": "crm-api"}]
    first = create(server, name="crm-1", rate_limits=uses)
    server.wait_for("the first crm task", lambda: status_of(server, first["id"]) == "succeeded")
    crm = [create(server, name=f"crm-{n}", rate_limits=uses) for n in (2, 3)]
    running = create(server, name="key-1", payload=gate(opened), concurrency_key="customer:42")
    server.wait_for("the keyed task to run", lambda: status_of(server, running["id"]) == "running")
    queued = [create(server, name=f"key-{n}", concurrency_key="customer:42") for n in (2, 3)]

    # live: the view on screen picks the new state up by itself
    rate = page.locator("#rate-limit-table tr[data-name='crm-api']")
    expect(rate.locator(".per")).to_have_text("1 per hour")
    expect(rate.locator(".used")).to_have_text(re.compile(r"1 / 1"), timeout=SLOW)
    expect(rate.locator(".waiting")).to_have_text("2 waiting")
    expect(rate.locator(".next-free")).to_have_text(re.compile(r"in (59|60) min"))
    key = page.locator("#concurrency-key-table tr[data-key='customer:42']")
    expect(key.locator(".active")).to_have_text(re.compile(r"1 / 1"), timeout=SLOW)
    expect(key.locator(".waiting")).to_have_text("2 waiting")
    expect(key).to_contain_text("at limit")
    screenshot(page, "limits")

    # a prefix narrows the keys
    page.fill("#key-prefix", "tenant:")
    page.click("#key-filter button[type=submit]")
    expect(page).to_have_url(re.compile(r"#/limits\?prefix=tenant"))
    expect(page.locator("#concurrency-key-table tbody")).to_contain_text("No key in use starts")
    page.fill("#key-prefix", "customer:")
    page.click("#key-filter button[type=submit]")
    expect(key).to_be_visible()

    # each count opens the tasks waiting on it, with their reason
    key.locator(".waiting a").click()
    expect(page).to_have_url(re.compile(r"#/tasks\?.*concurrency_key=customer%3A42"))
    expect(page.locator("#flow-filter")).to_contain_text("Concurrency key: customer:42")
    rows = page.locator("#task-table tbody tr[data-id]")
    expect(rows).to_have_count(2)
    assert sorted(rows.evaluate_all("rows => rows.map(r => r.dataset.id)")) == sorted(
        t["id"] for t in queued
    )
    expect(rows.first).to_contain_text("its concurrency key has its limit of tasks running")

    page.goto("/#/limits")
    rate.locator(".waiting a").click()
    expect(page).to_have_url(re.compile(r"#/tasks\?.*rate_limit=crm-api"))
    expect(rows).to_have_count(2)
    assert sorted(rows.evaluate_all("rows => rows.map(r => r.dataset.id)")) == sorted(
        t["id"] for t in crm
    )
    expect(rows.first).to_contain_text("a rate limit it names has no units left")
    # the status filter keeps the flow filter; removing it shows every task
    page.locator("#flow-filter a[aria-label^='Remove']").click()
    expect(page).to_have_url(re.compile(r"#/tasks\?status=pending$"))
    expect(rows).to_have_count(4)  # crm-2, crm-3, key-2, key-3
    opened.touch()


def test_a_waiting_task_says_why_with_its_key_and_rate_limit(
    page: Page, server: ServerProcess, tmp_path: Path
) -> None:
    opened = tmp_path / "open"
    running = create(
        server,
        name="holder",
        payload=gate(opened),
        concurrency_key="customer:7",
        max_concurrent_per_key=1,
    )
    server.wait_for("the holder to run", lambda: status_of(server, running["id"]) == "running")
    waiting = create(server, name="behind", concurrency_key="customer:7", max_concurrent_per_key=1)

    page.goto(f"/#/tasks/{waiting['id']}")
    expect(page.locator("#pending-reason")).to_contain_text(
        "its concurrency key has its limit of tasks running"
    )
    expect(page.locator("#wait-detail")).to_have_text(
        "Key customer:7: 1 of 1 active, 1 waiting", timeout=SLOW
    )
    expect(page.locator("#concurrency-key")).to_contain_text(
        "customer:7 (1 of 1 active, 1 waiting)"
    )
    screenshot(page, "task-waiting-on-key")
    opened.touch()  # the holder ends: the task runs and its page follows
    expect(page.locator("#task-status .badge")).to_have_text("succeeded", timeout=SLOW)
    expect(page.locator("#pending-reason")).to_have_count(0)

    server.api("POST", "/api/rate-limits", json={"name": "mail", "limit": 1, "per_seconds": 600})
    uses = [{"name": "mail", "units": 1}]
    first = create(server, name="mail-1", rate_limits=uses)
    server.wait_for("the first mail", lambda: status_of(server, first["id"]) == "succeeded")
    limited = create(server, name="mail-2", rate_limits=uses)
    page.goto(f"/#/tasks/{limited['id']}")
    expect(page.locator("#pending-reason")).to_contain_text(
        "a rate limit it names has no units left in its window"
    )
    detail = page.locator("#wait-detail")
    expect(detail).to_contain_text("Rate limit mail (1 of 1 per 600 s used); it can run from")
    expect(detail.locator("#rate-limited-until")).to_contain_text(re.compile(r"in (9|10) min"))
    expect(page.locator("#task-rate-limits")).to_contain_text("mail 1 unit per dispatch")
    screenshot(page, "task-rate-limited")
    detail.get_by_role("link", name="mail").click()
    expect(page).to_have_url(re.compile(r"#/tasks\?.*rate_limit=mail"))
    expect(page.locator("#task-table tbody tr[data-id]")).to_have_count(1)


def test_a_broadcast_parent_lists_its_children_per_agent(page: Page, server: ServerProcess) -> None:
    [agent] = server.api("GET", "/api/agents")["items"]
    parent = create(server, name="everywhere", dispatch="all", payload={"command": "echo hi"})
    assert parent["status"] == "waiting"
    server.wait_for("the broadcast to end", lambda: status_of(server, parent["id"]) == "succeeded")
    [child] = server.api("GET", f"/api/tasks/{parent['id']}/children")["items"]

    page.goto(f"/#/tasks/{parent['id']}")
    table = page.locator("#broadcast-children")
    expect(table).to_contain_text("Agents (broadcast)")
    expect(table).to_contain_text("succeeds when every agent succeeds")
    row = table.locator(f"tr[data-id='{child['id']}']")
    expect(row).to_have_attribute("data-agent", agent["name"])
    expect(row.locator(".badge")).to_have_text("succeeded")
    expect(row.locator(".outcome")).to_contain_text("hi")
    screenshot(page, "broadcast-parent")
    row.get_by_role("link", name=agent["name"]).click()
    expect(page).to_have_url(re.compile(f"#/tasks/{child['id']}$"))
    expect(page.locator("#broadcast-parent")).to_have_text(parent["id"][:8])
    expect(page.locator("#task-details")).to_contain_text(f"Pinned to{agent['name']}")
    expect(page.locator("#broadcast-children")).to_be_hidden()
