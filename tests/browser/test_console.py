"""The console, driven in headless Chromium against a real server with its local agent."""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, Route, expect

from .conftest import screenshot
from .server import ServerProcess

pytestmark = pytest.mark.browser

TASK_URL = re.compile(r"#/tasks/[0-9a-f-]{36}$")
CRON_URL = re.compile(r"#/cron/[0-9a-f-]{36}$")
SLOW_SECONDS = 30_000  # milliseconds, for Playwright


def create_task(server: ServerProcess, **body: Any) -> dict[str, Any]:
    task: dict[str, Any] = server.api("POST", "/api/tasks", json=body)
    return task


def test_task_created_from_the_form_finishes_with_its_log_lines(
    page: Page, server: ServerProcess
) -> None:
    page.goto("/#/tasks/new")
    page.fill("[name=task_type]", "shell")
    page.fill("[name=name]", "browser-hello")
    page.select_option("[name=priority]", "high")

    # The payload is checked as it is typed: broken JSON disables the button and says where.
    page.fill("[name=payload]", '{"command": "echo one"')
    expect(page.locator("#payload-hint")).to_have_class(re.compile(r"\bbad\b"))
    expect(page.locator("#payload-hint")).to_contain_text("line 1")
    expect(page.locator("#task-form button[type=submit]")).to_be_disabled()
    page.fill("[name=payload]", "[1, 2]")
    expect(page.locator("#payload-hint")).to_have_text("the payload must be a JSON object ({...})")

    page.fill(
        "[name=payload]",
        '{"command": "echo hello-from-browser; echo second-line; echo warned >&2"}',
    )
    expect(page.locator("#payload-hint")).to_have_text("Valid JSON object")
    screenshot(page, "task-form")
    page.click("#task-form button[type=submit]")

    page.wait_for_url(TASK_URL)
    expect(page.locator("#task-status .badge")).to_have_text("succeeded", timeout=SLOW_SECONDS)
    logs = page.locator("#task-logs")
    expect(logs).to_contain_text("hello-from-browser")
    expect(logs).to_contain_text("second-line")
    expect(logs.locator(".stderr")).to_contain_text("warned")
    expect(page.locator("#log-state")).to_contain_text("task succeeded")
    expect(page.locator("#task-result")).to_contain_text('"exit_code": 0')
    expect(page.locator("#task-attempts li")).to_have_count(1)
    expect(page.locator("#task-attempts li").first).to_contain_text("succeeded")
    screenshot(page, "task-succeeded")

    task_id = page.url.rsplit("/", 1)[1]
    task = server.api("GET", f"/api/tasks/{task_id}")
    assert (task["name"], task["priority"], task["status"]) == (
        "browser-hello",
        "high",
        "succeeded",
    )

    # The list finds it by text and by status.
    page.goto("/#/tasks?q=browser-hello&status=succeeded")
    expect(page.locator(f"#task-table tr[data-id='{task_id}']")).to_be_visible()
    expect(page.locator("#task-table tbody tr")).to_have_count(1)
    screenshot(page, "tasks")
    page.goto("/#/tasks?status=failed")
    expect(page.locator("#task-table tbody")).to_contain_text("No task matches.")


def test_cancel_stops_a_running_task(page: Page, server: ServerProcess) -> None:
    task = create_task(
        server, name="long-sleep", task_type="shell", payload={"command": "echo started; sleep 600"}
    )
    page.goto(f"/#/tasks/{task['id']}")
    expect(page.locator("#task-status .badge")).to_have_text("running", timeout=SLOW_SECONDS)
    expect(page.locator("#task-logs")).to_contain_text("started")
    screenshot(page, "task-running")

    page.click("#cancel-task")
    expect(page.locator("#task-status .badge")).to_have_text("cancelled", timeout=SLOW_SECONDS)
    expect(page.locator("#cancel-task")).to_have_count(0)
    expect(page.locator("#retry-task")).to_be_visible()
    assert server.api("GET", f"/api/tasks/{task['id']}")["status"] == "cancelled"
    screenshot(page, "task-cancelled")

    # Retry makes a new task with the same spec and opens it.
    page.click("#retry-task")
    page.wait_for_url(lambda url: TASK_URL.search(url) is not None and task["id"] not in url)
    expect(page.locator("#task-name")).to_contain_text("long-sleep")


