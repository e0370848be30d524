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
from hetuflow.agent import Agent, AgentConfig, load_agent_config
from hetuflow.cli.common import CONTEXT_SETTINGS
from hetuflow.cli.options import MultiValueCommand, MultiValueOption
from hetuflow.errors import HetuflowError
from hetuflow.logging import configure_logging


@click.group(context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, prog_name="hetuflow-agent")
def main() -> None:
    """Run a hetuflow agent: `hetuflow-agent start --server ws://HOST:PORT/ws ...`
    (`./hetuflow-agent` in the project root)."""


def _default(field: str) -> str:
    """``[default: …]`` of a flag whose default lives in ``AgentConfig`` (flags default to
    None, so the environment and the config file can still set them)."""
    value = AgentConfig.model_fields[field].get_default(call_default_factory=True)
    return f"  [default: {value}]"


@main.command(cls=MultiValueCommand)
@click.option(
    "--server", help="The server's WebSocket URL (env HETUFLOW_AGENT_SERVER)." + _default("server")
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
    help="Task types to offer (default: every task type with a handler, and shell).",
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
@click.option("--no-shell", is_flag=True, default=None, help="Do not offer the shell task type.")
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
