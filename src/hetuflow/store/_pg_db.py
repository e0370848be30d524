"""PostgreSQL plumbing: the asyncpg pool, the value codec, transactions and error mapping."""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeAlias
from uuid import UUID

import asyncpg
import orjson

from hetuflow.clock import utc
from hetuflow.errors import StoreUnavailable

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

    Conn: TypeAlias = PoolConnectionProxy[asyncpg.Record]
else:
    Conn = object

UNAVAILABLE = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,  # class 08: connection lost or refused
    asyncpg.InterfaceError,  # the connection is closed
    asyncpg.InternalClientError,  # the connection broke mid-operation (protocol state)
    asyncpg.exceptions.OperatorInterventionError,  # class 57: shutdown, terminated, cancelled
    asyncpg.exceptions.InsufficientResourcesError,  # class 53: disk full, too many connections
    asyncpg.exceptions.TransactionRollbackError,  # class 40: deadlock, serialization: retry
)
"""What a lost, unreachable, overloaded or restarting database raises during a statement;
mapped to ``StoreUnavailable`` (retry later). Anything else the database raises (a value it
refuses, a constraint) is about the statement and propagates as is."""


def sized(statement: str, length: int) -> str:
    """``statement`` with its ``{limit}`` set to the power of two at or above ``length``, the
    number of rows of the batch it reads from one parameter (a JSON document or an array).

    Told the batch's length, the planner looks its rows up by key. A limit that is a parameter
    made PostgreSQL plan such a statement anew at most executions: a prepared statement's
    generic plan assumes a parameter limit keeps 10 rows, a custom plan knows it keeps one, so
    the custom plan looked cheaper, and planning the finish took 350-700 µs, more than running
    it. With a literal limit the generic plan is the custom one, and a connection stops
    planning the statement after its first executions. Powers of two keep the texts few
    (asyncpg prepares each text once per connection)."""
    return _sized(statement, 1 << max(length - 1, 0).bit_length())


@functools.lru_cache(maxsize=256)
def _sized(statement: str, limit: int) -> str:
    return statement.format(limit=limit)


CLAIM_LOCK = 0x6865_7475_636C  # "hetucl": serialises claimers so the global limit is exact
STATISTICS_LOCK = 0x6865_7475_7374  # "hetust": one node at a time analyzes young tables


class PgCodec:
    """asyncpg gives aware UTC datetimes, decoded jsonb (see ``_init``), lists and UUIDs."""

    def time(self, value: Any) -> datetime | None:
        return None if value is None else utc(value)

    def json(self, value: Any) -> Any:
        return value

    def texts(self, value: Any) -> tuple[str, ...]:
        return tuple(value)

    def uuid(self, value: Any) -> UUID | None:
        if value is None or type(value) is UUID:
            return value
        return UUID(bytes=value.bytes)  # asyncpg's own UUID type -> the standard one

    def put_time(self, value: datetime | None) -> datetime | None:
        return None if value is None else utc(value)

    def put_json(self, value: Any) -> Any:
        return value

    def put_texts(self, value: Sequence[str]) -> list[str]:
        return list(value)

    def put_uuid(self, value: UUID | None) -> UUID | None:
        return value


CODEC = PgCodec()


def uid(value: Any) -> UUID:
    """A non-null uuid column as a standard ``UUID``."""
    decoded = CODEC.uuid(value)
    if decoded is None:
        raise ValueError("a required uuid column is NULL")
    return decoded


def dumps(value: Any) -> str:
    """JSON text (jsonb arrays travel as text[]: asyncpg reads nested lists as 2-D arrays)."""
    return orjson.dumps(value).decode()


async def _init(connection: asyncpg.Connection) -> None:
    await connection.set_type_codec(
        "jsonb", encoder=dumps, decoder=orjson.loads, schema="pg_catalog"
    )


async def _keep_session(connection: asyncpg.Connection) -> None:
    """The pool's reset on release: nothing to send. asyncpg's default sends ``SELECT
    pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL`` each time a connection goes
    back to the pool: one more round trip per store call. The store leaves no session state
    on a pooled connection: its advisory locks are transaction-scoped
    (``pg_advisory_xact_lock``), it declares no cursor, LISTENs only on the notifier's own
    connection and sets nothing beyond ``SET TRANSACTION``. A transaction left open is still
    rolled back: asyncpg does that before calling this."""


IDLE_SECONDS = 60.0
"""A connection kept back (``PgDatabase.connection``) and not used for that long goes back to
asyncpg's pool, which closes it after its own ``max_inactive_connection_lifetime`` (300 s)."""


