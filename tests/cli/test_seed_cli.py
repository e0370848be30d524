"""The seed README's command lines, run verbatim by bash against a real server process."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
from pathlib import Path

import httpx
import pytest

from hetuflow.client import Client
from hetuflow.config import DatabaseConfig

from .conftest import Running, free_port, launch, stop, workdir

# The seed's "CLI 命令" block, verbatim (the start line runs as the server fixture).
SEED_CREATE_TASK = """./hetuflow-server create-task \\
  --name "test-task" \\
  --task-type "data-processing" \\
  --priority high \\
  --payload '{"data": "test"}'"""
SEED_LIST_TASKS = "./hetuflow-server list-tasks"
SEED_CREATE_CRON_JOB = """./hetuflow-server create-cron-job \\
  --name "daily-backup" \\
  --cron-expression "0 2 * * *" \\
  --task-type "backup" \\
  --payload '{"type": "full"}'"""
SEED_LIST_AGENTS = "./hetuflow-server list-agents --online"
SEED_DISPATCH_TASK = """./hetuflow-server dispatch-task \\
  --task-type "web-scraping" \\
  --payload '{"url": "https://example.com"}' \\
  --capabilities chrome headless"""


def test_start_prints_a_banner_and_uses_sqlite_in_the_working_directory(server: Running) -> None:
    output = server.output()
    assert f"{server.url}/" in output
    assert f"{server.url}/docs" in output
    assert "SQLite" in output
    assert (server.directory / "hetuflow.db").exists()


def test_seed_command_lines_verbatim(server: Running) -> None:
    check_seed_command_lines(server)


@pytest.mark.postgres
def test_seed_command_lines_verbatim_on_postgres(
    tmp_path: Path, pg_database: DatabaseConfig
) -> None:
    directory = workdir(tmp_path)
    running = launch(
        directory, f"DATABASE_URL='{pg_database.dsn}' ./hetuflow-server start", free_port()
    )
    try:
        assert "PostgreSQL" in running.output()
        check_seed_command_lines(running)
    finally:
        assert stop(running) == 0, running.output()


def check_seed_command_lines(server: Running) -> None:
    """Every seed client command line, verbatim, and what it made, read back through the SDK."""
    created = server.run(SEED_CREATE_TASK)
    assert created.returncode == 0, created.stderr
    assert "created task" in created.stdout

    listed = server.run(SEED_LIST_TASKS)
    assert listed.returncode == 0, listed.stderr
    assert "test-task" in listed.stdout
    assert "data-processing" in listed.stdout

    cron = server.run(SEED_CREATE_CRON_JOB)
    assert cron.returncode == 0, cron.stderr
    assert "daily-backup" in cron.stdout

    agents = server.run(SEED_LIST_AGENTS)
    assert agents.returncode == 0, agents.stderr
    assert "agents" in agents.stdout

    dispatched = server.run(SEED_DISPATCH_TASK)
    assert dispatched.returncode == 0, dispatched.stderr

    with Client(server.url) as client:
        tasks = {task.task_type: task for task in client.list_tasks(limit=100).items}
        seed = tasks["data-processing"]
        assert (seed.name, seed.priority, seed.payload) == ("test-task", "high", {"data": "test"})
        scrape = tasks["web-scraping"]
        assert scrape.required_capabilities == ["chrome", "headless"]
        assert scrape.payload == {"url": "https://example.com"}
        [job] = [job for job in client.list_cron_jobs() if job.name == "daily-backup"]
        assert (job.cron_expression, job.task_type, job.payload) == (
            "0 2 * * *",
            "backup",
            {"type": "full"},
        )


def test_json_output_parses(server: Running) -> None:
    created = server.run(
        "./hetuflow-server create-task --task-type json-check --payload '{\"n\": 1}' --json"
    )
    assert created.returncode == 0, created.stderr
    task = json.loads(created.stdout)
    assert task["status"] == "pending"
    assert task["pending_reason"] == "no_agent_for_task_type"

    shown = json.loads(server.run(f"./hetuflow-server show-task {task['id']} --json").stdout)
    assert shown["id"] == task["id"]
    page = json.loads(
        server.run("./hetuflow-server list-tasks --task-type json-check --json").stdout
    )
    assert [item["id"] for item in page["items"]] == [task["id"]]
    assert json.loads(server.run("./hetuflow-server list-agents --online --json").stdout) == []
    stats = json.loads(server.run("./hetuflow-server stats --json").stdout)
    assert stats["tasks_by_status"]["pending"] >= 1

    cancelled = server.run(f"./hetuflow-server cancel-task {task['id']} --json")
    assert json.loads(cancelled.stdout)["status"] == "cancelled"
    human = server.run(f"./hetuflow-server show-task {task['id']}")
    assert "cancelled" in human.stdout
    assert "json-check" in human.stdout


@pytest.mark.parametrize(
    ("command_line", "code", "message"),
    [
        (
            "./hetuflow-server create-task --task-type t --payload '{\"data\": test}'",
            2,
            "--payload is not valid JSON",
        ),
        ("./hetuflow-server create-task --task-type t --payload '[1]'", 2, "JSON object"),
        ("./hetuflow-server create-task --task-type ''", 1, "task_type"),
        (
            "./hetuflow-server show-task 00000000-0000-4000-8000-000000000000",
            1,
            "no task with id",
        ),
        ("./hetuflow-server cancel-task not-an-id", 1, "not a valid UUID"),
        ("./hetuflow-server list-tasks --status nope", 2, "--status 'nope'"),
        ("./hetuflow-server create-task --task-type t --scheduled-at soon", 2, "ISO-8601"),
    ],
)
def test_failures_exit_non_zero_with_one_line(
    server: Running, command_line: str, code: int, message: str
) -> None:
    result = server.run(command_line)
    assert result.returncode == code, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert message in lines[0]


def test_cancel_of_a_finished_task_fails(server: Running) -> None:
    task = json.loads(server.run("./hetuflow-server create-task --task-type t --json").stdout)
    assert server.run(f"./hetuflow-server cancel-task {task['id']}").returncode == 0
    again = server.run(f"./hetuflow-server cancel-task {task['id']}")
    assert again.returncode == 1
    assert "error:" in again.stderr


def test_server_down_is_exit_3(tmp_path: Path) -> None:
    directory = workdir(tmp_path)
    url = f"http://127.0.0.1:{free_port()}"
    result = subprocess.run(
        ["bash", "-c", f"./hetuflow-server list-tasks --server {url}"],
        cwd=directory,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 3
    assert result.stderr.startswith(f"error: server not reachable at {url}")
    assert len(result.stderr.strip().splitlines()) == 1


def test_bad_config_names_the_key(tmp_path: Path) -> None:
    directory = workdir(tmp_path)
    (directory / "config.toml").write_text('[server]\nworkers = "many"\n')
    result = subprocess.run(
        ["bash", "-c", "./hetuflow-server start"],
        cwd=directory,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 2
    assert "server.workers" in result.stderr


def test_migrate_commands(tmp_path: Path) -> None:
    directory = workdir(tmp_path)
    url = f"sqlite:///{directory / 'm.db'}"

    def run(line: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "-c", f"./hetuflow-server {line} --database-url {url}"],
            cwd=directory,
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )

    status = json.loads(run("migrate status --json").stdout)
    assert status
    assert not any(item["applied"] for item in status)
    assert "applied" in run("migrate run").stdout
    assert all(item["applied"] for item in json.loads(run("migrate status --json").stdout))
    assert "up to date" in run("migrate run").stdout
    assert "reverted" in run("migrate revert").stdout
    assert not json.loads(run("migrate status --json").stdout)[-1]["applied"]


def test_start_with_sqlite_runs_one_process_and_says_so(tmp_path: Path) -> None:
    running = launch(workdir(tmp_path), "./hetuflow-server start --workers 3", free_port())
    try:
        assert "SQLite runs one server process" in running.output()
    finally:
        # uvicorn shuts down gracefully, then re-raises the SIGTERM it caught
        assert stop(running) in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in running.output()


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("0.0.0.0", port))
        except OSError:
            return False
        return True


SEED_CURL_CREATE_TASK = """curl -X POST http://localhost:8080/api/tasks \\
  -H "Content-Type: application/json" \\
  -d '{
    "name": "test-task",
    "task_type": "data-processing",
    "priority": "high",
    "payload": {"data": "test"}
  }'"""
