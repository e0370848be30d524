"""Riding out an unavailable database: backoff and quiet logs for the engine's loops.

When the database goes away (a restart, a failover, a network cut) every loop of the node
fails at once, several times a second, until it is back. ``StoreRetry`` gives each loop the
same behaviour: the failure is counted (``hetuflow_database_errors_total``), the next try
waits a growing delay, and the log says it once: one line when a kind of failure starts (a
``StoreUnavailable`` without a traceback; anything unexpected with one), nothing while it
repeats, and one line when the loop works again.

``supervise`` keeps an engine loop alive: if it ever raises, the error is logged and the loop
starts again after a backoff, instead of ending the engine's task group (and with it every
other loop of the node).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from hetuflow.errors import StoreUnavailable
from hetuflow.server.metrics import Metrics

logger = logging.getLogger("hetuflow.resilience")

RETRY_DELAYS_SECONDS = (0.05, 0.2, 0.5, 1.0, 2.0)
"""Delays before the next try after 1, 2, 3… consecutive failures (the last one repeats)."""


class StoreRetry:
    """The failure state of one loop: backoff delays and one log line per kind of failure."""

    def __init__(
        self,
        what: str,
        *,
        metrics: Metrics | None = None,
        operation: str | None = None,
        log: logging.Logger | None = None,
        delays_seconds: tuple[float, ...] = RETRY_DELAYS_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.what = what
        self._metrics = metrics
        self._operation = operation or what
        self._log = log or logger
        self._delays = delays_seconds
        self._monotonic = monotonic
        self.failures = 0
        """Consecutive failures (0: the last try worked)."""
        self.failing_since: float | None = None
        self.recovered_at: float | None = None
        """Monotonic time of the last recovery (None: never failed)."""
        self._logged: set[str] = set()

    @property
    def failing(self) -> bool:
        return self.failures > 0

    def failed(self, error: BaseException) -> float:
        """Record a failure; return how long to wait before the next try."""
        if self._metrics is not None:
            self._metrics.database_error(self._operation)
        kind = type(error).__name__
        if kind not in self._logged:
            self._logged.add(kind)
            if isinstance(error, StoreUnavailable):
                self._log.warning(
                    "%s: the database is unavailable (%s); retrying with backoff", self.what, error
                )
            else:
                self._log.error("%s failed; retrying with backoff", self.what, exc_info=error)
        if self.failures == 0:
            self.failing_since = self._monotonic()
        delay = self._delays[min(self.failures, len(self._delays) - 1)]
        self.failures += 1
        return delay

    async def backoff(self, error: BaseException) -> None:
        """``failed`` and wait the delay it gives."""
        await asyncio.sleep(self.failed(error))

    def succeeded(self) -> None:
        """The loop's store calls work (again)."""
        if self.failures == 0:
            return
        now = self._monotonic()
        since = self.failing_since if self.failing_since is not None else now
        self._log.warning(
            "%s: working again after %d failed tr%s over %.1f s",
            self.what,
            self.failures,
            "y" if self.failures == 1 else "ies",
            now - since,
        )
        self.failures = 0
        self.failing_since = None
        self.recovered_at = now
        self._logged.clear()


async def supervise(name: str, loop: Callable[[], Coroutine[Any, Any, Any]]) -> None:
    """Run the engine loop ``loop`` until cancelled, restarting it (with backoff) if it
    raises or returns."""
    retry = StoreRetry(f"engine loop {name}", delays_seconds=(0.5, 1.0, 2.0, 5.0))
    while True:
        try:
            await loop()
            problem: BaseException = RuntimeError("returned")
        except Exception as error:
            problem = error
        await retry.backoff(problem)


class QuietLog:
    """One line per kind of failure, then silence while it repeats: a kind logged again
    only ``quiet_seconds`` after its last line, saying how many went unlogged meanwhile.
    For failures with no loop to notice the recovery (requests answered 503)."""

    def __init__(
        self,
        log: logging.Logger,
        quiet_seconds: float = 60.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = log
        self._quiet_seconds = quiet_seconds
        self._monotonic = monotonic
        self._last: dict[str, tuple[float, int]] = {}

    def warning(self, kind: str, message: str) -> None:
        now = self._monotonic()
        last = self._last.get(kind)
        if last is not None and now - last[0] < self._quiet_seconds:
            self._last[kind] = (last[0], last[1] + 1)
            return
        more = f" ({last[1]} more since the last line)" if last is not None and last[1] else ""
        self._log.warning("%s%s", message, more)
        self._last[kind] = (now, 0)
