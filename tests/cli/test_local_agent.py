"""``start --local-agent`` runs a real agent beside the server: a shell task runs end to end,
and ``logs --follow`` prints its lines live until it finishes."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

from hetuflow.client import Client

from .conftest import free_port, launch, stop, workdir


def test_local_agent_runs_a_shell_task_and_logs_follow(tmp_path: Path) -> None:
    running = launch(workdir(tmp_path), "./hetuflow-server start --local-agent", free_port())
    try:
        with Client(running.url) as client:
            deadline = time.monotonic() + 30
            while not client.list_agents(online=True):
                assert time.monotonic() < deadline, running.output()
                time.sleep(0.1)
            [agent] = client.list_agents(online=True)
            assert (agent.name, agent.supported_task_types) == ("local", ["shell"])

            command = "for i in 1 2 3; do echo line$i; sleep 0.4; done"
            created = running.run(
                "./hetuflow-server create-task --task-type shell --json"
                f" --payload '{json.dumps({'command': command})}'"
            )
            assert created.returncode == 0, created.stderr
            task_id = json.loads(created.stdout)["id"]

            follow = subprocess.Popen(
                ["bash", "-c", f"./hetuflow-server logs {task_id} --follow"],
                cwd=running.directory,
                env=running.env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            assert follow.stdout is not None
            first = follow.stdout.readline()  # arrives while the task still runs
            assert first == "line1\n"
            assert client.get_task(task_id).status in ("running", "dispatched", "succeeded")
            rest = follow.stdout.read()  # same buffered reader: nothing read ahead is lost
            assert follow.wait(timeout=30) == 0, follow.stderr.read() if follow.stderr else ""
            if follow.stderr is not None:
                follow.stderr.close()
            follow.stdout.close()
            assert rest.splitlines() == ["line2", "line3"], running.output()

            done = client.wait(task_id, timeout_seconds=30, poll_interval_seconds=0.1)
            assert done.status == "succeeded"
            shown = running.run(f"./hetuflow-server show-task {task_id}")
            assert "succeeded" in shown.stdout
            assert "Attempts" in shown.stdout
        threads = Path(f"/proc/{running.process.pid}/task").glob("*/children")
        agent_pids = [int(pid) for path in threads for pid in path.read_text().split()]
        assert agent_pids, "the local agent is a child process of the server"
        running.process.send_signal(signal.SIGTERM)  # the server alone, not its group
        running.process.wait(timeout=30)
        for pid in agent_pids:  # the server stopped its agent on the way out
            assert not Path(f"/proc/{pid}").exists() or _zombie(pid)
    finally:
        stop(running)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")
    except OSError:
        return True
