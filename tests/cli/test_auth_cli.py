"""Auth end to end with real processes: ``start`` on a non-loopback address turns auth on; the
first admin token comes from ``create-token``; the CLI (``--token`` / ``$HETUFLOW_TOKEN``),
the SDK and ``hetuflow-agent --token`` work with it and fail clearly without it; the local
agent authenticates by itself."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hetuflow.client import Client, ClientError

from .conftest import Running, free_port, launch, stop, workdir


def _agent(running: Running, *arguments: str) -> subprocess.Popen[str]:
    program = Path(sys.executable).with_name("hetuflow-agent")
    ws_url = running.url.replace("http://", "ws://") + "/ws"
    return subprocess.Popen(
        [str(program), "start", "--server", ws_url, *arguments],
        cwd=running.directory,
        env=running.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _online(client: Client, name: str, running: Running) -> None:
    deadline = time.monotonic() + 30
    while name not in [agent.name for agent in client.list_agents(online=True)]:
        assert time.monotonic() < deadline, running.output()
        time.sleep(0.1)


def test_auth_on_with_real_processes(tmp_path: Path) -> None:
    port = free_port()
    running = launch(
        workdir(tmp_path), f"./hetuflow-server start --bind 0.0.0.0:{port} --local-agent", port
    )
    agents: list[subprocess.Popen[str]] = []
    try:
        banner = running.output()
        assert re.search(r"^auth\s+on: every request needs a bearer token", banner, re.M)
        assert "no admin token yet" in banner
        assert "create-token --role admin" in banner

        made = running.run("./hetuflow-server create-token --role admin --name first")
        assert made.returncode == 0, made.stderr
        admin = made.stdout.strip()
        assert admin.startswith("hf_")
        assert "\n" not in admin
        assert "shown only now" in made.stderr

        refused = running.run("./hetuflow-server list-tasks")
        assert refused.returncode == 1
        assert refused.stderr.startswith("error: this server requires a token")
        assert running.run(f"./hetuflow-server list-tasks --token {admin}").returncode == 0
        assert running.run(f"HETUFLOW_TOKEN={admin} ./hetuflow-server stats").returncode == 0

        viewer = running.run("./hetuflow-server create-token --role viewer").stdout.strip()
        forbidden = running.run(
            f"./hetuflow-server create-task --task-type shell --token {viewer}"
            ' --payload \'{"command": "true"}\''
        )
        assert forbidden.returncode == 1
        assert "role operator or higher" in forbidden.stderr
        listed = running.run("./hetuflow-server list-tokens --json").stdout
        assert '"role": "viewer"' in listed
        assert viewer not in listed
        assert admin not in listed

        with Client(running.url) as anonymous, pytest.raises(ClientError) as caught:
            anonymous.list_tasks()
        assert (caught.value.status, caught.value.code) == (401, "unauthorized")

        with Client(running.url, token=admin) as client:
            _online(client, "local", running)  # the local agent got its own token
            task = client.submit("shell", {"command": "echo hi from local"})
            done = client.wait(task.id, timeout_seconds=30, poll_interval_seconds=0.1)
            assert done.status == "succeeded", done

            agent_token = running.run("./hetuflow-server create-agent-token remote-1")
            assert agent_token.returncode == 0, agent_token.stderr
            agents.append(
                _agent(
                    running,
                    "--token",
                    agent_token.stdout.strip(),
                    "--name",
                    "remote-1",
                    "--task-types",
                    "shell",
                    "--capabilities",
                    "remote-only",
                )
            )
            _online(client, "remote-1", running)
            remote = client.submit(
                "shell", {"command": "echo remote"}, required_capabilities=["remote-only"]
            )
            done = client.wait(remote.id, timeout_seconds=30, poll_interval_seconds=0.1)
            [remote_agent] = [a for a in client.list_agents() if a.name == "remote-1"]
            assert (done.status, done.agent_id) == ("succeeded", remote_agent.id)

            bad = _agent(running, "--token", "hf_wrong", "--name", "intruder", "--shell")
            agents.append(bad)
            output, _ = bad.communicate(timeout=30)
            assert bad.returncode != 0
            assert "refused this agent's token (HTTP 401)" in output
            assert "intruder" not in [agent.name for agent in client.list_agents()]
    finally:
        for process in agents:
            if process.poll() is None:
                process.terminate()
                process.communicate(timeout=30)
        stop(running)


def test_the_sdk_reads_the_token_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    directory = workdir(tmp_path)
    running = launch(
        directory,
        f"HETUFLOW_AUTH__ENABLED=true ./hetuflow-server start --bind 127.0.0.1:{port}",
        port,
    )
    try:
        assert re.search(r"^auth\s+on:", running.output(), re.M)
        secret = running.run("./hetuflow-server create-token --role operator").stdout.strip()
        monkeypatch.setenv("HETUFLOW_TOKEN", secret)
        with Client(running.url) as client:
            created = client.submit("anything", {"n": 1})
            assert client.get_task(created.id).status == "pending"
        monkeypatch.setenv("HETUFLOW_TOKEN", secret + "x")
        with Client(running.url) as client, pytest.raises(ClientError) as caught:
            client.stats()
        assert caught.value.status == 401
    finally:
        stop(running)
