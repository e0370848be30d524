"""The console's Agents page drains and resumes an agent (its buttons appear because
``/openapi.json`` lists the routes), against a real ``hetuflow-server start --local-agent``."""

from __future__ import annotations

from playwright.sync_api import Page, expect

from .conftest import screenshot
from .server import ServerProcess


def test_drain_and_resume_buttons_change_what_the_agent_is_given(
    page: Page, server: ServerProcess
) -> None:
    [agent] = server.api("GET", "/api/agents")["items"]
    page.goto("/#/agents")
    row = page.locator(f"#agent-table tr[data-id='{agent['id']}']")
    expect(row.locator(".badge").first).to_have_text("online")

    row.get_by_role("button", name="Drain").click()
    expect(row.locator(".badge").first).to_have_text("draining")
    assert server.api("GET", f"/api/agents/{agent['id']}")["status"] == "draining"
    task = server.api(
        "POST", "/api/tasks", json={"task_type": "shell", "payload": {"command": "true"}}
    )
    screenshot(page, "agents-draining")
    waiting = server.api("GET", f"/api/tasks/{task['id']}")
    assert (waiting["status"], waiting["pending_reason"]) == ("pending", "no_agent_for_task_type")

    row.get_by_role("button", name="Resume").click()
    expect(row.locator(".badge").first).to_have_text("online")
    server.wait_for(
        "the task to run on the resumed agent",
        lambda: server.api("GET", f"/api/tasks/{task['id']}")["status"] == "succeeded",
    )
