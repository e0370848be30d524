"""``hetuflow-agent``: run an agent that connects to a hetuflow server.

::

    hetuflow-agent start --server ws://127.0.0.1:8080/ws --name scraper-1 \\
        --capabilities chrome headless --task-types shell web-scraping --max-concurrent 3 \\
        [--token T] [--config agent.toml] [--module my_project.handlers ...]

``--server`` may be given several times (or hold several URLs): the nodes of one cluster,
tried in turn when a connection is lost.

Flags override the environment (``HETUFLOW_AGENT_*``), which overrides the config file.
Shell tasks are off unless ``--shell`` is given or ``--task-types`` names ``shell``; they get a
minimal environment (``--pass-env NAME`` adds variables), never the agent's own.
SIGTERM or Ctrl-C drains the agent (a second one stops running tasks at once); it exits 0.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import click

from hetuflow import __version__
from hetuflow.agent import Agent, AgentConfig, load_agent_config
from hetuflow.agent.config import ENV_PREFIX
from hetuflow.agent.environment import hide_from_tasks, secret_names
from hetuflow.cli.common import CONTEXT_SETTINGS
from hetuflow.cli.options import MultiValueCommand, MultiValueOption
from hetuflow.errors import HetuflowError
from hetuflow.logging import configure_logging

TOKEN_ENV = ENV_PREFIX + "TOKEN"


@click.group(context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, prog_name="hetuflow-agent")
def main() -> None:
    """Run a hetuflow agent: `hetuflow-agent start --server ws://HOST:PORT/ws ...`
    (`./hetuflow-agent` in the project root)."""


def _default(field: str) -> str:
    """``[default: …]`` of a flag whose default lives in ``AgentConfig`` (flags default to
    None, so the environment and the config file can still set them)."""
    value = AgentConfig.model_fields[field].get_default(call_default_factory=True)
    if isinstance(value, list):
        value = " ".join(str(item) for item in value)
    return f"  [default: {value}]"


@main.command(cls=MultiValueCommand)
@click.option(
    "--server",
    "server",
    cls=MultiValueOption,
    metavar="URL",
    help="The server's WebSocket URL (env HETUFLOW_AGENT_SERVER). Give several (repeated, or "
    "space- or comma-separated) for the nodes of one cluster: the agent connects to the first "
    "that answers and, when the connection is lost, tries the others in turn, keeping its "
    "running tasks." + _default("server"),
)
@click.option(
    "--name", help="Agent name, its identity across restarts (default: a generated name)."
)
@click.option("--agent-id", help="Connect as this known agent id.")
@click.option(
    "--token",
    help="Agent token, sent as 'Authorization: Bearer <token>' (env HETUFLOW_AGENT_TOKEN).",
)
@click.option(
    "--capabilities", cls=MultiValueOption, help="Capabilities, space- or comma-separated."
)
@click.option(
    "--task-types",
    cls=MultiValueOption,
    help="Task types to offer (default: every task type with a handler); naming `shell` "
    "turns shell tasks on.",
)
@click.option(
    "--max-concurrent",
    "max_concurrent_tasks",
    type=click.IntRange(min=1),
    help="Slots (tasks at once)." + _default("max_concurrent_tasks"),
)
@click.option(
    "--module",
    "modules",
    cls=MultiValueOption,
    help="Python modules to import that register handlers.",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    help="TOML file (env HETUFLOW_AGENT_CONFIG); HETUFLOW_AGENT_* and flags win over it.",
)
@click.option(
    "--shell/--no-shell",
    default=None,
    help="Offer the built-in `shell` task type: any operator can then run any command here, "
    "as this agent's OS user. Default: off, unless --task-types names shell.",
)
@click.option(
    "--pass-env",
    "pass_env",
    cls=MultiValueOption,
    help="Environment variables shell tasks get besides PATH, HOME, LANG, LC_*, TZ, TMPDIR, "
    "USER, LOGNAME, SHELL (NAME* for a prefix).",
)
@click.option(
    "--drain-grace-seconds",
    type=click.FloatRange(min=0),
    help="Grace for running tasks on SIGTERM." + _default("drain_grace_seconds"),
)
@click.option(
    "--kill-grace-seconds",
    type=click.FloatRange(min=0),
    help="SIGTERM to SIGKILL for shell tasks." + _default("kill_grace_seconds"),
)
@click.option("--log-level", help="debug, info, warning, error." + _default("log_level"))
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    help="Agent log format." + _default("log_format"),
)
@click.option(
    "--stop-on-stdin-eof",
    is_flag=True,
    hidden=True,
    help="Drain when standard input closes (a pipe held by a supervising process).",
)
def start(
    config_path: str | None,
    server: tuple[str, ...],
    capabilities: tuple[str, ...],
    task_types: tuple[str, ...],
    modules: tuple[str, ...],
    shell: bool | None,
    pass_env: tuple[str, ...],
    stop_on_stdin_eof: bool,
    **flags: Any,
) -> None:
    """Connect to the server and run tasks until SIGTERM/SIGINT."""
    overrides: dict[str, Any] = dict(flags)
    if server:
        overrides["server"] = list(server)
    if capabilities:
        overrides["capabilities"] = list(capabilities)
    if task_types:
        overrides["task_types"] = list(task_types)
    if modules:
        overrides["modules"] = list(modules)
    if pass_env:
        overrides["pass_env"] = list(pass_env)
    overrides["shell"] = shell
    try:
        config = load_agent_config(config_path, overrides=overrides)
        configure_logging("json" if config.log_format == "json" else "text", config.log_level)
        # The token is in the config now: no child process inherits it, and neither it nor
        # another secret of this process's environment shows in its /proc/<pid>/environ.
        hide_from_tasks([TOKEN_ENV, *secret_names(os.environ)])
        os.environ.pop(TOKEN_ENV, None)
        sys.path.insert(0, "")  # --module names resolve from the working directory
        agent = Agent.from_config(config)
        agent.run_forever(stop_on_stdin_eof=stop_on_stdin_eof)
    except (HetuflowError, ValueError) as error:
        raise click.ClickException(str(error)) from None
    if agent.abandoned_threads:
        # Those threads never return: exiting normally would wait for them forever.
        logging.getLogger("hetuflow.agent").warning(
            "exiting with %d sync handler thread(s) still running", agent.abandoned_threads
        )
        logging.shutdown()
        sys.stdout.flush()
        os._exit(0)
