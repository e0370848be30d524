"""The Store seam and its implementations (one per database)."""

from __future__ import annotations

from hetuflow.config import (
    DEFAULT_MAX_AGENT_CRASHES_PER_TASK,
    DEFAULT_PRIORITY_AGING_SECONDS,
    DatabaseConfig,
)
from hetuflow.store.base import Notifier, Store


def create_store(
    database: DatabaseConfig,
    *,
    priority_aging_seconds: float = DEFAULT_PRIORITY_AGING_SECONDS,
    max_agent_crashes_per_task: int = DEFAULT_MAX_AGENT_CRASHES_PER_TASK,
) -> Store:
    """The Store for ``database`` (not yet opened). ``priority_aging_seconds`` (``[scheduler]``)
    is what one priority level is worth in waiting for the tasks it inserts; 0: strict
    priority (see ``_claims``). ``max_agent_crashes_per_task`` (``[scheduler]``): a task lost
    with its agent that many times is quarantined by the release (0: never)."""
    if database.kind == "postgres":
        from hetuflow.store.postgres import PostgresStore

        return PostgresStore(
            database,
            priority_aging_seconds=priority_aging_seconds,
            max_agent_crashes_per_task=max_agent_crashes_per_task,
        )
    from hetuflow.store.sqlite import SqliteStore

    return SqliteStore(
        database,
        priority_aging_seconds=priority_aging_seconds,
        max_agent_crashes_per_task=max_agent_crashes_per_task,
    )


def create_notifier(database: DatabaseConfig) -> Notifier:
    """LISTEN/NOTIFY on PostgreSQL (wakes every node); in-process on SQLite."""
    if database.kind == "postgres":
        from hetuflow.store.notify_postgres import PostgresNotifier

        return PostgresNotifier(database)
    from hetuflow.store.notify_local import LocalNotifier

    return LocalNotifier()


__all__ = ["Notifier", "Store", "create_notifier", "create_store"]
