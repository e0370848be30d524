"""Migrations: replaying them gives a fresh install's schema, on both databases."""

from __future__ import annotations

import asyncio
import logging
import shutil
import sqlite3
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from hetuflow.config import DatabaseConfig
from hetuflow.errors import InvalidInput, MigrationFailed
from hetuflow.models import NewTask, Priority, TaskFilter
from hetuflow.store import create_store
from hetuflow.store.migrate import (
    MIGRATIONS_ROOT,
    add_migration,
    load_migrations,
    migrate_down,
    migrate_up,
    migration_status,
)

ALL = [migration.label for migration in load_migrations("sqlite")]
_MINUTE = timedelta(minutes=1)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> DatabaseConfig:
    """A database with no schema at all, once per dialect."""
    if request.param == "sqlite":
        return DatabaseConfig(type="sqlite", path=str(tmp_path / "empty.db"))
    config: DatabaseConfig = request.getfixturevalue("pg_empty_database")
    return config


def _sqlite_schema(path: str) -> list[tuple[Any, ...]]:
    connection = sqlite3.connect(path)
    try:
        rows = connection.execute(
            "SELECT type, name, tbl_name, sql FROM sqlite_master"
            " WHERE name NOT LIKE 'sqlite_%' ORDER BY type, name"
        ).fetchall()
        return [tuple(row) for row in rows]
    finally:
        connection.close()


async def _pg_schema(dsn: str) -> list[tuple[Any, ...]]:
    connection = await asyncpg.connect(dsn)
    try:
        columns = await connection.fetch(
            """
            SELECT table_name, column_name, ordinal_position, data_type, udt_name,
                   is_nullable, column_default
            FROM information_schema.columns WHERE table_schema = 'public'
            ORDER BY table_name, column_name"""
        )
        indexes = await connection.fetch(
            "SELECT tablename, indexname, indexdef FROM pg_indexes"
            " WHERE schemaname = 'public' ORDER BY indexname"
        )
        constraints = await connection.fetch(
            """
            SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid)
            FROM pg_constraint WHERE connamespace = 'public'::regnamespace
            ORDER BY 1, 2"""
        )
        return (
            [("column", *r) for r in columns]
            + [("index", *r) for r in indexes]
            + [("constraint", *r) for r in constraints]
        )
    finally:
        await connection.close()


async def _schema(db: DatabaseConfig) -> list[tuple[Any, ...]]:
    if db.kind == "postgres":
        return await _pg_schema(db.dsn)
    return await asyncio.to_thread(_sqlite_schema, db.sqlite_path)


def _tables(schema: list[tuple[Any, ...]]) -> set[str]:
    """Table names: SQLite rows are ("table", name, ...), PostgreSQL ("column", table, ...)."""
    return {row[1] for row in schema if row[0] in ("table", "column")}


async def test_replaying_all_migrations_gives_the_fresh_schema(
    empty_database: DatabaseConfig,
) -> None:
    assert await migration_status(empty_database) == [(label, False) for label in ALL]
    assert await migrate_up(empty_database) == ALL
    fresh = await _schema(empty_database)
    assert {"tasks", "attempts", "task_logs", "agents", "cron_jobs", "cron_ticks"} <= _tables(fresh)
    assert await migrate_up(empty_database) == []
    assert await migration_status(empty_database) == [(label, True) for label in ALL]

    assert await migrate_down(empty_database, steps=len(ALL) + 5) == list(reversed(ALL))
    assert _tables(await _schema(empty_database)) == {"hetuflow_migrations"}
    assert await migration_status(empty_database) == [(label, False) for label in ALL]

    assert await migrate_up(empty_database) == ALL
    assert await _schema(empty_database) == fresh


async def test_up_to_a_target_and_down_one_step(empty_database: DatabaseConfig) -> None:
    first = ALL[0]
    assert await migrate_up(empty_database, target=first.split("_")[0]) == [first]
    with pytest.raises(InvalidInput):
        await migrate_up(empty_database, target="9999_nothing")
    assert await migrate_down(empty_database) == [first]
    assert await migrate_down(empty_database) == []
    assert await migration_status(empty_database) == [(label, False) for label in ALL]


