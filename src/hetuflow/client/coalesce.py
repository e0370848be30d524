"""Submit coalescing: concurrent ``submit`` calls of one client ride one batch request.

A serial producer pays nothing for it: while fewer than ``max_in_flight`` creates are on the
wire, a ``submit`` goes out at once as its own ``POST /api/tasks``, exactly as without
coalescing. Only the calls made while that many requests are already in flight queue up;
when a request comes back, everything queued meanwhile (up to ``max_batch``) leaves as one
``POST /api/tasks/batch``, so N threads or tasks cost about one request per round trip, not
N. There is no waiting window: nothing is held back to wait for company.

Each caller still gets its own task, after the durable commit of the request that carried it.
The batch endpoint is all or none. When the server refuses a batch for one task (a 4xx
naming ``tasks[i]``: nothing was created), that task is sent again alone, so its caller gets
its own error as if it had called alone, and the others go again as a batch. When it refuses
a batch as a whole (a 5xx, or the server could not be reached: nothing was created either),
every task of it is sent again alone, each caller getting its own answer. When a batch failed on
the wire after being sent (whether it was committed is unknown), every caller of it gets that
error, as a single submit would.

``SubmitCoalescer`` serves ``Client`` (threads: the first queued caller of a batch sends it
for all of them), ``AsyncSubmitCoalescer`` serves ``AsyncClient`` (tasks of one event loop:
the batch is sent by a task the coalescer owns, so a cancelled caller cancels nobody else).
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from hetuflow.client.errors import ClientError, ServerUnreachable
from hetuflow.client.models import Task

MAX_IN_FLIGHT = 2
"""Creates sent at once before calls start to queue for a batch."""
MAX_BATCH = 256
"""Tasks per batch request (the server's default ``[server] max_batch_tasks`` is 1000)."""

Body = dict[str, Any]
_ITEM = re.compile(r"tasks\[(\d+)\]")


def _nothing_created(error: BaseException) -> bool:
    """The batch certainly created nothing: the server answered with an error (a batch is all
    or none) or was never reached."""
    return isinstance(error, ClientError) and (
        error.status is not None or isinstance(error, ServerUnreachable)
    )


def _culprit(error: BaseException, size: int) -> int | None:
    """The index of the task a refused batch names (``field`` = ``tasks[i]…``), if any."""
    if not isinstance(error, ClientError) or error.status is None or error.field is None:
        return None
    found = _ITEM.match(error.field)
    index = int(found.group(1)) if found else None
    return index if index is not None and index < size else None


class _Entry:
    __slots__ = ("alone", "batch", "body", "error", "ready", "result")

    def __init__(self, body: Body) -> None:
        self.body = body
        self.ready = threading.Event()
        self.result: Task | None = None
        self.error: BaseException | None = None
        self.batch: list[_Entry] | None = None
        """Set on the entry whose thread sends this batch for all of its entries."""
        self.alone = False
        """Its batch was refused: send it again by itself."""


class SubmitCoalescer:
    """Coalescing for the synchronous client; thread-safe."""

    def __init__(
        self,
        send_one: Callable[[Body], Task],
        send_batch: Callable[[Sequence[Body]], list[Task]],
        *,
        max_in_flight: int = MAX_IN_FLIGHT,
        max_batch: int = MAX_BATCH,
    ) -> None:
        self._send_one = send_one
        self._send_batch = send_batch
        self._max_in_flight = max_in_flight
        self._max_batch = max_batch
        self._lock = threading.Lock()
        self._in_flight = 0
        self._queue: list[_Entry] = []

    def submit(self, body: Body) -> Task:
        with self._lock:
            entry = None
            if self._in_flight < self._max_in_flight and not self._queue:
                self._in_flight += 1
            else:
                entry = _Entry(body)
                self._queue.append(entry)
        if entry is None:
            try:
                return self._send_one(body)
            finally:
                self._next()
        entry.ready.wait()
        if entry.batch is not None:
            self._send(entry.batch)
        if entry.alone:
            return self._send_one(body)
        if entry.error is not None:
            raise entry.error
        assert entry.result is not None
        return entry.result

    def _next(self) -> None:
        """A request came back: hand what queued meanwhile to its first caller, who sends it
        (the request slot passes to that batch), or free the slot."""
        with self._lock:
            if not self._queue:
                self._in_flight -= 1
                return
            batch = self._queue[: self._max_batch]
            del self._queue[: self._max_batch]
        batch[0].batch = batch
        batch[0].ready.set()

    def _send(self, batch: list[_Entry]) -> None:
        pending = batch
        try:
            while pending:
                try:
                    if len(pending) == 1:
                        pending[0].result = self._send_one(pending[0].body)
                    else:
                        tasks = self._send_batch([entry.body for entry in pending])
                        for entry, task in zip(pending, tasks, strict=True):
                            entry.result = task
                    pending = []
                except BaseException as error:
                    culprit = _culprit(error, len(pending)) if len(pending) > 1 else None
                    if culprit is not None:  # that one again alone, the others together
                        pending[culprit].alone = True
                        pending = pending[:culprit] + pending[culprit + 1 :]
                        continue
                    for entry in pending:
                        if len(pending) > 1 and _nothing_created(error):
                            entry.alone = True
                        else:
                            entry.error = error
                    pending = []
        finally:
            self._next()
            for entry in batch[1:]:
                entry.ready.set()


class AsyncSubmitCoalescer:
    """Coalescing for the asynchronous client; for the tasks of one event loop."""

    def __init__(
        self,
        send_one: Callable[[Body], Awaitable[Task]],
        send_batch: Callable[[Sequence[Body]], Awaitable[list[Task]]],
        *,
        max_in_flight: int = MAX_IN_FLIGHT,
        max_batch: int = MAX_BATCH,
    ) -> None:
        self._send_one = send_one
        self._send_batch = send_batch
        self._max_in_flight = max_in_flight
        self._max_batch = max_batch
        self._in_flight = 0
        self._queue: list[tuple[Body, asyncio.Future[Task | None]]] = []
        self._senders: set[asyncio.Task[None]] = set()

    async def submit(self, body: Body) -> Task:
        if self._in_flight < self._max_in_flight and not self._queue:
            self._in_flight += 1
            try:
                return await self._send_one(body)
            finally:
                self._next()
        future: asyncio.Future[Task | None] = asyncio.get_running_loop().create_future()
        self._queue.append((body, future))
        task = await future  # None: its batch was refused, send it again alone
        return task if task is not None else await self._send_one(body)

    def _next(self) -> None:
        batch = [(body, future) for body, future in self._queue if not future.done()]
        self._queue.clear()
        if not batch:
            self._in_flight -= 1
            return
        self._queue = batch[self._max_batch :]
        sender = asyncio.get_running_loop().create_task(self._send(batch[: self._max_batch]))
        self._senders.add(sender)
        sender.add_done_callback(self._senders.discard)

    async def _send(self, batch: list[tuple[Body, asyncio.Future[Task | None]]]) -> None:
        pending = batch
        try:
            while pending:
                try:
                    if len(pending) == 1:
                        results: list[Task | None] = [await self._send_one(pending[0][0])]
                    else:
                        results = list(await self._send_batch([body for body, _ in pending]))
                except BaseException as error:
                    culprit = _culprit(error, len(pending)) if len(pending) > 1 else None
                    if culprit is not None:  # that one again alone, the others together
                        if not pending[culprit][1].done():
                            pending[culprit][1].set_result(None)
                        pending = pending[:culprit] + pending[culprit + 1 :]
                        continue
                    self._fail(pending, error)
                    if not isinstance(error, Exception):
                        raise
                    return
                for (_, future), task in zip(pending, results, strict=True):
                    if not future.done():
                        future.set_result(task)
                pending = []
        finally:
            self._next()

    @staticmethod
    def _fail(batch: list[tuple[Body, asyncio.Future[Task | None]]], error: BaseException) -> None:
        for _, future in batch:
            if future.done():
                continue
            if isinstance(error, asyncio.CancelledError):
                future.cancel()
            elif len(batch) > 1 and _nothing_created(error):
                future.set_result(None)  # nothing was created: its caller sends it alone
            else:
                future.set_exception(error)

    async def aclose(self) -> None:
        """Wait for the batches on the wire (their callers are waiting for them too)."""
        if self._senders:
            await asyncio.gather(*self._senders, return_exceptions=True)
