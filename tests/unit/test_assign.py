"""Unit: ``assign_least_loaded``: claimed picks to agents, least loaded first, a pinned pick
(a broadcast child) to its own agent only."""

from __future__ import annotations

from uuid import UUID, uuid4

from hetuflow.models import SlotOffer, assign_least_loaded

A, B, ELSEWHERE = uuid4(), uuid4(), uuid4()


def test_unpinned_picks_go_to_the_least_loaded_agent() -> None:
    offers = [SlotOffer(A, free_slots=2, running=3), SlotOffer(B, free_slots=1, running=0)]
    got = assign_least_loaded(["x", "y", "z", "w"], offers, lambda _: None)
    assert got == [("x", B), ("y", A), ("z", A)]  # then every slot is taken


def test_a_pinned_pick_goes_to_its_agent_or_waits() -> None:
    pins: dict[str, UUID | None] = {"a1": A, "a2": A, "b": B, "far": ELSEWHERE, "free": None}
    offers = [SlotOffer(A, free_slots=1, running=0), SlotOffer(B, free_slots=2, running=5)]
    got = assign_least_loaded(["a1", "a2", "far", "b", "free"], offers, pins.__getitem__)
    # a2: A is full after a1; far: its agent is not offered; free: B is the one with room.
    assert got == [("a1", A), ("b", B), ("free", B)]
