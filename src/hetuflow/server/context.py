"""What every server component is built from; wired once in the app factory."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

from hetuflow.clock import Clock
from hetuflow.config import Config
from hetuflow.server.metrics import Metrics
from hetuflow.store.base import Notifier, Store


@dataclass(frozen=True, slots=True)
class ServerContext:
    config: Config
    store: Store
    notifier: Notifier
    clock: Clock
    node_id: str
    metrics: Metrics = field(default_factory=Metrics)
    """This app's Prometheus metrics (its own registry); components call its methods."""
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when the server starts to shut down (``hetuflow.server.app.begin_stopping``):
    open streams (``/api/events``, log streams) end at once, since the HTTP server waits for
    open requests before it runs the lifespan's shutdown."""

    async def sleep_unless_stopping(self, seconds: float) -> bool:
        """Sleep ``seconds``, or less if the server starts stopping; True if it is stopping."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self.stopping.wait()
        return self.stopping.is_set()
