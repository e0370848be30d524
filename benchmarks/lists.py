"""What a task-list page and a reconcile read cost at 1 M tasks, on SQLite and PostgreSQL.

``python -m benchmarks.lists [--tasks 1000000] [--db sqlite|postgres|both] [--repeat 5]``

Fills a fresh database with ``--tasks`` tasks by bulk SQL (one statement; 99.9 % finished,
one in 1,000 running on one of 100 agents), then times, through the Store, the median of
``--repeat`` runs of: the first page (50 tasks) with and without the total count; a page half
way down the list by ``offset`` and by ``cursor``; what one reconcile pass reads for 100
agents: ``list_held`` (now) and ``list_tasks(active, limit=100_000)`` (before); and text
searches (``q=``) through the search index (migration 0016). Every task has a ~70-byte JSON
payload naming one of 10,000 customers, every finished one a result with its invoice number.
PostgreSQL is ``HETUFLOW_BENCH_DATABASE_URL`` (default ``postgresql://postgres@127.0.0.1:5432/
postgres``); a database ``hetuflow_bench_lists`` is created there and dropped afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit
from uuid import UUID

import asyncpg

from hetuflow.config import DatabaseConfig
from hetuflow.models import ACTIVE_TASK_STATUSES, TaskCursor, TaskFilter
from hetuflow.server.insights import TIMELINE_SAMPLE
from hetuflow.store import create_store
from hetuflow.store.base import Store
from hetuflow.store.migrate import migrate_up

BASE = datetime(2030, 1, 1, tzinfo=UTC)
BASE_MICROS = int((BASE - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds()) * 1_000_000
AGENTS = 100
ACTIVE_EVERY = 1000
PAGE = 50
CUSTOMERS = 10_000
"""Each task's payload names one of these customers: a customer's name is in 1 task of 10,000."""
BENCH_DATABASE = "hetuflow_bench_lists"

_SQLITE_AGENTS = """
WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < ?)
INSERT INTO agents (id, name, created_at)
SELECT printf('00000000-0000-4000-8000-%012x', i), 'agent-' || i, ? FROM n"""

_SQLITE_TASKS = f"""
WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < ?)
INSERT INTO tasks (id, name, task_type, priority, status, scheduled_at, attempts, agent_id,
                   created_at, updated_at, finished_at, payload, result)
SELECT printf('%08x-0000-4000-8000-%012x', i, i), 'task-' || i, 'type-' || (i % 10), 1,
       CASE WHEN i % {ACTIVE_EVERY} = 0 THEN 'running' ELSE 'succeeded' END,
       ? + i * 1000, 1,
       printf('00000000-0000-4000-8000-%012x', (i / {ACTIVE_EVERY}) % {AGENTS}),
       ? + i * 1000, ? + i * 1000,
       CASE WHEN i % {ACTIVE_EVERY} = 0 THEN NULL ELSE ? + i * 1000 + 500 END,
       printf('{{"customer":"customer-%d","order":%d,"note":"deliver before noon"}}',
              i % {CUSTOMERS}, i),
       CASE WHEN i % {ACTIVE_EVERY} = 0 THEN NULL
            ELSE printf('{{"invoice":"INV-%08d","pages":%d}}', i, i % 9) END
FROM n"""

_PG_AGENTS = """
INSERT INTO agents (id, name, created_at)
SELECT ('00000000-0000-4000-8000-' || lpad(to_hex(i), 12, '0'))::uuid, 'agent-' || i,
       $2::timestamptz
FROM generate_series(0, $1::int - 1) AS i"""

_PG_TASKS = f"""
INSERT INTO tasks (id, name, task_type, priority, status, scheduled_at, attempts, agent_id,
                   created_at, updated_at, finished_at, payload, result, claim_key)
SELECT (lpad(to_hex(i), 8, '0') || '-0000-4000-8000-' || lpad(to_hex(i), 12, '0'))::uuid,
       'task-' || i, 'type-' || (i % 10), 1,
       CASE WHEN i % {ACTIVE_EVERY} = 0 THEN 'running' ELSE 'succeeded' END,
       $2::timestamptz + i * interval '1 millisecond', 1,
       ('00000000-0000-4000-8000-'
        || lpad(to_hex((i / {ACTIVE_EVERY}) % {AGENTS}), 12, '0'))::uuid,
       $2::timestamptz + i * interval '1 millisecond',
       $2::timestamptz + i * interval '1 millisecond',
       CASE WHEN i % {ACTIVE_EVERY} = 0 THEN NULL
            ELSE $2::timestamptz + i * interval '1 millisecond' + interval '500 microseconds' END,
       jsonb_build_object('customer', 'customer-' || i % {CUSTOMERS}, 'order', i,
                          'note', 'deliver before noon'),
       CASE WHEN i % {ACTIVE_EVERY} = 0 THEN NULL
            ELSE jsonb_build_object('invoice', 'INV-' || lpad(i::text, 8, '0'), 'pages', i % 9)
       END,
       0
