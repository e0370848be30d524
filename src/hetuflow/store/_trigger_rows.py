"""Rows <-> triggers and hooks, shared by both stores (see ``_rows`` for the ``Codec``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from hetuflow.store._rows import Codec, Row
from hetuflow.triggers import Hook, Trigger


def _must_uuid(codec: Codec, value: Any) -> UUID:
    decoded = codec.uuid(value)
    if decoded is None:
        raise ValueError("a required uuid column is NULL")
    return decoded


def _must_time(codec: Codec, value: Any) -> datetime:
    decoded = codec.time(value)
    if decoded is None:
        raise ValueError("a required timestamp column is NULL")
    return decoded


def trigger_from(row: Row, codec: Codec) -> Trigger:
    return Trigger(
        id=_must_uuid(codec, row["id"]),
        name=row["name"],
        event_key=row["event_key"],
        filter=codec.json(row["filter"]),
        task=None if row["task"] is None else codec.json(row["task"]),
        workflow=None if row["workflow"] is None else codec.json(row["workflow"]),
        created_at=_must_time(codec, row["created_at"]),
    )


def hook_from(row: Row, codec: Codec) -> Hook:
    return Hook(
        id=_must_uuid(codec, row["id"]),
        name=row["name"],
        event_key=row["event_key"],
        secret=row["secret"],
        created_at=_must_time(codec, row["created_at"]),
    )
