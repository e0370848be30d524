"""Broadcasts from the command line, against a real ``hetuflow-server start`` process run by
bash: no agent matching is a clear error that creates nothing; ``--broadcast-policy`` needs
``--all-agents``. (A broadcast that runs on real agents: tests/acceptance/test_broadcast.py.)"""

from __future__ import annotations

import json

from .conftest import Running


def test_a_broadcast_without_agents_and_a_policy_alone_are_refused(server: Running) -> None:
    nobody = server.run(
        "./hetuflow-server dispatch-task --task-type shell --payload '{}' --all-agents"
    )
    assert nobody.returncode == 1, nobody.stdout
    assert nobody.stderr.startswith("error: no online, enabled agent runs task type 'shell'")
    assert "nothing was created" in nobody.stderr

    alone = server.run("./hetuflow-server create-task --task-type shell --broadcast-policy any")
    assert alone.returncode == 2
    assert "--broadcast-policy needs --all-agents" in alone.stderr

    listed = server.run("./hetuflow-server list-tasks --json")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout)["items"] == []


def test_a_start_deadline_needs_all_agents(server: Running) -> None:
    alone = server.run("./hetuflow-server create-task --task-type shell --start-deadline 30")
    assert alone.returncode == 2
    assert "--start-deadline needs --all-agents" in alone.stderr
    shown = server.run("./hetuflow-server create-task --help")
    assert "--start-deadline" in shown.stdout
    assert "--concurrency-key" in shown.stdout
