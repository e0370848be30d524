"""One agent's page in headless Chromium, against a real ``hetuflow-server start
--local-agent``: its counts, recent tasks, uptime, capabilities and slots in use, and its
drain / resume, disable / enable and delete buttons."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from .conftest import screenshot
from .server import ServerProcess

pytestmark = pytest.mark.browser

SLOW = 30_000  # milliseconds


def shell(server: ServerProcess, name: str, command: str) -> str:
    task = server.api(
        "POST",
        "/api/tasks",
        json={"task_type": "shell", "name": name, "payload": {"command": command}},
    )
    task_id: str = task["id"]
    return task_id


def test_the_agent_page_shows_what_it_ran_and_its_slots(
    page: Page, server: ServerProcess, tmp_path: Path
) -> None:
    [agent] = server.api("GET", "/api/agents")["items"]
    ok = shell(server, "fine", "echo fine")
    bad = shell(server, "broken", "exit 4")
    for task_id, status in ((ok, "succeeded"), (bad, "failed")):
        server.wait_for(
            f"the task to be {status}",
            lambda task_id=task_id, status=status: (
                server.api("GET", f"/api/tasks/{task_id}")["status"] == status
            ),
        )
    opened = tmp_path / "open"
    held = shell(server, "holding", f"while [ ! -e '{opened}' ]; do sleep 0.05; done")

    page.goto("/#/agents")
    page.locator(f"#agent-table tr[data-id='{agent['id']}'] a.agent-link").click()
    expect(page).to_have_url(re.compile(f"#/agents/{agent['id']}$"))
    expect(page.locator("#agent-name")).to_contain_text(agent["name"])
    expect(page.locator("#agent-status .badge").first).to_have_text("online")
    details = page.locator("#agent-details")
    expect(details.locator("dt:text-is('Task types') + dd")).to_contain_text("shell")
    expect(page.locator("#agent-uptime")).to_contain_text(re.compile(r"^\d+ (s|min)"))
    expect(page.locator("#agent-slots-now")).to_have_text(
        f"1 of {agent['max_concurrent_tasks']} in use", timeout=SLOW
    )
    expect(page.locator("#agent-processed .n")).to_have_text("2")
    expect(page.locator("#agent-failed .n")).to_have_text("1")
    tasks = page.locator("#agent-tasks tbody")
    for task_id in (ok, bad, held):
        expect(tasks.locator(f"tr[data-id='{task_id}']")).to_have_count(1)
    expect(tasks.locator(f"tr[data-id='{held}'] .badge")).to_have_text("running")
    expect(page.locator("#agent-slots svg")).to_have_count(1, timeout=SLOW)  # two samples

    opened.touch()
    expect(page.locator("#agent-processed .n")).to_have_text("3", timeout=SLOW)
    expect(page.locator("#agent-slots-now")).to_have_text(
        f"0 of {agent['max_concurrent_tasks']} in use", timeout=SLOW
    )
    screenshot(page, "agent-page")

    page.click("#agent-disable")
    expect(page.locator("#agent-status")).to_contain_text("disabled")
    assert server.api("GET", f"/api/agents/{agent['id']}")["enabled"] is False
    page.click("#agent-enable")
    expect(page.locator("#agent-status")).not_to_contain_text("disabled")
    assert server.api("GET", f"/api/agents/{agent['id']}")["enabled"] is True

    page.click("#agent-drain")
    expect(page.locator("#agent-status .badge").first).to_have_text("draining")
    assert server.api("GET", f"/api/agents/{agent['id']}")["status"] == "draining"
    page.click("#agent-resume")
    expect(page.locator("#agent-status .badge").first).to_have_text("online")
    expect(page.locator("#agent-delete")).to_have_count(0)  # only offline agents go

    page.click("#agent-processed")
    expect(page).to_have_url(re.compile(rf"#/tasks\?agent_id={agent['id']}&status=succeeded"))
    expect(page.locator("#task-table tbody tr")).to_have_count(3)


def test_delete_an_offline_agent_from_its_page(page: Page, server: ServerProcess) -> None:
    old = server.api("POST", "/api/agents", json={"name": "old-box", "capabilities": ["gpu"]})
    page.goto(f"/#/agents/{old['id']}")
    expect(page.locator("#agent-status .badge").first).to_have_text("offline")
    expect(page.locator("#agent-uptime")).to_have_text("not connected")
    expect(page.locator("#agent-tasks tbody")).to_contain_text("It has run no task yet.")
    expect(page.locator("#agent-drain")).to_have_count(0)
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#agent-delete")
    expect(page).to_have_url(re.compile(r"#/agents$"))
    expect(page.locator("#toast")).to_have_text("old-box is deleted")
    names = [a["name"] for a in server.api("GET", "/api/agents")["items"]]
    assert "old-box" not in names
