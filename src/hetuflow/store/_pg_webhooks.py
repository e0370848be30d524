"""PostgreSQL: the webhook outbox (docs/webhooks.md).

Rows are written by the ``tasks_webhook`` trigger (migration 0019) in the transaction that
settles a task. A claim takes due rows with ``FOR UPDATE SKIP LOCKED`` and moves their
``next_attempt_at`` to the end of a lease, under a fresh ``claim_token``: another node skips
them while the claim's transaction is open and does not see them due until the lease ends (a
node that died mid-send). The outcome is recorded only under that token.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from uuid import UUID

from hetuflow.clock import utc
from hetuflow.store._pg_db import CODEC, Conn
from hetuflow.store._webhook_rows import delivery_from
from hetuflow.webhooks import DeliveryOutcome, WebhookDelivery

_CLAIM = """
UPDATE webhook_deliveries AS d
SET next_attempt_at = $2, claim_token = $3, attempts = d.attempts + 1, last_attempt_at = $1
FROM (
    SELECT id FROM webhook_deliveries
    WHERE state = 'pending' AND next_attempt_at <= $1
    ORDER BY next_attempt_at, id
    LIMIT $4
    FOR UPDATE SKIP LOCKED
) AS due
WHERE d.id = due.id
RETURNING d.*"""

_RECORD = """
UPDATE webhook_deliveries
SET state = $3, next_attempt_at = coalesce($4::timestamptz, next_attempt_at),
    last_status_code = $5,
    last_error = $6, delivered_at = CASE WHEN $3::text = 'delivered' THEN $7::timestamptz END,
    claim_token = NULL
WHERE id = $1 AND claim_token = $2 AND state = 'pending'"""


async def claim_deliveries(
    connection: Conn, now: datetime, lease_until: datetime, limit: int
) -> list[WebhookDelivery]:
    rows = await connection.fetch(_CLAIM, utc(now), utc(lease_until), uuid.uuid4(), limit)
    return sorted((delivery_from(row, CODEC) for row in rows), key=lambda d: (d.created_at, d.id))


async def record_attempt(
    connection: Conn, delivery_id: UUID, claim_token: UUID, outcome: DeliveryOutcome, now: datetime
) -> bool:
    status = await connection.execute(
        _RECORD,
        delivery_id,
        claim_token,
        outcome.state.value,
        None if outcome.next_attempt_at is None else utc(outcome.next_attempt_at),
        outcome.status_code,
        outcome.error,
        utc(now),
    )
    return status == "UPDATE 1"


async def list_deliveries(connection: Conn, task_id: UUID) -> list[WebhookDelivery]:
    rows = await connection.fetch(
        "SELECT * FROM webhook_deliveries WHERE task_id = $1 ORDER BY created_at, id", task_id
    )
    return [delivery_from(row, CODEC) for row in rows]


async def next_attempt_at(connection: Conn) -> datetime | None:
    value = await connection.fetchval(
        "SELECT min(next_attempt_at) FROM webhook_deliveries WHERE state = 'pending'"
    )
    return CODEC.time(value)
