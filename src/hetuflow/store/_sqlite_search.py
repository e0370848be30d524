"""The SQLite search index's indexer (migration 0016): tasks whose text changed wait in
``tasks_search_pending`` until it moves them into ``tasks_search``.

The triggers on ``tasks`` only note a changed rowid, so a create or a finish writes no FTS5
segment; the store runs ``index_pending`` on the writer thread every second
(``SqliteStore.index_search``), a bounded batch at a time so that a backlog (a bulk import, a
retention sweep) never holds the writer for long. Searches stay exact meanwhile: they read
the pending tasks' own text (``_sqlite_tasks._text_clause``).
"""

from __future__ import annotations

import sqlite3

INDEX_BATCH = 500
"""Pending tasks moved into the index per write transaction: what a write that arrives
meanwhile may wait for (measured: 20 to 60 us a task, so 10 to 30 ms a batch, on the shared
2-core machine; docs/benchmarks.md). A backlog goes batch by batch, other writes between."""

_BATCH = "SELECT task_rowid FROM tasks_search_pending WHERE task_rowid <= ?"


def any_pending(connection: sqlite3.Connection) -> bool:
    """Whether some task waits to be indexed (a read: the indexer takes the writer only then)."""
    return connection.execute("SELECT 1 FROM tasks_search_pending LIMIT 1").fetchone() is not None


def index_pending(connection: sqlite3.Connection, limit: int = INDEX_BATCH) -> int:
    """Move up to ``limit`` pending tasks (the lowest rowids) into the index: their index rows
    out, the current text of those that still exist in, the batch out of pending. Returns how
    many it moved (fewer than ``limit``: none are left)."""
    last, count = connection.execute(
        "SELECT max(task_rowid), count(*) FROM"
        " (SELECT task_rowid FROM tasks_search_pending ORDER BY task_rowid LIMIT ?)",
        (limit,),
    ).fetchone()
    if not count:
        return 0
    connection.execute(f"DELETE FROM tasks_search WHERE rowid IN ({_BATCH})", (last,))
    connection.execute(
        "INSERT INTO tasks_search (rowid, name, task_type, payload, result, error)"
        " SELECT rowid, name, task_type, payload, result, error FROM tasks"
        f" WHERE rowid IN ({_BATCH})",
        (last,),
    )
    connection.execute("DELETE FROM tasks_search_pending WHERE task_rowid <= ?", (last,))
    return int(count)
