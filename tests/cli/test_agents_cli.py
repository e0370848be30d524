"""Stale agents from the command line: disable-agent, enable-agent and delete-agent (by id or
by name) against a real ``hetuflow-server start`` process, run by bash as a user types them."""

from __future__ import annotations

import json
import uuid
from typing import Any

from click.testing import CliRunner
from websockets.sync.client import connect

from hetuflow.cli.server import main

from .conftest import Running


def agents(server: Running) -> dict[str, dict[str, Any]]:
    listed = server.run("./hetuflow-server list-agents --json")
    assert listed.returncode == 0, listed.stderr
    return {agent["name"]: agent for agent in json.loads(listed.stdout)}


def test_disable_enable_and_delete_an_offline_agent(server: Running) -> None:
    created = server.run("./hetuflow-server create-agent --name stale-1 --json")
    assert created.returncode == 0, created.stderr
    agent_id = json.loads(created.stdout)["id"]

    disabled = server.run("./hetuflow-server disable-agent stale-1")
    assert disabled.returncode == 0, disabled.stderr
    assert disabled.stdout.split() == ["disabled", "agent", "stale-1", agent_id]
    assert agents(server)["stale-1"]["enabled"] is False
    table = server.run("./hetuflow-server list-agents")
    assert "(disabled)" in next(line for line in table.stdout.splitlines() if "stale-1" in line)

    enabled = server.run(f"./hetuflow-server enable-agent {agent_id} --json")
    assert enabled.returncode == 0, enabled.stderr
    assert json.loads(enabled.stdout)["enabled"] is True

    deleted = server.run("./hetuflow-server delete-agent stale-1")
    assert (deleted.returncode, deleted.stdout.strip()) == (0, "deleted agent stale-1")
    assert "stale-1" not in agents(server)

    again = server.run("./hetuflow-server delete-agent stale-1")
    assert again.returncode == 1
    assert again.stderr == "error: no agent named 'stale-1' (nor with such an id)\n"
    by_id = server.run(f"./hetuflow-server disable-agent {agent_id}")
    assert by_id.returncode == 1
    assert by_id.stderr.startswith("error: ")
    assert "does not exist" in by_id.stderr
    assert by_id.stderr.count("\n") == 1


def test_a_connected_agent_is_disabled_but_not_deleted(server: Running) -> None:
    name = f"busy-{uuid.uuid4().hex[:6]}"
    ws_url = server.url.replace("http://", "ws://") + "/ws"
    with connect(ws_url, open_timeout=5) as ws:
        hello = {
            "type": "AgentCapabilities",
            "name": name,
            "capabilities": {
                "capabilities": [],
                "max_concurrent_tasks": 1,
                "supported_task_types": ["shell"],
            },
        }
        ws.send(json.dumps(hello))
        assert json.loads(ws.recv(timeout=5))["type"] == "AgentRegistered"

        refused = server.run(f"./hetuflow-server delete-agent {name}")
        assert refused.returncode == 1
        assert refused.stderr.startswith(f"error: agent {name} is connected (online)")
        assert name in agents(server)

        disabled = server.run(f"./hetuflow-server disable-agent {name} --json")
        assert disabled.returncode == 0, disabled.stderr
        assert (json.loads(disabled.stdout)["enabled"], agents(server)[name]["status"]) == (
            False,
            "online",
        )


def test_help_lists_the_commands() -> None:
    result = CliRunner().invoke(main, ["--help"])
    for command in ("delete-agent", "disable-agent", "enable-agent"):
        assert command in result.output
