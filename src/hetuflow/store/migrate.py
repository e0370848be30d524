"""Versioned, reversible migrations (the seed's ``sqlx migrate run / revert / add``).

Files live in ``store/migrations/<dialect>/NNNN_name.up.sql`` and ``.down.sql``; both dialects
share version numbers. Applied versions are recorded in ``hetuflow_migrations``. Each migration
runs in its own transaction with its bookkeeping row. On PostgreSQL a session advisory lock
serialises concurrent migrators (several server processes starting at once); on SQLite
``BEGIN IMMEDIATE`` does, and each step re-checks what is applied inside its transaction.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

import asyncpg

from hetuflow.config import DatabaseConfig
from hetuflow.errors import InvalidInput, MigrationFailed, StoreUnavailable
from hetuflow.store._sqlite_db import enable_wal

MIGRATIONS_ROOT = Path(__file__).parent / "migrations"
DIALECTS: tuple[Literal["sqlite", "postgres"], ...] = ("sqlite", "postgres")
_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.(up|down)\.sql$")
_NAME = re.compile(r"^[a-z0-9_]+$")
_PG_LOCK_KEY = 0x6865_7475_6D69  # "hetumi": the migration advisory lock
_MICRO = timedelta(microseconds=1)
logger = logging.getLogger(__name__)

_TABLE_SQLITE = """CREATE TABLE IF NOT EXISTS hetuflow_migrations (
    version TEXT PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)"""
_TABLE_PG = """CREATE TABLE IF NOT EXISTS hetuflow_migrations (
    version text PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL)"""


@dataclass(frozen=True, slots=True)
class Migration:
    version: str  # "0001"
    name: str  # "initial"
    up: Path
    down: Path

    @property
    def label(self) -> str:
        return f"{self.version}_{self.name}"


def load_migrations(dialect: str, root: Path = MIGRATIONS_ROOT) -> list[Migration]:
    """The migrations of one dialect, by version. Every up needs its down."""
    found: dict[tuple[str, str], dict[str, Path]] = {}
    directory = root / dialect
    if directory.is_dir():
        for path in directory.iterdir():
            match = _FILE.match(path.name)
            if match:
                found.setdefault((match[1], match[2]), {})[match[3]] = path
    migrations = []
    for (version, name), paths in sorted(found.items()):
        if set(paths) != {"up", "down"}:
            raise MigrationFailed(f"{dialect} migration {version}_{name} lacks its up or down file")
        migrations.append(Migration(version, name, paths["up"], paths["down"]))
    versions = [migration.version for migration in migrations]
    if len(set(versions)) != len(versions):
        raise MigrationFailed(f"{dialect} migrations reuse a version number: {versions}")
    return migrations


def _select(migrations: list[Migration], target: str | None) -> list[Migration]:
    if target is None:
        return migrations
    for index, migration in enumerate(migrations):
        if target in (migration.version, migration.label):
            return migrations[: index + 1]
    raise InvalidInput(f"no migration named {target!r}", field="target")


def split_statements(sql: str) -> Iterator[str]:
    """SQL statements of a script, whole (triggers included), for one transaction."""
    buffer = ""
    for line in sql.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            statement = buffer.strip()
            buffer = ""
            if _has_code(statement):
                yield statement
    if _has_code(buffer):
        raise MigrationFailed(f"incomplete SQL statement at the end: {buffer.strip()[:80]!r}")


def _has_code(sql: str) -> bool:
    return any(line.strip() and not line.strip().startswith("--") for line in sql.splitlines())


# --- SQLite -----------------------------------------------------------------------------------


def _sqlite_connect(db: DatabaseConfig) -> sqlite3.Connection:
    try:
        connection = sqlite3.connect(db.sqlite_path, isolation_level=None, timeout=30)
    except sqlite3.Error as error:
        raise StoreUnavailable(f"cannot open {db.sqlite_path}: {error}") from error
    enable_wal(connection, 30)
    connection.execute("PRAGMA synchronous=FULL")
    connection.execute(_TABLE_SQLITE)
    return connection


def _sqlite_applied(connection: sqlite3.Connection) -> set[str]:
    return {row[0] for row in connection.execute("SELECT version FROM hetuflow_migrations")}


def _sqlite_step(connection: sqlite3.Connection, migration: Migration, *, up: bool) -> bool:
    """Apply or revert one migration in a transaction; False if another migrator did it."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        if (migration.version in _sqlite_applied(connection)) == up:
            connection.execute("ROLLBACK")
            return False
        path = migration.up if up else migration.down
        for statement in split_statements(path.read_text(encoding="utf-8")):
            connection.execute(statement)
        if up:
            micros = (datetime.now(UTC) - datetime(1970, 1, 1, tzinfo=UTC)) // _MICRO
            connection.execute(
                "INSERT INTO hetuflow_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                (migration.version, migration.name, micros),
            )
        else:
            connection.execute(
                "DELETE FROM hetuflow_migrations WHERE version = ?", (migration.version,)
            )
        connection.execute("COMMIT")
        return True
    except sqlite3.Error as error:
        connection.execute("ROLLBACK")
        raise MigrationFailed(f"migration {migration.label} failed: {error}") from error


def _sqlite_run(db: DatabaseConfig, plan: _Plan, root: Path) -> list[str]:
    connection = _sqlite_connect(db)
    try:
        migrations = load_migrations("sqlite", root)
        applied = _sqlite_applied(connection)
        done = []
        for migration in plan.choose(migrations, applied):
            if _sqlite_step(connection, migration, up=plan.up):
                done.append(migration.label)
        return done
    finally:
        connection.close()


