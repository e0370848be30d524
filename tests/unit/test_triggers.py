"""Triggers: filters, event keys and hook signatures (pure)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from hetuflow.errors import InvalidInput, SignatureInvalid
from hetuflow.triggers import (
    body_event_id,
    check_event_key,
    check_filter,
    matches,
    signature,
    verify_signature,
)

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
STAMP = str(int(NOW.timestamp()))


def test_filters_match_dotted_paths_exactly() -> None:
    data = {"status": "paid", "total": 10, "flag": True, "customer": {"tier": "gold"}}
    assert matches({}, data)
    assert matches({"status": "paid", "customer.tier": "gold"}, data)
    assert matches({"total": 10.0}, data)
    assert not matches({"status": "open"}, data)
    assert not matches({"customer.name": "x"}, data)
    assert not matches({"status.x": "paid"}, data)
    assert not matches({"flag": 1}, data)  # a boolean is not a number
    assert not matches({"total": "10"}, data)
    assert matches({"customer": {"tier": "gold"}}, data)


def test_filters_are_checked() -> None:
    check_filter({"a.b": 1, "c": None})
    for bad in ({"": 1}, {"a..b": 1}, {".a": 1}, {str(i): i for i in range(33)}):
        with pytest.raises(InvalidInput):
            check_filter(bad)


def test_event_keys_are_checked() -> None:
    check_event_key("order.created")
    check_event_key("stripe/payment_intent:succeeded-2")
    for bad in ("", ".x", "a b", "x" * 201, "é"):
        with pytest.raises(InvalidInput):
            check_event_key(bad)


def test_a_signature_is_the_hmac_of_timestamp_and_body() -> None:
    body = b'{"a": 1}'
    good = signature("secret", STAMP, body)
    assert good.startswith("sha256=")
    assert len(good) == 7 + 64
    verify_signature("secret", timestamp=STAMP, presented=good, body=body, now=NOW)
    cases = [
        ("other", STAMP, good, body),  # another secret
        ("secret", STAMP, good, body + b" "),  # another body
        ("secret", str(int(STAMP) + 1), good, body),  # another timestamp
        ("secret", STAMP, None, body),
        ("secret", None, good, body),
        ("secret", "soon", good, body),
        ("secret", STAMP, good[:-1], body),
    ]
    for secret, stamp, presented, sent in cases:
        with pytest.raises(SignatureInvalid):
            verify_signature(secret, timestamp=stamp, presented=presented, body=sent, now=NOW)


def test_a_stale_timestamp_is_refused_even_when_signed() -> None:
    old = str(int(NOW.timestamp()) - 301)
    body = b"{}"
    with pytest.raises(SignatureInvalid, match="clock"):
        verify_signature(
            "secret", timestamp=old, presented=signature("secret", old, body), body=body, now=NOW
        )


def test_a_body_without_event_id_is_named_by_its_hash() -> None:
    assert body_event_id("h", b"{}") == body_event_id("h", b"{}")
    assert body_event_id("h", b"{}") != body_event_id("h", b"{ }")
    assert body_event_id("h", b"{}") != body_event_id("g", b"{}")