FROM generate_series(0, $1::int - 1) AS i"""


def _agent_id(index: int) -> UUID:
    return UUID(f"00000000-0000-4000-8000-{index:012x}")


def _task_cursor(index: int) -> TaskCursor:
    """The cursor of the page that ends with task ``index`` (as ``Page.next`` would be)."""
    return TaskCursor(BASE_MICROS + index * 1000, UUID(f"{index:08x}-0000-4000-8000-{index:012x}"))


def _fill_sqlite(path: str, tasks: int) -> None:
    """Fill (the search index's triggers mark every row pending), then time indexing them all
    at once, as migration 0016 does for the tasks already there: what it costs on a database
    of that size."""
    import sqlite3

    connection = sqlite3.connect(path)
    try:
        connection.execute(_SQLITE_AGENTS, (AGENTS, BASE_MICROS))
        connection.execute(_SQLITE_TASKS, (tasks, *([BASE_MICROS] * 4)))
        connection.commit()
        started = time.perf_counter()
        connection.execute("DELETE FROM tasks_search_pending")
        connection.execute(
            "INSERT INTO tasks_search (rowid, name, task_type, payload, result, error)"
            " SELECT rowid, name, task_type, payload, result, error FROM tasks"
        )
        connection.commit()
        print(f"sqlite: search index built in {time.perf_counter() - started:.1f} s", flush=True)
        connection.execute("ANALYZE")
    finally:
        connection.close()


async def _fill_postgres(dsn: str, tasks: int) -> None:
    """Fill without the search index, then build it (what migration 0016 costs on a database
    of that size; a GIN index is built faster at once than row by row)."""
    connection = await asyncpg.connect(dsn)
    try:
        index = await connection.fetchval(
            "SELECT indexdef FROM pg_indexes WHERE indexname = 'tasks_search'"
        )
        if index is not None:
            await connection.execute("DROP INDEX tasks_search")
        await connection.execute(_PG_AGENTS, AGENTS, BASE)
        await connection.execute(_PG_TASKS, tasks, BASE)
        if index is not None:
            started = time.perf_counter()
            await connection.execute("SET maintenance_work_mem = '256MB'")
            await connection.execute(index)
            print(f"postgres: search index built in {time.perf_counter() - started:.1f} s")
        await connection.execute("VACUUM ANALYZE tasks")
    finally:
        await connection.close()


async def _median_ms(run: Callable[[], Awaitable[Any]], repeat: int) -> float:
    await run()  # warm
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        await run()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


async def measure(store: Store, tasks: int, repeat: int) -> dict[str, float]:
    everything = TaskFilter()
    deep = tasks // 2
    cursor = _task_cursor(tasks - deep)  # the page after the first `deep` tasks (newest first)
    agents = [_agent_id(n) for n in range(AGENTS)]
    active = TaskFilter(statuses=tuple(ACTIVE_TASK_STATUSES))

    async def check() -> None:
        page = await store.list_tasks(everything, limit=PAGE, after=cursor, with_total=False)
        by_offset = await store.list_tasks(everything, limit=PAGE, offset=deep, with_total=False)
        assert [t.id for t in page.items] == [t.id for t in by_offset.items], "cursor != offset"
        held = await store.list_held(agents)
        assert len(held) == tasks // ACTIVE_EVERY + (1 if tasks % ACTIVE_EVERY else 0)

    await check()
    return {
        "first page, no count": await _median_ms(
            lambda: store.list_tasks(everything, limit=PAGE, with_total=False), repeat
        ),
        "first page with total": await _median_ms(
            lambda: store.list_tasks(everything, limit=PAGE, with_total=True), repeat
        ),
        f"page at {deep:,} by offset": await _median_ms(
            lambda: store.list_tasks(everything, limit=PAGE, offset=deep, with_total=False),
            repeat,
        ),
        f"page at {deep:,} by cursor": await _median_ms(
            lambda: store.list_tasks(everything, limit=PAGE, after=cursor, with_total=False),
            repeat,
        ),
        f"reconcile read, {AGENTS} agents (list_held)": await _median_ms(
            lambda: store.list_held(agents), repeat
        ),
        "reconcile read before (list_tasks active, 100k)": await _median_ms(
            lambda: store.list_tasks(active, limit=100_000, offset=0), repeat
        ),
        **await measure_search(store, tasks, repeat),
        f"timeline of the newest {TIMELINE_SAMPLE:,} finished (GET /api/stats/timeline)": (
            await _median_ms(
                lambda: store.task_timeline(
                    since=BASE - timedelta(days=7) + timedelta(hours=2),
                    bucket_seconds=7200,
                    buckets=84,
                    limit=TIMELINE_SAMPLE,
                ),
                repeat,
            )
        ),
    }


async def measure_search(store: Store, tasks: int, repeat: int) -> dict[str, float]:
    """First pages of a text search (``q=``): a word in 1 payload of 10,000, one in a single
    result, one in every payload, one in none; and a 2-character text, which has no trigram
    and so reads every task (what every search cost before the index)."""
    customer = f"customer-{CUSTOMERS // 2 + 1}"
    invoice = f"INV-{tasks // 2 + 1:08d}"
    expected = {customer: len(range(CUSTOMERS // 2 + 1, tasks, CUSTOMERS)), invoice: 1}
    for text, count in expected.items():
        found = await store.list_tasks(TaskFilter(text=text), limit=PAGE, with_total=True)
        assert found.total == count, (text, found.total, count)

    def first(text: str, with_total: bool) -> Callable[[], Awaitable[Any]]:
        return lambda: store.list_tasks(TaskFilter(text=text), limit=PAGE, with_total=with_total)

    return {
        f"search a payload word ({expected[customer]} tasks), with total": await _median_ms(
            first(customer, True), repeat
        ),
        "search a result word (1 task), with total": await _median_ms(first(invoice, True), repeat),
        "search a word in every payload, first page, no count": await _median_ms(
            first("deliver before", False), repeat
        ),
        "search a word in every payload, with total (a count of all)": await _median_ms(
            first("deliver before", True), repeat
        ),
        "search a word in no task, with total": await _median_ms(
            first("zebra-quokka", True), repeat
        ),
        "search 2 characters (no trigram: reads every task), no match": await _median_ms(
            first("~~", True), repeat
        ),
    }


async def _with_store(database: DatabaseConfig, tasks: int, repeat: int) -> dict[str, float]:
    store = create_store(database)
    await store.open()
    try:
        return await measure(store, tasks, repeat)
    finally:
        await store.close()


async def run_sqlite(tasks: int, repeat: int, workdir: Path) -> dict[str, float]:
    database = DatabaseConfig(type="sqlite", path=str(workdir / "lists.db"))
    await migrate_up(database)
    started = time.perf_counter()
    await asyncio.to_thread(_fill_sqlite, database.sqlite_path, tasks)
    print(f"sqlite: {tasks:,} tasks filled in {time.perf_counter() - started:.1f} s", flush=True)
    return await _with_store(database, tasks, repeat)


async def run_postgres(tasks: int, repeat: int, url: str) -> dict[str, float]:
    admin = await asyncpg.connect(url)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {BENCH_DATABASE}")
        await admin.execute(f"CREATE DATABASE {BENCH_DATABASE}")
    finally:
        await admin.close()
    parts = urlsplit(url)
    bench_url = urlunsplit(parts._replace(path=f"/{BENCH_DATABASE}"))
    database = DatabaseConfig(type="postgres", url=bench_url)
    try:
        await migrate_up(database)
        started = time.perf_counter()
        await _fill_postgres(bench_url, tasks)
        print(f"postgres: {tasks:,} tasks filled in {time.perf_counter() - started:.1f} s")
        return await _with_store(database, tasks, repeat)
    finally:
        admin = await asyncpg.connect(url)
        try:
            await admin.execute(f"DROP DATABASE IF EXISTS {BENCH_DATABASE} WITH (FORCE)")
        finally:
            await admin.close()


async def main(arguments: argparse.Namespace) -> None:
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="hetuflow-lists-") as workdir:
        if arguments.db in ("sqlite", "both"):
            results["sqlite"] = await run_sqlite(arguments.tasks, arguments.repeat, Path(workdir))
        if arguments.db in ("postgres", "both"):
            url = os.environ.get(
                "HETUFLOW_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
            )
            results["postgres"] = await run_postgres(arguments.tasks, arguments.repeat, url)
    names = list(next(iter(results.values())))
    print(f"\nmedian of {arguments.repeat} runs, ms, {arguments.tasks:,} tasks")
    print(f"| read | {' | '.join(results)} |")
    print(f"|---|{'---:|' * len(results)}")
    for name in names:
        print(f"| {name} | {' | '.join(f'{r[name]:.2f}' for r in results.values())} |")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.lists", description=__doc__)
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--db", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--repeat", type=int, default=5)
    return parser


if __name__ == "__main__":
    asyncio.run(main(_parser().parse_args()))
