"""PostgreSQL: the store's connections (``PgDatabase``).

A use that ends cleanly keeps its connection back for the next one, past asyncpg's
``acquire`` and ``release`` (80-95 µs per use here); every other end goes through the pool's
``release``, which rolls back or closes the connection, as before.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from hetuflow.config import DatabaseConfig
from hetuflow.errors import StoreUnavailable
from hetuflow.store import _pg_db
from hetuflow.store._pg_db import PgDatabase

pytestmark = pytest.mark.postgres

DEADLINE_SECONDS = 10.0


@pytest.fixture
async def db(pg_database: DatabaseConfig) -> AsyncIterator[PgDatabase]:
    database = PgDatabase(pg_database.dsn, max_connections=4)
    await database.open()
    try:
        yield database
    finally:
        await asyncio.wait_for(database.close(), DEADLINE_SECONDS)


async def _pid(db: PgDatabase) -> int:
    async with db.connection() as connection:
        pid: int = await connection.fetchval("SELECT pg_backend_pid()")
        return pid


async def test_a_clean_use_keeps_its_connection_for_the_next(db: PgDatabase) -> None:
    first = await _pid(db)
    assert len(db._idle) == 1
    assert await _pid(db) == first
    async with db.transaction() as connection:
        assert await connection.fetchval("SELECT pg_backend_pid()") == first
    assert len(db._idle) == 1


async def test_a_use_that_raises_gives_its_connection_back_to_the_pool(db: PgDatabase) -> None:
    async def fail() -> None:
        async with db.transaction() as connection:
            await connection.execute("CREATE TABLE t (x int)")
            await connection.fetchval("SELECT 1 / 0")

    with pytest.raises(asyncpg.DivisionByZeroError):
        await fail()
    assert db._idle == []
    async with db.connection() as connection:  # rolled back: the table is not there
        assert await connection.fetchval("SELECT to_regclass('t')") is None
        assert not connection.is_in_transaction()


async def test_a_transaction_left_open_is_rolled_back_not_kept(db: PgDatabase) -> None:
    async with db.connection() as connection:
        await connection.execute("BEGIN; CREATE TABLE t (x int)")
    assert db._idle == []
    async with db.connection() as connection:
        assert not connection.is_in_transaction()
        assert await connection.fetchval("SELECT to_regclass('t')") is None


async def test_a_cancelled_use_does_not_hand_its_connection_on(db: PgDatabase) -> None:
    started = asyncio.Event()

    async def sleep() -> None:
        async with db.connection() as connection:
            started.set()
            await connection.execute("SELECT pg_sleep(30)")

    sleeper = asyncio.create_task(sleep())
    await asyncio.wait_for(started.wait(), DEADLINE_SECONDS)
    await asyncio.sleep(0.05)
    sleeper.cancel()
    with pytest.raises(asyncio.CancelledError):
        await sleeper
    assert db._idle == []
    async with db.connection() as connection:  # answers at once: not behind the sleep
        assert await asyncio.wait_for(connection.fetchval("SELECT 1"), 5) == 1


async def test_a_connection_lost_while_kept_back_is_replaced(
    db: PgDatabase, pg_database: DatabaseConfig
) -> None:
    lost = await _pid(db)
    (kept, _) = db._idle[0]
    admin = await asyncpg.connect(pg_database.dsn)
    try:
        await admin.execute("SELECT pg_terminate_backend($1)", lost)
    finally:
        await admin.close()
    deadline = asyncio.get_running_loop().time() + DEADLINE_SECONDS
    while _pg_db._open(kept):  # the client sees the socket close
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.01)
    assert await _pid(db) != lost


async def test_a_connection_lost_in_use_is_store_unavailable(
    db: PgDatabase, pg_database: DatabaseConfig
) -> None:
    lost = await _pid(db)

    async def terminate() -> None:
        admin = await asyncpg.connect(pg_database.dsn)
        try:
            while not await admin.fetchval(  # noqa: ASYNC110 - polls the database
                "SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND state = 'active'", lost
            ):
                await asyncio.sleep(0.01)
            await admin.execute("SELECT pg_terminate_backend($1)", lost)
        finally:
            await admin.close()

    killer = asyncio.create_task(terminate())
    with pytest.raises(StoreUnavailable):
        async with db.connection() as connection:  # the one kept back
            await connection.execute("SELECT pg_sleep(30)")
    await asyncio.wait_for(killer, DEADLINE_SECONDS)
    assert db._idle == []
    assert await _pid(db) != lost


async def test_a_connection_unused_for_a_while_goes_back_to_the_pool(
    db: PgDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    both = asyncio.Barrier(2)

    async def use() -> int:
        async with db.connection() as connection:
            await both.wait()  # two at once: two connections
            pid: int = await connection.fetchval("SELECT pg_backend_pid()")
            return pid

    pids = await asyncio.gather(use(), use())
    assert len(set(pids)) == 2
    assert len(db._idle) == 2
    monkeypatch.setattr(_pg_db, "IDLE_SECONDS", 0.0)
    last = await _pid(db)  # the last one back is used again, the other released
    assert last in pids
    assert [connection for connection, _ in db._idle] != []
    assert len(db._idle) == 1


async def test_close_waits_for_a_use_in_progress(db: PgDatabase) -> None:
    await _pid(db)  # one kept back
    inside = asyncio.Event()
    leave = asyncio.Event()

    async def use() -> None:
        async with db.connection() as connection:
            inside.set()
            await leave.wait()
            await connection.fetchval("SELECT 1")

    user = asyncio.create_task(use())
    await inside.wait()
    closing = asyncio.create_task(db.close())
    await asyncio.sleep(0.05)
    assert not closing.done()
    leave.set()
    await asyncio.wait_for(asyncio.gather(user, closing), DEADLINE_SECONDS)
    assert db._idle == []


async def test_a_use_waiting_for_a_connection_gets_the_next_one_back(db: PgDatabase) -> None:
    """Every connection busy: a use waits in the pool's ``acquire``, and the next connection
    to come back goes to it, not to the list kept back (else it would wait while others
    pass it by)."""
    inside = [asyncio.Event() for _ in range(db.max_connections)]
    leave = asyncio.Event()

    async def hold(entered: asyncio.Event) -> None:
        async with db.connection() as connection:
            entered.set()
            await leave.wait()
            await connection.fetchval("SELECT 1")

    holders = [asyncio.create_task(hold(entered)) for entered in inside]
    await asyncio.gather(*(entered.wait() for entered in inside))
    waiting = asyncio.create_task(_pid(db))
    while not db._acquiring:  # noqa: ASYNC110 - until it waits in the pool's acquire
        await asyncio.sleep(0)
    assert not waiting.done()
    leave.set()
    await asyncio.wait_for(asyncio.gather(*holders), DEADLINE_SECONDS)
    await asyncio.wait_for(waiting, DEADLINE_SECONDS)
    assert 1 <= len(db._idle) <= db.max_connections  # the rest went back to the pool
