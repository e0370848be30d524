"""Contract: the task list's text search looks in names, types, payloads, results and errors
(``TaskFilter.text``, the API's ``q=``), through the search index from 3 characters on."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from datetime import timedelta

import pytest

from hetuflow.config import DatabaseConfig
from hetuflow.models import (
    AttemptOutcome,
    AttemptRef,
    AttemptResult,
    NewTask,
    TaskFilter,
)
from hetuflow.store._sqlite_search import INDEX_BATCH, index_pending
from hetuflow.store.base import Store
from hetuflow.store.sqlite import SqliteStore

from ._support import T0, ConnectAgent, group


async def _names(store: Store, text: str) -> list[str]:
    page = await store.list_tasks(TaskFilter(text=text), limit=50, offset=0)
    assert page.total == len(page.items)
    return sorted(task.name for task in page.items)


async def _finish(store: Store, result: AttemptResult) -> None:
    await store.finish_attempts([result], now=T0 + timedelta(seconds=5))


async def test_a_word_in_a_payload_a_result_or_an_error_is_found(
    store: Store, connect: ConnectAgent
) -> None:
    await store.create_tasks(
        [
            NewTask("invoice", "mail", payload={"customer": "Zebracorp Ltd", "n": 7}),
            NewTask("report", "mail", payload={"customer": "Acme"}),
            NewTask("resize", "image", payload={"path": "/img/cat.png"}),
            NewTask("other", "image", payload={"path": "/img/dog.png"}),
        ],
        now=T0,
    )
    agent = await connect("a1", task_types=["mail", "image"])
    dispatches = await store.claim_tasks(
        [group([agent], free=4, task_types=["mail", "image"])], now=T0
    )
    by_name = {dispatch.task.name: dispatch.task for dispatch in dispatches}
    ref = {name: AttemptRef(task.id, 1, agent.id) for name, task in by_name.items()}
    await _finish(
        store,
        AttemptResult(ref["resize"], AttemptOutcome.SUCCEEDED, result={"thumb": "s3://Bucket9/x"}),
    )
    await _finish(
        store,
        AttemptResult(ref["other"], AttemptOutcome.FAILED, error="disk quota exceeded"),
    )

    assert await _names(store, "zebracorp") == ["invoice"]  # a payload value, any case
    assert await _names(store, "customer") == ["invoice", "report"]  # a payload's key
    assert await _names(store, "bucket9") == ["resize"]  # a result
    assert await _names(store, "quota exc") == ["other"]  # an error, across a space
    assert await _names(store, "mail") == ["invoice", "report"]  # the task type, as before
    assert await _names(store, "REPO") == ["report"]  # the name, as before
    assert await _names(store, "nowhere-to-be-found") == []
    # short text (no trigram) still searches every column, by reading every row
    assert await _names(store, "9/") == ["resize"]
    assert await _names(store, "%") == []  # LIKE's wildcards are plain text


async def test_search_follows_updates_and_deletes(store: Store, connect: ConnectAgent) -> None:
    await store.create_tasks([NewTask("one", "t", payload={"k": "before"})], now=T0)
    agent = await connect("a1")
    [dispatch] = await store.claim_tasks([group([agent], free=1)], now=T0)
    ref = AttemptRef(dispatch.task.id, 1, agent.id)
    assert await _names(store, "kiwifruit") == []
    await _finish(store, AttemptResult(ref, AttemptOutcome.SUCCEEDED, result="kiwifruit"))
    assert await _names(store, "kiwifruit") == ["one"]
    assert await _names(store, "before") == ["one"]  # the payload is still indexed
    assert await store.delete_finished_tasks(finished_before=T0 + timedelta(hours=1), limit=10) == 1
    assert await _names(store, "kiwifruit") == []
    assert await _names(store, "before") == []


async def test_search_combines_with_the_other_filters(store: Store) -> None:
    await store.create_tasks(
        [
            NewTask("a", "alpha", payload={"tag": "shared-word"}),
            NewTask("b", "beta", payload={"tag": "shared-word"}),
        ],
        now=T0,
    )
    query = TaskFilter(text="shared-word", task_type="beta")
    page = await store.list_tasks(query, limit=10, offset=0)
    assert [task.name for task in page.items] == ["b"]
    assert page.total == 1


async def test_a_text_in_most_tasks_pages_like_a_rare_one(store: Store) -> None:
    """More than 2,000 matches: SQLite reads such a page along the list order instead of
    through the index; the page, the cursor and the total are the same either way."""
    tasks = [
        NewTask(f"n{i}", "t", payload={"note": "Common-Word" if i % 3 else "other"})
        for i in range(3300)
    ]
    created = []
    for first in range(0, len(tasks), 1000):
        batch = tasks[first : first + 1000]
        created += await store.create_tasks(batch, now=T0 + timedelta(seconds=first))
    newest_first = sorted(
        (task for task, _ in created), key=lambda task: (task.created_at, task.id), reverse=True
    )
    matching = [task.name for task in newest_first if task.payload == {"note": "Common-Word"}]
    query = TaskFilter(text="common-word")
    page = await store.list_tasks(query, limit=5, offset=0)
    assert page.total == 2200
    assert [task.name for task in page.items] == matching[:5]
    assert page.next is not None
    following = await store.list_tasks(query, limit=3, offset=0, after=page.next)
    assert [task.name for task in following.items] == matching[5:8]


async def _index(store: Store) -> None:
    """Run SQLite's deferred indexer now (PostgreSQL's index is kept in the write itself)."""
    if isinstance(store, SqliteStore):
        await store.index_search()
        assert _pending(store) == 0


def _pending(store: SqliteStore) -> int:
    with contextlib.closing(sqlite3.connect(store.config.sqlite_path)) as connection:
        return int(connection.execute("SELECT count(*) FROM tasks_search_pending").fetchone()[0])


async def test_search_is_exact_before_and_after_the_index_catches_up(
    store: Store, connect: ConnectAgent
) -> None:
    """On SQLite a changed task waits for the indexer (``tasks_search_pending``); a search
    reads its own text meanwhile, so it is found (or no longer found) at once."""
    await store.create_tasks(
        [NewTask("old", "t", payload={"k": "pomegranate"}), NewTask("keep", "t")], now=T0
    )
    assert await _names(store, "pomegranate") == ["old"]  # created, not yet indexed
    await _index(store)
    assert await _names(store, "pomegranate") == ["old"]  # from the index
    agent = await connect("a1")
    dispatches = await store.claim_tasks([group([agent], free=2)], now=T0)
    by_name = {dispatch.task.name: dispatch.task for dispatch in dispatches}
    await _finish(
        store,
        AttemptResult(
            AttemptRef(by_name["old"].id, 1, agent.id),
            AttemptOutcome.SUCCEEDED,
            result="tangerine",
        ),
    )
    await _finish(
        store,
        AttemptResult(
            AttemptRef(by_name["keep"].id, 1, agent.id), AttemptOutcome.FAILED, error="papaya"
        ),
    )
    # finished: the new result and error at once, the payload still (its index rows are stale)
    assert await _names(store, "tangerine") == ["old"]
    assert await _names(store, "papaya") == ["keep"]
    assert await _names(store, "pomegranate") == ["old"]
    await _index(store)
    assert await _names(store, "tangerine") == ["old"]
    assert await _names(store, "papaya") == ["keep"]
    assert await _names(store, "pomegranate") == ["old"]
    assert await store.delete_finished_tasks(finished_before=T0 + timedelta(hours=1), limit=5) == 2
    # deleted: gone at once, though the index still holds their text until the indexer runs
    for text in ("tangerine", "papaya", "pomegranate"):
        assert await _names(store, text) == []
    await _index(store)
    for text in ("tangerine", "papaya", "pomegranate"):
        assert await _names(store, text) == []


async def test_a_text_changed_away_is_no_longer_found_before_the_index_catches_up(
    store: Store,
) -> None:
    """A task's indexed text that it no longer holds (any change of the five columns: here a
    rename straight in the file) is not matched while the task waits for the indexer."""
    if not isinstance(store, SqliteStore):
        pytest.skip("the deferred index is SQLite's")
    await store.create_tasks([NewTask("durian-job", "t")], now=T0)
    await _index(store)
    with contextlib.closing(sqlite3.connect(store.config.sqlite_path)) as connection:
        connection.execute("UPDATE tasks SET name = 'lychee-job' WHERE name = 'durian-job'")
        connection.commit()
    assert await _names(store, "durian") == []  # the index still holds it: not trusted
    assert await _names(store, "lychee") == ["lychee-job"]
    await _index(store)
    assert await _names(store, "durian") == []
    assert await _names(store, "lychee") == ["lychee-job"]


async def test_a_backlog_is_indexed_in_bounded_batches(database: DatabaseConfig) -> None:
    if database.type != "sqlite":
        pytest.skip("the deferred index is SQLite's")
    store = SqliteStore(database, search_index_seconds=None)  # indexed only when asked
    await store.open()
    try:
        tasks = [
            NewTask(f"n{i}", "t", payload={"i": f"item-{i:05d}"}) for i in range(INDEX_BATCH + 5)
        ]
        await store.create_tasks(tasks, now=T0)
        assert _pending(store) == INDEX_BATCH + 5
        with contextlib.closing(
            sqlite3.connect(database.sqlite_path, isolation_level=None)
        ) as connection:
            connection.execute("BEGIN IMMEDIATE")
            assert index_pending(connection) == INDEX_BATCH  # one transaction takes a batch
            connection.execute("COMMIT")
        assert _pending(store) == 5
        assert await _names(store, f"item-{INDEX_BATCH + 4:05d}") == [f"n{INDEX_BATCH + 4}"]
        assert await store.index_search() == 5
        assert _pending(store) == 0
        assert await _names(store, f"item-{INDEX_BATCH + 4:05d}") == [f"n{INDEX_BATCH + 4}"]
        assert await _names(store, "item-00001") == ["n1"]
        assert await store.index_search() == 0
    finally:
        await store.close()


async def test_the_store_indexes_by_itself_within_seconds(store: Store) -> None:
    if not isinstance(store, SqliteStore):
        pytest.skip("the deferred index is SQLite's")
    await store.create_tasks([NewTask("late", "t", payload={"k": "rambutan"})], now=T0)
    assert _pending(store) == 1
    for _ in range(100):  # up to 10 s on a busy machine; the store indexes every second
        if not _pending(store):
            break
        await asyncio.sleep(0.1)
    assert _pending(store) == 0
    assert await _names(store, "rambutan") == ["late"]
