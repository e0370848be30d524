"""The escalation of issue 17 through ``start --local-agent``: with only an operator token, a
shell task on the local agent ran ``hetuflow-server create-token --role admin`` with the
server's own environment and directory, and printed a working admin secret into the task log.

Now the local agent gets no database or configuration variable, runs in a private directory,
and hides its agent token: the same attempt yields nothing that opens the server."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import httpx

from hetuflow.client import Client

from .conftest import SHIM, free_port, launch, stop, workdir


def test_a_shell_task_on_the_local_agent_cannot_mint_an_admin_token(tmp_path: Path) -> None:
    directory = workdir(tmp_path)
    database_url = f"sqlite:///{directory / 'state.db'}"
    port = free_port()
    running = launch(
        directory,
        f"DATABASE_URL={database_url} HETUFLOW_AUTH__ENABLED=true"
        " ./hetuflow-server start --local-agent",
        port,
    )
    try:
        made = running.run(
            f"DATABASE_URL={database_url} ./hetuflow-server create-token --role operator"
        )
        assert made.returncode == 0, made.stderr
        operator = made.stdout.strip()
        with Client(running.url, token=operator) as client:
            deadline = time.monotonic() + 30
            while not client.list_agents(online=True):
                assert time.monotonic() < deadline, running.output()
                time.sleep(0.1)
            attempt = (
                "env; echo ---; pwd; ls -a; echo ---;"
                f" {SHIM} create-token --role admin --name stolen 2>&1;"
                f' {SHIM} create-token --role admin --name stolen2 --database-url "$DATABASE_URL"'
                " 2>&1; true"
            )
            task = client.submit("shell", {"command": attempt})
            done = client.wait(task.id, timeout_seconds=60, poll_interval_seconds=0.1)
            assert done.status == "succeeded", done
            response = httpx.get(
                f"{running.url}/api/tasks/{task.id}/logs",
                headers={"Authorization": f"Bearer {operator}"},
            )
            assert response.status_code == 200, response.text
            output = "\n".join(line["line"] for line in response.json()["items"])
        environment, place, _ = output.split("\n---")
        assert "DATABASE_URL" not in environment
        # the task's own id and attempt are all of hetuflow's a task sees
        hetuflow_names = {
            line.split("=", 1)[0]
            for line in environment.splitlines()
            if line.startswith("HETUFLOW_")
        }
        assert hetuflow_names <= {"HETUFLOW_TASK_ID", "HETUFLOW_TASK_ATTEMPT"}
        assert database_url not in output
        assert str(directory) not in place  # not the server's directory
        assert "state.db" not in place
        for secret in set(re.findall(r"hf_[A-Za-z0-9_-]{20,}", output)):
            refused = httpx.get(
                f"{running.url}/api/tokens", headers={"Authorization": f"Bearer {secret}"}
            )
            assert refused.status_code == 401, (secret, json.dumps(refused.json()))
        banner = running.output()
        assert "whoever may create tasks can run any command here" in banner
    finally:
        stop(running)
