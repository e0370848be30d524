"""What one use of a PostgreSQL connection costs: ``python -m benchmarks.pg_roundtrip``.

``SELECT 1`` on a bare asyncpg connection, through ``asyncpg.Pool.acquire`` (as the store
used it until the eighth round: no reset query), and through ``PgDatabase.connection`` (the
store's, which keeps a cleanly used connection back), in alternating rounds on uvloop; p50 of
each. Also ``acquire`` and ``release`` alone, with no statement. The database is
``HETUFLOW_BENCH_DATABASE_URL`` or ``HETUFLOW_TEST_DATABASE_URL``, as for the suite.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Awaitable, Callable

import asyncpg
import uvloop

from benchmarks.harness import admin_url
from hetuflow.store._pg_db import PgDatabase

ROUNDS = 4


async def _noop_reset(connection: asyncpg.Connection) -> None:
    """As the store's pool: nothing sent on release."""


async def _p50_us(use: Callable[[], Awaitable[object]], count: int) -> float:
    for _ in range(count // 10):
        await use()
    times = []
    for _ in range(count):
        before = time.perf_counter()
        await use()
        times.append(time.perf_counter() - before)
    return statistics.median(times) * 1e6


async def main(count: int) -> None:
    url = admin_url()
    bare = await asyncpg.connect(url)
    pool = await asyncpg.create_pool(url, min_size=2, max_size=4, reset=_noop_reset)
    store = PgDatabase(url, max_connections=4)
    await store.open()

    async def pooled() -> object:
        async with pool.acquire() as connection:
            return await connection.fetchval("SELECT 1")

    async def acquire_only() -> None:
        async with pool.acquire():
            pass

    async def kept() -> object:
        async with store.connection() as connection:
            return await connection.fetchval("SELECT 1")

    uses: dict[str, Callable[[], Awaitable[object]]] = {
        "bare connection": lambda: bare.fetchval("SELECT 1"),
        "asyncpg pool": pooled,
        "PgDatabase.connection": kept,
        "pool acquire + release alone": acquire_only,
    }
    found: dict[str, list[float]] = {name: [] for name in uses}
    try:
        for _ in range(ROUNDS):
            for name, use in uses.items():
                found[name].append(await _p50_us(use, count))
    finally:
        await store.close()
        await pool.close()
        await bare.close()
    for name, values in found.items():
        rounded = ", ".join(f"{value:.0f}" for value in values)
        print(f"{name}: p50 {statistics.median(values):.0f} µs (rounds: {rounded})")


def cli() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.pg_roundtrip", description=__doc__)
    parser.add_argument("--count", type=int, default=3000, help="uses per round and kind")
    uvloop.run(main(parser.parse_args().count))


if __name__ == "__main__":
    cli()
