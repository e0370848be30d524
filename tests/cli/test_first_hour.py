"""The first hour with hetuflow, as real processes: the README's agent line from the project
root, short ids, ``--payload @file`` and ``-``, ``--wait`` saying why, ``-h`` everywhere,
tables that fit 100 columns, a taken port, config errors people can read."""

from __future__ import annotations

import json
import re
import signal
import socket
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from hetuflow.client import Client

from .conftest import ROOT, Running, client_env, free_port, launch, stop, workdir


def _readme_block(after: str) -> str:
    """The first ```bash block of the README that starts with ``after``."""
    text = (ROOT / "README.md").read_text()
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.DOTALL):
        if block.startswith(after):
            return str(block)
    raise AssertionError(f"no README block starts with {after!r}")


def _readme_python_after(marker: str) -> str:
    text = (ROOT / "README.md").read_text()
    inside = text.index(marker)
    begin = text.rindex("```python\n", 0, inside) + len("```python\n")
    return text[begin : text.index("```", inside)]


def _run_in_root(
    line: str, *, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", line],
        cwd=ROOT,
        env=env if env is not None else client_env("http://127.0.0.1:1"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


# --- ./hetuflow-agent and -h ----------------------------------------------------------------


def test_readme_agent_line_runs_from_the_project_root(server: Running, tmp_path: Path) -> None:
    """The README's agent command, verbatim but for the port, with the README's handler module,
    connects to a real server and runs a task that needs its capabilities."""
    line = _readme_block("./hetuflow-agent start").strip()
    handlers = tmp_path / "my_project"
    handlers.mkdir()
    (handlers / "__init__.py").write_text("")
    (handlers / "handlers.py").write_text(_readme_python_after("# my_project/handlers.py"))
    port = server.url.rsplit(":", 1)[1]
    env = {**client_env(server.url), "PYTHONPATH": str(tmp_path)}
    agent = subprocess.Popen(
        ["bash", "-c", "exec " + line.replace("127.0.0.1:8080", f"127.0.0.1:{port}")],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        with Client(server.url) as client:
            deadline = time.monotonic() + 30
            while not [a for a in client.list_agents(online=True) if a.name == "scraper-1"]:
                assert agent.poll() is None, agent.stdout.read() if agent.stdout else ""
                assert time.monotonic() < deadline
                time.sleep(0.1)
            done = server.run(
                "./hetuflow-server dispatch-task --task-type web-scraping --json --wait"
                ' --wait-timeout 30 --payload \'{"url": "https://example.com"}\''
                " --capabilities chrome headless"
            )
            assert done.returncode == 0, done.stderr
            assert json.loads(done.stdout)["result"] == {"status": "success"}
    finally:
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=30) == 0
        if agent.stdout is not None:
            agent.stdout.close()


@pytest.mark.parametrize(
    ("line", "shown"),
    [
        ("./hetuflow-agent -h", "start"),
        ("./hetuflow-agent start -h", "[default: 30.0]"),  # --drain-grace-seconds
        ("./hetuflow-agent start --help", "[default: ws://127.0.0.1:8080/ws]"),
        ("./hetuflow-server -h", "create-task"),
        ("./hetuflow-server start -h", "--bind"),
        ("./hetuflow-server create-task -h", "[default: normal]"),
        ("./hetuflow-server list-tasks -h", "[default: 50;"),
    ],
)
def test_help_with_h_on_both_commands_shows_defaults(line: str, shown: str) -> None:
    result = _run_in_root(line)
    assert result.returncode == 0, result.stderr
    assert shown in " ".join(result.stdout.split()), result.stdout


# --- short ids --------------------------------------------------------------------------------


def _task(server: Running, *flags: str) -> dict[str, object]:
    made = server.run(
        "./hetuflow-server create-task --task-type short-ids --json " + " ".join(flags)
    )
    assert made.returncode == 0, made.stderr
    task: dict[str, object] = json.loads(made.stdout)
    return task


def _renumber(server: Running, old: object, new: str) -> None:
    """Give a fresh pending task (no attempts yet) a chosen id, to make prefixes collide."""
    with sqlite3.connect(server.directory / "hetuflow.db", timeout=30) as db:
        db.execute("UPDATE tasks SET id = ? WHERE id = ?", (new, old))


def test_task_commands_take_a_unique_id_prefix(server: Running) -> None:
    first = "abcdef01-1111-4111-8111-111111111111"
    second = "abcdef02-2222-4222-8222-222222222222"
    _renumber(server, _task(server, "--name", "one")["id"], first)
    _renumber(server, _task(server, "--name", "two")["id"], second)

    shown = server.run("./hetuflow-server show-task abcdef01 --json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["id"] == first
    assert json.loads(server.run("./hetuflow-server show-task ABCDEF-02 --json").stdout)["id"] == (
        second
    )
    cancelled = server.run("./hetuflow-server cancel-task abcdef0222 --json")
    assert json.loads(cancelled.stdout)["status"] == "cancelled"

    ambiguous = server.run("./hetuflow-server show-task abcdef")
    assert ambiguous.returncode == 1
    [line] = ambiguous.stderr.splitlines()
    assert line.startswith("error: task id 'abcdef' is ambiguous: it matches 2 tasks:")
    assert f"{first} (one)" in line
    assert f"{second} (two)" in line

    short = server.run("./hetuflow-server logs abcde")
    assert short.returncode == 2
    assert short.stderr.splitlines() == [
        "error: task id 'abcde' is too short: give at least 6 characters of it (or the whole id)"
    ]
    missing = server.run("./hetuflow-server retry-task 999999")
    assert missing.returncode == 1
    assert missing.stderr.splitlines() == ["error: no task with an id starting with '999999'"]


def test_agent_and_cron_job_commands_take_a_prefix_or_a_name(server: Running) -> None:
    made = server.run("./hetuflow-server create-agent --name prefix-agent --json")
    agent = json.loads(made.stdout)
    job = json.loads(
        server.run(
            "./hetuflow-server create-cron-job --name prefix-job --cron-expression '0 3 * * *'"
            " --task-type backup --json"
        ).stdout
    )
    disabled = server.run(f"./hetuflow-server disable-cron-job {job['id'][:6]} --json")
    assert disabled.returncode == 0, disabled.stderr
    assert json.loads(disabled.stdout)["enabled"] is False
    by_name = server.run("./hetuflow-server enable-cron-job prefix-job --json")
    assert json.loads(by_name.stdout)["enabled"] is True
    tasks = server.run("./hetuflow-server list-tasks --agent prefix-agent --json")
    assert tasks.returncode == 0, tasks.stderr
    assert json.loads(tasks.stdout)["total"] == 0
    short = server.run(f"./hetuflow-server delete-agent {agent['id'][:5]}")
    assert short.returncode == 2
    assert "too short" in short.stderr
    deleted = server.run(f"./hetuflow-server delete-agent {agent['id'][:8]} --json")
    assert deleted.returncode == 0, deleted.stderr
    assert json.loads(deleted.stdout) == {"deleted": agent["id"]}
    unknown = server.run("./hetuflow-server delete-cron-job no-such-job")
    assert unknown.returncode == 1
    assert unknown.stderr.splitlines() == [
        "error: no cron job named 'no-such-job' (nor with such an id)"
    ]
    assert server.run("./hetuflow-server delete-cron-job prefix-job").returncode == 0


def test_tables_show_short_ids_and_fit_100_columns(server: Running) -> None:
    task = _task(server, "--name", "a-rather-long-task-name-for-the-table")
    server.run("./hetuflow-server create-agent --name table-agent")
    narrow = {**server.env, "COLUMNS": "100"}
    for command in ("list-tasks", "list-agents", "list-cron-jobs", f"show-task {task['id']}"):
        result = subprocess.run(
            ["bash", "-c", f"./hetuflow-server {command}"],
            cwd=server.directory,
            env=narrow,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        widths = [len(line.rstrip()) for line in result.stdout.splitlines()]
        assert max(widths) <= 100, result.stdout
        if command.startswith("list-"):
            assert not re.search(r"[0-9a-f]{8}-[0-9a-f]{4}-", result.stdout), result.stdout
    listed = server.run("./hetuflow-server list-tasks --task-type short-ids").stdout
    assert f"│ {str(task['id'])[:8]} │" in listed


# --- --payload @file and - ----------------------------------------------------------------------


def test_payload_from_a_file_and_from_stdin(server: Running) -> None:
    (server.directory / "payload.json").write_text('{"from": "file", "n": [1, 2]}\n')
    from_file = _task(server, "--payload", "@payload.json")
    assert from_file["payload"] == {"from": "file", "n": [1, 2]}
    piped = server.run(
        'echo \'{"from": "stdin"}\' | ./hetuflow-server create-task --task-type t'
        " --payload - --json"
    )
    assert piped.returncode == 0, piped.stderr
    assert json.loads(piped.stdout)["payload"] == {"from": "stdin"}
    cron = server.run(
        "./hetuflow-server create-cron-job --name from-file --cron-expression '@daily'"
        " --task-type t --payload @payload.json --json"
    )
    assert json.loads(cron.stdout)["payload"] == {"from": "file", "n": [1, 2]}

    missing = server.run("./hetuflow-server create-task --task-type t --payload @nope.json")
    assert missing.returncode == 2
    [line] = missing.stderr.splitlines()
    assert line.startswith("error: --payload @nope.json: cannot read")
    assert "No such file or directory" in line
    bad = server.run("echo '[1]' | ./hetuflow-server create-task --task-type t --payload -")
    assert bad.returncode == 2
    assert "JSON object" in bad.stderr


def test_wait_timeout_says_why_the_task_still_waits(server: Running) -> None:
    result = server.run(
        "./hetuflow-server create-task --task-type nobody-runs-this --wait --wait-timeout 0.5"
    )
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert re.fullmatch(
        r"error: task [0-9a-f-]{36} is still pending after 0\.5 s: no_agent_for_task_type"
        r" \(no connected agent offers task type 'nobody-runs-this'\)",
        line,
    ), line


# --- start: a taken port, bad config -------------------------------------------------------------


def test_a_port_in_use_is_one_line_and_exit_2_before_anything_else(tmp_path: Path) -> None:
    directory = workdir(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            ["bash", "-c", f"./hetuflow-server start --bind 127.0.0.1:{port}"],
            cwd=directory,
            env=client_env("http://127.0.0.1:1"),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"error: 127.0.0.1:{port} is already in use (another hetuflow? use --bind)"
    ]
    assert result.stdout == ""  # no banner
    assert not (directory / "hetuflow.db").exists()  # nothing migrated


def test_the_server_still_starts_and_serves_on_its_own_socket(tmp_path: Path) -> None:
    running = launch(workdir(tmp_path), "./hetuflow-server start", free_port())
    try:
        assert "listening" in running.output()
        port = running.url.rsplit(":", 1)[1]
        again = running.run(f"./hetuflow-server start --bind 127.0.0.1:{port}")
        assert again.returncode == 2
        assert "is already in use" in again.stderr
    finally:
        assert stop(running) in (0, -signal.SIGTERM)


@pytest.mark.parametrize(
    ("config", "env", "message"),
    [
        (
            '[server]\nbind_adress = "0.0.0.0:8080"\n',
            {},
            "error: config.toml: unknown key server.bind_adress (did you mean bind_address?)",
        ),
        (
            "[servr]\nworkers = 2\n",
            {},
            "error: config.toml: unknown section [servr] (did you mean [server]?)",
        ),
        (
            '[server]\nworkers = "many"\n',
            {},
            'error: config.toml: server.workers: expected an integer, got "many"',
        ),
        (
            None,
            {"HETUFLOW_DATABASE__PORT": "abc"},
            "error: environment variable HETUFLOW_DATABASE__PORT: database.port: expected an"
            ' integer, got "abc"',
        ),
        (
            None,
            {"HETUFLOW_SERVER__BIND_ADRES": "0.0.0.0:1"},
            "error: environment variable HETUFLOW_SERVER__BIND_ADRES: unknown key"
            " server.bind_adres (did you mean HETUFLOW_SERVER__BIND_ADDRESS?)",
        ),
    ],
)
def test_config_errors_read_like_the_config(
    tmp_path: Path, config: str | None, env: dict[str, str], message: str
) -> None:
    directory = workdir(tmp_path)
    if config is not None:
        (directory / "config.toml").write_text(config)
    result = subprocess.run(
        ["bash", "-c", "./hetuflow-server start"],
        cwd=directory,
        env={**client_env("http://127.0.0.1:1"), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [message]
    assert "Extra inputs" not in result.stderr
