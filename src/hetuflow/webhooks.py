"""Outgoing webhooks (docs/webhooks.md): the pure part.

A task (or every task a cron job creates) may name a ``webhook_url``. When the task reaches a
final status, the store writes a *delivery* into its outbox in the same transaction (a
database trigger on the task's status, so every path that settles a task writes one, and
only one). The server's delivery service (``hetuflow.server.webhooks``) POSTs it, signed like
an incoming hook call (``hetuflow.triggers.signature``: HMAC-SHA256 over
``<timestamp>.<body>``), and retries with exponential backoff until the receiver answers 2xx
or ``[webhooks] max_attempts`` is spent (``given_up``). Delivery is at least once: a receiver
de-duplicates on the ``X-Hetuflow-Delivery-Id`` header.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit
from uuid import UUID

from hetuflow.models import JSONValue, TaskStatus
from hetuflow.triggers import SIGNATURE_HEADER, TIMESTAMP_HEADER, signature, verify_signature

MAX_WEBHOOK_URL_LENGTH = 2048
DELIVERY_ID_HEADER = "X-Hetuflow-Delivery-Id"
"""The same on every attempt of one delivery: what a receiver de-duplicates on."""
EVENT_HEADER = "X-Hetuflow-Event"
TASK_FINISHED = "task.finished"
"""The ``event`` of every delivery (the only one so far)."""

__all__ = [
    "DELIVERY_ID_HEADER",
    "EVENT_HEADER",
    "MAX_WEBHOOK_URL_LENGTH",
    "SIGNATURE_HEADER",
    "TASK_FINISHED",
    "TIMESTAMP_HEADER",
    "DeliveryOutcome",
    "DeliveryState",
    "WebhookDelivery",
    "backoff_delay",
    "check_allowed_hosts",
    "check_webhook_url",
    "delivery_body",
    "host_allowed",
    "signed_headers",
    "verify_delivery",
]


class DeliveryState(StrEnum):
    """``pending`` until the receiver answers 2xx (``delivered``) or every attempt failed
    (``given_up``). A pending delivery being sent is still ``pending`` (its
    ``next_attempt_at`` is then the end of the sender's lease)."""

    PENDING = "pending"
    DELIVERED = "delivered"
    GIVEN_UP = "given_up"


@dataclass(frozen=True, slots=True)
class WebhookDelivery:
    """One delivery of a task's final status, as the outbox keeps it: the task's state when
    it settled (not read again later), and how the delivery is going."""

    id: UUID
    task_id: UUID
    url: str
    name: str
    task_type: str
    status: TaskStatus
    result: JSONValue
    error: str | None
    task_attempts: int
    cron_job_id: UUID | None
    finished_at: datetime
    state: DeliveryState
    attempts: int
    """POSTs started so far (a claim counts one, so a crash mid-send counts too)."""
    next_attempt_at: datetime | None
    """When a pending delivery is sent next; None once delivered or given up."""
    last_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    delivered_at: datetime | None
    created_at: datetime
    claim_token: UUID | None = None
    """Set by a claim; the outcome of that claim's POST is recorded only with it."""


@dataclass(frozen=True, slots=True)
class DeliveryOutcome:
    """What one POST of a claimed delivery came to: ``delivered``; ``pending`` again (to be
    retried at ``next_attempt_at``); or ``given_up``. ``status_code``: the receiver's HTTP
    status, None when none came (``error`` says why: refused, timed out...)."""

    state: DeliveryState
    next_attempt_at: datetime | None
    status_code: int | None
    error: str | None


# --- URLs -------------------------------------------------------------------------------------


def check_webhook_url(url: str) -> str:
    """``url`` if it is an absolute http(s) URL with a host, no credentials and no fragment,
    at most ``MAX_WEBHOOK_URL_LENGTH`` characters; else ``ValueError`` saying why."""
    if len(url) > MAX_WEBHOOK_URL_LENGTH:
        raise ValueError(f"must be at most {MAX_WEBHOOK_URL_LENGTH} characters")
    if any(char.isspace() or ord(char) < 32 or ord(char) == 127 for char in url):
        raise ValueError("must not contain spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise ValueError(f"is not a valid URL ({error})") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError("must be an http:// or https:// URL")
    if not parts.hostname:
        raise ValueError("must name a host")
    if parts.username is not None or parts.password is not None:
        raise ValueError("must not carry credentials (user:password@)")
    if parts.fragment:
        raise ValueError("must not have a #fragment")
    if port == 0:
        raise ValueError("must not name port 0")
    return url


def host_allowed(url: str, allowed: Sequence[str]) -> bool:
    """Whether ``url``'s host is in ``allowed`` (empty: any host). An entry is a host name
    (case-insensitive, ``*.example.com`` for any subdomain), an IP address or a network in
    CIDR notation (``10.0.0.0/8``)."""
    if not allowed:
        return True
    host = (urlsplit(url).hostname or "").lower().rstrip(".")
    try:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(host)
    except ValueError:
        address = None
    for entry in allowed:
        pattern = entry.lower().rstrip(".")
        if address is not None and ("/" in pattern or _is_address(pattern)):
            if address in ipaddress.ip_network(pattern, strict=False):
                return True
        elif pattern.startswith("*."):
            if host.endswith(pattern[1:]) and host != pattern[2:]:
                return True
        elif host == pattern:
            return True
    return False


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def check_allowed_hosts(entries: Sequence[str]) -> tuple[str, ...]:
    """``[webhooks] allowed_hosts`` checked: each a host name, ``*.`` pattern, IP or CIDR."""
    for entry in entries:
        if "/" in entry:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"{entry!r} is not a network (CIDR)") from None
        elif not entry.strip() or any(char.isspace() or char in "@?#/" for char in entry):
            raise ValueError(f"{entry!r} is not a host name, IP address or network")
    return tuple(entries)


# --- backoff ----------------------------------------------------------------------------------


def backoff_delay(
    attempts: int, *, base_seconds: float, max_seconds: float, jitter: float, u: float
) -> timedelta:
    """The wait after the ``attempts``-th failed POST: ``base * 2^(attempts-1)``, capped at
    ``max_seconds``, times ``1 - jitter * u`` (``u`` uniform in [0, 1))."""
    exponent = min(max(attempts - 1, 0), 62)
    delay = min(base_seconds * (2.0**exponent), max_seconds)
    return timedelta(seconds=delay * (1.0 - jitter * u))


# --- the request ------------------------------------------------------------------------------


def delivery_body(delivery: WebhookDelivery) -> dict[str, Any]:
    """The JSON a receiver gets (docs/webhooks.md). Built by the server from the task's
    settled state: nothing of it comes from the receiver or from the URL."""
    return {
        "event": TASK_FINISHED,
        "delivery_id": str(delivery.id),
        "task_id": str(delivery.task_id),
        "name": delivery.name,
        "task_type": delivery.task_type,
        "status": delivery.status.value,
        "result": delivery.result,
        "error": delivery.error,
        "attempts": delivery.task_attempts,
        "finished_at": delivery.finished_at.isoformat().replace("+00:00", "Z"),
        "cron_job_id": None if delivery.cron_job_id is None else str(delivery.cron_job_id),
    }


def signed_headers(delivery_id: UUID, body: bytes, *, secret: str, now: datetime) -> dict[str, str]:
    """The headers of one POST: JSON content type, the event, the delivery id, and the
    timestamp and signature of ``body`` (as ``hetuflow.triggers.signature``)."""
    timestamp = str(int(now.timestamp()))
    return {
        "Content-Type": "application/json",
        "User-Agent": "hetuflow-webhooks",
        EVENT_HEADER: TASK_FINISHED,
        DELIVERY_ID_HEADER: str(delivery_id),
        TIMESTAMP_HEADER: timestamp,
        SIGNATURE_HEADER: signature(secret, timestamp, body),
    }


def verify_delivery(secret: str, headers: Mapping[str, str], body: bytes, *, now: datetime) -> None:
    """For a receiver: ``SignatureInvalid`` unless ``body`` carries a valid signature made
    with ``secret`` less than five minutes from ``now``. ``headers`` are looked up
    case-insensitively."""
    lowered = {key.lower(): value for key, value in headers.items()}
    verify_signature(
        secret,
        timestamp=lowered.get(TIMESTAMP_HEADER.lower()),
        presented=lowered.get(SIGNATURE_HEADER.lower()),
        body=body,
        now=now,
    )
