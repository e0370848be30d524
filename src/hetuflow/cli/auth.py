"""``hetuflow-server create-token | create-agent-token | list-tokens | revoke-token``.

These work on the database named by the configuration (``config.toml``, the environment,
``--database-url``), not through the API: that is how the first admin token is made. They
apply pending migrations first, as ``start`` does. A secret is printed once, alone on stdout
(``TOKEN=$(hetuflow-server create-token --role admin)``); what was made goes to stderr.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar
from uuid import UUID

import click

from hetuflow.cli.common import EXIT_USAGE, fail, stdout, table, when
from hetuflow.config import Config
from hetuflow.errors import HetuflowError
from hetuflow.models import NewAgent
from hetuflow.store import create_store
from hetuflow.store.base import Store
from hetuflow.tokens import ApiToken, Role, parse_duration

T = TypeVar("T")
Load = Callable[[str | None, str | None, Mapping[str, Mapping[str, Any]]], Config]
ROLES = [Role.ADMIN.value, Role.OPERATOR.value, Role.VIEWER.value]


def _with_store(config: Config, work: Callable[[Store], Awaitable[T]]) -> T:
    from hetuflow.store.migrate import migrate_up

    async def run() -> T:
        await migrate_up(config.database)
        store = create_store(config.database)
        await store.open()
        try:
            return await work(store)
        finally:
            await store.close()

    try:
        return asyncio.run(run())
    except HetuflowError as error:
        fail(error.message)
    except OSError as error:
        fail(f"cannot reach the database: {error}")


def _expiry(expires_in: str | None, now: datetime) -> datetime | None:
    if expires_in is None:
        return None
    try:
        return now + parse_duration(expires_in, field="--expires-in")
    except HetuflowError as error:
        fail(f"--expires-in: {error.message}", EXIT_USAGE)


def _status(token: ApiToken, now: datetime) -> str:
    problem = token.problem_at(now)
    if problem is None:
        return "active"
    return "revoked" if token.revoked_at is not None else "expired"


def _as_json(token: ApiToken, now: datetime, secret: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": str(token.id),
        "name": token.name,
        "role": token.role.value,
        "hint": token.hint,
        "agent_id": None if token.agent_id is None else str(token.agent_id),
        "status": _status(token, now),
        "created_at": token.created_at.isoformat(),
        "expires_at": None if token.expires_at is None else token.expires_at.isoformat(),
        "revoked_at": None if token.revoked_at is None else token.revoked_at.isoformat(),
    }
    if secret is not None:
        body["token"] = secret
    return body


def _print_created(token: ApiToken, secret: str, as_json: bool, now: datetime) -> None:
    if as_json:
        click.echo(json.dumps(_as_json(token, now, secret), indent=2))
        return
    click.echo(secret)
    expires = "never expires" if token.expires_at is None else f"expires {when(token.expires_at)}"
    click.echo(
        f"created {token.role} token {token.name!r} (id {token.id}, {expires});"
        " the secret above is shown only now",
        err=True,
    )


def register(main: click.Group, config_options: Callable[[Any], Any], load: Load) -> None:
    """Add the token commands to ``hetuflow-server``."""

    @main.command("create-token")
    @click.option("--role", type=click.Choice(ROLES), required=True, help="What it may do.")
    @click.option("--name", help="Label for people (default: the role).")
    @click.option("--expires-in", metavar="DURATION", help="e.g. 30d, 12h, 90m (default never).")
    @click.option("--json", "as_json", is_flag=True, help="Print JSON (with the secret).")
    @config_options
    def create_token(
        role: str,
        name: str | None,
        expires_in: str | None,
        as_json: bool,
        config_path: str | None,
        database_url: str | None,
    ) -> None:
        """Make an API token and print its secret (once). Works on the database directly."""
        from hetuflow.server.auth import issue_token

        config = load(config_path, database_url, {})
        now = datetime.now(UTC)
        expires_at = _expiry(expires_in, now)
        secret, token = _with_store(
            config,
            lambda store: issue_token(
                store, name=name or role, role=Role(role), now=now, expires_at=expires_at
            ),
        )
        _print_created(token, secret, as_json, now)

    @main.command("create-agent-token")
    @click.argument("agent")
    @click.option("--name", help="Label for people (default: the agent's name).")
    @click.option("--expires-in", metavar="DURATION", help="e.g. 90d (default never).")
    @click.option("--json", "as_json", is_flag=True, help="Print JSON (with the secret).")
    @config_options
    def create_agent_token(
        agent: str,
        name: str | None,
        expires_in: str | None,
        as_json: bool,
        config_path: str | None,
        database_url: str | None,
    ) -> None:
        """Make a token for AGENT (a name or an id) and print its secret (once).

        An agent name that does not exist yet is created (offline until it connects)."""
        from hetuflow.server.auth import issue_token

        config = load(config_path, database_url, {})
        now = datetime.now(UTC)
        expires_at = _expiry(expires_in, now)

        async def work(store: Store) -> tuple[str, ApiToken]:
            found = None
            try:
                found = await store.get_agent(UUID(agent))
            except ValueError:
                found = await store.get_agent_by_name(agent)
                if found is None:
                    found = await store.create_agent(NewAgent(agent), now=now)
            if found is None:
                fail(f"no agent with id {agent}")
            return await issue_token(
                store,
                name=name or found.name,
                role=Role.AGENT,
                now=now,
                expires_at=expires_at,
                agent_id=found.id,
            )

        secret, token = _with_store(config, work)
        _print_created(token, secret, as_json, now)

    @main.command("list-tokens")
    @click.option("--json", "as_json", is_flag=True, help="Print JSON.")
    @config_options
    def list_tokens(as_json: bool, config_path: str | None, database_url: str | None) -> None:
        """Every token (never a secret), newest first. Works on the database directly."""
        config = load(config_path, database_url, {})
        now = datetime.now(UTC)
        tokens = _with_store(config, lambda store: store.list_api_tokens())
        if as_json:
            click.echo(json.dumps([_as_json(token, now) for token in tokens], indent=2))
            return
        rows = [
            [
                str(token.id),
                token.name,
                token.role.value,
                token.hint + "…",
                "-" if token.agent_id is None else str(token.agent_id),
                _status(token, now),
                when(token.created_at),
                when(token.expires_at),
            ]
            for token in tokens
        ]
        columns = ["ID", "NAME", "ROLE", "HINT", "AGENT", "STATUS", "CREATED", "EXPIRES"]
        stdout().print(table(columns, rows))

    @main.command("revoke-token")
    @click.argument("token_id")
    @config_options
    def revoke_token(token_id: str, config_path: str | None, database_url: str | None) -> None:
        """Revoke a token by id: refused from now on, on every node."""
        try:
            parsed = UUID(token_id)
        except ValueError:
            fail(f"{token_id!r} is not a token id (see list-tokens)", EXIT_USAGE)
        config = load(config_path, database_url, {})
        now = datetime.now(UTC)
        token = _with_store(config, lambda store: store.revoke_api_token(parsed, now=now))
        click.echo(f"revoked {token.role} token {token.name!r} ({token.id})")


async def has_admin_token(config: Config) -> bool:
    """Whether the database holds an admin token that can be used now."""
    store = create_store(config.database)
    await store.open()
    try:
        now = datetime.now(UTC)
        tokens = await store.list_api_tokens()
    finally:
        await store.close()
    return any(t.role is Role.ADMIN and t.problem_at(now) is None for t in tokens)


def local_agent_token(config: Config) -> str:
    """A fresh agent token for the local agent of ``start --local-agent`` (auth on): its
    earlier ones are revoked. The secret goes to the child in its environment, never argv."""
    from hetuflow.server.auth import issue_token

    name = "local agent (hetuflow-server start)"

    async def work(store: Store) -> str:
        now = datetime.now(UTC)
        agent = await store.get_agent_by_name("local")
        if agent is None:
            agent = await store.create_agent(NewAgent("local"), now=now)
        for token in await store.list_api_tokens():
            if token.agent_id == agent.id and token.name == name and token.revoked_at is None:
                await store.revoke_api_token(token.id, now=now)
        secret, _ = await issue_token(store, name=name, role=Role.AGENT, now=now, agent_id=agent.id)
        return secret

    async def run() -> str:
        store = create_store(config.database)
        await store.open()
        try:
            return await work(store)
        finally:
            await store.close()

    return asyncio.run(run())


def auth_summary(config: Config) -> str:
    """The ``auth`` line of the start banner."""
    if config.auth_enabled:
        return "on: every request needs a bearer token (docs/security.md)"
    if config.auth.enabled is False and not _loopback(config):
        return (
            "[bold red]OFF on a non-loopback address: anyone who can reach it can run"
            " commands on your agents[/bold red]"
        )
    return (
        "[yellow]off[/yellow]: open to anyone on this machine (loopback only);"
        " it turns on when listening on another address"
    )


def _loopback(config: Config) -> bool:
    from hetuflow.config import is_loopback

    return is_loopback(config.server.host)
