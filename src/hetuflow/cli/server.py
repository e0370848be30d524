"""``hetuflow-server``: run the server, manage migrations, and talk to a running server.

``start`` and ``migrate`` work on the configuration (``config.toml``, the environment, flags);
every other command is a client of the REST API (see ``hetuflow.cli.common``).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import click
from rich.markup import escape

from hetuflow import __version__
from hetuflow.cli import agents as agent_commands
from hetuflow.cli import auth as auth_commands
from hetuflow.cli import bulk as bulk_commands
from hetuflow.cli import concurrency_keys as concurrency_key_commands
from hetuflow.cli import cron_jobs as cron_commands
from hetuflow.cli import rate_limits as rate_limit_commands
from hetuflow.cli import tasks as task_commands
from hetuflow.cli import triggers as trigger_commands
from hetuflow.cli import workflows as workflow_commands
from hetuflow.cli.common import (
    CONTEXT_SETTINGS,
    EXIT_USAGE,
    Cli,
    client_command,
    details,
    fail,
    stdout,
    styled,
    table,
)
from hetuflow.config import Config, DatabaseConfig, load_config
from hetuflow.errors import HetuflowError
from hetuflow.server.app import CONFIG_ENV

LOCAL_AGENT_SLOTS = 4
"""Shell tasks the local agent runs at once."""
LOCAL_AGENT_DRAIN_GRACE_SECONDS = 3.0
"""How long the local agent's running tasks may finish once the server stops."""
LOCAL_AGENT_KILL_GRACE_SECONDS = 2.0
"""SIGTERM to SIGKILL for the local agent's shell tasks."""
AGENT_STOP_SECONDS = LOCAL_AGENT_DRAIN_GRACE_SECONDS + LOCAL_AGENT_KILL_GRACE_SECONDS + 10.0
"""How long the server waits for its local agent to drain before it SIGKILLs it: longer than
the agent's drain and kill graces, so the agent stops its shell tasks itself (they run in
their own sessions and would outlive a SIGKILLed agent)."""


@click.group(context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, prog_name="hetuflow-server")
def main() -> None:
    """hetuflow: a distributed task-scheduling server.

    `start` runs the server; the other commands talk to a running one over its REST API
    (--server, env HETUFLOW_SERVER, default http://127.0.0.1:8080).

    A task, agent or cron job id may be given as a unique prefix of at least 6 characters
    (tables show the first 8); an agent or a cron job also by its name.
    """


task_commands.register(main)
bulk_commands.register(main)
agent_commands.register(main)
cron_commands.register(main)
rate_limit_commands.register(main)
concurrency_key_commands.register(main)
workflow_commands.register(main)
trigger_commands.register(main)


# --- configuration ----------------------------------------------------------------------------


def _config_options(func: Any) -> Any:
    func = click.option(
        "--database-url",
        help="postgresql://user:pass@host:5432/db or sqlite:///path (wins over config and env).",
    )(func)
    func = click.option(
        "--config",
        "config_path",
        type=click.Path(dir_okay=False),
        help="TOML config file (default: ./config.toml if present).",
    )(func)
    return func


def load(
    config_path: str | None, database_url: str | None, extra: Mapping[str, Mapping[str, Any]]
) -> Config:
    overrides: dict[str, dict[str, Any]] = {
        section: dict(values) for section, values in extra.items()
    }
    if database_url:
        overrides.setdefault("database", {})["url"] = database_url
    try:
        return load_config(config_path, overrides=overrides)
    except HetuflowError as error:
        for line in error.message.splitlines():  # one line per problem
            click.echo(f"error: {line}", err=True)
        sys.exit(EXIT_USAGE)


def describe_database(database: DatabaseConfig) -> str:
    if database.kind == "sqlite":
        return f"SQLite {Path(database.sqlite_path).resolve()}"
    parts = urlsplit(database.dsn)
    netloc = parts.hostname or ""
    if parts.username:
        netloc = f"{parts.username}@{netloc}"
    if parts.port:
        netloc = f"{netloc}:{parts.port}"
    return "PostgreSQL " + urlunsplit(parts._replace(netloc=netloc, query=""))


def _migrate(database: DatabaseConfig) -> list[str]:
    from hetuflow.store.migrate import migrate_up

    try:
        return asyncio.run(migrate_up(database))
    except (HetuflowError, OSError) as error:
        fail(f"cannot migrate {describe_database(database)}: {error}")


def _check_database(database: DatabaseConfig) -> None:
    """Open the database once before serving: one clear line and exit 1 when it cannot be
    opened (a missing or unwritable directory, an unreachable server), not a traceback from
    the app's startup."""
    from hetuflow.store import create_store

    async def check() -> None:
        store = create_store(database)
        await store.open()
        try:
            await store.ping()
        finally:
            await store.close()

    try:
        asyncio.run(check())
    except Exception as error:
        fail(f"{describe_database(database)} is not usable: {error}")


