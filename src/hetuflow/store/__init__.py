"""The Store seam and its implementations (one per database)."""

from __future__ import annotations

from hetuflow.config import DatabaseConfig
from hetuflow.store.base import Notifier, Store


def create_store(database: DatabaseConfig) -> Store:
    """The Store for ``database`` (not yet opened)."""
    if database.kind == "postgres":
        from hetuflow.store.postgres import PostgresStore

        return PostgresStore(database)
    from hetuflow.store.sqlite import SqliteStore

    return SqliteStore(database)


def create_notifier(database: DatabaseConfig) -> Notifier:
    """LISTEN/NOTIFY on PostgreSQL (wakes every node); in-process on SQLite."""
    if database.kind == "postgres":
        from hetuflow.store.notify_postgres import PostgresNotifier

        return PostgresNotifier(database)
    from hetuflow.store.notify_local import LocalNotifier

    return LocalNotifier()


__all__ = ["Notifier", "Store", "create_notifier", "create_store"]
