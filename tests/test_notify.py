"""Notifiers: in-process delivery, and LISTEN/NOTIFY across PostgreSQL connections."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import asyncpg
import pytest

from hetuflow.config import DatabaseConfig
from hetuflow.store.notify_local import LocalNotifier
from hetuflow.store.notify_postgres import PostgresNotifier

CHANNEL = "hetuflow_test_channel"
DEADLINE_SECONDS = 10.0


class Inbox:
    """Collects payloads; ``wait_for`` awaits one without sleeping."""

    def __init__(self) -> None:
        self.payloads: list[str] = []
        self._changed = asyncio.Event()

    def __call__(self, payload: str) -> None:
        self.payloads.append(payload)
        self._changed.set()

    async def wait_for(self, payload: str) -> None:
        async with asyncio.timeout(DEADLINE_SECONDS):
            while payload not in self.payloads:
                self._changed.clear()
                await self._changed.wait()


async def test_local_notifier_delivers_in_process() -> None:
    notifier = LocalNotifier()
    await notifier.open()
    inbox, other = Inbox(), Inbox()

    def broken(payload: str) -> None:
        raise RuntimeError("a failing subscriber must not stop the others")

    notifier.subscribe(CHANNEL, broken)
    notifier.subscribe(CHANNEL, inbox)
    notifier.subscribe("elsewhere", other)
    await notifier.publish(CHANNEL, "a")
    await notifier.publish(CHANNEL)
    assert inbox.payloads == ["a", ""]
    assert other.payloads == []
    await notifier.close()


@pytest.fixture
async def notifiers(
    pg_database: DatabaseConfig,
) -> AsyncIterator[Callable[[], PostgresNotifier]]:
    made: list[PostgresNotifier] = []

    def make() -> PostgresNotifier:
        notifier = PostgresNotifier(pg_database)
        made.append(notifier)
        return notifier

    yield make
    for notifier in made:
        await notifier.close()


async def two_nodes(
    notifiers: Callable[[], PostgresNotifier],
) -> tuple[PostgresNotifier, Inbox, PostgresNotifier, Inbox]:
    """Two open notifiers (two nodes), each with an inbox on ``CHANNEL``."""
    first, second = notifiers(), notifiers()
    first_inbox, second_inbox = Inbox(), Inbox()
    first.subscribe(CHANNEL, first_inbox)
    second.subscribe(CHANNEL, second_inbox)
    await first.open()
    await second.open()
    return first, first_inbox, second, second_inbox


@pytest.mark.postgres
async def test_publish_wakes_other_nodes_once_and_self_once(
    notifiers: Callable[[], PostgresNotifier],
) -> None:
    first, first_inbox, second, second_inbox = await two_nodes(notifiers)
    assert first.listener_pid != second.listener_pid

    await second.publish(CHANNEL, "from-second")
    assert second_inbox.payloads == ["from-second"]  # local delivery is immediate
    await first_inbox.wait_for("from-second")
    await first.publish(CHANNEL, "from-first")
    await second_inbox.wait_for("from-first")
    # second's own NOTIFY reached its LISTEN connection before first's, and was ignored
    assert second_inbox.payloads == ["from-second", "from-first"]
    assert first_inbox.payloads == ["from-second", "from-first"]


@pytest.mark.postgres
async def test_subscribing_after_open_listens(notifiers: Callable[[], PostgresNotifier]) -> None:
    first, second = notifiers(), notifiers()
    await first.open()
    await second.open()
    late = Inbox()
    second.subscribe("hetuflow_late", late)
    second.subscribe(CHANNEL, late)
    # the supervisor LISTENs on both; a round trip on CHANNEL proves hetuflow_late is live too
    async with asyncio.timeout(DEADLINE_SECONDS):
        while "ping" not in late.payloads:
            await first.publish(CHANNEL, "ping")
            await asyncio.sleep(0.05)
    await first.publish("hetuflow_late", "hello")
    await late.wait_for("hello")


@pytest.mark.postgres
async def test_reconnects_and_wakes_subscribers_after_a_drop(
    notifiers: Callable[[], PostgresNotifier], pg_database: DatabaseConfig
) -> None:
    first, second = notifiers(), notifiers()
    inbox = Inbox()
    second.subscribe(CHANNEL, inbox)
    await first.open()
    await second.open()
    old_pid = second.listener_pid
    admin = await asyncpg.connect(pg_database.dsn)
    try:
        await admin.execute("SELECT pg_terminate_backend($1)", old_pid)
    finally:
        await admin.close()
    await inbox.wait_for("")  # woken once: a notification may have been lost
    assert second.listener_pid not in (None, old_pid)
    await first.publish(CHANNEL, "after")
    await inbox.wait_for("after")
    assert inbox.payloads == ["", "after"]


@pytest.mark.postgres
async def test_a_notification_that_may_wait_is_sent_once_with_its_repeats(
    notifiers: Callable[[], PostgresNotifier],
) -> None:
    """``within_seconds``: repeats published while it waits are one NOTIFY; the local
    subscribers hear each at once; a publish that may not wait sends what waits with it."""
    first, local, _, remote = await two_nodes(notifiers)
    for _ in range(5):  # a flush every 10 ms
        await first.publish(CHANNEL, "slots", within_seconds=0.2)
        await asyncio.sleep(0.01)
    assert local.payloads == ["slots"] * 5
    await remote.wait_for("slots")
    await first.publish(CHANNEL, "end")  # sent at once: what arrives after it came later
    await remote.wait_for("end")
    assert remote.payloads == ["slots", "end"]

    loop = asyncio.get_running_loop()
    started = loop.time()
    await first.publish(CHANNEL, "lazy", within_seconds=60)
    await first.publish(CHANNEL, "eager")
    await remote.wait_for("eager")
    assert remote.payloads[-2:] == ["lazy", "eager"]  # the waiting one went along, in order
    assert loop.time() - started < 30
