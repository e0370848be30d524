"""PostgreSQL plumbing: the asyncpg pool, the value codec, transactions and error mapping."""

from __future__ import annotations

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
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.InterfaceError,
    asyncpg.TooManyConnectionsError,
)
"""What a lost or unreachable database raises; mapped to ``StoreUnavailable``."""

CLAIM_LOCK = 0x6865_7475_636C  # "hetucl": serialises claimers so the global limit is exact


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


class PgDatabase:
    def __init__(self, dsn: str, max_connections: int) -> None:
        self.dsn = dsn
        self.max_connections = max_connections
        self._pool: asyncpg.Pool | None = None

    async def open(self) -> None:
        try:
            self._pool = await asyncpg.create_pool(
                self.dsn,
                min_size=min(2, self.max_connections),
                max_size=self.max_connections,
                init=_init,
                server_settings={"timezone": "UTC", "application_name": "hetuflow"},
            )
        except UNAVAILABLE as error:
            raise StoreUnavailable(f"cannot connect to PostgreSQL: {error}") from error
        except asyncpg.PostgresError as error:
            raise StoreUnavailable(f"PostgreSQL refused the connection: {error}") from error

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Conn]:
        """A pooled connection (autocommit: each statement is its own transaction)."""
        if self._pool is None:
            raise StoreUnavailable("the PostgreSQL store is not open")
        try:
            async with self._pool.acquire() as connection:
                yield connection
        except UNAVAILABLE as error:
            raise StoreUnavailable(f"PostgreSQL is not available: {error}") from error

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Conn]:
        """A pooled connection inside one transaction (READ COMMITTED)."""
        async with self.connection() as connection, connection.transaction():
            yield connection
