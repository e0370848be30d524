"""Outgoing webhooks, the pure part (hetuflow.webhooks) and the [webhooks] config."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest

from hetuflow.config import load_config
from hetuflow.errors import ConfigInvalid, SignatureInvalid
from hetuflow.webhooks import (
    backoff_delay,
    check_webhook_url,
    host_allowed,
    signed_headers,
    verify_delivery,
)


def test_urls_are_checked() -> None:
    assert (
        check_webhook_url("https://h.example.com:8443/p?q=1") == "https://h.example.com:8443/p?q=1"
    )
    for bad in (
        "ftp://h/x",
        "//h/x",
        "http:///x",
        "https://u:p@h/",
        "https://h/#frag",
        "https://h:0/",
        "https://h:99999/",
        "https://h/\nx",
        "https://h/" + "a" * 2048,
    ):
        with pytest.raises(ValueError, match=r"must|valid"):
            check_webhook_url(bad)


def test_allowed_hosts_match_names_patterns_addresses_and_networks() -> None:
    allowed = ("hooks.example.com", "*.internal.example", "10.0.0.0/8", "::1")
    assert host_allowed("https://anything/", ())
    assert host_allowed("https://HOOKS.example.com/x", allowed)
    assert host_allowed("https://a.b.internal.example/x", allowed)
    assert not host_allowed("https://internal.example/x", allowed)
    assert host_allowed("http://10.2.3.4:9000/", allowed)
    assert host_allowed("http://[::1]:9000/", allowed)
    assert not host_allowed("http://11.0.0.1/", allowed)
    assert not host_allowed("https://evil-hooks.example.com/", allowed)


def test_backoff_doubles_up_to_the_cap_less_the_jitter() -> None:
    delays = [
        backoff_delay(n, base_seconds=10, max_seconds=60, jitter=0, u=0.5) for n in range(1, 6)
    ]
    assert [d.total_seconds() for d in delays] == [10, 20, 40, 60, 60]
    jittered = backoff_delay(2, base_seconds=10, max_seconds=60, jitter=0.5, u=0.5)
    assert jittered == timedelta(seconds=15)
    assert backoff_delay(10_000, base_seconds=1, max_seconds=5, jitter=0, u=0).total_seconds() == 5


def test_a_signed_delivery_verifies_and_a_stale_or_changed_one_does_not() -> None:
    now = datetime(2030, 1, 1, tzinfo=UTC)
    body = b'{"event": "task.finished"}'
    headers = signed_headers(uuid4(), body, secret="k" * 16, now=now)
    lowered = {key.lower(): value for key, value in headers.items()}
    verify_delivery("k" * 16, lowered, body, now=now + timedelta(seconds=60))
    with pytest.raises(SignatureInvalid):
        verify_delivery("k" * 16, headers, body + b" ", now=now)
    with pytest.raises(SignatureInvalid):
        verify_delivery("k" * 16, headers, body, now=now + timedelta(minutes=6))


def test_the_secret_is_checked_and_never_shown() -> None:
    config = load_config(env={"HETUFLOW_WEBHOOKS__SECRET": "x" * 20})
    assert config.webhooks.secret == "x" * 20
    assert "x" * 20 not in repr(config)
    assert "x" * 20 not in str(config.webhooks)
    with pytest.raises(ConfigInvalid) as short:
        load_config(env={"HETUFLOW_WEBHOOKS__SECRET": "tooshort"})
    assert "tooshort" not in str(short.value)
    with pytest.raises(ConfigInvalid):
        load_config(env={"HETUFLOW_WEBHOOKS__ALLOWED_HOSTS": "a.example.com,10.0.0.0/33"})
