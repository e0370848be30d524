"""``hetuflow-agent``: multi-value options, configuration, handler modules, and a real agent
process that drains on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from hetuflow.agent import Agent, load_agent_config
from hetuflow.cli.options import MultiValueCommand, MultiValueOption, expand_multi_value_args
from hetuflow.errors import ConfigInvalid
from hetuflow.protocol import (
    AgentCapabilities,
    AgentDraining,
    TaskLogs,
    TaskResult,
    TaskStarted,
)

from .fake_server import FakeServer, task
from .test_shell import alive, group_members

AGENT_BIN = Path(sys.executable).parent / "hetuflow-agent"


# --- multi-value options ----------------------------------------------------------------------


@click.command(cls=MultiValueCommand)
@click.option("--capabilities", "-c", cls=MultiValueOption)
@click.option("--task-types", cls=MultiValueOption)
@click.option("--name")
@click.argument("rest", nargs=-1)
def _probe(
    capabilities: tuple[str, ...],
    task_types: tuple[str, ...],
    name: str | None,
    rest: Sequence[str],
) -> None:
    click.echo(f"{list(capabilities)}|{list(task_types)}|{name}|{list(rest)}")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["--capabilities", "chrome", "headless", "--name", "a1"],
            "['chrome', 'headless']|[]|a1|[]",
        ),
        (
            ["--name", "a1", "--task-types", "shell", "web-scraping"],
            "[]|['shell', 'web-scraping']|a1|[]",
        ),
        (["--capabilities=chrome", "gpu", "-c", "x,y"], "['chrome', 'gpu', 'x', 'y']|[]|None|[]"),
        (["--task-types", "shell echo"], "[]|['shell', 'echo']|None|[]"),
        (["--capabilities", "a", "--", "b"], "['a']|[]|None|['b']"),
        ([], "[]|[]|None|[]"),
    ],
)
def test_multi_value_options_take_every_following_value(args: list[str], expected: str) -> None:
    outcome = CliRunner().invoke(_probe, args)
    assert outcome.exit_code == 0, outcome.output
    assert outcome.output.strip() == expected


def test_multi_value_option_without_a_value_is_an_error() -> None:
    outcome = CliRunner().invoke(_probe, ["--capabilities", "--name", "x"])
    assert outcome.exit_code == 2
    assert "'--capabilities' requires at least one value" in outcome.output


def test_expand_leaves_other_arguments_alone() -> None:
    args = ["start", "--server", "ws://x/ws", "--capabilities", "a", "b", "-v"]
    assert expand_multi_value_args(args, {"--capabilities"}) == [
        "start",
        "--server",
        "ws://x/ws",
        "--capabilities",
        "a",
        "--capabilities",
        "b",
        "-v",
    ]


# --- configuration ----------------------------------------------------------------------------


def test_config_file_then_environment_then_flags(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(
        textwrap.dedent(
            """
            [agent]
            server = "ws://file:8080/ws"
            name = "from-file"
            capabilities = ["chrome"]
            max_concurrent_tasks = 2
            drain_grace_seconds = 7
            """
        )
    )
    env = {
        "HETUFLOW_AGENT_NAME": "from-env",
        "HETUFLOW_AGENT_CAPABILITIES": "gpu, headless",
        "HETUFLOW_AGENT_TASK_TYPES": "shell web-scraping",
    }
    config = load_agent_config(path, env=env, overrides={"max_concurrent_tasks": 5, "token": None})
    assert config.server == ["ws://file:8080/ws"]
    assert config.name == "from-env"
    assert config.capabilities == ["gpu", "headless"]
    assert config.task_types == ["shell", "web-scraping"]
    assert config.max_concurrent_tasks == 5
    assert config.drain_grace_seconds == 7
    assert config.token is None
    from_env_file = load_agent_config(env={"HETUFLOW_AGENT_CONFIG": str(path)})
    assert from_env_file.name == "from-file"


def test_several_servers_from_the_file_the_environment_or_repeated_flags(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text('[agent]\nserver = ["ws://a:8080/ws", "ws://b:8080/ws"]\n')
    assert load_agent_config(path, env={}).server == ["ws://a:8080/ws", "ws://b:8080/ws"]
    env = {"HETUFLOW_AGENT_SERVER": "ws://c/ws, ws://d/ws"}
    assert load_agent_config(env=env).server == ["ws://c/ws", "ws://d/ws"]
    assert Agent(server="ws://e/ws").config.server == ["ws://e/ws"]
    assert Agent(server=["ws://e/ws", "ws://f/ws", "ws://e/ws"]).config.server == [
        "ws://e/ws",
        "ws://f/ws",
    ]
    from hetuflow.cli.agent import main

    args = ["start", "--server", "ws://g/ws", "--server", "http://h/ws"]
    outcome = CliRunner().invoke(main, args)
    assert outcome.exit_code == 1
    assert "'http://h/ws' is not a WebSocket URL" in outcome.output
    with pytest.raises(ConfigInvalid, match="at least 1 item"):
        load_agent_config(env={}, overrides={"server": []})


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ({"HETUFLOW_AGENT_SERVER": "http://x"}, "not a WebSocket URL"),
        ({"HETUFLOW_AGENT_MAX_CONCURRENT_TASKS": "0"}, "max_concurrent_tasks"),
        ({"HETUFLOW_AGENT_CONFIG": "/no/such/agent.toml"}, "does not exist"),
    ],
)
def test_bad_configuration_names_the_problem(env: dict[str, str], problem: str) -> None:
    with pytest.raises(ConfigInvalid, match=problem):
        load_agent_config(env=env)


def test_unknown_key_in_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text('[agent]\nservre = "ws://x/ws"\n')
    with pytest.raises(ConfigInvalid, match="servre"):
        load_agent_config(path, env={})


# --- handler modules ------------------------------------------------------------------------


def test_modules_register_handlers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "mod_handlers_obj.py").write_text(
        textwrap.dedent(
            """
            from hetuflow.agent import Handlers

            handlers = Handlers()

            @handlers.handler("resize")
            def resize(payload):
                return payload
            """
        )
    )
    (tmp_path / "mod_register_fn.py").write_text(
        textwrap.dedent(
            """
            def register(agent):
                agent.add_handler("ocr", lambda payload, ctx: None)
            """
        )
    )
    (tmp_path / "mod_nothing.py").write_text("VALUE = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    agent = Agent(server="ws://127.0.0.1:1/ws", shell=False)
    agent.load_module("mod_handlers_obj")
    agent.load_module("mod_register_fn")
    assert agent.supported_task_types() == ["ocr", "resize"]
    with pytest.raises(ConfigInvalid, match="registers no handler"):
        agent.load_module("mod_nothing")
    with pytest.raises(ConfigInvalid, match="cannot import handler module 'mod_missing'"):
        agent.load_module("mod_missing")


def test_cli_reports_configuration_errors() -> None:
    from hetuflow.cli.agent import main

    outcome = CliRunner().invoke(main, ["start", "--server", "http://nope"])
    assert outcome.exit_code == 1
    assert "not a WebSocket URL" in outcome.output


# --- a real agent process -------------------------------------------------------------------


@pytest.fixture
def agent_process_env(tmp_path: Path) -> dict[str, str]:
    """The environment for an agent process in ``tmp_path``, which holds a handler module."""
    (tmp_path / "cli_handlers.py").write_text(
        textwrap.dedent(
            """
            def register(agent):
                agent.add_handler("echo", lambda payload: payload)
            """
        )
    )
    return {key: value for key, value in os.environ.items() if "HETUFLOW_AGENT" not in key}


async def start_agent(
    tmp_path: Path, args: list[str], env: dict[str, str]
) -> asyncio.subprocess.Process:
    log = (tmp_path / "agent.log").open("wb")
    try:
        return await asyncio.create_subprocess_exec(
            str(AGENT_BIN),
            "start",
            *args,
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=log,
        )
    finally:
        log.close()


async def exit_code(process: asyncio.subprocess.Process, tmp_path: Path) -> int:
    try:
        async with asyncio.timeout(20):
            return await process.wait()
    except TimeoutError:
        process.kill()
        await process.wait()
        pytest.fail("agent did not exit:\n" + (tmp_path / "agent.log").read_text())


async def test_sigterm_drains_a_real_agent_process(
    server: FakeServer, tmp_path: Path, agent_process_env: dict[str, str]
) -> None:
    process = await start_agent(
        tmp_path,
        [
            "--server",
            server.url,
            "--name",
            "cli-agent",
            "--capabilities",
            "chrome",
            "headless",
            "--task-types",
            "shell",
            "echo",
            "--max-concurrent",
            "3",
            "--module",
            "cli_handlers",
        ],
        agent_process_env,
    )
    try:
        hello = await server.next(AgentCapabilities, timeout_seconds=20)
        assert hello.name == "cli-agent"
        assert hello.capabilities.capabilities == ["chrome", "headless"]
        assert hello.capabilities.supported_task_types == ["shell", "echo"]
        assert hello.capabilities.max_concurrent_tasks == 3
        await server.dispatch(task("echo", {"x": 1}))
        echoed = await server.next(TaskResult)
        assert echoed.result == {"x": 1}
        job = task("shell", {"command": "sleep 0.5; echo finished"})
        await server.dispatch(job)
        await server.next(TaskStarted)
        process.send_signal(signal.SIGTERM)
        await server.next(AgentDraining)
        result = await server.next(TaskResult)
        assert (result.task_id, result.outcome) == (job.task_id, "succeeded")
        assert isinstance(result.result, dict)
        assert result.result["stdout_tail"] == "finished"
        assert await exit_code(process, tmp_path) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_sigterm_grace_over_stops_shell_tasks_and_exits_0(
    server: FakeServer, tmp_path: Path, agent_process_env: dict[str, str]
) -> None:
    (tmp_path / "agent.toml").write_text(
        '[agent]\nname = "from-file"\nshell = true\nkill_grace_seconds = 0.5\n'
    )
    env = {
        **agent_process_env,
        "HETUFLOW_AGENT_SERVER": server.url,
        "HETUFLOW_AGENT_DRAIN_GRACE_SECONDS": "0.3",
    }
    process = await start_agent(tmp_path, ["--config", "agent.toml"], env)
    try:
        hello = await server.next(AgentCapabilities, timeout_seconds=20)
        assert hello.name == "from-file"
        job = task("shell", {"command": "sleep 600 & echo $$ $!; sleep 600"})
        await server.dispatch(job)
        await server.next(TaskStarted)
        logs = await server.next(TaskLogs)
        while not any(entry.stream == "stdout" for entry in logs.lines):
            logs = await server.next(TaskLogs)
        stdout = next(entry.line for entry in logs.lines if entry.stream == "stdout")
        pgid, grandchild = map(int, stdout.split())
        process.send_signal(signal.SIGTERM)
        assert await exit_code(process, tmp_path) == 0
        assert not alive(grandchild)
        assert group_members(pgid) == []
        assert server.result_entries() == []  # released, not reported: the server re-dispatches
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
