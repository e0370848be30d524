"""PostgresNotifier: wakes subscribers here at once and on every other node via LISTEN/NOTIFY.

One dedicated connection both LISTENs and sends ``pg_notify``; notifications whose sender is
that same backend are ignored, because ``publish`` already delivered them locally (a node is
not woken twice). A supervisor task owned by ``open``/``close`` watches the connection: when it
drops (termination callback, failed publish or failed health check) it reconnects with backoff,
LISTENs again and calls every subscriber once with payload ``""``, since a wake-up may have
been lost meanwhile. Delivery stays a hint; loops re-read the Store.

``publish`` does not wait for PostgreSQL: with ``synchronous_commit`` on, each NOTIFY is a
durable commit, and awaiting it put a WAL flush into every task create and every result
flush. A sender task (also owned by ``open``/``close``) sends what was published meanwhile in
one statement, dropping repeats of a notification still waiting to be sent. A notification
published ``within_seconds`` waits up to that long for company (the freed slots of each
result flush, ``SLOTS_FREED``: a serial producer's every task sent one statement for them);
one published without waits for nothing and takes the waiting ones along. The connection
runs with ``synchronous_commit = off``: a notification is a hint, and its commit need not wait
for a WAL flush (one flush fewer per result flush and per create that leaves tasks pending).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncpg

from hetuflow.config import DatabaseConfig
from hetuflow.errors import StoreUnavailable
from hetuflow.store.base import NotifyCallback
from hetuflow.store.notify_local import Subscribers

log = logging.getLogger(__name__)

_FAILURES = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


class PostgresNotifier:
    def __init__(
        self,
        database: DatabaseConfig,
        *,
        health_check_interval_seconds: float = 15.0,
        reconnect_delay_seconds: float = 0.2,
        max_reconnect_delay_seconds: float = 10.0,
    ) -> None:
        self._dsn = database.dsn
        self._health_interval = health_check_interval_seconds
        self._first_delay = reconnect_delay_seconds
        self._max_delay = max_reconnect_delay_seconds
        self._subscribers = Subscribers()
        self._connection: asyncpg.Connection | None = None
        self._listening: set[str] = set()
        self._pid: int | None = None
        self._lock = asyncio.Lock()  # one operation at a time on the connection
        self._wake = asyncio.Event()
        self._supervisor: asyncio.Task[None] | None = None
        self._closing = False
        self._outgoing: dict[tuple[str, str], None] = {}  # (channel, payload), in order
        self._send_at: float | None = None  # the loop's time by which the outgoing are sent
        self._send = asyncio.Event()
        self._sender: asyncio.Task[None] | None = None

    @property
    def listener_pid(self) -> int | None:
        """The server process id of the LISTEN connection (None while disconnected)."""
        return self._pid

    async def open(self) -> None:
        self._closing = False
        try:
            await self._connect()
        except _FAILURES as error:
            raise StoreUnavailable(f"cannot LISTEN on PostgreSQL: {error}") from error
        self._supervisor = asyncio.create_task(self._supervise(), name="hetuflow-notify")
        self._sender = asyncio.create_task(self._send_loop(), name="hetuflow-notify-send")

    async def close(self) -> None:
        self._closing = True
        if self._sender is not None:
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender
            self._sender = None
            await self._send_outgoing()  # what was published before close still goes out
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
            self._supervisor = None
        connection, self._connection, self._pid = self._connection, None, None
        if connection is not None and not connection.is_closed():
            try:
                await connection.close(timeout=5)
            except _FAILURES:
                connection.terminate()

    async def publish(
        self, channel: str, payload: str = "", *, within_seconds: float = 0.0
    ) -> None:
        """Wake this node's subscribers now, and queue the NOTIFY for the other nodes (sent
        at once, or at most ``within_seconds`` later)."""
        self._subscribers.deliver(channel, payload)
        self._outgoing[(channel, payload)] = None
        send_at = asyncio.get_running_loop().time() + within_seconds
        if self._send_at is None or send_at < self._send_at:
            self._send_at = send_at
            self._send.set()

    async def _send_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._send.wait()
            self._send.clear()
            # Until the earliest instant asked for; a publish asking for an earlier one
            # sets the event again.
            while self._send_at is not None and (wait := self._send_at - loop.time()) > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._send.wait()
                self._send.clear()
            await self._send_outgoing()

    async def _send_outgoing(self) -> None:
        """NOTIFY everything queued, in order, in one statement (one commit)."""
        self._send_at = None
        if not self._outgoing:
            return
        pending, self._outgoing = list(self._outgoing), {}
        connection = self._connection
        if connection is None or connection.is_closed():
            self._wake.set()
            return
        try:
            async with self._lock:
                await connection.execute(
                    "SELECT pg_notify(n.channel, n.payload)"
                    " FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS n(channel, payload, i)"
                    " ORDER BY n.i",
                    [channel for channel, _ in pending],
                    [payload for _, payload in pending],
                )
        except _FAILURES as error:
            log.warning(
                "could not NOTIFY %s (other nodes wake on their own timers): %s",
                ", ".join(sorted({channel for channel, _ in pending})),
                error,
            )
            self._wake.set()

    def subscribe(self, channel: str, callback: NotifyCallback) -> None:
        self._subscribers.add(channel, callback)
        if self._connection is not None and channel not in self._listening:
            self._wake.set()  # the supervisor LISTENs on the new channel

    # --- the connection -----------------------------------------------------------------------

    async def _connect(self) -> None:
        connection = await asyncpg.connect(
            self._dsn,
            server_settings={"application_name": "hetuflow-notify", "synchronous_commit": "off"},
        )
        try:
            connection.add_termination_listener(self._on_terminated)
            self._connection, self._pid, self._listening = connection, None, set()
            await self._listen_all()
            self._pid = connection.get_server_pid()
        except BaseException:
            connection.terminate()
            self._connection = None
            raise

    async def _listen_all(self) -> None:
        connection = self._connection
        if connection is None:
            return
        async with self._lock:
            for channel in self._subscribers.channels:
                if channel not in self._listening:
                    await connection.add_listener(channel, self._on_notification)
                    self._listening.add(channel)

    def _on_notification(self, connection: object, pid: int, channel: str, payload: object) -> None:
        if pid == self._pid:
            return  # ours: publish() delivered it locally already
        self._subscribers.deliver(channel, str(payload))

    def _on_terminated(self, connection: object) -> None:
        if not self._closing and connection is self._connection:
            log.warning("LISTEN connection to PostgreSQL lost; reconnecting")
            self._wake.set()

    async def _healthy(self) -> bool:
        connection = self._connection
        if connection is None or connection.is_closed():
            return False
        try:
            async with self._lock:
                await connection.fetchval("SELECT 1", timeout=self._health_interval)
            await self._listen_all()
        except _FAILURES as error:
            log.warning("LISTEN connection to PostgreSQL failed a check: %s", error)
            return False
        return True

    async def _supervise(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._health_interval)
            self._wake.clear()
            if not await self._healthy():
                await self._reconnect()

    async def _reconnect(self) -> None:
        old, self._connection, self._pid = self._connection, None, None
        if old is not None:
            old.terminate()
        delay = self._first_delay
        failures = 0
        while True:
            try:
                await self._connect()
                break
            except _FAILURES as error:
                if failures == 0:  # one line per outage, not one per try
                    log.warning(
                        "reconnecting to PostgreSQL for LISTEN failed (retrying with backoff): %s",
                        error,
                    )
                failures += 1
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._max_delay)
        log.warning(
            "LISTEN connection to PostgreSQL re-established after %d failed tr%s; waking every"
            " subscriber",
            failures,
            "y" if failures == 1 else "ies",
        )
        self._subscribers.deliver_everywhere("")
