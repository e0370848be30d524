"""Outbox rows (``webhook_deliveries``) <-> ``WebhookDelivery``, shared by both stores."""

from __future__ import annotations

from hetuflow.store._rows import Codec, Row, _must_time, _must_uuid, task_status
from hetuflow.webhooks import DeliveryState, WebhookDelivery

DELIVERY_STATES = {state.value: state for state in DeliveryState}


def delivery_from(row: Row, codec: Codec) -> WebhookDelivery:
    state = DELIVERY_STATES[row["state"]]
    result = row["result"]
    return WebhookDelivery(
        id=_must_uuid(codec, row["id"]),
        task_id=_must_uuid(codec, row["task_id"]),
        url=row["url"],
        name=row["name"],
        task_type=row["task_type"],
        status=task_status(row["status"]),
        result=None if result is None else codec.json(result),
        error=row["error"],
        task_attempts=row["task_attempts"],
        cron_job_id=codec.uuid(row["cron_job_id"]),
        finished_at=_must_time(codec, row["finished_at"]),
        state=state,
        attempts=row["attempts"],
        next_attempt_at=codec.time(row["next_attempt_at"])
        if state is DeliveryState.PENDING
        else None,
        last_attempt_at=codec.time(row["last_attempt_at"]),
        last_status_code=row["last_status_code"],
        last_error=row["last_error"],
        delivered_at=codec.time(row["delivered_at"]),
        created_at=_must_time(codec, row["created_at"]),
        claim_token=codec.uuid(row["claim_token"]),
    )
