"""Shell tasks cannot reach the agent's secrets, and shell is opt-in.

The escalation of issue 17: an agent started with secrets in its environment
(``HETUFLOW_AGENT_TOKEN``, ``DATABASE_URL``, ``HETUFLOW_DATABASE__URL``) ran shell tasks with
that whole environment, so an operator could read them from the task log. Here a real
``hetuflow-agent`` process tries: ``env``, the agent's ``/proc/<pid>/environ``, and echoing a
secret it was handed in the payload.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from hetuflow.agent import Agent, load_agent_config
from hetuflow.agent.environment import (
    REDACTED,
    Redactor,
    base_task_environment,
    secret_values,
)
from hetuflow.errors import ConfigInvalid
from hetuflow.protocol import AgentCapabilities, TaskLogs, TaskResult, TaskStarted

from .conftest import running
from .fake_server import FakeServer, task
from .test_cli import exit_code, start_agent

AGENT_TOKEN = "hf_agent-secret-0123456789abcdefghijklmnopqrstuv"
DATABASE_URL = "postgresql://hetuflow:db-password-42@db.internal:5432/hetuflow"
NESTED_URL = "postgresql://admin:nested-password-43@db.internal:5432/hetuflow"
SECRETS = {
    "HETUFLOW_AGENT_TOKEN": AGENT_TOKEN,
    "DATABASE_URL": DATABASE_URL,
    "HETUFLOW_DATABASE__URL": NESTED_URL,
    "PGPASSWORD": "pg-password-44",
}


# --- the minimal environment ------------------------------------------------------------------


def test_tasks_get_only_the_minimal_set_and_the_names_passed() -> None:
    source = {
        **SECRETS,
        "PATH": "/usr/bin",
        "HOME": "/home/agent",
        "LC_ALL": "C.UTF-8",
        "TZ": "UTC",
        "AWS_SECRET_ACCESS_KEY": "aws",
        "APP_MODE": "prod",
        "APP_REGION": "eu",
        "OTHER": "x",
    }
    env = base_task_environment(source, ["APP_*", "OTHER", "HETUFLOW_AGENT_TOKEN"])
    assert env == {
        "PATH": "/usr/bin",
        "HOME": "/home/agent",
        "LC_ALL": "C.UTF-8",
        "TZ": "UTC",
        "APP_MODE": "prod",
        "APP_REGION": "eu",
        "OTHER": "x",
    }
    assert base_task_environment({}, [])["PATH"] == os.defpath


@pytest.mark.parametrize("name", ["HETUFLOW_AGENT_TOKEN", "*", "A=B", ""])
def test_pass_env_refuses_the_token_and_everything(name: str) -> None:
    with pytest.raises(ConfigInvalid, match="pass_env"):
        load_agent_config(env={}, overrides={"pass_env": [name]})


def test_secrets_are_redacted_longest_first() -> None:
    secrets = secret_values({**SECRETS, "HETUFLOW_NAME": "not-a-secret-name"}, "hf_other-token")
    assert set(secrets) == {*SECRETS.values(), "hf_other-token"}
    redact = Redactor(secrets)
    assert redact(f"url={DATABASE_URL} token={AGENT_TOKEN}") == f"url={REDACTED} token={REDACTED}"
    assert redact("nothing here") == "nothing here"
    assert not Redactor([])


# --- shell is opt-in ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "enabled"),
    [
        ({}, False),
        ({"task_types": ["web-scraping"]}, False),
        ({"task_types": ["shell", "web-scraping"]}, True),  # the README's command
        ({"shell": True}, True),
        ({"shell": False, "task_types": ["shell"]}, False),
    ],
)
def test_shell_is_on_only_when_asked_for(overrides: dict[str, Any], enabled: bool) -> None:
    assert load_agent_config(env={}, overrides=overrides).shell_enabled is enabled


async def test_an_agent_without_shell_refuses_shell_tasks_with_a_clear_error(
    server: FakeServer, tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    agent = Agent(server=server.url, name="handlers-only")
    agent.add_handler("web-scraping", lambda payload: None)
    async with running(agent):
        hello = await server.next(AgentCapabilities)
        assert hello.capabilities.supported_task_types == ["web-scraping"]
        job = task("shell", {"command": f"touch {marker}"})
        await server.dispatch(job)
        result = await server.next(TaskResult)
    assert (result.task_id, result.outcome) == (job.task_id, "failed")
    assert result.error is not None
    assert "shell tasks are off on this agent" in result.error
    assert "--shell" in result.error
    assert server.all_of(TaskStarted) == []
    assert not marker.exists()


async def test_shell_flag_adds_shell_to_the_declared_task_types(server: FakeServer) -> None:
    agent = Agent(server=server.url, name="both", task_types=["web-scraping"], shell=True)
    agent.add_handler("web-scraping", lambda payload: None)
    async with running(agent):
        hello = await server.next(AgentCapabilities)
    assert hello.capabilities.supported_task_types == ["web-scraping", "shell"]


# --- the escalation attempt, with a real agent process -------------------------------------------


async def _shell_output(server: FakeServer, payload: dict[str, Any]) -> tuple[str, TaskResult]:
    job = task("shell", payload)
    await server.dispatch(job)
    lines: list[str] = []
    async with asyncio.timeout(20):
        while True:
            message = (await server.next_received(object)).message
            if isinstance(message, TaskLogs):
                lines += [entry.line for entry in message.lines if entry.task_id == job.task_id]
            elif isinstance(message, TaskResult) and message.task_id == job.task_id:
                return "\n".join(lines), message


async def test_a_shell_task_cannot_see_the_agents_secrets(
    server: FakeServer, tmp_path: Path
) -> None:
    env = {
        **{key: value for key, value in os.environ.items() if "HETUFLOW" not in key},
        **SECRETS,
        "HETUFLOW_AGENT_SERVER": server.url,
        "PASSED_ON": "on-purpose",
    }
    process = await start_agent(
        tmp_path, ["--name", "escalation", "--task-types", "shell", "--pass-env", "PASSED_ON"], env
    )
    try:
        hello = await server.next(AgentCapabilities, timeout_seconds=20)
        assert hello.capabilities.supported_task_types == ["shell"]
        assert server.authorizations == [f"Bearer {AGENT_TOKEN}"]

        output, result = await _shell_output(
            server,
            {
                "command": "env; echo ---; tr '\\0' '\\n' < /proc/$PPID/environ;"
                " cat /proc/$PPID/cmdline; echo; echo ---"
            },
        )
        inherited, agent_environ, _ = output.split("\n---")
        for name, value in SECRETS.items():
            assert name not in inherited  # not inherited
            assert value not in output  # nor readable from the agent's process
        assert REDACTED not in output  # (not merely redacted: never seen)
        assert "HETUFLOW_AGENT_SERVER" in agent_environ  # the agent's environ was read
        assert "PASSED_ON=on-purpose" in inherited
        assert f"HOME={os.environ['HOME']}" in output
        assert result.error is None or AGENT_TOKEN not in result.error

        # a secret that reaches a task anyway (here in the payload) is redacted in the log,
        # the result's tails and the error
        output, result = await _shell_output(
            server,
            {
                "command": 'echo "token=$LEAK"; echo "url=$LEAK2" >&2; exit 3',
                "env": {"LEAK": AGENT_TOKEN, "LEAK2": DATABASE_URL},
            },
        )
        assert output.splitlines() == [f"token={REDACTED}", f"url={REDACTED}"], output
        assert result.result is not None
        assert AGENT_TOKEN not in str(result.result)
        assert result.error is not None
        assert DATABASE_URL not in result.error
        assert REDACTED in result.error
    finally:
        process.terminate()
        await exit_code(process, tmp_path)
