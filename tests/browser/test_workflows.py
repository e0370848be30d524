"""The console's workflow pages in headless Chromium, against a real ``hetuflow-server start
--local-agent`` whose agent runs the steps (shell commands): the list, the DAG drawn live
(nodes recoloured as steps move, without reloading), a node's task page, and cancel; a
mapped step (``map_over``) with its children, the list coming from a real ``hetuflow-agent``
running ``map_handlers``."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Locator, Page, expect

from .conftest import screenshot
from .server import ServerProcess

pytestmark = pytest.mark.browser

SLOW = 30_000  # milliseconds


def gate(path: Path) -> dict[str, Any]:
    """A shell step that runs until ``path`` exists: the test decides when it ends."""
    return {"command": f"while [ ! -e '{path}' ]; do sleep 0.05; done; echo opened"}


def shell(name: str, command: str, *depends_on: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "task_type": "shell",
        "payload": {"command": command},
        "depends_on": list(depends_on),
        **extra,
    }


def stroke(page: Page, step: str) -> str:
    colour: str = page.locator(f"#workflow-dag .node[data-step='{step}'] rect").first.evaluate(
        "rect => getComputedStyle(rect).stroke"
    )
    return colour


def test_the_dag_is_drawn_and_recoloured_live_as_steps_run(
    page: Page, server: ServerProcess, tmp_path: Path
) -> None:
    opened = tmp_path / "open"
    steps = [
        {"name": "fetch", "task_type": "shell", "payload": gate(opened)},
        *(shell(f"transform-{n}", f"echo part {n}", "fetch") for n in range(3)),
        shell("aggregate", "echo total", "transform-0", "transform-1", "transform-2"),
        shell("broken", "echo broken >&2; exit 3", "fetch"),
        shell("after-broken", "echo never", "broken"),
        shell("clean-up", "echo cleaning", "aggregate", "after-broken", run_if="all_done"),
    ]
    workflow = server.api(
        "POST",
        "/api/workflows",
        json={"name": "squares-report", "on_failure": "continue", "steps": steps},
    )

    page.goto("/#/workflows")
    row = page.locator(f"#workflow-table tr[data-id='{workflow['id']}']")
    expect(row).to_contain_text("squares-report")
    expect(row.locator(".badge")).to_have_text("running")
    row.locator("a").click()
    expect(page).to_have_url(re.compile(f"#/workflows/{workflow['id']}$"))

    dag = page.locator("#workflow-dag")

    def node(step: str) -> Locator:
        return dag.locator(f".node[data-step='{step}']")

    expect(dag.locator(".node")).to_have_count(len(steps))
    # One edge per depends_on entry.
    expect(dag.locator("path.edge")).to_have_count(3 + 3 + 1 + 1 + 2)
    expect(node("fetch")).to_have_attribute("data-status", "running", timeout=SLOW)
    expect(node("aggregate")).to_have_attribute("data-status", "waiting")
    # Layers: fetch left of the transforms, left of aggregate, left of clean-up.
    xs = {}
    for name in ("fetch", "transform-1", "aggregate", "clean-up"):
        box = node(name).locator("rect").first.bounding_box()
        assert box is not None
        xs[name] = box["x"]
    assert xs["fetch"] < xs["transform-1"] < xs["aggregate"] < xs["clean-up"], xs
    running_colour = stroke(page, "fetch")
    assert running_colour != stroke(page, "aggregate")  # running and waiting look different
    page.evaluate("window.notReloaded = true")
    screenshot(page, "workflow-running")

    opened.touch()
    expect(node("fetch")).to_have_attribute("data-status", "succeeded", timeout=SLOW)
    for name in ("transform-0", "transform-1", "transform-2", "aggregate", "clean-up"):
        expect(node(name)).to_have_attribute("data-status", "succeeded", timeout=SLOW)
    expect(node("broken")).to_have_attribute("data-status", "failed")
    expect(node("after-broken")).to_have_attribute("data-status", "skipped")
    expect(node("after-broken").locator(".node-status")).to_have_text("skipped")
    expect(page.locator("#workflow-status .badge")).to_have_text("failed", timeout=SLOW)
    assert stroke(page, "fetch") not in (running_colour, stroke(page, "broken"))
    assert page.evaluate("window.notReloaded") is True, "updated live, not by reloading"
    expect(page.locator("#workflow-steps tr[data-step='after-broken']")).to_contain_text(
        "skipped: step 'broken' failed"
    )
    expect(page.locator("#cancel-workflow")).to_have_count(0)  # nothing left to cancel
    screenshot(page, "workflow-finished")

    # A node opens its step's task: logs, attempts, and the way back.
    node("broken").click()
    expect(page).to_have_url(re.compile(r"#/tasks/[0-9a-f-]{36}\?workflow="))
    expect(page.locator("#task-status .badge")).to_have_text("failed")
    expect(page.locator("#task-logs")).to_contain_text("broken")
    expect(page.locator("#task-attempts li")).to_have_count(1)
    page.click("#task-workflow")
    expect(page).to_have_url(re.compile(f"#/workflows/{workflow['id']}$"))
    expect(dag.locator(".node")).to_have_count(len(steps))


def test_cancel_a_workflow_from_its_page(page: Page, server: ServerProcess, tmp_path: Path) -> None:
    steps = [
        {"name": "slow", "task_type": "shell", "payload": gate(tmp_path / "never")},
        shell("next", "echo next", "slow"),
    ]
    workflow = server.api("POST", "/api/workflows", json={"name": "to-cancel", "steps": steps})
    page.goto(f"/#/workflows/{workflow['id']}")
    dag = page.locator("#workflow-dag")
    expect(dag.locator(".node[data-step='slow']")).to_have_attribute(
        "data-status", "running", timeout=SLOW
    )
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#cancel-workflow")
    expect(page.locator("#workflow-status .badge")).to_have_text("cancelled")
    expect(dag.locator(".node[data-step='next']")).to_have_attribute("data-status", "cancelled")
    # The running step is stopped on its agent; the stream brings its end.
    expect(dag.locator(".node[data-step='slow']")).to_have_attribute(
        "data-status", "cancelled", timeout=SLOW
    )
    assert server.api("GET", f"/api/workflows/{workflow['id']}")["status"] == "cancelled"
    expect(page.locator("#cancel-workflow")).to_have_count(0)


@contextlib.contextmanager
def python_agent(server: ServerProcess, workdir: Path) -> Iterator[None]:
    """A real ``hetuflow-agent`` beside the server's local shell agent, running
    ``map_handlers`` (the list a fan-out needs); stopped (SIGTERM, then SIGKILL) after."""
    ws_url = server.url.replace("http://", "ws://", 1) + "/ws"
    argv = [str(Path(sys.executable).with_name("hetuflow-agent")), "start"]
    argv += ["--server", ws_url, "--name", "lister", "--task-types", "browser_items"]
    argv += ["--module", "map_handlers", "--no-shell"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("HETUFLOW_")}
    log = workdir / "lister.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            argv,
            cwd=Path(__file__).parent,  # --module map_handlers imports from here
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        yield
    except BaseException:
        print(f"--- lister agent log\n{log.read_text(errors='replace')}")
        raise
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_a_mapped_step_shows_its_children_and_a_child_opens_its_task(
    page: Page, server: ServerProcess, tmp_path: Path
) -> None:
    steps = [
        {"name": "words", "task_type": "browser_items", "payload": {"count": 3}},
        {
            "name": "shout",
            "task_type": "shell",
            # A child's payload is this one plus its item; the shell runs the command only.
            "payload": {"command": "echo mapped child"},
            "depends_on": ["words"],
            "map_over": "words",
        },
        shell("done", "echo all shouted", "shout"),
    ]
    with python_agent(server, tmp_path):
        workflow = server.api("POST", "/api/workflows", json={"name": "mapped", "steps": steps})
        server.wait_for(
            "the workflow to end",
            lambda: server.api("GET", f"/api/workflows/{workflow['id']}")["status"] != "running",
            SLOW / 1000,
        )
    shown = server.api("GET", f"/api/workflows/{workflow['id']}")
    assert shown["status"] == "succeeded", shown
    children = [step for step in shown["steps"] if step["map_of"] == "shout"]
    assert [child["name"] for child in children] == ["shout[0]", "shout[1]", "shout[2]"]

    page.goto(f"/#/workflows/{workflow['id']}")
    dag = page.locator("#workflow-dag")
    expect(page.locator("#workflow-status .badge")).to_have_text("succeeded")
    # The root, the mapped step, its three children and the fan-in.
    expect(dag.locator(".node")).to_have_count(6)
    for name in ("words", "shout", "shout[0]", "shout[1]", "shout[2]", "done"):
        expect(dag.locator(f".node[data-step='{name}']")).to_have_attribute(
            "data-status", "succeeded"
        )
    # The children sit between the mapped-over step and the mapped step, which collects them.
    xs = {}
    for name in ("words", "shout[1]", "shout", "done"):
        box = dag.locator(f".node[data-step='{name}'] rect").first.bounding_box()
        assert box is not None
        xs[name] = box["x"]
    assert xs["words"] < xs["shout[1]"] < xs["shout"] < xs["done"], xs
    assert stroke(page, "shout[0]") == stroke(page, "done")  # coloured as succeeded
    screenshot(page, "workflow-mapped")

    dag.locator(".node[data-step='shout[1]']").click()
    expect(page).to_have_url(re.compile(f"#/tasks/{children[1]['task']['id']}\\?workflow="))
    expect(page.locator("#task-status .badge")).to_have_text("succeeded")
    expect(page.locator("#task-logs")).to_contain_text("mapped child")
    expect(page.locator("#task-attempts li")).to_have_count(1)
