"""The SQLite writer's group commit: writes queued while one commits share the next commit,
each in its own savepoint; a failing one fails alone; every caller hears after the commit."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from hetuflow.errors import StoreUnavailable
from hetuflow.store._sqlite_db import SqliteDatabase


class Refused(Exception):
    pass


def _insert(connection: sqlite3.Connection, value: int) -> int:
    connection.execute("INSERT INTO numbers (value) VALUES (?)", (value,))
    if value % 7 == 3:
        raise Refused(value)  # after writing: its row must go with it
    return value


def _count(connection: sqlite3.Connection) -> int:
    return int(connection.execute("SELECT count(*) FROM numbers").fetchone()[0])


async def _open(path: Path) -> tuple[SqliteDatabase, list[str]]:
    db = SqliteDatabase(str(path))
    await db.open()
    await db.write(lambda c: c.execute("CREATE TABLE numbers (value INTEGER UNIQUE)"))
    statements: list[str] = []
    db._connections["writer"].set_trace_callback(statements.append)
    return db, statements


async def test_queued_writes_share_a_commit_and_fail_alone(tmp_path: Path) -> None:
    db, statements = await _open(tmp_path / "hetuflow.db")
    try:
        results = await asyncio.gather(
            *(db.write(_insert, value) for value in range(40)), return_exceptions=True
        )
        failed = {value for value in range(40) if value % 7 == 3}
        for value, result in enumerate(results):
            if value in failed:
                assert isinstance(result, Refused)
            else:
                assert result == value
        assert await db.read(_count) == 40 - len(failed)
        commits = statements.count("COMMIT")
        assert 1 <= commits < 40, statements  # grouped: fewer commits than writes
        # durable before anyone heard: a fresh connection reads every answered row
        other = sqlite3.connect(tmp_path / "hetuflow.db")
        assert other.execute("SELECT count(*) FROM numbers").fetchone()[0] == 40 - len(failed)
        other.close()
    finally:
        await db.close()


async def test_a_database_error_inside_one_write_fails_only_it(tmp_path: Path) -> None:
    db, _ = await _open(tmp_path / "hetuflow.db")
    try:

        def broken(connection: sqlite3.Connection) -> None:
            connection.execute("INSERT INTO no_such_table VALUES (1)")

        results = await asyncio.gather(
            db.write(_insert, 1), db.write(broken), db.write(_insert, 2), return_exceptions=True
        )
        assert results[0] == 1
        assert isinstance(results[1], StoreUnavailable)
        assert results[2] == 2
        with pytest.raises(sqlite3.IntegrityError):  # a unique key: the first one is stored
            await db.write(_insert, 1)
        assert await db.read(_count) == 2
    finally:
        await db.close()