SEED_CURL_CREATE_AGENT = """curl -X POST http://localhost:8080/api/agents \\
  -H "Content-Type: application/json" \\
  -d '{
    "name": "agent-1",
    "capabilities": ["chrome", "headless"],
    "status": "active"
  }'"""
SEED_CURL_CREATE_CRON_JOB = """curl -X POST http://localhost:8080/api/cron-jobs \\
  -H "Content-Type: application/json" \\
  -d '{
    "name": "daily-backup",
    "cron_expression": "0 2 * * *",
    "task_type": "backup",
    "payload": {"type": "full"},
    "enabled": true
  }'"""


@pytest.mark.skipif(not _port_free(8080), reason="port 8080 is in use on this machine")
def test_seed_start_on_8080_and_seed_curl_lines_verbatim(tmp_path: Path) -> None:
    running = launch(workdir(tmp_path), "./hetuflow-server start --bind 0.0.0.0:8080", 8080)
    try:
        assert httpx.get("http://127.0.0.1:8080/healthz").status_code == 200
        # 0.0.0.0 turns auth on (docs/security.md): the seed's curl lines run verbatim with an
        # admin token in curl's own config file, as a user would set it up.
        denied = json.loads(running.run(SEED_CURL_CREATE_TASK).stdout)
        assert denied["error"]["code"] == "unauthorized"
        token = running.run("./hetuflow-server create-token --role admin").stdout.strip()
        (tmp_path / ".curlrc").write_text(f'header = "Authorization: Bearer {token}"\n')
        running.env["CURL_HOME"] = str(tmp_path)
        task = json.loads(running.run(SEED_CURL_CREATE_TASK).stdout)
        assert task["status"] == "pending"
        assert json.loads(running.run("curl http://localhost:8080/api/tasks").stdout)["total"] == 1
        one = running.run(f"curl http://localhost:8080/api/tasks/{task['id']}")
        assert json.loads(one.stdout)["name"] == "test-task"
        cancel = running.run(f"curl -X DELETE http://localhost:8080/api/tasks/{task['id']}")
        assert json.loads(cancel.stdout)["status"] == "cancelled"
        assert json.loads(running.run("curl http://localhost:8080/api/agents").stdout) == {
            "items": []
        }
        agent = json.loads(running.run(SEED_CURL_CREATE_AGENT).stdout)
        assert agent["name"] == "agent-1"
        job = json.loads(running.run(SEED_CURL_CREATE_CRON_JOB).stdout)
        assert (job["name"], job["enabled"]) == ("daily-backup", True)
    finally:
        stop(running)
