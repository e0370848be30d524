"""What the task search index (migration 0016) costs on the write path, on SQLite and PostgreSQL.

``python -m benchmarks.search_cost [--tasks 5000] [--db sqlite|postgres|both] [--rounds 3]``

For each database, twice: fully migrated with the search index (and on SQLite its triggers)
dropped ("without"), and fully migrated ("with"). Each time, through the Store, on a fresh
database: ``--tasks`` creates of one task each (one transaction each, as concurrent single REST
creates are at worst), the same number created in batches of 100, then every one of them claimed
and finished with a result in batches of 100 (the ``ResultWriter``'s group commit: a finish
rewrites the indexed result). Payloads and results are ~150 bytes of JSON. Prints microseconds
per task, best of ``--rounds`` (the machine is shared: the best run is the least disturbed one),
and the p50 and p99 of the one-task creates. On SQLite the index is deferred (the store's
indexer moves changed tasks into it every second, on the writer thread, between the measured
writes); a last row times that indexer alone, per task, over every task of the run marked
changed.
PostgreSQL is ``HETUFLOW_BENCH_DATABASE_URL`` (default ``postgresql://postgres@127.0.0.1:5432/
postgres``); a database ``hetuflow_bench_search`` is created there and dropped afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sqlite3
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from hetuflow.config import DatabaseConfig
from hetuflow.models import (
    AgentRegistration,
    AttemptOutcome,
    AttemptRef,
    AttemptResult,
    ClaimGroup,
    NewTask,
    SlotOffer,
)
from hetuflow.store import create_store
from hetuflow.store.base import Store
from hetuflow.store.migrate import migrate_up
from hetuflow.store.sqlite import SqliteStore

BATCH = 100
BENCH_DATABASE = "hetuflow_bench_search"
T0 = datetime(2030, 1, 1, tzinfo=UTC)


def _payload(index: int) -> dict[str, object]:
    return {
        "customer": f"customer-{index % 977}",
        "order": index,
        "items": [{"sku": f"SKU-{index % 31:04d}", "quantity": index % 7 + 1}],
        "note": "deliver before noon, ring twice",
    }


def _result(index: int) -> dict[str, object]:
    return {"invoice": f"INV-{index:08d}", "total_cents": index * 37 % 100_000, "pages": 2}


_SQLITE_WITHOUT = """
DROP TRIGGER tasks_search_insert;
DROP TRIGGER tasks_search_delete;
DROP TRIGGER tasks_search_update;
DROP TABLE tasks_search;
"""
"""What "without" removes from a fully migrated SQLite file: the search index and the triggers
that keep it (a migration later than 0016 is needed by today's store, so "without" cannot
stop at 0015). ``tasks_search_pending`` stays, empty: the store's indexer finds nothing."""


