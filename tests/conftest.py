"""Shared fixtures: a fresh database per test, on SQLite and on PostgreSQL.

PostgreSQL comes from ``HETUFLOW_TEST_DATABASE_URL`` (an admin connection, default the local
server). One migrated template database is made per test session; each test gets its own
database cloned from it, dropped afterwards.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from hetuflow.config import DatabaseConfig
from hetuflow.store import create_store
from hetuflow.store.base import Store
from hetuflow.store.migrate import migrate_up

DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


@pytest.fixture(scope="session")
def pg_admin_url() -> str:
    return os.environ.get("HETUFLOW_TEST_DATABASE_URL", DEFAULT_ADMIN_URL)


async def _admin(url: str, *statements: str) -> None:
    connection = await asyncpg.connect(url)
    try:
        for statement in statements:
            await connection.execute(statement)
    finally:
        await connection.close()


@pytest.fixture(scope="session")
def pg_template(pg_admin_url: str) -> Iterator[str]:
    """Name of a migrated template database for this session."""
    name = f"hetuflow_tpl_{uuid.uuid4().hex[:12]}"
    try:
        asyncio.run(_admin(pg_admin_url, f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError) as error:
        pytest.fail(f"PostgreSQL is not reachable at {pg_admin_url}: {error}")
    asyncio.run(migrate_up(DatabaseConfig(type="postgres", url=_with_database(pg_admin_url, name))))
    yield name
    asyncio.run(_admin(pg_admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def pg_database(pg_admin_url: str, pg_template: str) -> Iterator[DatabaseConfig]:
    """A fresh, migrated PostgreSQL database for one test."""
    name = f"hetuflow_test_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(pg_admin_url, f'CREATE DATABASE "{name}" TEMPLATE "{pg_template}"'))
    yield DatabaseConfig(
        type="postgres", url=_with_database(pg_admin_url, name), max_connections=10
    )
    asyncio.run(_admin(pg_admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def pg_empty_database(pg_admin_url: str) -> Iterator[DatabaseConfig]:
    """A fresh PostgreSQL database with no schema at all (for migration tests)."""
    name = f"hetuflow_test_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(pg_admin_url, f'CREATE DATABASE "{name}"'))
    yield DatabaseConfig(type="postgres", url=_with_database(pg_admin_url, name), max_connections=5)
    asyncio.run(_admin(pg_admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def sqlite_database(tmp_path: Path) -> DatabaseConfig:
    """A fresh, migrated SQLite file for one test."""
    config = DatabaseConfig(type="sqlite", path=str(tmp_path / "hetuflow.db"))
    asyncio.run(migrate_up(config))
    return config


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest) -> DatabaseConfig:
    """Each test using this runs once on SQLite and once on PostgreSQL."""
    fixture = "sqlite_database" if request.param == "sqlite" else "pg_database"
    config: DatabaseConfig = request.getfixturevalue(fixture)
    return config


@pytest.fixture
async def store(database: DatabaseConfig) -> AsyncIterator[Store]:
    opened = create_store(database)
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()
