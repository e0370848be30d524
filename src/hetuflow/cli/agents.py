"""Agent commands of ``hetuflow-server``: list-agents, create-agent, delete-agent,
disable-agent, enable-agent."""

from __future__ import annotations

import click
from rich.markup import escape

from hetuflow.cli import ids
from hetuflow.cli.common import Cli, client_command, stdout, styled, table, when
from hetuflow.cli.ids import short
from hetuflow.cli.options import MultiValueCommand, MultiValueOption


def register(group: click.Group) -> None:
    for command in (list_agents, create_agent, delete_agent, disable_agent, enable_agent):
        group.add_command(command)


@click.command("list-agents")
@click.option("--online", is_flag=True, help="Only connected agents (online or draining).")
@client_command
def list_agents(cli: Cli, online: bool) -> None:
    """List agents with their status, load, task types and capabilities."""
    agents = cli.client.list_agents(online=True if online else None)
    if cli.as_json:
        cli.emit_json(agents)
        return
    rows = [
        [
            escape(agent.name),
            short(agent.id),
            styled(agent.status) + ("" if agent.enabled else " [red](disabled)[/red]"),
            f"{agent.running}/{agent.max_concurrent_tasks}",
            escape(" ".join(agent.supported_task_types)) or "-",
            escape(" ".join(agent.capabilities)) or "-",
            when(agent.last_heartbeat_at),
        ]
        for agent in agents
    ]
    title = f"{len(agents)} {'online ' if online else ''}agent{'s' if len(agents) != 1 else ''}"
    stdout().print(
        table(
            ["NAME", "ID", "STATUS", "RUNNING", "TASK TYPES", "CAPABILITIES", "LAST HEARTBEAT"],
            rows,
            title=title,
        )
    )


@click.command("create-agent", cls=MultiValueCommand)
@click.option("--name", required=True, help="A process connecting with this name becomes it.")
@click.option("--capabilities", cls=MultiValueOption, help="Space-separated: chrome headless.")
@click.option("--task-types", cls=MultiValueOption, help="Task types it supports.")
@click.option("--max-concurrent", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--disabled", is_flag=True, help="Create it disabled: it receives no tasks.")
@client_command
def create_agent(
    cli: Cli,
    name: str,
    capabilities: tuple[str, ...],
    task_types: tuple[str, ...],
    max_concurrent: int,
    disabled: bool,
) -> None:
    """Pre-create an agent (as POST /api/agents)."""
    agent = cli.client.create_agent(
        name,
        capabilities,
        supported_task_types=task_types,
        max_concurrent_tasks=max_concurrent,
        enabled=not disabled,
    )
    if cli.as_json:
        cli.emit_json(agent)
    else:
        stdout().print(f"created agent [bold]{escape(agent.name)}[/bold] {agent.id}")


AGENT_ARGUMENT_HELP = (
    "AGENT is an agent id, a unique id prefix (6+ characters) or an agent's exact name."
)


@click.command("delete-agent", epilog=AGENT_ARGUMENT_HELP)
@click.argument("agent")
@client_command
def delete_agent(cli: Cli, agent: str) -> None:
    """Delete an offline agent: it is no longer listed, its tokens stop working and a process
    reconnecting as it is refused; its tasks' history stays. Refused while it is connected
    (drain or stop it first)."""
    agent_id = ids.agent_id(cli, agent)
    cli.client.delete_agent(agent_id)
    if cli.as_json:
        cli.emit_json({"deleted": agent_id})
    else:
        stdout().print(f"deleted agent {escape(agent)}")


@click.command("disable-agent", epilog=AGENT_ARGUMENT_HELP)
@click.argument("agent")
@client_command
def disable_agent(cli: Cli, agent: str) -> None:
    """Give an agent no task from now on, connected or not, until enable-agent; what it runs
    finishes as usual."""
    changed = cli.client.disable_agent(ids.agent_id(cli, agent))
    if cli.as_json:
        cli.emit_json(changed)
    else:
        stdout().print(f"disabled agent [bold]{escape(changed.name)}[/bold] {changed.id}")


@click.command("enable-agent", epilog=AGENT_ARGUMENT_HELP)
@click.argument("agent")
@client_command
def enable_agent(cli: Cli, agent: str) -> None:
    """Give a disabled agent tasks again (once it is connected)."""
    changed = cli.client.enable_agent(ids.agent_id(cli, agent))
    if cli.as_json:
        cli.emit_json(changed)
    else:
        stdout().print(f"enabled agent [bold]{escape(changed.name)}[/bold] {changed.id}")