async def _measure(database: DatabaseConfig, tasks: int) -> dict[str, float]:
    store = create_store(database)
    await store.open()
    try:
        latencies = []
        for index in range(tasks):
            started = time.perf_counter()
            await store.create_tasks(
                [NewTask(f"single-{index}", "t", payload=_payload(index))], now=T0
            )
            latencies.append(time.perf_counter() - started)
        single = sum(latencies)
        latencies.sort()
        started = time.perf_counter()
        for first in range(0, tasks, BATCH):
            batch = [
                NewTask(f"batch-{i}", "t", payload=_payload(i))
                for i in range(first, min(first + BATCH, tasks))
            ]
            await store.create_tasks(batch, now=T0)
        batched = time.perf_counter() - started
        agent = await store.connect_agent(
            AgentRegistration(
                capabilities=(), supported_task_types=("t",), max_concurrent_tasks=BATCH, name="a"
            ),
            node_id="bench",
            now=T0,
        )
        finishing = 0.0
        finished = 0
        while finished < 2 * tasks:
            group = ClaimGroup(
                frozenset({"t"}), frozenset(), (SlotOffer(agent.id, free_slots=BATCH, running=0),)
            )
            dispatches = await store.claim_tasks([group], now=T0 + timedelta(seconds=1))
            assert dispatches, "nothing left to claim"
            results = [
                AttemptResult(
                    AttemptRef(d.task.id, d.attempt, agent.id),
                    AttemptOutcome.SUCCEEDED,
                    result=_result(finished + n),
                )
                for n, d in enumerate(dispatches)
            ]
            started = time.perf_counter()
            await store.finish_attempts(results, now=T0 + timedelta(seconds=2))
            finishing += time.perf_counter() - started
            finished += len(dispatches)
        indexing = await _index_everything(store, database)
    finally:
        await store.close()
    return {
        "create, one task a transaction": single / tasks * 1e6,
        "create, one task a transaction, p50": latencies[len(latencies) // 2] * 1e6,
        "create, one task a transaction, p99": latencies[len(latencies) * 99 // 100] * 1e6,
        f"create, batches of {BATCH}": batched / tasks * 1e6,
        f"finish with a result, batches of {BATCH}": finishing / (2 * tasks) * 1e6,
        **indexing,
    }


async def _index_everything(store: Store, database: DatabaseConfig) -> dict[str, float]:
    """SQLite's deferred indexer (``SqliteStore.index_search``, off the write path): every
    task marked changed, then moved into the index, timed per task (what the store's indexer
    spends on the writer thread for each task created or finished)."""
    if not isinstance(store, SqliteStore):
        return {}
    with contextlib.closing(sqlite3.connect(database.sqlite_path, timeout=10)) as connection:
        if connection.execute(
            "SELECT count(*) FROM sqlite_master"
            " WHERE name IN ('tasks_search', 'tasks_search_pending')"
        ).fetchone() != (2,):
            return {}  # no search index (or, before this was deferred, no indexer)
        connection.execute(
            "INSERT OR IGNORE INTO tasks_search_pending (task_rowid) SELECT rowid FROM tasks"
        )
        connection.commit()
    started = time.perf_counter()
    moved = await store.index_search()
    return {"indexer, per task moved into the index": (time.perf_counter() - started) / moved * 1e6}


async def _sqlite(tasks: int, workdir: Path, with_index: bool, round_: int) -> dict[str, float]:
    database = DatabaseConfig(type="sqlite", path=str(workdir / f"search-{with_index}-{round_}.db"))
    await migrate_up(database, None)
    if not with_index:
        with contextlib.closing(sqlite3.connect(database.sqlite_path)) as connection:
            connection.executescript(_SQLITE_WITHOUT)
    return await _measure(database, tasks)


async def _postgres(tasks: int, url: str, with_index: bool) -> dict[str, float]:
    admin = await asyncpg.connect(url)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {BENCH_DATABASE}")
        await admin.execute(f"CREATE DATABASE {BENCH_DATABASE}")
    finally:
        await admin.close()
    bench_url = urlunsplit(urlsplit(url)._replace(path=f"/{BENCH_DATABASE}"))
    database = DatabaseConfig(type="postgres", url=bench_url)
    try:
        await migrate_up(database, None)
        if not with_index:
            connection = await asyncpg.connect(bench_url)
            try:
                await connection.execute("DROP INDEX tasks_search")
            finally:
                await connection.close()
        return await _measure(database, tasks)
    finally:
        admin = await asyncpg.connect(url)
        try:
            await admin.execute(f"DROP DATABASE IF EXISTS {BENCH_DATABASE} WITH (FORCE)")
        finally:
            await admin.close()


async def main(arguments: argparse.Namespace) -> None:
    url = os.environ.get(
        "HETUFLOW_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
    )
    dialects = ["sqlite", "postgres"] if arguments.db == "both" else [arguments.db]
    rows: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="hetuflow-search-") as workdir:
        for round_ in range(arguments.rounds):  # rounds outermost: drift hits both alike
            for dialect in dialects:
                for with_index in (False, True):
                    column = f"{dialect} {'with' if with_index else 'without'}"
                    if dialect == "sqlite":
                        numbers = await _sqlite(arguments.tasks, Path(workdir), with_index, round_)
                    else:
                        numbers = await _postgres(arguments.tasks, url, with_index)
                    best = rows.setdefault(column, numbers)
                    for name, value in numbers.items():
                        best[name] = min(best[name], value)
                    print(column, {k: round(v, 1) for k, v in numbers.items()}, flush=True)
    names = list(dict.fromkeys(name for row in rows.values() for name in row))
    print(f"\nµs per task, best of {arguments.rounds}, {arguments.tasks:,} tasks each way")
    print(f"| write | {' | '.join(rows)} |")
    print(f"|---|{'---:|' * len(rows)}")
    for name in names:
        cells = (f"{r[name]:.0f}" if name in r else "" for r in rows.values())
        print(f"| {name} | {' | '.join(cells)} |")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.search_cost", description=__doc__)
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--db", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--rounds", type=int, default=3)
    return parser


if __name__ == "__main__":
    asyncio.run(main(_parser().parse_args()))