# --- start ------------------------------------------------------------------------------------


@main.command()
@click.option("--bind", metavar="HOST:PORT", help="Listen address (default 127.0.0.1:8080).")
@_config_options
@click.option("--local-agent", is_flag=True, help="Also run an agent for `shell` tasks.")
@click.option("--no-migrate", is_flag=True, help="Do not apply pending migrations first.")
@click.option("--workers", type=click.IntRange(1, 64), help="Server processes (PostgreSQL only).")
def start(
    bind: str | None,
    config_path: str | None,
    database_url: str | None,
    local_agent: bool,
    no_migrate: bool,
    workers: int | None,
) -> None:
    """Run the server: REST API, console, agent gateway and scheduler."""
    server: dict[str, Any] = {}
    if bind is not None:
        server["bind_address"] = bind
    if workers is not None:
        server["workers"] = workers
    config = load(config_path, database_url, {"server": server} if server else {})

    from hetuflow.logging import configure_logging
    from hetuflow.server.access_log import drop_query_strings

    configure_logging(config.server.log_format, config.server.log_level)
    drop_query_strings()  # tokens sent as ?token= stay out of the access lines
    listener = _listen(config)  # before migrating and the banner: a taken port stops us here
    applied = [] if no_migrate else _migrate(config.database)
    if no_migrate:
        _check_database(config.database)
    processes = config.server.workers
    note = None
    if processes > 1 and config.database.kind == "sqlite":
        note = (
            f"SQLite runs one server process ([server] workers = {processes} applies to PostgreSQL)"
        )
        processes = 1
    _banner(config, processes, applied, note, local_agent)
    with _signals_absorbed():
        if processes == 1:
            with asyncio.Runner(loop_factory=_loop_factory()) as runner:
                code = runner.run(_serve(config, local_agent, listener))
        else:
            listener.close()  # uvicorn's supervisor binds again for its worker processes
            code = _serve_many(config, processes, local_agent)
    sys.exit(code)


def _listen(config: Config) -> socket.socket:
    """Bind the listening socket as uvicorn would (``SO_REUSEADDR``), or exit 2 with one line
    when the address is taken or cannot be used."""
    host, port = config.server.host, config.server.port
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
    except OSError as error:
        listener.close()
        bind = config.server.bind_address
        if error.errno == errno.EADDRINUSE:
            fail(f"{bind} is already in use (another hetuflow? use --bind)", EXIT_USAGE)
        fail(f"cannot listen on {bind}: {error.strerror or error}", EXIT_USAGE)
    listener.set_inheritable(True)
    return listener