async def test_concurrent_migrators_apply_each_migration_once(
    empty_database: DatabaseConfig,
) -> None:
    results = await asyncio.gather(*(migrate_up(empty_database) for _ in range(4)))
    applied = [label for batch in results for label in batch]
    assert sorted(applied) == sorted(ALL)
    assert await migration_status(empty_database) == [(label, True) for label in ALL]


async def test_a_failing_migration_is_rolled_back(
    empty_database: DatabaseConfig, tmp_path: Path
) -> None:
    root = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_ROOT, root)
    add_migration("broken", root=root)
    for path in root.glob("*/0*_broken.up.sql"):
        path.write_text(
            "CREATE TABLE half_done (id integer);\nSELECT * FROM no_such_table;\n",
            encoding="utf-8",
        )
    with pytest.raises(MigrationFailed):
        await migrate_up(empty_database, root=root)
    status = dict(await migration_status(empty_database, root=root))
    assert status[ALL[-1]] is True
    assert [applied for label, applied in status.items() if label.endswith("_broken")] == [False]
    assert "half_done" not in _tables(await _schema(empty_database))


def test_add_creates_the_next_pair_for_both_dialects(tmp_path: Path) -> None:
    root = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_ROOT, root)
    paths = add_migration("create_new_table", root=root)
    number = f"{int(ALL[-1][:4]) + 1:04d}"  # after the last version (gaps are allowed)
    assert sorted(p.relative_to(root).as_posix() for p in paths) == [
        f"postgres/{number}_create_new_table.down.sql",
        f"postgres/{number}_create_new_table.up.sql",
        f"sqlite/{number}_create_new_table.down.sql",
        f"sqlite/{number}_create_new_table.up.sql",
    ]
    assert [m.label for m in load_migrations("postgres", root)][-1] == f"{number}_create_new_table"
    again = add_migration("second", root=root)
    assert all(p.name.startswith(f"{int(number) + 1:04d}_second") for p in again)
    with pytest.raises(InvalidInput):
        add_migration("Bad Name", root=root)
    # the package's own directory is untouched
    assert [m.label for m in load_migrations("sqlite")] == ALL


async def _claim_keys(db: DatabaseConfig) -> dict[str, int]:
    if db.kind == "postgres":
        connection = await asyncpg.connect(db.dsn)
        try:
            rows = await connection.fetch("SELECT name, claim_key FROM tasks")
        finally:
            await connection.close()
        return {row["name"]: row["claim_key"] for row in rows}

    def read() -> dict[str, int]:
        connection = sqlite3.connect(db.sqlite_path)
        try:
            return dict(connection.execute("SELECT name, claim_key FROM tasks").fetchall())
        finally:
            connection.close()

    return await asyncio.to_thread(read)


async def test_priority_aging_migration_ranks_existing_tasks_as_the_store_does(
    database: DatabaseConfig,
) -> None:
    """0006 gives every task that can still be pending the claim key the store computes at
    insert with the default aging (60 s); finished tasks keep 0."""
    t0 = datetime(2030, 1, 1, tzinfo=UTC)
    store = create_store(database)
    await store.open()
    try:
        await store.create_tasks(
            [
                NewTask("low", "t", priority=Priority.LOW),
                NewTask("later", "t", priority=Priority.HIGH, scheduled_at=t0 + timedelta(hours=1)),
                NewTask("backdated", "t", priority=Priority.CRITICAL, scheduled_at=t0 - _MINUTE),
                NewTask("done", "t"),
            ],
            now=t0,
        )
        [done] = (await store.list_tasks(TaskFilter(text="done"), limit=1, offset=0)).items
        await store.cancel_task(done.id, now=t0)
    finally:
        await store.close()
    inserted = await _claim_keys(database)
    aging = ALL.index("0006_priority_aging")
    assert await migrate_down(database, len(ALL) - aging) == ALL[aging:][::-1]
    assert await migrate_up(database) == ALL[aging:]
    assert await _claim_keys(database) == {**inserted, "done": 0}
    assert inserted["done"] != 0


