"""LocalNotifier: wakes subscribers in this process only (SQLite runs one server process)."""

from __future__ import annotations

import logging
from collections import defaultdict

from hetuflow.store.base import NotifyCallback

log = logging.getLogger(__name__)


class Subscribers:
    """Callbacks per channel; a failing callback is logged and does not stop the others."""

    def __init__(self) -> None:
        self._callbacks: dict[str, list[NotifyCallback]] = defaultdict(list)

    @property
    def channels(self) -> list[str]:
        return list(self._callbacks)

    def add(self, channel: str, callback: NotifyCallback) -> None:
        self._callbacks[channel].append(callback)

    def deliver(self, channel: str, payload: str) -> None:
        for callback in list(self._callbacks.get(channel, ())):
            try:
                callback(payload)
            except Exception:
                log.exception("notification callback for %s failed", channel)

    def deliver_everywhere(self, payload: str) -> None:
        for channel in self.channels:
            self.deliver(channel, payload)


class LocalNotifier:
    def __init__(self) -> None:
        self._subscribers = Subscribers()

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def publish(
        self, channel: str, payload: str = "", *, within_seconds: float = 0.0
    ) -> None:
        self._subscribers.deliver(channel, payload)  # no other node

    def subscribe(self, channel: str, callback: NotifyCallback) -> None:
        self._subscribers.add(channel, callback)
