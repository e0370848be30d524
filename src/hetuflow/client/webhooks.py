"""Outgoing webhooks on the receiving side (docs/webhooks.md): the delivery models the
server shows (``Client.webhook``) and ``verify_webhook``, which a receiver calls on each POST.

::

    from hetuflow.client import verify_webhook

    def receive(headers, body: bytes) -> None:
        event = verify_webhook(SECRET, headers, body)  # SignatureInvalid if forged or stale
        if already_seen(event["delivery_id"]):           # at least once: de-duplicate
            return
        ...
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import orjson
from pydantic import BaseModel, ConfigDict

from hetuflow.errors import SignatureInvalid
from hetuflow.models import TaskStatus
from hetuflow.webhooks import DeliveryState, verify_delivery


def verify_webhook(
    secret: str, headers: Mapping[str, str], body: bytes, *, now: datetime | None = None
) -> dict[str, Any]:
    """Check a delivery's ``X-Hetuflow-Signature`` (HMAC-SHA256 of ``<timestamp>.<body>``
    keyed with the server's ``[webhooks] secret``) and ``X-Hetuflow-Timestamp`` (within five
    minutes of ``now``, default the current time), and return the parsed body. Raises
    ``hetuflow.errors.SignatureInvalid`` otherwise. ``headers``: any mapping, looked up
    case-insensitively; ``body``: the raw bytes as received."""
    verify_delivery(secret, headers, body, now=now or datetime.now(UTC))
    try:
        event = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise SignatureInvalid(f"the body is not JSON: {error}") from None
    if not isinstance(event, dict):
        raise SignatureInvalid("the body is not a JSON object")
    return event


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class WebhookDelivery(_Model):
    """One delivery of a task's final status (``GET /api/tasks/{id}/webhook``)."""

    id: UUID
    url: str
    status: TaskStatus
    state: DeliveryState
    attempts: int
    next_attempt_at: datetime | None = None
    last_attempt_at: datetime | None = None
    last_status_code: int | None = None
    last_error: str | None = None
    delivered_at: datetime | None = None
    created_at: datetime


class TaskWebhook(_Model):
    webhook_url: str | None = None
    items: list[WebhookDelivery] = []
