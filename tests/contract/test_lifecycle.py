"""Contract: opening, pinging and an unreachable database."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from hetuflow.config import DatabaseConfig
from hetuflow.errors import StoreUnavailable
from hetuflow.store import create_store
from hetuflow.store.base import Store


async def test_ping_answers(store: Store) -> None:
    await store.ping()


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port  # nothing listens here once the probe is closed


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def test_unreachable_database_is_store_unavailable(kind: str, tmp_path: Path) -> None:
    if kind == "sqlite":
        config = DatabaseConfig(type="sqlite", path=str(tmp_path / "missing-dir" / "x.db"))
    else:
        config = DatabaseConfig(
            type="postgres", url=f"postgresql://postgres@127.0.0.1:{_closed_port()}/hetuflow"
        )
    store = create_store(config)
    with pytest.raises(StoreUnavailable):
        await store.open()
    await store.close()


async def test_an_unmigrated_database_fails_ping(tmp_path: Path) -> None:
    store = create_store(DatabaseConfig(type="sqlite", path=str(tmp_path / "blank.db")))
    await store.open()
    try:
        with pytest.raises(StoreUnavailable):
            await store.ping()
    finally:
        await store.close()