class PgDatabase:
    """The store's connections: an asyncpg pool, with the connections that ended their last use
    cleanly kept back for the next one.

    asyncpg's ``acquire`` and ``release`` cost 80-95 µs per use measured here (a proxy object, a
    future, a shielded task and an extra event loop turn for the release, a timer for the
    inactive lifetime): half a round trip, and a serial producer's task makes two uses (its
    create, its result). So a use that ends cleanly (no error, no transaction left open, the
    connection still open) puts its connection on ``_idle`` instead, still acquired from the
    pool, and the next use takes it from there (the last one back first, so a quiet store keeps
    using few). Every other end goes through the pool's ``release`` as before: it rolls back,
    or closes a broken or cancelled connection, and the pool opens new ones. So does every
    connection that comes back while a use waits in the pool's ``acquire``."""

    def __init__(self, dsn: str, max_connections: int) -> None:
        self.dsn = dsn
        self.max_connections = max_connections
        self._pool: asyncpg.Pool | None = None
        self._idle: list[tuple[Conn, float]] = []
        """Connections kept back, each with the instant it came back (``time.monotonic``)."""
        self._acquiring = 0
        """Uses waiting in the pool's ``acquire`` (every connection busy): a connection that
        comes back goes to the pool then, where they wait, not to ``_idle``."""

    async def open(self) -> None:
        _quiet_pool_floor_warnings()
        try:
            self._pool = await asyncpg.create_pool(
                self.dsn,
                min_size=min(2, self.max_connections),
                max_size=self.max_connections,
                init=_init,
                reset=_keep_session,
                server_settings={"timezone": "UTC", "application_name": "hetuflow"},
            )
        except UNAVAILABLE as error:
            raise StoreUnavailable(f"cannot connect to PostgreSQL: {error}") from error
        except asyncpg.PostgresError as error:
            raise StoreUnavailable(f"PostgreSQL refused the connection: {error}") from error

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            idle, self._idle = self._idle, []
            for connection, _ in idle:
                await pool.release(connection)
            await pool.close()  # waits for the connections in use

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Conn]:
        """A pooled connection (autocommit: each statement is its own transaction).

        ``StoreUnavailable`` when no connection can be had (whatever PostgreSQL answers: the
        database is gone, refuses connections, is starting…) or one is lost mid-statement."""
        pool = self._pool
        if pool is None:
            raise StoreUnavailable("the PostgreSQL store is not open")
        connection = await self._take(pool)
        try:
            yield connection
        except BaseException as error:
            await pool.release(connection)  # rolls back, or closes a broken connection
            if isinstance(error, UNAVAILABLE):
                raise StoreUnavailable(f"PostgreSQL is not available: {error}") from error
            raise
        await self._give_back(pool, connection)

    async def _take(self, pool: asyncpg.Pool) -> Conn:
        """The connection kept back last, or one from the pool."""
        while self._idle:
            kept, _ = self._idle.pop()
            if _open(kept):
                return kept
            await pool.release(kept)  # lost while kept back (the database restarted)
        self._acquiring += 1
        try:
            connection: Conn = await pool.acquire()
        except UNAVAILABLE as error:
            raise StoreUnavailable(f"PostgreSQL is not available: {error}") from error
        except asyncpg.PostgresError as error:
            raise StoreUnavailable(f"PostgreSQL refused a connection: {error}") from error
        finally:
            self._acquiring -= 1
        return connection

    async def _give_back(self, pool: asyncpg.Pool, connection: Conn) -> None:
        """Keep a cleanly used connection back, unless a use waits for one in the pool's
        ``acquire``; release the one kept back longest when it has not been used for
        ``IDLE_SECONDS``."""
        if (
            self._acquiring
            or self._pool is not pool
            or not _open(connection)
            or connection.is_in_transaction()
        ):
            await pool.release(connection)
            return
        now = time.monotonic()
        self._idle.append((connection, now))
        if len(self._idle) > 1 and now - self._idle[0][1] > IDLE_SECONDS:
            oldest, _ = self._idle.pop(0)
            await pool.release(oldest)

    @asynccontextmanager
    async def transaction(self, *, generic_plans: bool = False) -> AsyncIterator[Conn]:
        """A pooled connection inside one transaction (READ COMMITTED).

        ``generic_plans``: its statements run on their prepared statement's generic plan
        (``SET LOCAL plan_cache_mode = force_generic_plan``, sent with ``BEGIN``: no round trip
        more), for transactions whose statements look a batch up by key (``= ANY($1)``,
        ``unnest``). PostgreSQL's generic plan assumes such an array holds 10 values, so a plan
        made for a batch of one looks cheaper, and it made one at every execution: a workflow
        step's result planned 8 statements anew, 35-120 µs each. The plans are the same
        lookups by key either way. Reads whose best plan depends on the values (the task
        list's filters) keep the default."""
        if not generic_plans:
            async with self.connection() as connection, connection.transaction():
                yield connection
            return
        async with self._begun(f"BEGIN; {_GENERIC_PLANS}") as connection:
            yield connection

    def locked_transaction(self, lock: int) -> contextlib.AbstractAsyncContextManager[Conn]:
        """``transaction`` begun holding ``pg_advisory_xact_lock(lock)``: ``BEGIN`` and the
        lock go as one simple query, one round trip instead of two (a claim takes the claim
        lock first thing). Committed when the block ends, rolled back when it raises."""
        return self._begun(f"BEGIN; SELECT pg_advisory_xact_lock({int(lock)})")

    @asynccontextmanager
    async def _begun(self, begin: str) -> AsyncIterator[Conn]:
        """A transaction opened by ``begin`` (one simple query starting with ``BEGIN``)."""
        async with self.connection() as connection:
            await connection.execute(begin)
            try:
                yield connection
            except BaseException:
                if not connection.is_closed() and connection.is_in_transaction():
                    with contextlib.suppress(Exception):  # the pool rolls back what is left
                        await connection.execute("ROLLBACK")
                raise
            await connection.execute("COMMIT")


def _open(connection: Conn) -> bool:
    """The connection is open (a closed one may be back in the pool already, detached)."""
    try:
        return not connection.is_closed()
    except asyncpg.InterfaceError:  # detached: the pool took it back when it closed
        return False


_GENERIC_PLANS = "SET LOCAL plan_cache_mode = force_generic_plan"


class _OneLine(logging.Filter):
    """asyncpg's pool logs a traceback each time it fails to restore its minimum number of
    connections (every 1, 2, 4… s while the database is away): keep the message and the
    error on one line; the store's callers report the outage themselves."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            record.msg = f"{record.getMessage()}: {record.exc_info[1]}"
            record.args = None
            record.exc_info = None
            record.exc_text = None
        return True


def _quiet_pool_floor_warnings() -> None:
    pool_logger = logging.getLogger("asyncpg.pool")
    if not any(isinstance(f, _OneLine) for f in pool_logger.filters):
        pool_logger.addFilter(_OneLine())
