"""PostgreSQL: the store analyzes the busiest tables while they outgrow their statistics.

A new database's plans are made for empty tables; until autovacuum analyzes them (about a
minute), every result flush read the whole tasks table. Autovacuum is off for the tables here,
so what analyzes them is the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import asyncpg

from hetuflow.config import DatabaseConfig
from hetuflow.models import NewTask
from hetuflow.store._pg_statistics import outgrown
from hetuflow.store.postgres import PostgresStore

T0 = datetime(2030, 1, 1, tzinfo=UTC)

ROWS = 3000


async def _reltuples(connection: asyncpg.Connection, table: str) -> float:
    value: float = await connection.fetchval(
        "SELECT reltuples FROM pg_class WHERE relname = $1", table
    )
    return value


@contextlib.asynccontextmanager
async def _filled(
    database: DatabaseConfig, statistics_seconds: float | None
) -> AsyncIterator[tuple[PostgresStore, asyncpg.Connection]]:
    """An open store whose tasks table (autovacuum off) got ``ROWS`` tasks, and a plain
    connection to the same database."""
    store = PostgresStore(database, statistics_seconds=statistics_seconds)
    await store.open()
    connection = await asyncpg.connect(database.url)
    try:
        for table in ("tasks", "attempts"):
            await connection.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = false)")
        for _ in range(ROWS // 100):
            await store.create_tasks([NewTask("t", "t") for _ in range(100)], now=T0)
        yield store, connection
    finally:
        await connection.close()
        await store.close()


async def test_outgrown_tables_are_analyzed_once_and_not_again(
    pg_database: DatabaseConfig,
) -> None:
    async with _filled(pg_database, None) as (store, connection):
        assert await _reltuples(connection, "tasks") < ROWS  # never analyzed: -1
        assert await store.analyze_outgrown_tables() == ["tasks"]  # attempts: empty
        assert await _reltuples(connection, "tasks") == ROWS
        assert await store.analyze_outgrown_tables() == []  # its statistics fit it now


async def test_an_open_store_keeps_the_statistics_by_itself(pg_database: DatabaseConfig) -> None:
    async with _filled(pg_database, 0.1) as (_, connection):
        for _ in range(100):
            if await _reltuples(connection, "tasks") > 0:
                break
            await asyncio.sleep(0.05)
        # Analyzed by the store while it filled (once the file had doubled, perhaps again)
        assert await _reltuples(connection, "tasks") > ROWS / 4


async def test_a_user_that_may_not_analyze_the_tables_does_not_try(
    pg_database: DatabaseConfig,
) -> None:
    role = f"hetuflow_reader_{uuid.uuid4().hex[:8]}"
    async with _filled(pg_database, None) as (_, connection):
        as_store: Any = connection  # the store's own calls take a pooled connection
        assert await outgrown(as_store) == ["tasks"]  # the owner may
        await connection.execute(f"CREATE ROLE {role}")
        try:
            await connection.execute(f"GRANT SELECT ON tasks, attempts TO {role}")
            await connection.execute(f"SET ROLE {role}")
            assert await outgrown(as_store) == []
            await connection.execute("RESET ROLE")
        finally:
            await connection.execute("RESET ROLE")
            await connection.execute(f"DROP OWNED BY {role}")
            await connection.execute(f"DROP ROLE {role}")
