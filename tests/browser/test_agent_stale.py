"""The console's Agents page disables, enables and deletes agents (a button per row): an
offline agent can be deleted, a connected one cannot (no Delete button); against a real
``hetuflow-server start --local-agent``."""

from __future__ import annotations

from playwright.sync_api import Dialog, Page, expect

from .conftest import screenshot
from .server import ServerProcess


def test_disable_enable_and_delete_buttons(page: Page, server: ServerProcess) -> None:
    [local] = server.api("GET", "/api/agents")["items"]
    stale = server.api("POST", "/api/agents", json={"name": "stale-agent"})
    page.goto("/#/agents")
    row = page.locator(f"#agent-table tr[data-id='{stale['id']}']")
    live_row = page.locator(f"#agent-table tr[data-id='{local['id']}']")
    expect(row.locator(".badge").first).to_have_text("offline")
    expect(live_row.get_by_role("button", name="Disable")).to_be_visible()
    expect(live_row.get_by_role("button", name="Delete")).to_have_count(0)

    row.get_by_role("button", name="Disable").click()
    expect(row.locator(".badge", has_text="disabled")).to_be_visible()
    assert server.api("GET", f"/api/agents/{stale['id']}")["enabled"] is False
    screenshot(page, "agents-disabled")
    row.get_by_role("button", name="Enable").click()
    expect(row.get_by_role("button", name="Disable")).to_be_visible()
    assert server.api("GET", f"/api/agents/{stale['id']}")["enabled"] is True

    dialogs: list[str] = []

    def accept(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.accept()

    page.once("dialog", accept)
    row.get_by_role("button", name="Delete").click()
    expect(row).to_have_count(0)
    assert dialogs == [
        "Delete the agent stale-agent? Its tasks' history is kept;"
        " a process reconnecting as it is refused."
    ]
    names = [agent["name"] for agent in server.api("GET", "/api/agents")["items"]]
    assert names == [local["name"]]
