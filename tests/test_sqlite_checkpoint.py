"""The SQLite writer never checkpoints the WAL itself; a third thread does, beside it."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from hetuflow.store._sqlite_db import CHECKPOINT_EVERY_WRITES, SqliteDatabase


def _insert(connection: sqlite3.Connection, value: int) -> None:
    connection.execute("INSERT INTO numbers (value) VALUES (?)", (value,))


def _rows_in_main_file(path: Path) -> int:
    """Rows readable from the database file alone (``immutable``: the WAL is not read)."""
    connection = sqlite3.connect(f"file:{path}?immutable=1", uri=True)
    try:
        return int(connection.execute("SELECT count(*) FROM numbers").fetchone()[0])
    finally:
        connection.close()


async def test_checkpoints_copy_the_wal_back_while_the_writer_goes_on(tmp_path: Path) -> None:
    path = tmp_path / "hetuflow.db"
    db = SqliteDatabase(str(path))
    await db.open()
    try:
        await db.write(lambda c: c.execute("CREATE TABLE numbers (value INTEGER)"))
        other = sqlite3.connect(path)
        assert other.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 1000  # SQLite's own
        other.close()
        assert CHECKPOINT_EVERY_WRITES <= 20
        for value in range(40):
            await db.write(_insert, value)
        deadline = asyncio.get_running_loop().time() + 10
        while _rows_in_main_file(path) < CHECKPOINT_EVERY_WRITES:  # the table is in it too
            assert asyncio.get_running_loop().time() < deadline, "no checkpoint happened"
            await asyncio.sleep(0.05)
        # The writer's own connection does not checkpoint (commits stay short).
        assert await db.write(lambda c: c.execute("PRAGMA wal_autocheckpoint").fetchone()[0]) == 0
    finally:
        await db.close()
