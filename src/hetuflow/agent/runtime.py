"""The ``Agent``: handlers, slots and a connection that comes back after every drop.

::

    agent = Agent(server="ws://127.0.0.1:8080/ws", name="a1", capabilities=["chrome"],
                  max_concurrent_tasks=3)

    @agent.handler("web-scraping")
    async def scrape(payload, ctx):
        ctx.log(f"fetching {payload['url']}")
        return {"title": ...}

    agent.run_forever()          # or: await agent.run()

``run`` connects, registers and runs tasks until ``drain`` (SIGTERM/SIGINT under
``run_forever``) finishes. A dropped connection is retried with exponential backoff and
jitter; running attempts carry on, are reported in the next ``AgentCapabilities.running``, and
their results wait in the outbox until the agent is registered again.

``server`` may name several nodes of one cluster (``server=["ws://a:8080/ws",
"ws://b:8080/ws"]``): the agent connects to the first that answers. When its connection is
lost it tries the next node at once, then the others in turn; the backoff applies once a whole
round of them failed. Its running attempts continue across the switch as across a reconnect
to the same node.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import os
import random
import signal
import sys
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus, WebSocketException

from hetuflow import __version__
from hetuflow.agent.config import AgentConfig
from hetuflow.agent.connection import (
    CLOSE_AGENT_DELETED,
    CLOSE_AGENT_NOT_FOUND,
    CLOSE_PROTOCOL_VERSION,
    CLOSE_SUPERSEDED,
    CLOSE_UNAUTHORIZED,
    Connection,
)
from hetuflow.agent.environment import Redactor, base_task_environment, secret_values
from hetuflow.agent.handlers import F, HandlerFunc, Handlers, load_module
from hetuflow.agent.outbox import Outbox
from hetuflow.agent.shell import run_shell
from hetuflow.agent.slots import Slots
from hetuflow.agent.tracking import ProcessTracker
from hetuflow.agent.watchdog import ShellWatchdog
from hetuflow.errors import (
    AgentRejected,
    ConfigInvalid,
    ProtocolViolation,
    RegistrationRefused,
)
from hetuflow.protocol import (
    PROTOCOL_VERSION,
    AgentCapabilities,
    AgentDraining,
    AgentRegistered,
    CapabilitySet,
    CloseCode,
)

log = logging.getLogger("hetuflow.agent")

FLUSH_ON_EXIT_SECONDS = 5.0


class Agent:
    """A hetuflow agent. See the module docstring and docs/agent.md."""

    def __init__(
        self,
        server: str | Sequence[str] | None = None,
        name: str | None = None,
        *,
        capabilities: Sequence[str] = (),
        max_concurrent_tasks: int | None = None,
        task_types: Sequence[str] | None = None,
        token: str | None = None,
        config: AgentConfig | None = None,
        **options: Any,
    ) -> None:
        """Arguments override ``config`` (default ``AgentConfig()``); ``options`` are any
        other ``AgentConfig`` fields (``drain_grace_seconds=5``…)."""
        values = (config or AgentConfig()).model_dump()
        urls = [server] if isinstance(server, str) else list(server) if server else None
        given: dict[str, Any] = {"server": urls, "name": name, "token": token, **options}
        values.update({key: value for key, value in given.items() if value is not None})
        if capabilities:
            values["capabilities"] = list(capabilities)
        if max_concurrent_tasks is not None:
            values["max_concurrent_tasks"] = max_concurrent_tasks
        if task_types is not None:
            values["task_types"] = list(task_types)
        self.config = AgentConfig.model_validate(values)
        self.handlers = Handlers()
        if self.config.shell_enabled:
            self.handlers.add("shell", self._shell)
        self._task_env = base_task_environment(os.environ, self.config.pass_env)
        self._redact = Redactor(secret_values(os.environ, self.config.token))
        self.agent_id: str | None = self.config.agent_id
        """The id the server knows this agent by (from ``AgentRegistered``)."""
        self.registrations = 0
        """How many times the agent registered (1 + reconnects)."""
        self._outbox: Outbox | None = None
        self._slots: Slots | None = None
        self._connection: Connection | None = None
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._watchdog = ShellWatchdog(self.config.kill_grace_seconds, env=self._task_env)
        self._tracker = ProcessTracker()
        self._task_types: list[str] = []
        self._registered = asyncio.Event()
        self._closing = asyncio.Event()
        self._hurry = asyncio.Event()
        self._started = False
        self._draining = False
        self._drain_task: asyncio.Task[None] | None = None
        self._rejected: AgentRejected | None = None

    @classmethod
    def from_config(cls, config: AgentConfig) -> Agent:
        """An agent from configuration, with the handlers of ``config.modules`` loaded."""
        agent = cls(config=config)
        for name in config.modules:
            agent.load_module(name)
        return agent

    # --- handlers --------------------------------------------------------------------------

    def handler(self, task_type: str) -> Callable[[F], F]:
        """Decorator registering an async or sync handler for ``task_type``."""
        return self.handlers.handler(task_type)

    def add_handler(self, task_type: str, func: HandlerFunc) -> None:
        self.handlers.add(task_type, func)

    def include(self, handlers: Handlers) -> None:
        """Take every handler of ``handlers`` (e.g. a module-level ``Handlers()``)."""
        self.handlers.include(handlers)

    def load_module(self, name: str) -> ModuleType:
        """Import a module and take its handlers: it may define ``register(agent)``, and/or
        hold ``Handlers`` objects at module level."""

        def register(module: ModuleType) -> int:
            before = {handler.task_type: handler for handler in self.handlers}
            for value in list(vars(module).values()):
                if isinstance(value, Handlers) and value is not self.handlers:
                    self.include(value)
            hook = getattr(module, "register", None)
            if callable(hook):
                hook(self)
            after = {handler.task_type: handler for handler in self.handlers}
            return sum(1 for key, value in after.items() if before.get(key) is not value)

        return load_module(name, register)

    async def _shell(self, payload: dict[str, Any], ctx: Any) -> dict[str, Any]:
        return await run_shell(
            payload,
            ctx,
            kill_grace_seconds=self.config.kill_grace_seconds,
            max_line_bytes=self.config.max_log_line_bytes,
            base_env=self._task_env,
            watchdog=self._watchdog,
            tracker=self._tracker,
        )

    def supported_task_types(self) -> list[str]:
        """Task types offered to the server: the declared ones that have a handler (plus
        ``shell`` when it is on), or every handler's when none are declared."""
        declared = self.config.task_types
        if declared is None:
            return self.handlers.task_types()
        missing = [task_type for task_type in declared if task_type not in self.handlers]
        if missing:
            log.warning("no handler for task type(s) %s: not offered", ", ".join(missing))
        offered = [task_type for task_type in dict.fromkeys(declared) if task_type in self.handlers]
        if "shell" in self.handlers and "shell" not in offered:
            offered.append("shell")
        return offered

    # --- state -----------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connection is not None

    @property
    def draining(self) -> bool:
        return self._draining

    @property
    def running_count(self) -> int:
        return len(self._slots) if self._slots is not None else 0

    @property
    def abandoned_threads(self) -> int:
        """Sync handler threads that ignored a cancel and still run (see docs/agent.md)."""
        return self._slots.abandoned_threads if self._slots is not None else 0

    async def wait_registered(self) -> None:
        """Until the agent is registered on a connection (for tests and embedding)."""
        await self._registered.wait()

    def _thread_pool(self) -> concurrent.futures.Executor:
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(
                max_workers=self.config.max_concurrent_tasks + 4,
                thread_name_prefix="hetuflow-handler",
            )
        return self._pool

    # --- running ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Connect, register and run tasks until ``drain`` or ``stop`` has finished."""
        if self._started:
            raise RuntimeError("an Agent runs once; make a new one")
        self._started = True
        task_types = self._task_types = self.supported_task_types()
        if not task_types:
            raise ConfigInvalid(
                "the agent offers no task type: register a handler (--module) or turn shell "
                "tasks on (--shell)"
            )
        loop = asyncio.get_running_loop()
        self._outbox = Outbox(
            log_flush_seconds=self.config.log_flush_seconds,
            max_log_lines=self.config.max_buffered_log_lines,
        )
        self._outbox.bind(loop)
        self._slots = Slots(
            self.handlers,
            self._outbox,
            max_concurrent_tasks=self.config.max_concurrent_tasks,
            kill_grace_seconds=self.config.kill_grace_seconds,
            max_log_line_bytes=self.config.max_log_line_bytes,
            thread_pool=self._thread_pool,
            redact=self._redact if self._redact else None,
            on_capacity_changed=self._capacity_changed,
        )
        log.info(
            "agent %s starting: server %s, task types %s, capabilities %s, %d slot(s)",
            self.config.name or "(unnamed)",
            ", ".join(self.config.server),
            ", ".join(task_types),
            ", ".join(self.config.capabilities) or "none",
            self.config.max_concurrent_tasks,
        )
        connector = asyncio.create_task(self._connect_loop(task_types), name="hetuflow-agent")
        try:
            await self._closing.wait()
        finally:
            self._closing.set()
            if self._drain_task is not None and not self._drain_task.done():
                self._drain_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._drain_task
            await self._slots.close()
            connector.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await connector
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)
            await self._watchdog.close()
            self._tracker.close()
            log.info("agent stopped")
        if self._rejected is not None:
            raise self._rejected

    def _hello(self, task_types: list[str]) -> AgentCapabilities:
        assert self._slots is not None
        return AgentCapabilities(
            capabilities=CapabilitySet(
                capabilities=list(self.config.capabilities),
                max_concurrent_tasks=self._slots.declared_capacity,
                supported_task_types=task_types,
            ),
            agent_id=self.agent_id,
            name=self.config.name,
            protocol_version=PROTOCOL_VERSION,
            running=self._slots.held(),
        )

    def _capacity_changed(self) -> None:
        """Abandoned sync threads took or gave back slots: declare the real number (the server
        takes a repeated ``AgentCapabilities`` as an update)."""
        if self._connection is not None:
            assert self._outbox is not None
            self._outbox.control(self._hello(self._task_types))
        # not connected: the next registration declares it

    def _on_registered(self, registered: AgentRegistered) -> None:
        assert self._slots is not None
        assert self._outbox is not None
        self.agent_id = registered.agent_id
        if registered.protocol_version != PROTOCOL_VERSION:
            log.warning(
                "server speaks protocol %d, this agent %d",
                registered.protocol_version,
                PROTOCOL_VERSION,
            )
        for attempt in registered.superseded:
            self._slots.stop(attempt.task_id, attempt.attempt, "superseded")
        if self._connection is None:  # a new connection, not the answer to an update
            self._outbox.forget_connection(self._slots.held_keys())
        if self._draining:
            self._outbox.control(AgentDraining())

    async def _connect_loop(self, task_types: list[str]) -> None:
        """Connect, register and serve; after a lost connection or a failed try, the next
        server URL. The backoff pause comes once every URL was tried since the last
        registration (with one URL: after every try, as always)."""
        servers = self.config.server
        delay = self.config.reconnect_min_seconds
        headers = {"User-Agent": f"hetuflow-agent/{__version__}"}
        if self.config.token:
            headers["Authorization"] = f"Bearer {self.config.token}"
        index = 0
        tried = 0
        while not self._closing.is_set():
            url = servers[index]
            index = (index + 1) % len(servers)
            tried += 1
            registrations = self.registrations
            self._check_close_code(await self._connect_once(url, headers, task_types))
            if self.registrations > registrations:
                delay = self.config.reconnect_min_seconds
                tried = 1  # the URL just lost counts as tried: the others come first
            if self._closing.is_set():
                return
            if tried < len(servers):
                continue  # the next URL at once
            tried = 0
            pause = random.uniform(delay / 2, delay)
            delay = min(delay * 2, self.config.reconnect_max_seconds)
            log.info("reconnecting in %.2f s", pause)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(pause):
                    await self._closing.wait()

    async def _connect_once(
        self, url: str, headers: dict[str, str], task_types: list[str]
    ) -> int | None:
        """One connection to ``url``, served until it ends; the close code that matters."""
        close_code: int | None = None
        try:
            async with connect(
                url,
                additional_headers=headers,
                user_agent_header=None,
                compression=None,
                max_size=self.config.max_frame_bytes,
                open_timeout=self.config.register_timeout_seconds,
            ) as websocket:
                try:
                    await self._session(websocket, task_types, url)
                finally:
                    close_code = websocket.close_code
                    self._after_session(url, close_code)
            if not self._draining:
                log.warning("connection to %s closed (%s)", url, close_code)
        except InvalidStatus as error:
            status = error.response.status_code
            log.error("server %s refused the connection: HTTP %d", url, status)
            if status in (401, 403):
                self._refused_token(status, error.response.body)
        except RegistrationRefused as error:
            log.error("server %s refused the registration: %s", url, error.message)
            if error.error_code == "agent_not_found":
                close_code = CLOSE_AGENT_NOT_FOUND
            elif error.error_code == "agent_deleted":
                close_code = CLOSE_AGENT_DELETED
        except (OSError, TimeoutError, WebSocketException, ProtocolViolation) as error:
            log.warning("connection to %s failed: %s", url, error or repr(error))
        return close_code

    def _after_session(self, url: str, close_code: int | None) -> None:
        """A registered connection ended with no close frame (the node died, the network
        failed): what was sent on it lately may never have been written, so send it again."""
        if close_code not in (None, CloseCode.ABNORMAL):
            return
        assert self._outbox is not None
        resent = self._outbox.resend_recent()
        if resent:
            log.info(
                "%d result(s) sent to %s just before it was lost will be sent again", resent, url
            )

    async def _session(self, websocket: ClientConnection, task_types: list[str], url: str) -> None:
        """Register on ``websocket`` (to ``url``) and serve it until it closes."""
        assert self._outbox is not None
        assert self._slots is not None
        connection = Connection(
            websocket,
            self._outbox,
            self._slots,
            agent_id=lambda: self.agent_id,
            on_registered=self._on_registered,
        )
        registered = await connection.register(
            self._hello(task_types), self.config.register_timeout_seconds
        )
        self._on_registered(registered)
        self.registrations += 1
        log.info(
            "registered as %s (%s) on %s, holding %d attempt(s)",
            registered.name,
            registered.agent_id,
            url,
            len(self._slots),
        )
        self._connection = connection
        self._registered.set()
        try:
            await connection.serve()
        finally:
            self._connection = None
            self._registered.clear()

    def _refused_token(self, status: int, body: bytes | bytearray | None) -> None:
        """The handshake was refused for the token: retrying with it cannot help, so stop."""
        reason = "missing, invalid, expired or revoked" if status == 401 else "not an agent token"
        with contextlib.suppress(ValueError, TypeError, AttributeError, KeyError):
            reason = json.loads(body or b"")["error"]["message"]
        problem = f"the server refused this agent's token (HTTP {status}): {reason}"
        log.error("%s", problem)
        self._rejected = AgentRejected(problem)
        self._closing.set()

    def _check_close_code(self, close_code: int | None) -> None:
        """Act on the server's reason for closing: some mean "do not come back as is"."""
        problem: str | None = None
        if close_code == CLOSE_SUPERSEDED:
            problem = "another connection took over this agent (same name or id): stopping"
        elif close_code == CLOSE_UNAUTHORIZED:
            problem = "the server refused this agent's token for this agent (name or id)"
        elif close_code == CLOSE_PROTOCOL_VERSION:
            problem = f"the server does not support protocol version {PROTOCOL_VERSION}"
        elif close_code == CLOSE_AGENT_DELETED:
            problem = f"agent {self.agent_id} was deleted on the server: stopping"
        elif close_code == CLOSE_AGENT_NOT_FOUND:
            if self.agent_id is not None and self.agent_id != self.config.agent_id:
                log.warning(
                    "the server no longer knows agent id %s: registering anew", self.agent_id
                )
                self.agent_id = None
                return
            problem = f"the server knows no agent with id {self.agent_id}"
        if problem is not None:
            log.error("%s", problem)
            self._rejected = AgentRejected(problem)
            self._closing.set()

    # --- stopping --------------------------------------------------------------------------

    def request_drain(self, grace_seconds: float | None = None) -> None:
        """Start draining (from a signal handler or the loop); a second call hurries it."""
        if not self._started or self._closing.is_set():
            return
        if self._drain_task is None:
            self._drain_task = asyncio.get_running_loop().create_task(self.drain(grace_seconds))
        else:
            log.warning("second stop request: stopping running tasks now")
            self._hurry.set()

    async def drain(self, grace_seconds: float | None = None) -> None:
        """Take no new tasks, tell the server (``AgentDraining``), let running tasks finish for
        ``grace_seconds`` (default ``drain_grace_seconds``), stop the rest (unreported: the
        server re-dispatches them), send what is buffered, and end ``run``."""
        assert self._slots is not None
        assert self._outbox is not None
        if self._draining:
            await self._closing.wait()
            return
        grace = self.config.drain_grace_seconds if grace_seconds is None else grace_seconds
        self._draining = True
        self._slots.accepting = False
        log.info("draining: %d running task(s), grace %.1f s", len(self._slots), grace)
        self._outbox.control(AgentDraining())
        for job_key in [key for key, job in self._slots.jobs() if job.started_at is None]:
            self._slots.stop(job_key[0], job_key[1], "released")
        hurry = asyncio.create_task(self._hurry.wait())
        empty = asyncio.create_task(self._slots.wait_empty(grace))
        try:
            await asyncio.wait({hurry, empty}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            hurry.cancel()
            empty.cancel()
        if len(self._slots):
            log.warning("drain grace over: stopping %d task(s)", len(self._slots))
            self._slots.stop_all("released")
            await self._slots.wait_empty(self.config.kill_grace_seconds + 5.0)
        if self._connection is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(FLUSH_ON_EXIT_SECONDS):
                    await self._outbox.wait_idle()
            await self._connection.close()
        self._closing.set()

    async def stop(self) -> None:
        """Drain with no grace."""
        await self.drain(0)

    def run_forever(self, *, stop_on_stdin_eof: bool = False) -> None:
        """Run on a new event loop (uvloop when installed) until SIGTERM/SIGINT drain it.

        ``stop_on_stdin_eof``: also drain when standard input (a pipe from a supervising
        process, e.g. the server of ``start --local-agent``) reaches its end, which happens
        when that process is gone, even SIGKILLed."""
        loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None
        try:
            import uvloop

            loop_factory = uvloop.new_event_loop
        except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
            pass
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(self._run_with_signals(stop_on_stdin_eof))

    async def _run_with_signals(self, stop_on_stdin_eof: bool = False) -> None:
        loop = asyncio.get_running_loop()
        signals = (signal.SIGTERM, signal.SIGINT)
        for signum in signals:
            loop.add_signal_handler(signum, self.request_drain)
        stdin: asyncio.BaseTransport | None = None
        if stop_on_stdin_eof:
            pipe = os.fdopen(os.dup(sys.stdin.fileno()), "rb", buffering=0)
            stdin, _ = await loop.connect_read_pipe(lambda: _EndOfInput(self._on_stdin_eof), pipe)
        try:
            await self.run()
        finally:
            if stdin is not None:
                stdin.close()
            for signum in signals:
                loop.remove_signal_handler(signum)

    def _on_stdin_eof(self) -> None:
        if self._drain_task is None and not self._closing.is_set():
            log.warning("standard input closed (the supervising process is gone): draining")
            self.request_drain()


class _EndOfInput(asyncio.Protocol):
    """Ignores what a pipe carries; calls ``on_end`` once it reaches its end."""

    def __init__(self, on_end: Callable[[], None]) -> None:
        self.on_end = on_end

    def eof_received(self) -> bool | None:
        self.on_end()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.on_end()