def test_dashboard_follows_tasks_live(page: Page, server: ServerProcess) -> None:
    page.goto("/")
    expect(page.locator("#live")).to_have_text("live")
    expect(page.locator("#status-tiles .tile")).to_have_count(
        10
    )  # waiting and skipped too (workflow steps)
    expect(page.locator("#agents-online .n")).to_have_text("1")
    succeeded = page.locator("#status-tiles [data-status=succeeded] .n")
    expect(succeeded).to_have_text("0")

    # No reload: the numbers move as tasks are created elsewhere and finish.
    create_task(server, task_type="shell", payload={"command": "true"})
    create_task(server, task_type="shell", payload={"command": "exit 4"})
    expect(succeeded).to_have_text("1", timeout=SLOW_SECONDS)
    expect(page.locator("#status-tiles [data-status=failed] .n")).to_have_text("1")
    expect(page.locator("#throughput-total")).to_have_text("2 finished in the last hour")
    expect(page.locator("#failure-chart")).to_contain_text("1 of 2 failed or timed out (50%)")
    expect(page.locator("#throughput-chart svg rect")).to_have_count(2)
    screenshot(page, "dashboard")


def test_cron_job_form_validates_and_previews_next_fires(page: Page, server: ServerProcess) -> None:
    page.goto("/#/cron/new")
    page.fill("[name=name]", "nightly-report")
    page.fill("[name=timezone]", "America/New_York")

    page.fill("[name=cron_expression]", "61 * * * *")
    expect(page.locator("#expression-hint")).to_have_class(re.compile(r"\bbad\b"))
    expect(page.locator("#expression-hint")).to_contain_text("61 is outside 0-59")
    expect(page.locator("[name=cron_expression]")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#cron-form button[type=submit]")).to_be_disabled()
    expect(page.locator("#cron-preview li")).to_have_count(0)

    page.fill("[name=cron_expression]", "30 2 * * *")
    expect(page.locator("#expression-hint")).to_have_text("Valid expression. Next fires:")
    expect(page.locator("#cron-preview li")).to_have_count(5)
    expect(page.locator("#cron-preview li").first).to_contain_text("2:30:00")
    expect(page.locator("#cron-preview li").first).to_contain_text("(America/New_York)")
    page.fill("[name=task_type]", "shell")
    page.fill("[name=payload]", '{"command": "echo report"}')
    screenshot(page, "cron-form")
    page.click("#cron-form button[type=submit]")

    page.wait_for_url(CRON_URL)
    fires = page.locator("#next-fires li")
    expect(fires).to_have_count(10)
    expect(fires.first).to_contain_text("2:30:00")
    expect(fires.first).to_contain_text("Asia/Shanghai")  # the viewer's own time zone
    screenshot(page, "cron-job")

    job_id = page.url.rsplit("/", 1)[1]
    job = server.api("GET", f"/api/cron-jobs/{job_id}")
    assert (job["cron_expression"], job["timezone"], job["enabled"]) == (
        "30 2 * * *",
        "America/New_York",
        True,
    )

    page.goto("/#/cron")
    row = page.locator(f"#cron-table tr[data-id='{job_id}']")
    expect(row.locator(".next-fire")).to_contain_text("(America/New_York)")
    screenshot(page, "cron-jobs")
    row.locator("button.disable").click()
    expect(row.locator("button.enable")).to_be_visible()
    assert server.api("GET", f"/api/cron-jobs/{job_id}")["enabled"] is False

    # Run now fires a task at once even while disabled.
    row.locator("button.run-now").click()
    server.wait_for(
        "the task fired by Run now",
        lambda: server.api("GET", "/api/tasks", params={"cron_job_id": job_id})["total"] == 1,
    )


def test_agents_page_shows_the_local_agent(page: Page, server: ServerProcess) -> None:
    agent = server.api("GET", "/api/agents")["items"][0]
    page.goto("/#/agents")
    row = page.locator(f"#agent-table tr[data-id='{agent['id']}']")
    expect(row).to_contain_text(agent["name"])
    expect(row.locator(".badge").first).to_have_text("online")
    expect(row).to_contain_text(f"0/{agent['max_concurrent_tasks']}")
    expect(row).to_contain_text(re.compile(r"\d+ s ago"))
    for task_type in agent["supported_task_types"]:
        expect(row).to_contain_text(task_type)
    screenshot(page, "agents")


@pytest.mark.parametrize("theme", ["light", "dark"])
@pytest.mark.parametrize("width", [390, 1280])
def test_every_page_fits_the_screen(
    browser: Browser, server: ServerProcess, theme: str, width: int
) -> None:
    """No page scrolls sideways at phone or desktop width, in either theme."""
    task = create_task(server, name="layout", task_type="shell", payload={"command": "echo x"})
    context = browser.new_context(
        base_url=server.url,
        viewport={"width": width, "height": 800},
        color_scheme="dark" if theme == "dark" else "light",
    )
    workflow = server.api(
        "POST",
        "/api/workflows",
        json={
            "name": "layout-workflow",
            "steps": [
                {"name": "first", "task_type": "shell", "payload": {"command": "true"}},
                *(
                    {"name": f"middle-{n}", "task_type": "shell", "depends_on": ["first"]}
                    for n in range(4)
                ),
                {"name": "last", "task_type": "nobody-type", "depends_on": ["middle-0"]},
            ],
        },
    )
    [agent] = server.api("GET", "/api/agents")["items"]
    job = server.api(
        "POST",
        "/api/cron-jobs",
        json={"name": "layout-job", "cron_expression": "0 3 * * *", "task_type": "shell"},
    )
    page = context.new_page()
    try:
        pages = {
            "dashboard": ("/", "#status-tiles .tile"),
            "tasks": ("/#/tasks", "#task-table tbody tr"),
            "task": (f"/#/tasks/{task['id']}", "#task-details dt"),
            "task-form": ("/#/tasks/new", "#task-form"),
            "agents": ("/#/agents", "#agent-table tbody tr[data-id]"),
            "cron-jobs": ("/#/cron", "#cron-table tbody tr"),
            "cron-form": ("/#/cron/new", "#cron-preview li"),
            "cron-job": (f"/#/cron/{job['id']}", "#tick-history h2"),
            "workflows": ("/#/workflows", "#workflow-table tbody tr[data-id]"),
            "workflow": (f"/#/workflows/{workflow['id']}", "#workflow-dag .node"),
            "agent": (f"/#/agents/{agent['id']}", "#agent-details dt"),
            "limits": ("/#/limits", "#rate-limit-table tbody tr"),
        }
        for name, (path, ready) in pages.items():
            page.goto(path)
            expect(page.locator(ready).first).to_be_visible()
            assert page.evaluate("document.documentElement.dataset.theme") == theme
            overflow = page.evaluate(
                "document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            assert overflow <= 0, f"{name} at {width}px ({theme}) is {overflow}px too wide"
            screenshot(page, f"{name}-{width}-{theme}")
    finally:
        context.close()


def test_theme_toggle_is_remembered(page: Page) -> None:
    page.goto("/")
    start = page.evaluate("document.documentElement.dataset.theme")
    page.click("#theme-toggle")
    flipped = "dark" if start == "light" else "light"
    assert page.evaluate("document.documentElement.dataset.theme") == flipped
    page.reload()
    assert page.evaluate("document.documentElement.dataset.theme") == flipped


def test_a_401_asks_for_a_token_and_sends_it_from_then_on(page: Page) -> None:
    """Auth comes later; the console already handles it: token prompt, then Bearer header."""
    seen: list[str | None] = []

    def require_token(route: Route) -> None:
        header = route.request.headers.get("authorization")
        seen.append(header)
        if header != "Bearer s3cret":
            route.fulfill(
                status=401,
                content_type="application/json",
                body='{"error": {"code": "unauthorized", "message": "token", "field": null}}',
            )
        else:
            route.continue_()

    page.route("**/api/agents", require_token)
    page.goto("/#/agents")
    dialog = page.locator("#token-dialog")
    expect(dialog).to_be_visible()
    page.fill("#token-input", "s3cret")
    page.click("#token-form button[type=submit]")
    expect(dialog).to_be_hidden()
    expect(page.locator("#agent-table tbody tr[data-id]")).to_have_count(1)
    assert seen[0] is None
    assert "Bearer s3cret" in seen
    assert page.evaluate("sessionStorage.getItem('hetuflow.token')") == "s3cret"
