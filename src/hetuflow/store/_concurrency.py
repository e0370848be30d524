"""Concurrency keys in the claim, shared by both stores (docs/guarantees.md).

A task with a ``concurrency_key`` is claimed only while fewer than its limit of tasks with
that key are active (dispatched, running or cancelling) across all nodes. Its limit is its
own ``max_concurrent_per_key``, else the ``[concurrency]`` limit of its task type, else 1.

A claim meets keyed candidates in claim order. The first time it meets a key it counts that
key's active tasks in the database (``count``); on PostgreSQL it first takes the claim's
advisory lock, so the keyed claims of every node are serialised from the count to the commit
and each sees the others' dispatches: exact with several nodes. A claim that meets no keyed
task takes no lock and counts nothing, so unkeyed work pays nothing but one ``IS NULL`` test.
A key found full, or filled by the claim itself, is left out of the claim's next candidate
queries (they fetch the rest of the wanted tasks past it), so a full key never holds back the
tasks behind it. Those queries read on from the last candidate the claim saw (in claim
order): what it passed over stays passed over, so a claim reads each pending task at most
once however many keys it finds full. On PostgreSQL, while pending tasks have few distinct
keys, those queries read only the unkeyed tasks and the first tasks of each key with room, in
the same order, and not the tasks of the full keys at all (``_pg_tasks``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from hetuflow.models import ConcurrencyLimits
from hetuflow.store._rows import Row


class KeyGate:
    """The keys one claim has met: their active counts (as counted, plus what this claim
    admitted) and the ones found full."""

    def __init__(self, limits: ConcurrencyLimits | None) -> None:
        self._limits = limits or ConcurrencyLimits()
        self._active: dict[str, int] = {}
        self.full: set[str] = set()
        """Keys at their limit: the claim's next candidate queries leave them out."""
        self.locked = False
        """Whether the claim holds the lock keyed claims take (PostgreSQL)."""
        self.few: bool | None = None
        """Whether pending tasks have few distinct keys (PostgreSQL, ``_pg_tasks``; None:
        not counted yet)."""
        self.most = 1
        """The largest limit of the keyed candidates met: how many tasks of one key a claim
        may take (PostgreSQL reads that many of each key with room, ``_pg_tasks``)."""

    def unknown(self, rows: Iterable[Row]) -> list[str]:
        """The keys of ``rows`` not counted yet, sorted."""
        return sorted(
            {
                key
                for row in rows
                if (key := row["concurrency_key"]) is not None and key not in self._active
            }
        )

    def counted(self, keys: Iterable[str], counts: Mapping[str, int]) -> None:
        """Record the active counts of ``keys`` (a key missing from ``counts`` has none)."""
        for key in keys:
            self._active[key] = counts.get(key, 0)

    def admit(self, row: Row) -> bool:
        """Whether the candidate may be claimed (counting it in if so). An unkeyed one may."""
        key = row["concurrency_key"]
        if key is None:
            return True
        limit = self._limits.of(row["task_type"], row["max_concurrent_per_key"])
        self.most = max(self.most, limit)
        if key in self.full:
            return False
        active = self._active.get(key, 0)
        if active >= limit:
            self.full.add(key)
            return False
        self._active[key] = active + 1
        if active + 1 >= limit:
            self.full.add(key)  # full now: the next candidate queries leave it out at once
        return True