def _sqlite_status(db: DatabaseConfig) -> set[str]:
    connection = _sqlite_connect(db)
    try:
        return _sqlite_applied(connection)
    finally:
        connection.close()


# --- PostgreSQL -------------------------------------------------------------------------------


async def _pg_connect(db: DatabaseConfig) -> asyncpg.Connection:
    try:
        connection = await asyncpg.connect(db.dsn)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
        raise StoreUnavailable(f"cannot connect to PostgreSQL: {error}") from error
    connection.add_log_listener(_log_warning)
    return connection


def _log_warning(_connection: object, message: asyncpg.PostgresLogMessage) -> None:
    """A migration's ``RAISE WARNING`` (e.g. 0016 without ``pg_trgm``) reaches the server log."""
    if message.severity in ("WARNING", "ERROR"):
        logger.warning("migration: %s", message.message)


async def _pg_applied(connection: asyncpg.Connection) -> set[str]:
    return {row[0] for row in await connection.fetch("SELECT version FROM hetuflow_migrations")}


async def _pg_run(db: DatabaseConfig, plan: _Plan, root: Path) -> list[str]:
    connection = await _pg_connect(db)
    try:
        await connection.execute("SELECT pg_advisory_lock($1)", _PG_LOCK_KEY)
        try:
            await connection.execute(_TABLE_PG)
            applied = await _pg_applied(connection)
            done = []
            for migration in plan.choose(load_migrations("postgres", root), applied):
                path = migration.up if plan.up else migration.down
                try:
                    async with connection.transaction():
                        sql = path.read_text(encoding="utf-8")
                        if _has_code(sql):
                            await connection.execute(sql)
                        if plan.up:
                            await connection.execute(
                                "INSERT INTO hetuflow_migrations (version, name, applied_at)"
                                " VALUES ($1, $2, now())",
                                migration.version,
                                migration.name,
                            )
                        else:
                            await connection.execute(
                                "DELETE FROM hetuflow_migrations WHERE version = $1",
                                migration.version,
                            )
                except asyncpg.PostgresError as error:
                    raise MigrationFailed(f"migration {migration.label} failed: {error}") from error
                done.append(migration.label)
            return done
        finally:
            await connection.execute("SELECT pg_advisory_unlock($1)", _PG_LOCK_KEY)
    finally:
        await connection.close()


async def _pg_status(db: DatabaseConfig) -> set[str]:
    connection = await _pg_connect(db)
    try:
        exists = await connection.fetchval("SELECT to_regclass('hetuflow_migrations') IS NOT NULL")
        return await _pg_applied(connection) if exists else set()
    finally:
        await connection.close()


# --- the public functions ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Plan:
    up: bool
    target: str | None = None
    steps: int = 0

    def choose(self, migrations: list[Migration], applied: set[str]) -> list[Migration]:
        if self.up:
            return [m for m in _select(migrations, self.target) if m.version not in applied]
        done = [m for m in migrations if m.version in applied]
        return list(reversed(done))[: self.steps]


async def _run(db: DatabaseConfig, plan: _Plan, root: Path) -> list[str]:
    if db.kind == "postgres":
        return await _pg_run(db, plan, root)
    return await asyncio.to_thread(_sqlite_run, db, plan, root)


async def migrate_up(
    db: DatabaseConfig, target: str | None = None, *, root: Path = MIGRATIONS_ROOT
) -> list[str]:
    """Apply pending migrations (up to ``target``: a version or ``NNNN_name``); return their
    labels in order. Concurrent callers apply each migration once."""
    return await _run(db, _Plan(up=True, target=target), root)


async def migrate_down(
    db: DatabaseConfig, steps: int = 1, *, root: Path = MIGRATIONS_ROOT
) -> list[str]:
    """Revert the last ``steps`` applied migrations, newest first; return their labels."""
    if steps < 0:
        raise InvalidInput("steps must be 0 or more", field="steps")
    return await _run(db, _Plan(up=False, steps=steps), root)


async def migration_status(
    db: DatabaseConfig, *, root: Path = MIGRATIONS_ROOT
) -> list[tuple[str, bool]]:
    """Every known migration as (``NNNN_name``, applied), oldest first."""
    if db.kind == "postgres":
        applied = await _pg_status(db)
    else:
        applied = await asyncio.to_thread(_sqlite_status, db)
    return [(m.label, m.version in applied) for m in load_migrations(db.kind, root)]


def add_migration(name: str, *, root: Path = MIGRATIONS_ROOT) -> list[Path]:
    """Create the next-numbered empty up/down pair for both dialects; return the four paths."""
    if not _NAME.match(name):
        raise InvalidInput(
            "a migration name uses lowercase letters, digits and underscores", field="name"
        )
    versions = [int(m.version) for dialect in DIALECTS for m in load_migrations(dialect, root)]
    version = f"{max(versions, default=0) + 1:04d}"
    paths = []
    for dialect in DIALECTS:
        (root / dialect).mkdir(parents=True, exist_ok=True)
        for direction in ("up", "down"):
            path = root / dialect / f"{version}_{name}.{direction}.sql"
            path.write_text(
                f"-- {version}_{name} ({dialect}, {direction}): write the SQL here.\n",
                encoding="utf-8",
            )
            paths.append(path)
    return paths