def _public_host(host: str) -> str:
    if host in ("", "0.0.0.0", "::"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def _banner(
    config: Config, processes: int, applied: list[str], note: str | None, local_agent: bool
) -> None:
    host, port = config.server.host, config.server.port
    tls = config.server.tls_cert_file is not None
    url = f"{'https' if tls else 'http'}://{_public_host(host)}:{port}"
    pairs = [
        ("console", f"{url}/"),
        ("API docs", f"{url}/docs"),
        ("agents", f"{'wss' if tls else 'ws'}://{_public_host(host)}:{port}/ws"),
        ("listening", f"{config.server.bind_address}"),
        ("database", escape(describe_database(config.database))),
        ("processes", str(processes)),
    ]
    if applied:
        pairs.append(("migrated", ", ".join(applied)))
    if local_agent:
        pairs.append(
            (
                "local agent",
                f"runs `shell` tasks, {LOCAL_AGENT_SLOTS} at a time, as this OS user: whoever"
                " may create tasks can run any command here (other agents only with --shell)",
            )
        )
    pairs.append(("auth", auth_commands.auth_summary(config)))
    console = stdout()
    console.print(f"[bold]hetuflow {__version__}[/bold]")
    console.print(details(pairs))
    if note:
        console.print(f"[yellow]note:[/yellow] {note}")
    if config.auth_enabled and not asyncio.run(auth_commands.has_admin_token(config)):
        console.print(
            "[yellow]note:[/yellow] no admin token yet; make one with"
            " `hetuflow-server create-token --role admin` (same config), then send it as"
            " `Authorization: Bearer <token>` (CLI: --token or $HETUFLOW_TOKEN)"
        )
    sys.stdout.flush()


def _agent_command(config: Config) -> list[str]:
    scheme = "wss" if config.server.tls_cert_file is not None else "ws"
    url = f"{scheme}://{_public_host(config.server.host)}:{config.server.port}/ws"
    sibling = Path(sys.executable).with_name("hetuflow-agent")
    if sibling.exists():
        program = [str(sibling)]
    elif found := shutil.which("hetuflow-agent"):
        program = [found]
    else:
        program = [sys.executable, "-c", "from hetuflow.cli.agent import main; main()"]
    return [
        *program,
        "start",
        "--server",
        url,
        "--name",
        "local",
        "--task-types",
        "shell",
        "--max-concurrent",
        str(LOCAL_AGENT_SLOTS),
        "--drain-grace-seconds",
        f"{LOCAL_AGENT_DRAIN_GRACE_SECONDS:g}",
        "--kill-grace-seconds",
        f"{LOCAL_AGENT_KILL_GRACE_SECONDS:g}",
        "--stop-on-stdin-eof",
    ]


def _local_agent_environment(server_env: Mapping[str, str]) -> dict[str, str]:
    """The server's environment without what configures or reaches its database: no
    ``DATABASE_URL``, no ``HETUFLOW_*`` (the whole configuration travels to ``--workers``
    processes as ``HETUFLOW_CONFIG_JSON``), no libpq ``PG*`` variables (``PGPASSWORD``…)."""
    return {
        name: value
        for name, value in server_env.items()
        if name != "DATABASE_URL" and not name.startswith(("HETUFLOW_", "PG"))
    }


class LocalAgent:
    """The agent process of ``start --local-agent`` and the private directory it runs in."""

    def __init__(self, process: subprocess.Popen[bytes], directory: Path) -> None:
        self.process = process
        self.directory = directory


def _start_agent(config: Config) -> LocalAgent:
    """The local agent reads its stdin, a pipe only this process holds: when the server is
    gone, even SIGKILLed, the agent sees the end of it and drains like on SIGTERM.

    It gets none of the server's secrets: its environment is the server's without the database
    and configuration variables (``_local_agent_environment``), and it runs in a fresh private
    directory, not the server's, so its shell tasks do not find ``./config.toml`` or
    ``./hetuflow.db`` where the server found them. With auth on it gets a fresh agent token in
    its environment (never on its command line); the agent hides it from its tasks."""
    env = _local_agent_environment(os.environ)
    if config.auth_enabled:
        env["HETUFLOW_AGENT_TOKEN"] = auth_commands.local_agent_token(config)
    directory = Path(tempfile.mkdtemp(prefix="hetuflow-local-agent-"))
    try:
        process = subprocess.Popen(
            _agent_command(config), stdin=subprocess.PIPE, env=env, cwd=directory
        )
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    return LocalAgent(process, directory)


def _stop_agent(agent: LocalAgent | None) -> None:
    if agent is None:
        return
    process = agent.process
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=AGENT_STOP_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    shutil.rmtree(agent.directory, ignore_errors=True)


@contextlib.contextmanager
def _signals_absorbed() -> Iterator[list[int]]:
    """uvicorn shuts down on SIGINT/SIGTERM and then re-raises the signal; absorb that so the
    code after the server (stopping the local agent) still runs. Yields the signals seen."""
    seen: list[int] = []

    def remember(signum: int, _: FrameType | None) -> None:
        seen.append(signum)

    previous = {sig: signal.signal(sig, remember) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield seen
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop when installed (it comes with uvicorn[standard]), else asyncio's.
    uvicorn picks it by itself only when it creates the loop (``--workers``)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - a dependency of uvicorn[standard]
        return None
    return uvloop.new_event_loop


def _transport_options(config: Config) -> dict[str, Any]:
    """uvicorn options from ``[server]``: the WebSocket frame limit and TLS. No
    per-message deflate (a compressor per connection costs far more memory than an idle
    agent's state; agents do not ask for it) and no WebSocket-level keepalive pings: agents
    heartbeat and the reaper pings the quiet ones, which detects dead peers sooner."""
    server = config.server
    options: dict[str, Any] = {
        "ws_max_size": server.max_frame_bytes,
        "ws_per_message_deflate": False,
        "ws_ping_interval": None,
    }
    if server.tls_cert_file is not None:
        options["ssl_certfile"] = server.tls_cert_file
        options["ssl_keyfile"] = server.tls_key_file
    return options


def _uvicorn_config(config: Config, app: Any, **extra: Any) -> Any:
    import uvicorn

    return uvicorn.Config(
        app,
        host=config.server.host,
        port=config.server.port,
        log_config=None,
        log_level=config.server.log_level,
        access_log=config.server.access_log,
        lifespan="on",
        timeout_graceful_shutdown=10,
        **_transport_options(config),
        **extra,
    )


async def _serve(config: Config, local_agent: bool, listener: socket.socket) -> int:
    import uvicorn

    from hetuflow.server.app import begin_stopping, create_app

    app = create_app(config)

    class Server(uvicorn.Server):
        listening = asyncio.Event()

        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)
            if self.started:
                self.listening.set()

        async def shutdown(self, sockets: Any = None) -> None:
            begin_stopping(app)  # open event/log streams end now, not at the graceful timeout
            await super().shutdown(sockets)

    server = Server(_uvicorn_config(config, app))
    serving = asyncio.create_task(server.serve(sockets=[listener]))
    agent = None
    try:
        if local_agent:
            listening = asyncio.create_task(server.listening.wait())
            await asyncio.wait([serving, listening], return_when=asyncio.FIRST_COMPLETED)
            listening.cancel()
            if server.started:
                agent = await asyncio.to_thread(_start_agent, config)
        await serving
    finally:
        await asyncio.to_thread(_stop_agent, agent)
    return 0 if server.started else 1


def _serve_many(config: Config, processes: int, local_agent: bool) -> int:
    import uvicorn

    os.environ[CONFIG_ENV] = config.model_dump_json()
    agent = _start_agent(config) if local_agent else None  # it reconnects until we listen
    try:
        uvicorn.run(
            "hetuflow.server.app:create_app_from_environment",
            factory=True,
            workers=processes,
            host=config.server.host,
            port=config.server.port,
            log_config=None,
            log_level=config.server.log_level,
            access_log=config.server.access_log,
            lifespan="on",
            timeout_graceful_shutdown=10,
            **_transport_options(config),
        )
    finally:
        _stop_agent(agent)
    return 0


# --- migrate ----------------------------------------------------------------------------------


@main.group()
def migrate() -> None:
    """Database migrations: run, revert, add NAME, status."""


@migrate.command("run")
@_config_options
@click.option("--target", help="Stop at this migration (NNNN or NNNN_name).")
def migrate_run(config_path: str | None, database_url: str | None, target: str | None) -> None:
    """Apply pending migrations."""
    from hetuflow.store.migrate import migrate_up

    config = load(config_path, database_url, {})
    try:
        applied = asyncio.run(migrate_up(config.database, target))
    except (HetuflowError, OSError) as error:
        fail(str(error))
    where = describe_database(config.database)
    click.echo(f"applied {', '.join(applied)} on {where}" if applied else f"{where} is up to date")


@migrate.command("revert")
@_config_options
@click.option("--steps", type=click.IntRange(min=1), default=1, show_default=True)
def migrate_revert(config_path: str | None, database_url: str | None, steps: int) -> None:
    """Revert the last applied migration (or --steps N)."""
    from hetuflow.store.migrate import migrate_down

    config = load(config_path, database_url, {})
    try:
        reverted = asyncio.run(migrate_down(config.database, steps))
    except (HetuflowError, OSError) as error:
        fail(str(error))
    click.echo(f"reverted {', '.join(reverted)}" if reverted else "nothing to revert")


@migrate.command("add")
@click.argument("name")
def migrate_add(name: str) -> None:
    """Create empty up/down SQL files for a new migration, for both databases."""
    from hetuflow.store.migrate import add_migration

    try:
        paths = add_migration(name)
    except HetuflowError as error:
        fail(error.message, EXIT_USAGE)
    for path in paths:
        click.echo(f"created {path}")


@migrate.command("status")
@_config_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def migrate_status(config_path: str | None, database_url: str | None, as_json: bool) -> None:
    """List migrations and whether each is applied."""
    import json

    from hetuflow.store.migrate import migration_status

    config = load(config_path, database_url, {})
    try:
        status = asyncio.run(migration_status(config.database))
    except (HetuflowError, OSError) as error:
        fail(str(error))
    if as_json:
        click.echo(json.dumps([{"migration": m, "applied": a} for m, a in status], indent=2))
        return
    rows = [[label, "[green]applied[/green]" if done else "pending"] for label, done in status]
    stdout().print(table(["MIGRATION", "APPLIED"], rows, title=describe_database(config.database)))


# --- stats ------------------------------------------------------------------------------------


@main.command()
@client_command
def stats(cli: Cli) -> None:
    """Counts of tasks by status, agents online, enabled cron jobs."""
    numbers = cli.client.stats()
    if cli.as_json:
        cli.emit_json(numbers)
        return
    pairs = [(styled(status), str(count)) for status, count in numbers.tasks_by_status.items()]
    pairs += [
        ("tasks", str(numbers.tasks_total)),
        ("agents online", f"{numbers.agents_online} of {numbers.agents_total}"),
        ("cron jobs enabled", str(numbers.cron_jobs_enabled)),
    ]
    stdout().print(details(pairs))


auth_commands.register(main, _config_options, load)
