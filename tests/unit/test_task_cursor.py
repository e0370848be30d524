"""The opaque cursor of task pages: what ``encode`` makes ``decode`` reads back; nothing else."""

from __future__ import annotations

import base64
from uuid import uuid4

import pytest

from hetuflow.models import TaskCursor


def test_a_cursor_survives_its_string() -> None:
    cursor = TaskCursor(1_893_499_200_123_456, uuid4())
    text = cursor.encode()
    assert text.isascii()
    assert "=" not in text
    assert TaskCursor.decode(text) == cursor
    assert cursor.created_at.microsecond == 123_456


@pytest.mark.parametrize(
    "text",
    [
        "",
        "nope",
        "%%%",
        base64.urlsafe_b64encode(b"t2:1:" + uuid4().hex.encode()).decode(),
        base64.urlsafe_b64encode(b"t1:x:" + uuid4().hex.encode()).decode(),
        base64.urlsafe_b64encode(b"t1:1:not-a-uuid").decode(),
        base64.urlsafe_b64encode(b"t1:99999999999999999999999:" + uuid4().hex.encode()).decode(),
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),
    ],
)
def test_anything_else_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a cursor"):
        TaskCursor.decode(text)
