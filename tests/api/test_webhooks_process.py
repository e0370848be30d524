"""Outgoing webhooks end to end (docs/webhooks.md): a real ``hetuflow-server start
--local-agent`` process (a real agent beside it) runs a shell task created by the CLI with
``--webhook-url``; its final status reaches a real HTTP receiver on 127.0.0.1, signed (checked
with the SDK's ``verify_webhook``), after the receiver failed first (500: retried with
backoff)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from hetuflow.client import Client, verify_webhook

from .webhook_receiver import receiving

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(120)]

SHIM = Path(__file__).resolve().parents[2] / "hetuflow-server"

SECRET = "cli-webhook-secret-0123456789"
SERVER_ENV = (
    f"HETUFLOW_WEBHOOKS__SECRET={SECRET} HETUFLOW_WEBHOOKS__BACKOFF_SECONDS=0.2"
    " HETUFLOW_WEBHOOKS__JITTER=0 HETUFLOW_WEBHOOKS__POLL_INTERVAL_SECONDS=0.2"
)


class Server:
    def __init__(self, directory: Path, process: subprocess.Popen[str], url: str) -> None:
        self.directory, self.process, self.url = directory, process, url
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("HETUFLOW_")}
        self.env.pop("DATABASE_URL", None)
        self.env["HETUFLOW_SERVER"] = url

    def run(self, command_line: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "-c", command_line],
            cwd=self.directory,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def output(self) -> str:
        return (self.directory / "server.out").read_text()


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Server]:
    """``hetuflow-server start --local-agent`` with webhooks on, on a free port (SQLite)."""
    (tmp_path / "hetuflow-server").symlink_to(SHIM)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HETUFLOW_")}
    env.pop("DATABASE_URL", None)
    env["HETUFLOW_SERVER__BIND_ADDRESS"] = f"127.0.0.1:{port}"
    with (tmp_path / "server.out").open("w") as log:
        process = subprocess.Popen(
            ["bash", "-c", f"{SERVER_ENV} ./hetuflow-server start --local-agent"],
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
    server = Server(tmp_path, process, url)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, server.output()
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                    break
            assert time.monotonic() < deadline, server.output()
            time.sleep(0.1)
        yield server
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def test_a_shell_task_reports_its_end_to_a_receiver_that_fails_first(running: Server) -> None:
    with receiving([500, 200]) as receiver, Client(running.url) as client:
        deadline = time.monotonic() + 30
        while not client.list_agents(online=True):
            assert time.monotonic() < deadline, running.output()
            time.sleep(0.1)
        url = f"{receiver.url}/done"
        payload = json.dumps({"command": "echo hello"})
        created = running.run(
            "./hetuflow-server create-task --task-type shell --json"
            f" --payload '{payload}' --webhook-url {url}"
        )
        assert created.returncode == 0, created.stderr
        task = json.loads(created.stdout)
        assert task["webhook_url"] == url
        first, second = asyncio.run(receiver.wait_for(2, within=30))

        shown = client.webhook(task["id"])
        deadline = time.monotonic() + 10
        while shown.items[-1].state != "delivered":
            assert time.monotonic() < deadline, shown
            time.sleep(0.05)
            shown = client.webhook(task["id"])

        shown_text = running.run(f"./hetuflow-server show-task {task['id']}")
        assert url in shown_text.stdout
        # the deliveries, as GET /api/tasks/{id}/webhook shows them: delivered at the 2nd POST
        assert "Webhook" in shown_text.stdout
        [row] = [line for line in shown_text.stdout.splitlines() if "delivered" in line]
        assert str(shown.items[-1].id)[:8] in row
        assert " 2 " in row
        assert " 200 " in row

        bad = running.run("./hetuflow-server create-task --task-type shell --webhook-url ftp://x")
        assert bad.returncode != 0
        assert "webhook_url" in bad.stderr + bad.stdout

        job = running.run(
            "./hetuflow-server create-cron-job --name nightly --cron-expression '0 3 * * *'"
            f" --task-type shell --webhook-url {url}"
        )
        assert job.returncode == 0, job.stderr
        assert url in job.stdout
        [listed] = client.list_cron_jobs()
        assert listed.webhook_url == url

        # A webhook_url naming the server's own API acts on nothing there (403 at its edge).
        loop = client.submit(
            "shell",
            {"command": "true"},
            webhook_url=f"{running.url}/api/tasks/{task['id']}/replay",
        )
        client.wait(loop.id, timeout_seconds=30, poll_interval_seconds=0.1)
        deadline = time.monotonic() + 10
        while not (looped := client.webhook(loop.id)).items or not looped.items[0].attempts:
            assert time.monotonic() < deadline, looped
            time.sleep(0.05)
        while looped.items[0].last_status_code is None:
            assert time.monotonic() < deadline, looped
            time.sleep(0.05)
            looped = client.webhook(loop.id)
        assert looped.items[0].last_status_code == 403
        assert client.list_tasks().total == 2  # nothing was replayed
    assert second.at - first.at >= 0.15  # backoff_seconds 0.2, no jitter
    event = verify_webhook(SECRET, second.headers, second.body)
    assert (event["event"], event["task_id"], event["status"]) == (
        "task.finished",
        task["id"],
        "succeeded",
    )
    assert event["attempts"] == 1
    assert first.headers["X-Hetuflow-Delivery-Id"] == second.headers["X-Hetuflow-Delivery-Id"]
    [delivery] = shown.items
    assert (delivery.attempts, delivery.last_status_code) == (2, 200)
    assert SECRET not in running.output()