async def test_search_migration_indexes_the_tasks_already_stored(database: DatabaseConfig) -> None:
    """0016 builds the search index over existing tasks (SQLite: FTS5 'rebuild'; PostgreSQL:
    CREATE INDEX), so a search after an upgrade finds what was stored before it."""
    t0 = datetime(2030, 1, 1, tzinfo=UTC)
    search = ALL.index("0016_task_search")
    assert await migrate_down(database, len(ALL) - search) == ALL[search:][::-1]
    if database.kind == "sqlite":  # before 0016 nothing indexes tasks: insert them by hand
        connection = sqlite3.connect(database.sqlite_path)
        with connection:
            connection.execute(
                "INSERT INTO tasks (id, name, task_type, priority, payload, scheduled_at,"
                " claim_key, created_at, updated_at)"
                " VALUES ('00000000-0000-4000-8000-000000000001', 'old', 't', 1,"
                ' \'{"customer":"Platypus Ltd"}\', 0, 0, 0, 0)'
            )
        connection.close()
    else:
        connection_pg = await asyncpg.connect(database.dsn)
        try:
            await connection_pg.execute(
                "INSERT INTO tasks (id, name, task_type, priority, payload, scheduled_at,"
                " claim_key, created_at, updated_at) VALUES"
                " ('00000000-0000-4000-8000-000000000001', 'old', 't', 1,"
                ' \'{"customer": "Platypus Ltd"}\', $1, 0, $1, $1)',
                t0,
            )
        finally:
            await connection_pg.close()
    assert await migrate_up(database) == ALL[search:]
    store = create_store(database)
    await store.open()
    try:
        found = await store.list_tasks(TaskFilter(text="platypus"), limit=10, offset=0)
        assert [task.name for task in found.items] == ["old"]
    finally:
        await store.close()


@pytest.mark.postgres
async def test_without_pg_trgm_the_migration_warns_and_search_still_answers(
    pg_empty_database: DatabaseConfig, caplog: pytest.LogCaptureFixture
) -> None:
    """A role that may not create extensions (no CREATE on the database): 0016 leaves the
    index out with a warning instead of failing, and search reads every task instead."""
    admin_url = pg_empty_database.dsn
    role = f"hetuflow_notrgm_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f"CREATE ROLE {role} LOGIN")
        await admin.execute(f"GRANT USAGE, CREATE ON SCHEMA public TO {role}")
    finally:
        await admin.close()
    parts = urlsplit(admin_url)
    netloc = f"{role}@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    limited = DatabaseConfig(type="postgres", url=urlunsplit(parts._replace(netloc=netloc)))
    try:
        with caplog.at_level(logging.WARNING, logger="hetuflow.store.migrate"):
            assert await migrate_up(limited) == ALL
        assert any(
            "pg_trgm is not available" in record.getMessage() for record in caplog.records
        ), caplog.text
        check = await asyncpg.connect(admin_url)
        try:
            assert (
                await check.fetchval(
                    "SELECT count(*) FROM pg_indexes WHERE indexname = 'tasks_search'"
                )
                == 0
            )
            assert (
                await check.fetchval("SELECT count(*) FROM pg_extension WHERE extname = 'pg_trgm'")
                == 0
            )
        finally:
            await check.close()
        store = create_store(limited)
        await store.open()
        try:
            await store.create_tasks(
                [NewTask("n", "t", payload={"customer": "Echidna Co"})],
                now=datetime(2030, 1, 1, tzinfo=UTC),
            )
            found = await store.list_tasks(TaskFilter(text="echidna"), limit=10, offset=0)
            assert [task.name for task in found.items] == ["n"]
        finally:
            await store.close()
    finally:
        admin = await asyncpg.connect(admin_url)
        try:
            await admin.execute(f"DROP OWNED BY {role} CASCADE")
        finally:
            await admin.close()
        # The role owns nothing left; the database (and with it the grants) is dropped by
        # the fixture, the role here, from another database.
        root = await asyncpg.connect(urlunsplit(parts._replace(path="/postgres")))
        try:
            await root.execute(
                f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role}'"
            )
            await root.execute(f"DROP ROLE IF EXISTS {role}")
        finally:
            await root.close()
