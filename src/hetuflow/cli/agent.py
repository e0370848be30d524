"""``hetuflow-agent``: run an agent that connects to a hetuflow server.

::

    hetuflow-agent start --server ws://127.0.0.1:8080/ws --name scraper-1 \\
        --capabilities chrome headless --task-types shell web-scraping --max-concurrent 3 \\
        [--token T] [--config agent.toml] [--module my_project.handlers ...]

Flags override the environment (``HETUFLOW_AGENT_*``), which overrides the config file.
SIGTERM or Ctrl-C drains the agent (a second one stops running tasks at once); it exits 0.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from hetuflow import __version__
from hetuflow.agent import Agent, load_agent_config
from hetuflow.cli.options import MultiValueCommand, MultiValueOption
from hetuflow.errors import HetuflowError
from hetuflow.logging import configure_logging


@click.group()
@click.version_option(__version__, prog_name="hetuflow-agent")
def main() -> None:
    """Run a hetuflow agent."""


@main.command(cls=MultiValueCommand)
@click.option("--server", help="The server's WebSocket URL, e.g. ws://127.0.0.1:8080/ws.")
@click.option("--name", help="Agent name (stable identity across restarts).")
@click.option("--agent-id", help="Connect as this known agent id.")
@click.option("--token", help="Agent token, sent as 'Authorization: Bearer <token>'.")
@click.option(
    "--capabilities", cls=MultiValueOption, help="Capabilities, space- or comma-separated."
)
@click.option(
    "--task-types",
    cls=MultiValueOption,
    help="Task types to offer (default: every task type with a handler).",
)
@click.option("--max-concurrent", "max_concurrent_tasks", type=int, help="Slots (tasks at once).")
@click.option(
    "--module",
    "modules",
    cls=MultiValueOption,
    help="Python modules to import that register handlers.",
)
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="TOML file.")
@click.option("--no-shell", is_flag=True, default=None, help="Do not offer the shell task type.")
@click.option("--drain-grace-seconds", type=float, help="Grace for running tasks on SIGTERM.")
@click.option("--kill-grace-seconds", type=float, help="SIGTERM to SIGKILL for shell tasks.")
@click.option("--log-level", help="debug, info, warning, error.")
@click.option("--log-format", type=click.Choice(["text", "json"]), help="Agent log format.")
@click.option(
    "--stop-on-stdin-eof",
    is_flag=True,
    hidden=True,
    help="Drain when standard input closes (a pipe held by a supervising process).",
)
def start(
    config_path: str | None,
    capabilities: tuple[str, ...],
    task_types: tuple[str, ...],
    modules: tuple[str, ...],
    no_shell: bool | None,
    stop_on_stdin_eof: bool,
    **flags: Any,
) -> None:
    """Connect to the server and run tasks until SIGTERM/SIGINT."""
    overrides: dict[str, Any] = dict(flags)
    if capabilities:
        overrides["capabilities"] = list(capabilities)
    if task_types:
        overrides["task_types"] = list(task_types)
    if modules:
        overrides["modules"] = list(modules)
    if no_shell:
        overrides["shell"] = False
    try:
        config = load_agent_config(config_path, overrides=overrides)
        configure_logging("json" if config.log_format == "json" else "text", config.log_level)
        sys.path.insert(0, "")  # --module names resolve from the working directory
        agent = Agent.from_config(config)
        agent.run_forever(stop_on_stdin_eof=stop_on_stdin_eof)
    except (HetuflowError, ValueError) as error:
        raise click.ClickException(str(error)) from None
