"""SQLite plumbing: the value codec and the dedicated threads (one writer, one reader, one
checkpointer).

Every Store method runs as one plain function on a thread that owns its connection, inside
one transaction: writes take ``BEGIN IMMEDIATE`` (the single writer; other processes wait on
``busy_timeout``), reads take a deferred ``BEGIN`` for a consistent snapshot while WAL lets
them run beside the writer. Commits are durable (``synchronous=FULL``); batching amortises them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any, Concatenate, ParamSpec, TypeVar
from uuid import UUID

import orjson

from hetuflow.clock import utc
from hetuflow.errors import StoreUnavailable

logger = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)

MIN_SQLITE = (3, 38)
"""``->>`` (3.38) and ``UPDATE ... FROM`` (3.33)."""

BUSY_TIMEOUT_MS = 10_000
CACHE_KIB = 64 * 1024
"""Page cache per connection (SQLite's default is 2 MiB). The tasks table and its indexes
outgrow 2 MiB at a few ten thousand tasks; past that every status change read index pages
back from the file, and a claim cost half again as much (measured: 47 -> 30 us per row)."""


class SqliteCodec:
    """INTEGER microseconds since the epoch (UTC), JSON text, UUID text."""

    def time(self, value: Any) -> datetime | None:
        return None if value is None else EPOCH + timedelta(microseconds=value)

    def json(self, value: Any) -> Any:
        return orjson.loads(value)

    def texts(self, value: Any) -> tuple[str, ...]:
        return tuple(orjson.loads(value))

    def uuid(self, value: Any) -> UUID | None:
        return None if value is None else UUID(value)

    def put_time(self, value: datetime | None) -> int | None:
        return None if value is None else (utc(value) - EPOCH) // MICROSECOND

    def put_json(self, value: Any) -> str:
        return orjson.dumps(value).decode()

    def put_texts(self, value: Sequence[str]) -> str:
        return orjson.dumps(list(value)).decode()

    def put_uuid(self, value: UUID | None) -> str | None:
        return None if value is None else str(value)


CODEC = SqliteCodec()


def micros(value: datetime) -> int:
    """An aware datetime as stored (never None)."""
    return (utc(value) - EPOCH) // MICROSECOND


def json_rows(rows: Sequence[Sequence[Any]]) -> str:
    """Rows as one JSON array of arrays, for a statement that reads them with
    ``json_each(?)`` and ``value ->> N``.

    Batches are written with one such statement, not ``executemany``: Python's sqlite3 lets go
    of the GIL around every step, so each row of an ``executemany`` (and each row fetched)
    waits to get it back from the event loop thread. Under load that wait, not SQLite, was
    most of a batch's time (measured: 1.7 us a row alone, 580 us a row beside a busy thread;
    one statement over a JSON document: 25 us)."""
    return orjson.dumps(rows).decode()


def id_list(ids: Sequence[UUID | str]) -> str:
    """Ids as a JSON array, for ``IN (SELECT value FROM json_each(?))``."""
    return orjson.dumps([str(value) for value in ids]).decode()


CHECKPOINT_EVERY_WRITES = 16
"""The writer does not checkpoint the WAL itself (SQLite's default does, inside a commit,
every 1,000 pages): a third thread copies the WAL back into the database after this many
write transactions, while the writer goes on. Measured: +8 % batch throughput."""


class _Lane:
    """One thread running calls in order, each answered on the caller's event loop.

    The writer and the reader are each one thread that every store call waits for; this is
    the hop to it and back with nothing else: ``ThreadPoolExecutor.submit`` plus
    ``run_in_executor`` also built a ``concurrent.futures.Future``, chained it to an asyncio
    one and checked its idle-thread semaphore on every call (4-5 % of a serial create's
    samples in the server). A cancelled caller stops waiting; the call itself still runs,
    as with an executor."""

    def __init__(self, name: str) -> None:
        self._calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def run(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._calls.put((loop, future, fn, args))
        return future

    def _serve(self) -> None:
        while (call := self._calls.get()) is not None:
            loop, future, fn, args = call
            try:
                result = fn(*args)
            except BaseException as error:
                _answer(loop, _fail, future, error)
            else:
                _answer(loop, _settle, future, result)
            del call, future, args  # drop references before blocking on the next call

    def stop(self) -> None:
        """End the thread once the calls queued so far have run."""
        self._calls.put(None)
        self._thread.join()


_Call = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]", Callable[..., Any], tuple[Any, ...]]

MAX_GROUP_WRITES = 64
"""At most this many queued write transactions share one commit (``_WriterLane``)."""
WRITE_SAVEPOINT = "hetuflow_write"


class _WriterLane(_Lane):
    """The writer's lane, with group commit: the write transactions queued while one runs
    (and commits: the fsync) share the next commit.

    Each one still runs alone in its own savepoint, in order, and sees the ones before it;
    one that fails is rolled back to its savepoint and fails alone. Every caller is answered
    only after the shared ``COMMIT`` (durable: ``synchronous=FULL``), and if that fails every
    call of the group fails. A single queued write runs exactly as before. Nothing waits
    for company: a group is only what was already queued."""

    def _serve(self) -> None:
        held: deque[_Call | None] = deque()  # taken from the queue while grouping, not run
        while True:
            call = held.popleft() if held else self._calls.get()
            if call is None:
                return
            group = [call]
            while _groupable(call) and len(group) < MAX_GROUP_WRITES:
                try:
                    more = self._calls.get_nowait()
                except queue.Empty:
                    break
                if more is None or not _groupable(more):
                    held.append(more)
                    break
                group.append(more)
            if len(group) == 1:
                _run_call(call)
            else:
                _run_group(group)
            del call, group  # drop references before blocking on the next call


def _groupable(call: _Call) -> bool:
    fn, args = call[2], call[3]
    return fn is _transaction and args[1] == "BEGIN IMMEDIATE"


def _run_call(call: _Call) -> None:
    loop, future, fn, args = call
    try:
        result = fn(*args)
    except BaseException as error:
        _answer(loop, _fail, future, error)
    else:
        _answer(loop, _settle, future, result)


def _run_group(group: list[_Call]) -> None:
    """Run write transactions (``_transaction`` calls) in one transaction, one savepoint
    each; answer them after its commit. When the transaction itself fails (``BEGIN``,
    ``COMMIT``, or an error after which SQLite undid it) every call fails."""
    connection: sqlite3.Connection = group[0][3][0]
    try:
        outcomes = _write_group(connection, group)
    except BaseException as error:
        if connection.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                connection.execute("ROLLBACK")
        failure = StoreUnavailable(f"SQLite error: {error}")
        for loop, future, _, _ in group:
            _answer(loop, _fail, future, failure)
        return
    for (loop, future, _, _), (ok, value) in zip(group, outcomes, strict=True):
        _answer(loop, _settle if ok else _fail, future, value)


def _write_group(connection: sqlite3.Connection, group: list[_Call]) -> list[tuple[bool, Any]]:
    """Each call's (succeeded, result or error), once the group's transaction committed."""
    outcomes: list[tuple[bool, Any]] = []
    connection.execute("BEGIN IMMEDIATE")
    for _, _, _, (_, _, body) in group:
        connection.execute(f"SAVEPOINT {WRITE_SAVEPOINT}")
        try:
            result = body(connection)
        except Exception as error:
            if not connection.in_transaction:  # SQLite undid the whole transaction
                raise
            connection.execute(f"ROLLBACK TO {WRITE_SAVEPOINT}")
            connection.execute(f"RELEASE {WRITE_SAVEPOINT}")
            outcomes.append((False, _store_error(error)))
        else:
            connection.execute(f"RELEASE {WRITE_SAVEPOINT}")
            outcomes.append((True, result))
    connection.execute("COMMIT")
    return outcomes


def _store_error(error: BaseException) -> BaseException:
    """What a caller is told for an error inside its transaction (as ``_transaction``)."""
    if isinstance(error, sqlite3.OperationalError):
        failure = StoreUnavailable(f"SQLite error: {error}")
        failure.__cause__ = error
        return failure
    return error


def _answer(
    loop: asyncio.AbstractEventLoop,
    settle: Callable[[asyncio.Future[Any], Any], None],
    future: asyncio.Future[Any],
    value: Any,
) -> None:
    with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits for it
        loop.call_soon_threadsafe(settle, future, value)


def _settle(future: asyncio.Future[Any], result: Any) -> None:
    if not future.done():
        future.set_result(result)


def _fail(future: asyncio.Future[Any], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)


class SqliteDatabase:
    """A writer, a reader and a checkpointer thread, each with its own connection."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._writer: _Lane | None = None
        self._reader: _Lane | None = None
        self._checkpointer: ThreadPoolExecutor | None = None
        self._connections: dict[str, sqlite3.Connection] = {}
        self._writes = 0
        self._checkpoint: Future[None] | None = None

    def _connect(self, role: str) -> None:
        if sqlite3.sqlite_version_info < MIN_SQLITE:
            raise StoreUnavailable(
                f"SQLite {sqlite3.sqlite_version} is too old: hetuflow needs"
                f" {'.'.join(map(str, MIN_SQLITE))} or newer"
            )
        connection = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000
        )
        connection.row_factory = sqlite3.Row
        enable_wal(connection, BUSY_TIMEOUT_MS / 1000)
        connection.execute("PRAGMA foreign_keys=ON")
        connection.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        connection.execute("PRAGMA synchronous=FULL")
        connection.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
        if role == "writer":
            connection.execute("PRAGMA wal_autocheckpoint=0")
        self._connections[role] = connection

    async def open(self) -> None:
        self._writer = _WriterLane("hetuflow-sqlite-writer")
        self._reader = _Lane("hetuflow-sqlite-reader")
        self._checkpointer = ThreadPoolExecutor(1, thread_name_prefix="hetuflow-sqlite-checkpoint")
        loop = asyncio.get_running_loop()
        try:
            await self._writer.run(self._connect, "writer")
            await self._reader.run(self._connect, "reader")
            await loop.run_in_executor(self._checkpointer, self._connect, "checkpointer")
        except sqlite3.Error as error:
            await self.close()
            raise StoreUnavailable(f"cannot open SQLite database {self.path}: {error}") from error

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        if self._checkpointer is not None:
            connection = self._connections.pop("checkpointer", None)
            if connection is not None:
                await loop.run_in_executor(self._checkpointer, connection.close)
            self._checkpointer.shutdown(wait=True)
        for role, lane in (("writer", self._writer), ("reader", self._reader)):
            if lane is None:
                continue
            connection = self._connections.pop(role, None)
            if connection is not None:
                await lane.run(connection.close)
            lane.stop()
        self._writer = self._reader = self._checkpointer = None
        self._checkpoint = None

    async def write(
        self,
        fn: Callable[Concatenate[sqlite3.Connection, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """Run ``fn(connection, ...)`` in one write transaction on the writer thread."""
        result = await self._run("writer", "BEGIN IMMEDIATE", lambda c: fn(c, *args, **kwargs))
        self._writes += 1
        if self._writes >= CHECKPOINT_EVERY_WRITES:
            self._start_checkpoint()
        return result

    def _start_checkpoint(self) -> None:
        """Copy the WAL back on the checkpointer thread, unless a copy is under way. PASSIVE:
        it never waits for (or blocks) the writer or readers; what it cannot copy yet, the
        next one does."""
        running = self._checkpoint
        connection = self._connections.get("checkpointer")
        if self._checkpointer is None or connection is None:
            return
        if running is not None and not running.done():
            return
        self._writes = 0
        self._checkpoint = self._checkpointer.submit(_checkpoint, connection)

    async def read(
        self,
        fn: Callable[Concatenate[sqlite3.Connection, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """Run ``fn(connection, ...)`` in one read transaction (a snapshot) on the reader thread."""
        return await self._run("reader", "BEGIN", lambda c: fn(c, *args, **kwargs))

    async def _run(self, role: str, begin: str, call: Callable[[sqlite3.Connection], T]) -> T:
        lane = self._writer if role == "writer" else self._reader
        connection = self._connections.get(role)
        if lane is None or connection is None:
            raise StoreUnavailable("the SQLite store is not open")
        return await lane.run(_transaction, connection, begin, call)


def _transaction(
    connection: sqlite3.Connection, begin: str, call: Callable[[sqlite3.Connection], T]
) -> T:
    try:
        connection.execute(begin)
    except sqlite3.Error as error:
        raise StoreUnavailable(f"SQLite is not available: {error}") from error
    try:
        result = call(connection)
        connection.execute("COMMIT")
        return result
    except BaseException as error:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        if isinstance(error, sqlite3.OperationalError):
            raise StoreUnavailable(f"SQLite error: {error}") from error
        raise


def _checkpoint(connection: sqlite3.Connection) -> None:
    try:
        connection.execute("PRAGMA wal_checkpoint(PASSIVE)")
    except sqlite3.Error as error:  # the next one retries; the WAL only grows meanwhile
        logger.warning("SQLite WAL checkpoint failed: %s", error)


def enable_wal(connection: sqlite3.Connection, timeout_seconds: float) -> None:
    """Put the database in WAL mode. Switching a new file's journal mode takes a lock that
    SQLite's busy handler does not wait for, so connections opening the same new file at once
    (several migrators, a store and a CLI) retry here for up to ``timeout_seconds``."""
    deadline = time.monotonic() + timeout_seconds
    while True:
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() >= deadline:
                raise
            time.sleep(0.01)
