"""Planner statistics for young tables: ANALYZE the busiest tables once they outgrow theirs.

PostgreSQL plans a statement from the table sizes its statistics last recorded, and keeps a
prepared statement's generic plan until the statistics change. A new database's tables start
empty: the plans the server's connections cache in their first seconds read ``tasks`` and
``attempts`` whole (the cheapest way to read a nearly empty table), and go on reading them
whole, at every result flush and every claim, while the tables grow, until autovacuum analyzes
them (it looks once a minute, ``autovacuum_naptime``). Seen: some 2,000 sequential scans of
``tasks`` and as many of ``attempts`` in 10 s of 8 producer threads on a new database, 4 to 11
million rows read; with the statistics kept up, a sixth as many rows and 6 to 12 % more tasks a
second (docs/benchmarks.md, fifth round).

So the store checks every few seconds whether a table's file is more than twice the size its
statistics recorded (and at least ``MIN_PAGES``), and if so analyzes it: often while a table is
young, then less and less (doubling), and never for a table whose size is stable; autovacuum
keeps those. The file's size is read, not the row counts of ``pg_stat_user_tables``, which a
busy connection reports only every 10 s or so. Several nodes may check at once: one analyzes,
the others skip (an advisory lock). A database user that may not ANALYZE the tables (neither
their owner nor a member of its role) does not try: autovacuum keeps them.
"""

from __future__ import annotations

from hetuflow.store._pg_db import STATISTICS_LOCK, Conn

TABLES = ("tasks", "attempts")
MIN_PAGES = 16
"""Below this size (128 KiB, some hundreds of tasks) a whole-table read costs little."""

_OUTGROWN = """
SELECT c.relname FROM pg_class AS c,
    LATERAL (SELECT pg_relation_size(c.oid) / current_setting('block_size')::int AS pages) AS f
WHERE c.relname = ANY($1::text[]) AND c.relnamespace = to_regnamespace(current_schema())
  AND pg_has_role(c.relowner, 'USAGE')
  AND f.pages >= $2 AND f.pages > 2 * greatest(c.relpages, 0)
ORDER BY c.relname"""


async def outgrown(connection: Conn) -> list[str]:
    """The tables of ``TABLES`` whose file is more than twice the size their statistics
    recorded, among those this database user may analyze."""
    rows = await connection.fetch(_OUTGROWN, list(TABLES), MIN_PAGES)
    return [row["relname"] for row in rows]


async def analyze(connection: Conn, tables: list[str]) -> bool:
    """ANALYZE ``tables`` unless another node is at it (then False). Call in a transaction."""
    if not await connection.fetchval("SELECT pg_try_advisory_xact_lock($1)", STATISTICS_LOCK):
        return False
    names = ", ".join(table for table in TABLES if table in tables)  # ours: no quoting needed
    await connection.execute(f"ANALYZE {names}")
    return True
