"""SQLite: the webhook outbox (docs/webhooks.md).

Rows are written by the ``tasks_webhook`` trigger (migration 0019) in the transaction that
settles a task. One writer serialises claims; a claim moves ``next_attempt_at`` to the end of a
lease under a fresh ``claim_token`` (a server that died mid-send leaves the row due again when
the lease ends), and the outcome is recorded only under that token.
"""

from __future__ import annotations

import sqlite3
import uuid
from datetime import datetime
from uuid import UUID

from hetuflow.store._sqlite_db import CODEC, micros
from hetuflow.store._webhook_rows import delivery_from
from hetuflow.webhooks import DeliveryOutcome, WebhookDelivery

_CLAIM = """
UPDATE webhook_deliveries
SET next_attempt_at = ?, claim_token = ?, attempts = attempts + 1, last_attempt_at = ?
WHERE id IN (
    SELECT id FROM webhook_deliveries
    WHERE state = 'pending' AND next_attempt_at <= ?
    ORDER BY next_attempt_at, id
    LIMIT ?
)
RETURNING *"""

_RECORD = """
UPDATE webhook_deliveries
SET state = ?, next_attempt_at = coalesce(?, next_attempt_at), last_status_code = ?,
    last_error = ?, delivered_at = CASE WHEN ? = 'delivered' THEN ? END, claim_token = NULL
WHERE id = ? AND claim_token = ? AND state = 'pending'"""


def claim_deliveries(
    connection: sqlite3.Connection, now: datetime, lease_until: datetime, limit: int
) -> list[WebhookDelivery]:
    stamp = micros(now)
    rows = connection.execute(
        _CLAIM, (micros(lease_until), str(uuid.uuid4()), stamp, stamp, limit)
    ).fetchall()
    return sorted((delivery_from(row, CODEC) for row in rows), key=lambda d: (d.created_at, d.id))


def record_attempt(
    connection: sqlite3.Connection,
    delivery_id: UUID,
    claim_token: UUID,
    outcome: DeliveryOutcome,
    now: datetime,
) -> bool:
    cursor = connection.execute(
        _RECORD,
        (
            outcome.state.value,
            None if outcome.next_attempt_at is None else micros(outcome.next_attempt_at),
            outcome.status_code,
            outcome.error,
            outcome.state.value,
            micros(now),
            str(delivery_id),
            str(claim_token),
        ),
    )
    return cursor.rowcount == 1


def list_deliveries(connection: sqlite3.Connection, task_id: UUID) -> list[WebhookDelivery]:
    rows = connection.execute(
        "SELECT * FROM webhook_deliveries WHERE task_id = ? ORDER BY created_at, id",
        (str(task_id),),
    ).fetchall()
    return [delivery_from(row, CODEC) for row in rows]


def next_attempt_at(connection: sqlite3.Connection) -> datetime | None:
    row = connection.execute(
        "SELECT min(next_attempt_at) FROM webhook_deliveries WHERE state = 'pending'"
    ).fetchone()
    return CODEC.time(row[0])
