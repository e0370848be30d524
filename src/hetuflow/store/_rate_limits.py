"""Rate limits in the claim, shared by both stores (docs/guarantees.md#rate-limits).

A named rate limit allows at most ``limit`` units dispatched in any window of ``per_seconds``.
Every dispatch of a task that names it is recorded as a spend (name, instant, units), in the
transaction of the claim; a claim at instant ``t`` counts the spends in ``(t - per_seconds,
t]``. A candidate is claimed only if every limit it names has its units left, and then spends
them: so no window of ``per_seconds`` ever holds more than ``limit`` units (the latest spend
of any window saw every earlier one of it). On PostgreSQL a claim that meets a rate-limited
candidate first takes the claim's advisory lock (as concurrency keys do), so the claims of
every node are serialised from the count to the commit: exact across nodes, given their
clocks agree. A claim that meets no rate-limited task reads and locks nothing more.

Spends are kept ``PRUNE_MARGIN_SECONDS`` past their window before a claim deletes them: two
nodes' claims may take the lock in the other order than they read the clock (the later reading
first), and the earlier reading must still find every spend of its window.

A limit found without its units is left out of the claim's next candidate queries, so it never
holds back the tasks behind it. A limit that no longer exists (deleted) no longer limits.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Any

from hetuflow.models import JSONObject, RateLimitState, RateLimitUse
from hetuflow.store._rows import Codec, Row, uses_of

PRUNE_MARGIN_SECONDS = 5.0
"""How long a spend is kept after it left its window: how far behind another claim's (already
committed) reading of the clock a claim's own reading may be and still count every spend of
its window (a claim waiting for the lock, on a loaded machine)."""


class RateGate:
    """The rate limits one claim has met: the units each has left, those found without, and
    what the claim spent."""

    def __init__(self, codec: Codec) -> None:
        self._codec = codec
        self._left: dict[str, int | None] = {}
        """Units left in the window; None: no such limit (deleted), so no limit."""
        self.full: set[str] = set()
        """Limits without units left: the claim's next candidate queries leave them out."""
        self._spent: dict[Any, tuple[RateLimitUse, ...]] = {}
        """The limits each admitted candidate (by id) spends from."""
        self.met: set[str] = set()
        """Every limit the claim read (its old spends are pruned with the claim's)."""

    def uses(self, row: Row) -> tuple[RateLimitUse, ...]:
        return uses_of(row["rate_limits"], self._codec)

    def unknown(self, rows: Iterable[Row]) -> list[str]:
        """The limit names of ``rows`` not read yet, sorted."""
        return sorted(
            {
                use.name
                for row in rows
                if row["rate_limits"] is not None
                for use in self.uses(row)
                if use.name not in self._left
            }
        )

    def read(self, names: Iterable[str], states: Mapping[str, RateLimitState]) -> None:
        """Record the state of ``names`` at the claim's instant (a name missing from
        ``states`` does not exist)."""
        for name in names:
            self.met.add(name)
            state = states.get(name)
            self._left[name] = None if state is None else state.limit.limit - state.used

    def fits(self, row: Row) -> bool:
        """Whether every limit the candidate names has its units left (marking those that
        do not full). A candidate without limits fits."""
        if row["rate_limits"] is None:
            return True
        fits = True
        for use in self.uses(row):
            left = self._left.get(use.name)
            if use.name in self.full or (left is not None and left < use.units):
                self.full.add(use.name)
                fits = False
        return fits

    def spend(self, row: Row) -> None:
        """Take the candidate's units (after ``fits`` and any other gate admitted it). A
        candidate admitted but not claimed in the end (the claim found fewer slots) keeps
        its units taken for the rest of this claim: it errs on the side of the limit."""
        if row["rate_limits"] is None:
            return
        uses = self.uses(row)
        for use in uses:
            left = self._left.get(use.name)
            if left is not None:
                self._left[use.name] = left - use.units
        self._spent[row["id"]] = uses

    def spent_by(self, claimed: Collection[Any]) -> list[tuple[str, int]]:
        """(name, units) of every spend of the ``claimed`` candidates (by id), to record."""
        return [
            (use.name, use.units)
            for task_id, uses in self._spent.items()
            if task_id in claimed
            for use in uses
            if self._left.get(use.name) is not None
        ]


def _spec_without(spec: JSONObject, name: str) -> JSONObject | None:
    """A task spec (as ``POST /api/tasks`` takes it) without its use of ``name``; ``None``
    when it names no such limit. A spec left naming none loses its ``rate_limits``."""
    uses = spec.get("rate_limits")
    if not isinstance(uses, list):
        return None
    kept = [use for use in uses if not (isinstance(use, dict) and use.get("name") == name)]
    if len(kept) == len(uses):
        return None
    changed = {key: value for key, value in spec.items() if key != "rate_limits"}
    if kept:
        changed["rate_limits"] = kept
    return changed


def trigger_without(
    task: JSONObject | None, workflow: JSONObject | None, name: str
) -> tuple[JSONObject | None, JSONObject | None] | None:
    """A trigger's task or workflow template without the uses of rate limit ``name`` (a
    deleted limit: its later events create their tasks as if it never named it); ``None``
    when neither names it."""
    if task is not None:
        changed = _spec_without(task, name)
        return None if changed is None else (changed, None)
    if workflow is None or not isinstance(workflow.get("steps"), list):
        return None
    steps = []
    touched = False
    for step in workflow["steps"]:
        changed = _spec_without(step, name) if isinstance(step, dict) else None
        touched = touched or changed is not None
        steps.append(step if changed is None else changed)
    return (None, {**workflow, "steps": steps}) if touched else None
